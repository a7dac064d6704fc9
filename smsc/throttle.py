"""Per-credential throughput limits, counted in segments (conformance §8).

A token bucket per credential, shared by all its sessions: ``rate`` segments a
second, bursts up to one second's worth. Over the limit a submit gets
``ESME_RTHROTTLED`` and the session stays open: the client slows down and
retries. Pure arithmetic on an injected ``now``, tested without a reactor.
"""

from __future__ import annotations


class TokenBucket:
    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, now: float, burst: float | None = None) -> None:
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else rate)
        self.tokens = self.burst
        self.stamp = now

    def take(self, n: int, now: float) -> bool:
        """Spend ``n`` tokens if there are that many; never more than a burst."""
        tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if tokens >= n or (n > self.burst and tokens >= self.burst):
            # A message longer than the burst passes when the bucket is full.
            self.tokens = tokens - n
            return True
        self.tokens = tokens
        return False

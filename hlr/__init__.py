"""HLR lookups: the network behind every number (issue 5; docs/hlr.md).

``model``      :class:`HlrResult`, statuses, :func:`parse_age`, :class:`HlrMetrics`
``providers``  the provider interface, :class:`HttpJsonProvider` (+ the simulator preset), the breaker
``cache``      ``hlr_cache`` (SQL) with memory and Redis mirrors, in-flight coalescing
``service``    :class:`HlrService` (cached / always, charged), :func:`decide` for the submit path
``jobs``       verification jobs (``hlr_jobs``, ``hlr_job_items``), resumable, charged once
``cli``        ``staffetta hlr verify|resume|jobs|lookup``

Importing this package registers the three tables on ``store.db.metadata``.
"""

from staffetta.hlr.cache import HlrCache
from staffetta.hlr.jobs import JobRunner
from staffetta.hlr.model import HlrMetrics, HlrResult, parse_age
from staffetta.hlr.providers import CircuitBreaker, HttpJsonProvider, provider_from_config, simulator_provider
from staffetta.hlr.service import ChargeRefused, HlrService, decide, decision_status, writer_charge

__all__ = [
    "ChargeRefused", "CircuitBreaker", "HlrCache", "HlrMetrics", "HlrResult", "HlrService",
    "HttpJsonProvider", "JobRunner", "decide", "decision_status", "parse_age", "provider_from_config",
    "simulator_provider", "writer_charge",
]

"""Accounts and their SMPP credentials.

An account is the paying customer; a credential is one system_id/password it
binds with (an account may have several, e.g. one per application). Passwords
are stored as scrypt hashes: a leaked database does not leak binds. SMPP caps a
password at 8 characters (3.4 §4.1.1), which is why the hash must be slow.

Billing settings per account: ``nocredit_status`` (the command_status of a
submit the balance cannot cover: 0x401 by default, ``ESME_RSUBMITFAIL`` for
clients that need a standard code), ``refund_on_network_failure`` (refund a
message that fails later in the network; off by default), ``price_plan`` (a
plan name from the ``billing:`` config; NULL = the default plan) and
``alert_url`` (where the low-credit alert is POSTed). The low-credit threshold
itself lives on the ``balances`` row (:mod:`billing.ledger`), next to the
balance the debit updates.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Table,
    func,
    select,
)
from sqlalchemy.engine import Connection

from staffetta.billing import ledger as _ledger  # registers the money tables with the accounts
from staffetta.pdu.constants import Status
from staffetta.store.db import metadata

#: Statuses an account may choose for "not enough credit" (feature C1).
NOCREDIT_STATUSES = (int(Status.STAFFETTA_RNOCREDIT), int(Status.ESME_RSUBMITFAIL))

accounts = Table(
    "accounts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("default_type", String(8), nullable=False, default="PRO"),
    Column("default_country_code", Integer, nullable=False, default=39),
    Column("default_sender", String(16), nullable=True),
    Column("created_at", DateTime, nullable=False, server_default=func.now()),
    Column("alert_url", String(500), nullable=True),
    Column("nocredit_status", Integer, nullable=False, default=int(Status.STAFFETTA_RNOCREDIT)),
    Column("refund_on_network_failure", Boolean, nullable=False, default=False),
    Column("price_plan", String(64), nullable=True),
    Column("hlr_mode", String(8), nullable=True),  # off | cached | always; NULL: the config's hlr.mode
    # MO delivery (router/mo.py, docs/two-way.md): smpp | http | both; the webhook's URL and signing secret.
    Column("mo_channel", String(8), nullable=True),  # NULL: smpp
    Column("mo_url", String(500), nullable=True),
    Column("mo_secret", String(200), nullable=True),
)

credentials = Table(
    "credentials",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("system_id", String(15), nullable=False, unique=True),
    Column("password_hash", String(200), nullable=False),
    Column("allowed_networks", String(500), nullable=True),  # comma-separated CIDRs
    Column("max_binds", Integer, nullable=False, default=10),
    Column("revoked", Boolean, nullable=False, default=False),
    Column("max_rate", Integer, nullable=True),  # submits per second; NULL: no per-credential limit
)

#: One row: a number every change of an account or credential setting bumps, in the
#: change's transaction. Each hub polls it (one indexed read a second) and reloads
#: the settings when it moved, so a change made with the command line reaches every
#: hub on the store within seconds, without a rebind (issue 10 item 5).
settings_version = Table(
    "settings_version",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", BigInteger, nullable=False),
)


def bump_settings_version(conn: Connection) -> None:
    """Tell the running hubs that account or credential settings changed (call in the change's transaction)."""
    n = conn.execute(
        settings_version.update().where(settings_version.c.id == 1)
        .values(version=settings_version.c.version + 1)
    ).rowcount
    if n == 0:
        conn.execute(settings_version.insert().values(id=1, version=1))


def current_settings_version(conn: Connection) -> int:
    """The number :func:`bump_settings_version` moves (0 before any change).

    Every hub runs this every second: plain SQL, without SQLAlchemy's statement
    handling (half the cost).
    """
    v = conn.exec_driver_sql("SELECT version FROM settings_version WHERE id = 1").scalar()
    return int(v or 0)



#: scrypt cost of a new hash. The CPU cost of a guess is that of the classic
#: interactive setting (N=2**14, r=8, p=1: ~50 ms) but each check holds 4 MiB
#: instead of 16 (memory is 128*r*N bytes; the p lanes run one after the other
#: in the same buffer), so a hub's bound on concurrent checks is a bound on
#: their memory (docs/operations.md). Parameters travel with each hash, so a
#: change here never breaks stored hashes: they are rehashed at their next
#: successful bind (:func:`needs_rehash`).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**12, 8, 4
#: The parameters of hashes made before these (16 MiB a check): they still
#: verify, and are rehashed at their next successful bind.
OLD_SCRYPT_N, OLD_SCRYPT_R = 2**14, 8
#: Most memory one check may take (a stored hash asking for more is refused,
#: not computed): 16 MiB hashes made before 0.x still verify.
SCRYPT_MAXMEM = 32 * 1024 * 1024


def scrypt_memory(n: int, r: int) -> int:
    """Bytes one scrypt computation holds (OpenSSL's V array: 128*r*N)."""
    return 128 * r * n


def hash_password(password: str) -> str:
    """A salted scrypt hash with its parameters: ``scrypt$N$r$p$salt$digest``."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=SCRYPT_MAXMEM
    )
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def _parse(stored: str) -> tuple[int, int, int, bytes, bytes] | None:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return None
        return int(n), int(r), int(p), base64.b64decode(salt), base64.b64decode(digest)
    except ValueError:  # a field count, an int or base64 that does not parse
        return None


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored``; False for a hash we cannot or will not compute."""
    parsed = _parse(stored)
    if parsed is None:
        return False
    n, r, p, salt, digest = parsed
    if scrypt_memory(n, r) > SCRYPT_MAXMEM or p > 64:
        return False  # a tampered row must not make a bind cost a gigabyte
    try:
        got = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=SCRYPT_MAXMEM)
    except ValueError:  # parameters OpenSSL refuses (N not a power of 2, ...)
        return False
    return hmac.compare_digest(got, digest)


def needs_rehash(stored: str) -> bool:
    """Whether a hash that just verified was made with other parameters than today's."""
    parsed = _parse(stored)
    return parsed is None or parsed[:3] != (SCRYPT_N, SCRYPT_R, SCRYPT_P)


def update_password_hash(conn: Connection, credential_id: int, old: str, new: str) -> bool:
    """Replace a credential's hash, unless it changed meanwhile (a password change wins)."""
    return conn.execute(
        credentials.update()
        .where(credentials.c.id == credential_id, credentials.c.password_hash == old)
        .values(password_hash=new)
    ).rowcount == 1


class AccountError(ValueError):
    """A bad account operation, with a one-line message naming the field."""


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    name: str
    enabled: bool
    default_type: str
    default_country_code: int
    default_sender: str | None
    alert_url: str | None = None
    nocredit_status: int = int(Status.STAFFETTA_RNOCREDIT)
    refund_on_network_failure: bool = False
    price_plan: str | None = None
    hlr_mode: str | None = None
    mo_channel: str | None = None  # smpp (NULL) | http | both
    mo_url: str | None = None
    mo_secret: str | None = None


@dataclass(frozen=True, slots=True)
class Credential:
    id: int
    system_id: str
    account: Account
    allowed_networks: tuple[str, ...]
    max_binds: int
    revoked: bool
    password_hash: str
    max_rate: int | None = None

    def allows(self, address: str) -> bool:
        if not self.allowed_networks:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in ipaddress.ip_network(net, strict=False) for net in self.allowed_networks)


def validate_smpp_password(password: str) -> None:
    if not 1 <= len(password) <= 8 or not password.isascii():
        raise AccountError("password: SMPP passwords are 1-8 ASCII characters")


def create_account(
    conn: Connection,
    name: str,
    password: str,
    *,
    system_id: str | None = None,
    default_type: str = "PRO",
    default_country_code: int = 39,
    default_sender: str | None = None,
    alert_url: str | None = None,
    nocredit_status: int = int(Status.STAFFETTA_RNOCREDIT),
    refund_on_network_failure: bool = False,
    price_plan: str | None = None,
) -> Account:
    """Create an account with one credential (system_id defaults to the name) and a zero balance."""
    system_id = system_id or name
    if not name or len(name) > 64:
        raise AccountError("name: 1-64 characters")
    if not 1 <= len(system_id) <= 15 or not system_id.isascii():
        raise AccountError("system_id: 1-15 ASCII characters")
    validate_smpp_password(password)
    if default_type not in ("SMART", "PRO", "REPLY"):
        raise AccountError("type: one of SMART, PRO, REPLY")
    _check_nocredit_status(nocredit_status)
    if alert_url is not None:
        _check_url(alert_url)
    if conn.execute(select(accounts.c.id).where(accounts.c.name == name)).first():
        raise AccountError(f"name: account {name!r} exists")
    if conn.execute(select(credentials.c.id).where(credentials.c.system_id == system_id)).first():
        raise AccountError(f"system_id: {system_id!r} is taken")
    account_id = conn.execute(
        accounts.insert().values(
            name=name,
            enabled=True,
            default_type=default_type,
            default_country_code=default_country_code,
            default_sender=default_sender,
            alert_url=alert_url,
            nocredit_status=nocredit_status,
            refund_on_network_failure=refund_on_network_failure,
            price_plan=price_plan,
        )
    ).inserted_primary_key[0]
    conn.execute(
        credentials.insert().values(
            account_id=account_id,
            system_id=system_id,
            password_hash=hash_password(password),
            max_binds=10,
            revoked=False,
        )
    )
    conn.execute(
        _ledger.balances.insert().values(
            account_id=account_id, balance=0, low_credit_threshold=None, alert_armed=True
        )
    )
    bump_settings_version(conn)
    return Account(
        account_id, name, True, default_type, default_country_code, default_sender,
        alert_url, nocredit_status, refund_on_network_failure, price_plan,
    )


def _check_nocredit_status(status: int) -> None:
    if status not in NOCREDIT_STATUSES:
        raise AccountError(
            "nocredit_status: 0x00000401 (STAFFETTA_RNOCREDIT) or 0x00000045 (ESME_RSUBMITFAIL), "
            f"not 0x{status:08X}"
        )


def _check_url(url: str, field: str = "alert_url") -> None:
    if not (url.startswith("http://") or url.startswith("https://")) or len(url) > 500 or " " in url:
        raise AccountError(f"{field}: {url!r} is not an http(s) URL")


_UNSET = object()


def update_account(
    conn: Connection,
    account_id: int,
    *,
    enabled: bool | None = None,
    alert_url: str | None | object = _UNSET,
    nocredit_status: int | None = None,
    refund_on_network_failure: bool | None = None,
    price_plan: str | None | object = _UNSET,
    hlr_mode: str | None | object = _UNSET,
    mo_channel: str | None | object = _UNSET,
    mo_url: str | None | object = _UNSET,
    mo_secret: str | None | object = _UNSET,
) -> None:
    """Change an account's settings; arguments left out stay as they are (None clears a URL/plan/mode)."""
    values: dict = {}
    if enabled is not None:
        values["enabled"] = bool(enabled)
    if alert_url is not _UNSET:
        if alert_url is not None:
            _check_url(alert_url)  # type: ignore[arg-type]
        values["alert_url"] = alert_url
    if nocredit_status is not None:
        _check_nocredit_status(nocredit_status)
        values["nocredit_status"] = nocredit_status
    if refund_on_network_failure is not None:
        values["refund_on_network_failure"] = bool(refund_on_network_failure)
    if price_plan is not _UNSET:
        values["price_plan"] = price_plan
    if hlr_mode is not _UNSET:
        if hlr_mode not in (None, "off", "cached", "always"):
            raise AccountError(f"hlr: expected off, cached, always or default, got {hlr_mode!r}")
        values["hlr_mode"] = hlr_mode
    if mo_channel is not _UNSET:
        if mo_channel not in (None, "smpp", "http", "both"):
            raise AccountError(f"mo_channel: expected smpp, http or both, got {mo_channel!r}")
        values["mo_channel"] = mo_channel
    if mo_url is not _UNSET:
        if mo_url is not None:
            _check_url(mo_url, "mo_url")  # type: ignore[arg-type]
        values["mo_url"] = mo_url
    if mo_secret is not _UNSET:
        if mo_secret is not None and not 16 <= len(mo_secret) <= 200:  # type: ignore[arg-type]
            raise AccountError("mo_secret: 16-200 characters (an HMAC key worth the name)")
        values["mo_secret"] = mo_secret
    if values:
        n = conn.execute(accounts.update().where(accounts.c.id == account_id).values(**values)).rowcount
        if n != 1:
            raise AccountError(f"account: no account with id {account_id}")
        bump_settings_version(conn)


def add_credential(
    conn: Connection,
    account_id: int,
    system_id: str,
    password: str,
    *,
    allowed_networks: tuple[str, ...] = (),
    max_rate: int | None = None,
    max_binds: int = 10,
) -> int:
    """Another system_id/password for an existing account; returns the credential id."""
    if not 1 <= len(system_id) <= 15 or not system_id.isascii():
        raise AccountError("system_id: 1-15 ASCII characters")
    validate_smpp_password(password)
    for net in allowed_networks:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise AccountError(f"allowed_networks: {net!r} is not an IP network") from None
    if max_rate is not None and max_rate <= 0:
        raise AccountError("max_rate: must be a positive number of submits per second")
    if conn.execute(select(credentials.c.id).where(credentials.c.system_id == system_id)).first():
        raise AccountError(f"system_id: {system_id!r} is taken")
    bump_settings_version(conn)
    return conn.execute(
        credentials.insert().values(
            account_id=account_id,
            system_id=system_id,
            password_hash=hash_password(password),
            allowed_networks=",".join(allowed_networks) or None,
            max_binds=max_binds,
            revoked=False,
            max_rate=max_rate,
        )
    ).inserted_primary_key[0]


def revoke_credential(conn: Connection, system_id: str) -> bool:
    """Refuse new binds with this system_id (live sessions are the server's to unbind)."""
    done = conn.execute(
        credentials.update().where(credentials.c.system_id == system_id).values(revoked=True)
    ).rowcount == 1
    if done:
        bump_settings_version(conn)
    return done


_ACCOUNT_COLUMNS = (
    accounts.c.id, accounts.c.name, accounts.c.enabled, accounts.c.default_type,
    accounts.c.default_country_code, accounts.c.default_sender, accounts.c.alert_url,
    accounts.c.nocredit_status, accounts.c.refund_on_network_failure, accounts.c.price_plan,
    accounts.c.hlr_mode, accounts.c.mo_channel, accounts.c.mo_url, accounts.c.mo_secret,
)


def _account_from(m) -> Account:
    return Account(*(m[c] for c in _ACCOUNT_COLUMNS))


def get_account(conn: Connection, name: str) -> Account | None:
    row = conn.execute(select(*_ACCOUNT_COLUMNS).where(accounts.c.name == name)).first()
    return _account_from(row._mapping) if row else None


def get_account_by_id(conn: Connection, account_id: int) -> Account | None:
    row = conn.execute(select(*_ACCOUNT_COLUMNS).where(accounts.c.id == account_id)).first()
    return _account_from(row._mapping) if row else None


def all_accounts(conn: Connection) -> dict[int, Account]:
    """Every account by id: what a hub holds of their settings (reloaded when the version moves)."""
    return {a.id: a for a in (_account_from(r._mapping) for r in conn.execute(select(*_ACCOUNT_COLUMNS)))}


def credentials_by_id(conn: Connection, ids: list[int]) -> dict[int, Credential]:
    """These credentials as they are now (the ones a hub has bound sessions of)."""
    rows = conn.execute(
        select(credentials, *_ACCOUNT_COLUMNS)
        .join(accounts, accounts.c.id == credentials.c.account_id)
        .where(credentials.c.id.in_(ids))
    )
    return {c.id: c for c in (_credential_from(r._mapping) for r in rows)}


def find_credential(conn: Connection, system_id: str) -> Credential | None:
    row = conn.execute(
        select(credentials, *_ACCOUNT_COLUMNS)
        .join(accounts, accounts.c.id == credentials.c.account_id)
        .where(credentials.c.system_id == system_id)
    ).first()
    if row is None:
        return None
    return _credential_from(row._mapping)


def _credential_from(m) -> Credential:
    account = _account_from(m)
    nets = tuple(n.strip() for n in (m[credentials.c.allowed_networks] or "").split(",") if n.strip())
    return Credential(
        m[credentials.c.id],
        m[credentials.c.system_id],
        account,
        nets,
        m[credentials.c.max_binds],
        m[credentials.c.revoked],
        m[credentials.c.password_hash],
        m[credentials.c.max_rate],
    )


# Columns added by the billing issue to tables that existed before it; ``create_all`` does not
# add columns to an existing table, so :func:`upgrade` does (idempotent, SQLite and PostgreSQL).
_ADDED_COLUMNS = {
    "accounts": (
        ("alert_url", "VARCHAR(500)"),
        ("nocredit_status", f"INTEGER NOT NULL DEFAULT {int(Status.STAFFETTA_RNOCREDIT)}"),
        ("refund_on_network_failure", "BOOLEAN NOT NULL DEFAULT {false}"),
        ("price_plan", "VARCHAR(64)"),
        ("hlr_mode", "VARCHAR(8)"),
        ("mo_channel", "VARCHAR(8)"),
        ("mo_url", "VARCHAR(500)"),
        ("mo_secret", "VARCHAR(200)"),
    ),
    "credentials": (("max_rate", "INTEGER"),),
}


def upgrade(engine) -> list[str]:
    """Bring a store made before billing up to date; returns what it changed.

    Adds the new columns of ``accounts`` / ``credentials`` and a zero
    ``balances`` row for every account without one. Run after ``create_schema``.
    """
    from sqlalchemy import text

    from staffetta.store.db import add_missing_columns

    done: list[str] = []
    with engine.begin() as conn:
        true = "1" if conn.dialect.name == "sqlite" else "true"
        for table, cols in _ADDED_COLUMNS.items():
            done += add_missing_columns(conn, table, cols)
        n = conn.execute(text(
            "INSERT INTO balances (account_id, balance, alert_armed) "
            f"SELECT id, 0, {true} FROM accounts WHERE id NOT IN (SELECT account_id FROM balances)"
        )).rowcount
        if n:
            done.append(f"balances: {n} rows")
    return done

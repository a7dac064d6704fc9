"""Accounts and their SMPP credentials.

An account is the paying customer; a credential is one system_id/password it
binds with (an account may have several, e.g. one per application). Passwords
are stored as scrypt hashes: a leaked database does not leak binds. SMPP caps a
password at 8 characters (3.4 §4.1.1), which is why the hash must be slow.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
from dataclasses import dataclass

from sqlalchemy import (
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

from store.db import metadata

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
)

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    got = hashlib.scrypt(
        password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p)
    )
    return hmac.compare_digest(got, base64.b64decode(digest))


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


@dataclass(frozen=True, slots=True)
class Credential:
    id: int
    system_id: str
    account: Account
    allowed_networks: tuple[str, ...]
    max_binds: int
    revoked: bool
    password_hash: str

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
) -> Account:
    """Create an account with one credential (system_id defaults to the name)."""
    system_id = system_id or name
    if not 1 <= len(system_id) <= 15 or not system_id.isascii():
        raise AccountError("system_id: 1-15 ASCII characters")
    validate_smpp_password(password)
    if default_type not in ("SMART", "PRO", "REPLY"):
        raise AccountError("type: one of SMART, PRO, REPLY")
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
    return Account(account_id, name, True, default_type, default_country_code, default_sender)


def _account_of(row) -> Account:
    return Account(
        row.id, row.name, row.enabled, row.default_type, row.default_country_code, row.default_sender
    )


def get_account(conn: Connection, name: str) -> Account | None:
    row = conn.execute(select(accounts).where(accounts.c.name == name)).first()
    return _account_of(row) if row else None


def get_account_by_id(conn: Connection, account_id: int) -> Account | None:
    row = conn.execute(select(accounts).where(accounts.c.id == account_id)).first()
    return _account_of(row) if row else None


def find_credential(conn: Connection, system_id: str) -> Credential | None:
    row = conn.execute(
        select(credentials, accounts)
        .join(accounts, accounts.c.id == credentials.c.account_id)
        .where(credentials.c.system_id == system_id)
    ).first()
    if row is None:
        return None
    m = row._mapping
    account = Account(
        m[accounts.c.id],
        m[accounts.c.name],
        m[accounts.c.enabled],
        m[accounts.c.default_type],
        m[accounts.c.default_country_code],
        m[accounts.c.default_sender],
    )
    nets = tuple(n.strip() for n in (m[credentials.c.allowed_networks] or "").split(",") if n.strip())
    return Credential(
        m[credentials.c.id],
        m[credentials.c.system_id],
        account,
        nets,
        m[credentials.c.max_binds],
        m[credentials.c.revoked],
        m[credentials.c.password_hash],
    )

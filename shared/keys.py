"""API keys as the services see them: scopes, what a key grants, a stored key's row, and how
a key is made and hashed (keys are 256-bit random tokens, stored as SHA-256 hashes; their SQL
is :mod:`shared.repository.keys`).

A key of scope ``write``, ``read`` or ``admin`` belongs to one project. An ``instance`` key
belongs to none: it may create and list projects and manage any project's keys, and nothing
else (it reads no funnel and sends no event).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Literal

Scope = Literal["write", "read", "admin", "instance"]
ProjectScope = Literal["write", "read", "admin"]
SCOPES: tuple[Scope, ...] = ("write", "read", "admin", "instance")
PREFIX = {"write": "wk_", "read": "rk_", "admin": "ak_", "instance": "ik_"}
SHOWN_CHARS = 8  # of a key, kept to tell keys apart: the scope's prefix and 5 random characters


@dataclass(frozen=True, slots=True)
class KeyGrant:
    """What a project's key allows."""

    project_id: str
    scope: Scope


@dataclass(frozen=True, slots=True)
class InstanceGrant:
    """An instance key: projects and their keys, no project's data."""

    key_id: str


@dataclass(frozen=True, slots=True)
class KeyRow:
    id: str
    prefix: str | None
    scope: Scope
    project_id: str | None
    name: str | None
    created_at_us: int
    revoked_at_us: int | None


@dataclass(frozen=True, slots=True)
class IssuedKey:
    row: KeyRow
    key: str  # the plain key: returned once, never stored


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_token(prefix: str) -> str:
    """A fresh secret: ``prefix`` and 256 random bits."""
    return prefix + secrets.token_urlsafe(32)

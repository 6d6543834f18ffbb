"""``funnel keys create|list|revoke``: API keys straight in the database (the operator's way;
the API's /v1/projects routes are the other)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from shared.clock import now_us
from shared.events import format_time, from_micros
from shared.keys import SCOPES, KeyRow, Scope

T = TypeVar("T")


def add_parser(commands: Any) -> None:
    keys = commands.add_parser(
        "keys",
        help="API keys: create (printed once), list, revoke",
        description="An instance key (--scope instance, no --project) creates projects and "
        "manages their keys over the API; the others belong to one project (created if new).",
    )
    keys.add_argument("action", choices=["create", "list", "revoke"])
    keys.add_argument("key_id", nargs="?", help="revoke: the key's id (from list)")
    keys.add_argument("--project", help="create: the key's project; list: only its keys")
    keys.add_argument("--scope", choices=SCOPES, default="write")
    keys.add_argument("--name", help="create: what the key is for")


def run(args: argparse.Namespace) -> int:
    if args.action == "create":
        if (args.scope == "instance") != (args.project is None):
            return _fail("an instance key takes no --project; every other key needs one")
        sys.stdout.write(_in_database(lambda s: new_key(s, args.project, args.scope, args.name)))
        sys.stdout.write("\n")
        return 0
    if args.action == "list":
        rows = _in_database(lambda s: _list(s, args.project))
        sys.stdout.write("".join(_line(r) + "\n" for r in rows))
        return 0
    if args.key_id is None:
        return _fail("revoke needs the key's id (see funnel keys list)")
    revoked = _in_database(lambda s: _revoke(s, args.key_id))
    if revoked is None:
        return _fail(f"no key {args.key_id!r}")
    sys.stdout.write(_line(revoked) + "\n")
    return 0


def _fail(message: str) -> int:
    sys.stderr.write(f"funnel keys: {message}\n")
    return 2


async def new_key(session: Any, project: str | None, scope: Scope, name: str | None) -> str:
    from shared.repository.keys import ensure_project, issue_key

    now = now_us()
    if project is not None:
        await ensure_project(session, project, now_us=now)
    return (await issue_key(session, project, scope, name, now_us=now)).key


async def _list(session: Any, project: str | None) -> list[KeyRow]:
    from shared.repository.keys import list_keys

    return await list_keys(session, project, every=project is None)


async def _revoke(session: Any, key_id: str) -> KeyRow | None:
    from shared.repository.keys import get_key, revoke_key

    if await get_key(session, key_id) is None:
        return None
    return await revoke_key(session, key_id, now_us=now_us())


def _line(row: KeyRow) -> str:
    revoked = "-" if row.revoked_at_us is None else format_time(from_micros(row.revoked_at_us))
    return "  ".join(
        [
            row.id,
            f"{row.prefix or '?'}…",
            row.scope.ljust(8),
            (row.project_id or "(instance)").ljust(16),
            format_time(from_micros(row.created_at_us)),
            f"revoked {revoked}" if row.revoked_at_us else "active",
            row.name or "",
        ]
    ).rstrip()


def _in_database(work: Callable[[Any], Awaitable[T]]) -> T:
    """``work`` in one transaction on the configured database."""
    return asyncio.run(in_database(work))


async def in_database(work: Callable[[Any], Awaitable[T]]) -> T:
    from shared.config import CommonSettings
    from shared.db import create_engine, sessionmaker

    engine = create_engine(CommonSettings().database_url)
    try:
        async with sessionmaker(engine).begin() as session:
            return await work(session)
    finally:
        await engine.dispose()

"""Real databases for tests: a fresh SQLite file or a fresh PostgreSQL database, migrated.

PostgreSQL is the server at ``TEST_PG_HOST``:``TEST_PG_PORT`` (127.0.0.1:5432 by default, as
the benchmarks use it), or, once ``use_private_server()`` was called (tests/conftest.py does,
unless ``TEST_PG_PORT`` is set), a cluster of this test process's own on a free port: the same
server binaries, started on first use with fsync off (tests/private_postgres.py), so that
creating and dropping a database per test waits on no disk flush and on no other process's
load, and parallel test workers (pytest-xdist) each have a server of their own.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg

from shared.db import migrate

PG_HOST = os.environ.get("TEST_PG_HOST", "127.0.0.1")
PG_USER = os.environ.get("TEST_PG_USER", "postgres")
_server = {"port": int(os.environ.get("TEST_PG_PORT", "5432")), "private": False}


def use_private_server() -> None:
    """From now on, PostgreSQL databases are made on a cluster of this process's own."""
    _server["private"] = True


def _port() -> int:
    if _server["private"] and "cluster" not in _server:
        from tests.private_postgres import PrivateCluster

        cluster = PrivateCluster()
        atexit.register(cluster.close)
        cluster.start()
        _server.update(cluster=cluster, port=cluster.port)
    return int(_server["port"])


def close_private_server() -> None:
    """Stop and remove the private cluster, if one was started (idempotent)."""
    cluster = _server.pop("cluster", None)
    if cluster is not None:
        cluster.close()


def ensure_postgres_running() -> None:
    """Start the local cluster with pg_ctlcluster when nothing listens on the port (the
    private cluster is started on first use instead)."""
    if _server["private"]:
        _port()
        return
    try:
        socket.create_connection((PG_HOST, _port()), 1).close()
        return
    except OSError:
        pass
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"], check=True
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection((PG_HOST, _port()), 1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("PostgreSQL did not start")


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(host=PG_HOST, port=_port(), user=PG_USER, database="postgres")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def postgres_database(icu_locale: str | None = None) -> Iterator[str]:
    """A fresh database; with ``icu_locale`` (say "en"), one whose default collation is that
    language's, as on many production servers, instead of this machine's C.UTF-8."""
    import asyncio

    ensure_postgres_running()
    name = f"funnel_test_{uuid.uuid4().hex[:12]}"
    options = ""
    if icu_locale is not None:
        options = f" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE '{icu_locale}'"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"{options}'))
    try:
        yield f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{_port()}/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def sqlite_database(folder: Path) -> Iterator[str]:
    yield f"sqlite+aiosqlite:///{folder / 'funnel.db'}"


@contextmanager
def migrated(kind: str, folder: Path) -> Iterator[str]:
    """A fresh database at the newest migration: a copy of one migrated once per test run
    (PostgreSQL: ``CREATE DATABASE ... TEMPLATE``; SQLite: the file copied), which is what
    running every migration again would build, at a fraction of the time."""
    import asyncio

    if kind == "postgresql":
        ensure_postgres_running()
        name = f"funnel_test_{uuid.uuid4().hex[:12]}"
        asyncio.run(_admin(f'CREATE DATABASE "{name}" TEMPLATE "{_postgres_template()}"'))
        try:
            yield f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{_port()}/{name}"
        finally:
            asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    else:
        shutil.copyfile(_sqlite_template(), folder / "funnel.db")
        yield f"sqlite+aiosqlite:///{folder / 'funnel.db'}"


_templates: dict[str, str] = {}


def _drop(name: str) -> None:
    import asyncio

    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _postgres_template() -> str:
    if "postgresql" not in _templates:
        import asyncio

        name = f"funnel_template_{uuid.uuid4().hex[:12]}"
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
        if not _server["private"]:  # a private cluster is removed whole at exit
            atexit.register(_drop, name)
        migrate(f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{_port()}/{name}")
        _templates["postgresql"] = name
    return _templates["postgresql"]


def _sqlite_template() -> str:
    if "sqlite" not in _templates:
        folder = tempfile.mkdtemp(prefix="funnel_template_")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        path = os.path.join(folder, "funnel.db")
        migrate(f"sqlite+aiosqlite:///{path}")
        _templates["sqlite"] = path
    return _templates["sqlite"]

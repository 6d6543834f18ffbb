"""A PostgreSQL cluster of a test's own, for tests that stop and start the server.

``initdb`` into a fresh folder, the server on a free loopback port, run as the ``postgres``
OS user when the tests run as root (PostgreSQL refuses to run as root). The shared server
on 5432, which other tests use at the same time, is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg

from services.devstack import free_port

OWNER = "postgres"
INITDB = ("--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")


def _binaries() -> Path:
    """The newest server binaries Debian installed, else those on the PATH."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name),
    )
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path is None:
        raise RuntimeError("no PostgreSQL server binaries (apt-get install postgresql)")
    return Path(on_path).parent


def _as_owner(command: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", OWNER, "--", *command]
    return command


class PrivateCluster:
    """``start()``/``stop()`` as often as a test likes; ``close()`` removes everything."""

    def __init__(self) -> None:
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="funnel-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self._bin = _binaries()
        if os.geteuid() == 0:
            shutil.chown(self.folder, OWNER)
        subprocess.run(
            _as_owner([str(self._bin / "initdb"), "-D", str(self.data), "-U", "postgres", *INITDB]),
            check=True,
            capture_output=True,
        )

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder}"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._ctl("start", "-l", str(self.log), "-o", options, "-t", "60")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("stop", "-m", mode, "-t", "60")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def create_database(self, name: str) -> str:
        async def create() -> None:
            conn = await asyncpg.connect(
                host="127.0.0.1", port=self.port, user="postgres", database="postgres"
            )
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()

        asyncio.run(create())
        return self.url(name)

    def close(self) -> None:
        if self.running():
            with contextlib.suppress(subprocess.CalledProcessError):
                self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            _as_owner([str(self._bin / "pg_ctl"), "-D", str(self.data), "-w", *args]),
            check=True,
            capture_output=True,
        )


@contextlib.contextmanager
def private_cluster() -> Iterator[PrivateCluster]:
    """A started cluster, stopped and removed afterwards."""
    cluster = PrivateCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()

"""A private PostgreSQL cluster for tests that stop and start the database.

``initdb`` into a temporary folder, started on a free port of 127.0.0.1 (as the ``postgres``
user when the tests run as root, since PostgreSQL refuses to run as root). Never the shared
server on port 5432, which other tests use at the same time.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

RUN_AS = "postgres"


def _bin(tool: str) -> str:
    found = shutil.which(tool)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    if not versions:
        raise RuntimeError("no PostgreSQL server binaries (apt-get install postgresql)")
    return str(versions[-1] / tool)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateCluster:
    """One cluster of its own: :meth:`stop` and :meth:`start` it at will."""

    def __init__(self, folder: Path) -> None:
        self.data = folder / "data"
        self.port = _free_port()
        self.log = folder / "server.log"

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", RUN_AS, "--"] if os.geteuid() == 0 else []
        return subprocess.run(
            [*prefix, *command], check=check, capture_output=True, text=True, timeout=120
        )

    def init(self) -> None:
        self._run(_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust")

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''"
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
                  "-w", "-t", "60", "start")  # fmt: skip

    def stop(self) -> None:
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)

    def reachable(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), 1).close()
        except OSError:
            return False
        return True


@contextmanager
def private_cluster() -> Iterator[PrivateCluster]:
    """A started cluster, stopped and removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="funnel-pg-"))
    if os.geteuid() == 0:
        user = pwd.getpwnam(RUN_AS)
        os.chown(folder, user.pw_uid, user.pw_gid)
    cluster = PrivateCluster(folder)
    try:
        cluster.init()
        cluster.start()
        deadline = time.monotonic() + 30
        while not cluster.reachable() and time.monotonic() < deadline:
            time.sleep(0.1)
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)

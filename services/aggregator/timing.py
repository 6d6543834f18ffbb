"""A timing log for diagnosis, on when ``AGGREGATOR_TIMING_LOG`` names a file (``configure``;
the statements are timed by ``repository.statements``): per consume
round (one JSON line), the seconds spent polling, applying (split by the batch's phases) and
on chores, and per statement kind (verb and first table) how many ran and their seconds.
Off, it costs a check per call. ``python -m services.aggregator.timing FILE`` sums a log up.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

PATH = ""  # the log file; empty: off
_TABLE = re.compile(r"\b(?:FROM|INTO|UPDATE|JOIN)\s+\"?(\w+)", re.IGNORECASE)

_statements: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
_phases: dict[str, float] = defaultdict(float)


def kind(statement: str) -> str:
    verb = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "?"
    table = _TABLE.search(statement)
    return f"{verb} {table.group(1) if table else '-'}"


def configure(path: str) -> None:
    """Log to ``path`` (empty: off)."""
    global PATH
    PATH = path


def statement_ran(statement: str, seconds: float) -> None:
    found = _statements[kind(statement)]
    found[0] += 1
    found[1] += seconds


@contextmanager
def phase(name: str) -> Iterator[None]:
    if not PATH:
        yield
        return
    started = time.perf_counter()
    try:
        yield
    finally:
        _phases[name] += time.perf_counter() - started


def flush(**extra: object) -> None:
    """Append what was measured since the last flush as one JSON line."""
    if not PATH:
        return
    line = {"t": time.time(), **extra, "phases": dict(_phases), "statements": dict(_statements)}
    with open(PATH, "a") as out:
        out.write(json.dumps(line) + "\n")
    _phases.clear()
    _statements.clear()


_last = [0.0]


def mark(name: str | None) -> None:
    """Time since the previous mark goes to ``name`` (``None``: start marking)."""
    if not PATH:
        return
    now = time.perf_counter()
    if name is not None:
        _phases[f"batch:{name}"] += now - _last[0]
    _last[0] = now


def summary(path: str) -> str:
    """The log's rounds summed up: phases, then statement kinds, the costliest first."""
    phases: dict[str, float] = defaultdict(float)
    statements: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    batches = records = 0
    with open(path) as lines:
        for line in lines:
            found = json.loads(line)
            batches += bool(found["records"])
            records += found["records"]
            for name, seconds in found["phases"].items():
                phases[name] += seconds
            for name, (n, seconds) in found["statements"].items():
                statements[name][0] += n
                statements[name][1] += seconds
    out = [f"{batches} batches, {records} records"]
    out += [f"  {k:28} {v:9.2f} s" for k, v in sorted(phases.items(), key=lambda x: -x[1])]
    out += [
        f"  {k:40} {int(n):7} {s:9.2f} s {1000 * s / max(n, 1):8.2f} ms"
        for k, (n, s) in sorted(statements.items(), key=lambda x: -x[1][1])
    ]
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(summary(sys.argv[1]) + "\n")

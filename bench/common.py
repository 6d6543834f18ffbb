"""Shared benchmark plumbing: realistic events, timing, results."""

from __future__ import annotations

import json
import os
import random
import resource
import statistics
from pathlib import Path
from typing import Any

RESULTS = Path("var/bench.json")
EVENT_NAMES = ("Product Viewed", "Product Added", "Checkout Started", "Order Completed")


def realistic_event(rng: random.Random, i: int) -> dict[str, Any]:
    """About 300 bytes of JSON, like a browser's track call."""
    return {
        "userId": f"user-{rng.randrange(100_000):06d}",
        "event": rng.choice(
            ["Product Viewed", "Product Added", "Checkout Started", "Order Completed"]
        ),
        "messageId": f"bench-{os.getpid()}-{i}",
        "timestamp": "2026-11-20T10:00:00.123Z",
        "properties": {
            "product_id": f"sku-{rng.randrange(5000)}",
            "price": round(rng.uniform(5, 500), 2),
            "currency": "EUR",
            "category": rng.choice(["shoes", "books", "garden", "toys"]),
        },
        "context": {"page": {"path": "/products/sku"}, "campaign": {"source": "newsletter"}},
    }


def percentile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc (Linux)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def self_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def record(name: str, figures: dict[str, Any]) -> None:
    RESULTS.parent.mkdir(exist_ok=True)
    existing = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    existing[name] = figures
    RESULTS.write_text(json.dumps(existing, indent=2))
    print(f"\n== {name}")
    for key, value in figures.items():
        shown = f"{value:,.3f}" if isinstance(value, float) else value
        print(f"  {key:40s} {shown}")

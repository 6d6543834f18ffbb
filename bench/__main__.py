"""python -m bench [ingest|aggregator|histories|traffic|webhooks|reports ...] [--quick]"""

from __future__ import annotations

import sys

from bench import aggregator, histories, ingest, reports, traffic, webhooks

SUITES = {
    "ingest": ingest.main,
    "aggregator": aggregator.main,
    "histories": histories.main,
    "traffic": traffic.main,
    "webhooks": webhooks.main,
    "reports": reports.main,
}


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    quick = "--quick" in sys.argv
    for name in args or list(SUITES):
        SUITES[name](quick=quick)


if __name__ == "__main__":
    main()

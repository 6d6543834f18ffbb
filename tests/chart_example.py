"""The chart shown in the README (docs/chart-example.svg), from a fixed report.

Regenerate after changing the picture: ``.venv/bin/python -m tests.chart_example``.
"""

from __future__ import annotations

from pathlib import Path

from services.api.chart import funnel_svg
from services.api.reports.python import StepReport

PATH = Path(__file__).parent.parent / "docs" / "chart-example.svg"
# name, persons, of them still in progress, value of the step's entries
STEPS = [
    ("Pricing page viewed", 1140, 30, None),
    ("Added a plan to the cart and opened the checkout form", 800, 40, None),
    ("Payment details entered", 520, 5, None),
    ("Order completed", 500, 0, 21_450.0),
]


def steps() -> list[StepReport]:
    found = []
    for k, (name, persons, in_progress, value) in enumerate(STEPS):
        after = STEPS[k + 1][1] if k + 1 < len(STEPS) else None
        dropped = persons - after - in_progress if after is not None else 0
        previous, first = STEPS[k - 1][1] if k else persons, STEPS[0][1]
        found.append(
            StepReport(
                step=k + 1,
                name=name,
                persons=persons,
                conversion_from_previous=persons / previous if previous else None,
                conversion_from_start=persons / first,
                dropped=dropped,
                in_progress=in_progress if after is not None else 0,
                drop_off_rate=dropped / persons if persons and after is not None else None,
                time_from_previous=None,
                value_sum=value,
                value_average=value / persons if value is not None else None,
            )
        )
    return found


def example() -> str:
    title, subtitle = "checkout (pricing → order)", "2026-11-01 to 2026-12-01, uniques"
    return funnel_svg(title, subtitle, steps(), "revenue") + "\n"


if __name__ == "__main__":
    PATH.write_text(example())

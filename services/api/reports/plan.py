"""Pipeline balance: planning backwards from a goal to the entrances it needs: pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

PERIOD_MONTHS = {"year": 12.0, "quarter": 3.0, "month": 1.0}
PERIOD_DAYS = {"year": 365.0, "quarter": 91.25, "month": 365.0 / 12, "week": 7.0, "day": 1.0}


@dataclass(frozen=True, slots=True)
class Plan:
    conversions_per_period: float
    average_value: float | None
    overall_rate: float
    entrances_per_period: float
    entrances_per_month: float | None
    entrances_per_day: float
    persons_per_step: tuple[float, ...]


def plan(
    step_rates: Sequence[float],
    period: str,
    *,
    target_conversions: float | None = None,
    target_value: float | None = None,
    average_value: float | None = None,
) -> Plan:
    """Plan backwards from a goal (pipeline balance): conversions, then entrances per step.

    ``step_rates[k]`` is the conversion from step k+1 to step k+2; their product is the
    overall rate. With a value target, conversions = target value / average value.
    """
    if target_conversions is None:
        if target_value is None or not average_value:
            raise ValueError("target: give conversions, or a value and an average value")
        target_conversions = target_value / average_value
    overall = 1.0
    for rate in step_rates:
        overall *= rate
    if overall <= 0:
        raise ValueError("rates: the funnel converts no one, so no number of entrances suffices")
    entrances = target_conversions / overall
    persons = [entrances]
    for rate in step_rates:
        persons.append(persons[-1] * rate)
    months = PERIOD_MONTHS.get(period)
    return Plan(
        conversions_per_period=target_conversions,
        average_value=average_value,
        overall_rate=overall,
        entrances_per_period=entrances,
        entrances_per_month=entrances / months if months else None,
        entrances_per_day=entrances / PERIOD_DAYS[period],
        persons_per_step=tuple(persons),
    )

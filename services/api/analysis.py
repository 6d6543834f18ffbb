"""Trends, forecast, planning and diagnosis over stored entries: pure functions, no I/O."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from services.api.report import (
    Counted,
    FunnelReport,
    StepReport,
    Window,
    funnel_report,
)
from shared.events import to_micros
from shared.funnel import CountMode, Entry, FunnelDefinition, entry_value

Interval = Literal["day", "week", "month"]
PERIOD_MONTHS = {"year": 12.0, "quarter": 3.0, "month": 1.0}
PERIOD_DAYS = {"year": 365.0, "quarter": 91.25, "month": 365.0 / 12, "week": 7.0, "day": 1.0}


@dataclass(frozen=True, slots=True)
class Cohort:
    start: datetime
    end: datetime
    complete: bool
    steps: tuple[StepReport, ...]


def cohort_bounds(
    start: datetime, end: datetime, interval: Interval, zone: ZoneInfo
) -> Iterator[tuple[datetime, datetime]]:
    """Consecutive [start, end) buckets in the zone's calendar covering [start, end)."""
    local = start.astimezone(zone)
    cursor = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if interval == "week":
        cursor -= timedelta(days=cursor.weekday())
    elif interval == "month":
        cursor = cursor.replace(day=1)
    while cursor < end:
        if interval == "day":
            nxt = (cursor + timedelta(days=1, hours=3)).replace(hour=0)
        elif interval == "week":
            nxt = (cursor + timedelta(days=7, hours=3)).replace(hour=0)
        else:
            year, month = divmod(cursor.month, 12)
            nxt = cursor.replace(year=cursor.year + year, month=month + 1)
        yield cursor.replace(tzinfo=zone), nxt.replace(tzinfo=zone)
        cursor = nxt


def trends(
    definition: FunnelDefinition,
    bounds: Sequence[tuple[datetime, datetime]],
    reports: Sequence[FunnelReport],
    now_us: int,
) -> list[Cohort]:
    """Conversion per entry cohort (one report per cohort's range); a cohort whose last
    window is still open is incomplete."""
    return [
        Cohort(start, end, to_micros(end) + definition.window_us <= now_us, report.steps)
        for (start, end), report in zip(bounds, reports, strict=True)
    ]


def cohort_reports_in_python(
    definition: FunnelDefinition,
    entries_by_person: Mapping[str, Sequence[Entry]],
    windows: Sequence[Window],
    count: CountMode,
) -> list[FunnelReport]:
    """One report per cohort range from the entries of their whole span."""
    reports = []
    for w in windows:
        selected = {
            person: [e for e in entries if w.start <= e.t0 < w.end]
            for person, entries in entries_by_person.items()
        }
        reports.append(funnel_report(definition, selected, w, count))
    return reports


@dataclass(frozen=True, slots=True)
class StageForecast:
    step: int
    name: str
    open_entries: int
    value: float
    win_probability: float | None
    probability_source: Literal["defined", "measured", "none"]
    weighted_value: float


@dataclass(frozen=True, slots=True)
class PipelineTally:
    """Counted entries by how far they got (index r - 1 for r steps reached): those whose
    window is still open, the sum of their values, and those whose window has closed."""

    open: tuple[int, ...]
    open_value: tuple[float, ...]
    closed: tuple[int, ...]


def pipeline_tally(
    definition: FunnelDefinition, counted: Sequence[Counted], now_us: int
) -> PipelineTally:
    n = len(definition.steps)
    open_, open_value, closed = [0] * n, [0.0] * n, [0] * n
    for _, e in counted:
        if e.t0 + definition.window_us > now_us:
            open_[e.reached - 1] += 1
            open_value[e.reached - 1] += entry_value(definition, e) or 0.0
        else:
            closed[e.reached - 1] += 1
    return PipelineTally(tuple(open_), tuple(open_value), tuple(closed))


def forecast(definition: FunnelDefinition, tally: PipelineTally) -> list[StageForecast]:
    """Weighted pipeline: sum of value x win probability of the reached step, open entries.
    A step without a defined probability gets the measured one: of the closed entries that
    got past it, the share that reached the last step."""
    n = len(definition.steps)
    stages = []
    for k, step in enumerate(definition.steps[:-1]):
        probability, source = step.win_probability, "defined"
        if probability is None:
            reached = sum(tally.closed[k:])
            won = tally.closed[n - 1]
            probability, source = (won / reached, "measured") if reached else (None, "none")
        stages.append(
            StageForecast(
                step=k + 1,
                name=step.name,
                open_entries=tally.open[k],
                value=tally.open_value[k],
                win_probability=probability,
                probability_source=source,  # type: ignore[arg-type]
                weighted_value=tally.open_value[k] * (probability or 0.0),
            )
        )
    return stages


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


@dataclass(frozen=True, slots=True)
class StepDiagnosis:
    step: int
    name: str
    conversion_from_previous: float | None
    lost: int
    target_rate: float | None
    gap_to_target: float | None


@dataclass(frozen=True, slots=True)
class GroupSummary:
    value: str | None
    persons: int
    overall_conversion: float | None


@dataclass(frozen=True, slots=True)
class Diagnosis:
    by_loss: tuple[StepDiagnosis, ...]
    by_gap: tuple[StepDiagnosis, ...]
    bottleneck: StepDiagnosis | None
    best_group: GroupSummary | None
    worst_group: GroupSummary | None


def diagnose(
    definition: FunnelDefinition, report: FunnelReport, min_group_persons: int = 1
) -> Diagnosis:
    """Rank transitions by persons lost and by shortfall against their target rate.

    The bottleneck is the step furthest below its target when targets are set, otherwise
    the transition with the lowest conversion from the previous step.
    """
    transitions = []
    for k in range(1, len(report.steps)):
        s, prev = report.steps[k], report.steps[k - 1]
        target = definition.steps[k].target_rate
        rate = s.conversion_from_previous
        gap = target - rate if target is not None and rate is not None else None
        transitions.append(
            StepDiagnosis(s.step, s.name, rate, prev.persons - s.persons, target, gap)
        )
    by_loss = tuple(sorted(transitions, key=lambda t: -t.lost))
    gaps = [t for t in transitions if t.gap_to_target is not None]
    by_gap = tuple(sorted(gaps, key=lambda t: -(t.gap_to_target or 0.0)))
    measured = [t for t in transitions if t.conversion_from_previous is not None]
    bottleneck = None
    if by_gap and (by_gap[0].gap_to_target or 0) > 0:
        bottleneck = by_gap[0]
    elif measured:
        bottleneck = min(measured, key=lambda t: t.conversion_from_previous or 0.0)
    groups = [
        GroupSummary(g.value, g.steps[0].persons, _overall(g.steps))
        for g in report.groups
        if g.steps[0].persons >= min_group_persons and g.steps[0].persons
    ]
    ranked = sorted(groups, key=lambda g: g.overall_conversion or 0.0)
    return Diagnosis(
        by_loss,
        by_gap,
        bottleneck,
        ranked[-1] if ranked else None,
        ranked[0] if ranked else None,
    )


def _overall(steps: Sequence[StepReport]) -> float | None:
    return steps[-1].persons / steps[0].persons if steps[0].persons else None

"""What the report, trends, forecast, plan and diagnosis routes answer."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from services.api.responses.common import COMPLETE_TO, FunnelRef, Out


class Timing(Out):
    median_s: float
    p90_s: float
    mean_s: float


class StepReportOut(Out):
    step: int
    name: str
    persons: int
    conversion_from_previous: float | None
    conversion_from_start: float | None
    dropped: int
    in_progress: int
    drop_off_rate: float | None
    time_from_previous: Timing | None
    value_sum: float | None
    value_average: float | None


class ReportStep(StepReportOut):
    rate_name: str | None = None
    target_rate: float | None = None


class ComparisonOut(Out):
    """The group's overall conversion against the rest of the report's persons (entries
    with count=totals): a 95 % Wilson interval and a two-proportion z-test at 5 %."""

    entered: int
    converted: int
    rate: float | None
    low: float | None = Field(description="95 % Wilson interval of the rate, lower bound.")
    high: float | None = Field(description="95 % Wilson interval of the rate, upper bound.")
    rest_entered: int
    rest_converted: int
    rest_rate: float | None
    z: float | None = Field(description="Null when either side is empty or the pooled rate 0/1.")
    p_value: float | None
    significant: bool = Field(description="p_value < 0.05: the difference is unlikely chance.")


class GroupOut(Out):
    value: str | None
    steps: list[StepReportOut]
    comparison: ComparisonOut | None


class BreakdownOut(Out):
    property: str
    attribution: str
    step: int | None
    groups: list[GroupOut]


class BinOut(Out):
    start_s: float
    end_s: float
    units: int = Field(description="Persons (entries with count=totals) in [start_s, end_s).")


class TimeToConvertOut(Out):
    funnel: FunnelRef
    complete_to: str | None = Field(description=COMPLETE_TO)
    from_: str = Field(alias="from")
    to: str
    count: str
    from_step: int
    to_step: int
    conversions: int = Field(description="Counted persons (entries) that did both steps.")
    mean_s: float | None
    median_s: float | None
    bins: list[BinOut]


class ReportBackfill(Out):
    done: bool
    persons_done: int
    persons_total: int | None


class ReportOut(Out):
    funnel: FunnelRef
    complete_to: str | None = Field(description=COMPLETE_TO)
    from_: str = Field(alias="from")
    to: str
    count: str
    computed_at: str
    cached: bool
    stale: bool
    backfill: ReportBackfill
    steps: list[ReportStep]
    named_rates: dict[str, float | None]
    overall_conversion: float | None
    filters: list[dict[str, Any]] | None = Field(None, description="Only with ?filters=.")
    breakdown: BreakdownOut | None = Field(None, description="Only with ?breakdown=.")


class Cohort(Out):
    start: str
    end: str
    complete: bool
    entrances: int
    conversions: int
    overall_conversion: float | None
    persons: list[int]


class TrendsOut(Out):
    funnel: FunnelRef
    complete_to: str | None = Field(description=COMPLETE_TO)
    interval: str
    timezone: str
    count: str
    cohorts: list[Cohort]


class Stage(Out):
    step: int
    name: str
    open_entries: int
    value: float
    win_probability: float | None
    probability_source: str
    weighted_value: float


class ForecastOut(Out):
    funnel: FunnelRef
    complete_to: str | None = Field(description=COMPLETE_TO)
    value_property: str | None
    weighted_value: float
    open_value: float
    open_entries: int
    stages: list[Stage]


class PlanStep(Out):
    step: int
    name: str
    persons_needed: float


class PlanOut(Out):
    funnel: FunnelRef
    complete_to: str | None = Field(description=COMPLETE_TO)
    period: str
    rates_source: str
    step_rates: list[float]
    conversions_per_period: float
    average_value: float | None
    overall_rate: float
    entrances_per_period: float
    entrances_per_month: float | None
    entrances_per_day: float
    persons_per_step: list[float]
    steps: list[PlanStep]


class Transition(Out):
    step: int
    name: str
    conversion_from_previous: float | None
    lost: int
    target_rate: float | None
    gap_to_target: float | None


class GroupSummary(Out):
    value: str | None
    persons: int
    overall_conversion: float | None


class DiagnosisOut(Out):
    funnel: FunnelRef
    complete_to: str | None = Field(description=COMPLETE_TO)
    from_: str = Field(alias="from")
    to: str
    bottleneck: Transition | None
    by_loss: list[Transition]
    by_gap_to_target: list[Transition]
    breakdown: str | None
    best_group: GroupSummary | None
    worst_group: GroupSummary | None

"""What each route of the query API answers, for OpenAPI and for the answer itself.

Loose on purpose: a stored definition is shown as stored (older ones may lack newer fields,
and ``extra="allow"`` passes fields these models do not name), and routes are declared with
``response_model_exclude_unset`` so that a key a route leaves out stays out.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Out(BaseModel):
    model_config = ConfigDict(extra="allow")


COMPLETE_TO = (
    "Every event ingest acknowledged before this instant is counted in this answer (null: not "
    "known yet, or the funnel's history is still being replayed). See /v1/freshness."
)


class FunnelRef(Out):
    id: str
    name: str


class ConditionOut(Out):
    property: str
    op: str = "eq"
    value: Any = None


class StepOut(Out):
    event: str | None = None
    where: list[ConditionOut] = []
    name: str | None = None
    target_rate: float | None = None
    win_probability: float | None = None
    rate_name: str | None = None


class ExclusionOut(Out):
    event: str
    where: list[ConditionOut] = []
    from_step: int = 1
    to_step: int | None = None


class RuleOut(Out):
    name: str
    from_step: int = 1
    goal_step: int | None = None
    after_seconds: int
    repeat_every_seconds: int | None = None
    until_seconds: int | None = None
    grace_seconds: int = 4 * 3600
    created_at_us: int | None = None


class DefinitionOut(Out):
    name: str
    steps: list[StepOut]
    window_seconds: int = 7 * 86_400
    order: str = "ordered"
    count: str = "uniques"
    exclusions: list[ExclusionOut] = []
    breakdowns: list[str] = []
    value_property: str | None = None
    timezone: str = "UTC"
    remarketing: list[RuleOut] = []
    template: str | None = None


class FunnelBackfill(Out):
    done: bool
    persons: int = Field(description="Persons whose history has been replayed so far.")


class FunnelOut(DefinitionOut):
    id: str
    version: int
    created_at: str
    updated_at: str
    backfill: FunnelBackfill


class FunnelList(Out):
    funnels: list[FunnelOut]


class TemplateOut(Out):
    id: str
    title: str
    description: str
    name: str
    steps: list[StepOut]
    remarketing: list[RuleOut]
    window_seconds: int | None = None
    value_property: str | None = None


class TemplateList(Out):
    templates: list[TemplateOut]


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


class GroupOut(Out):
    value: str | None
    steps: list[StepReportOut]


class BreakdownOut(Out):
    property: str
    attribution: str
    step: int | None
    groups: list[GroupOut]


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


class WebhookOut(Out):
    id: str
    url: str
    event_types: list[str]
    funnel_id: str | None
    enabled: bool
    disabled_reason: str | None
    created_at: str


class WebhookWithSecret(WebhookOut):
    secret: str = Field(description="The signing secret: shown here only.")


class RotatedWebhook(WebhookWithSecret):
    previous_secret_valid_until: str


class WebhookList(Out):
    webhooks: list[WebhookOut]


class Attempt(Out):
    at: str
    status_code: int | None
    latency_ms: int
    response: str | None
    error: str | None


class Delivery(Out):
    id: str
    webhook_id: str
    status: str
    attempts: int
    next_attempt: str
    created_at: str
    attempt_log: list[Attempt]


class DeliveryList(Out):
    deliveries: list[Delivery]


class Replayed(Out):
    replayed: int


class Health(Out):
    status: str

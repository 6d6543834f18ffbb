"""What the funnel and template routes answer."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from services.api.responses.common import Out


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

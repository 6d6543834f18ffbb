"""What requests to the query API carry: bodies, validated strictly (errors name the field);
what routes answer is in :mod:`services.api.responses`."""

from __future__ import annotations

import math
from functools import cache
from typing import Annotated, Any, Literal
from zoneinfo import available_timezones

from fastapi import HTTPException, Query
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from services.api.limits import parsable_url, printable
from shared.errors import problem
from shared.funnel import (
    DEFAULT_WINDOW_S,
    MAX_STEPS,
    MAX_WINDOW_S,
    MIN_STEPS,
    MIN_WINDOW_S,
    UNIT_SECONDS,
    Condition,
    CountMode,
    Operator,
    Order,
    WindowUnit,
)

# The pattern documents printable() for clients; printable() checks it, with a clearer reason.
NO_CONTROL = {"pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"}
Name = Annotated[
    str,
    Field(min_length=1, max_length=200, json_schema_extra=NO_CONTROL),
    AfterValidator(printable),
]
Rate = Annotated[float, Field(ge=0, le=1)]


class Strict(BaseModel):
    """Unknown fields refused, and no silent conversions: ``false`` is not 0, "60" not 60."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ConditionIn(Strict):
    property: Name
    op: Operator = "eq"
    value: Any = None

    @model_validator(mode="after")
    def _value_fits(self) -> ConditionIn:
        if self.op == "in" and not isinstance(self.value, list):
            raise ValueError("value: must be a list with op 'in'")
        if self.op not in ("is_set", "not_set", "in") and self.value is None:
            raise ValueError(f"value: required with op '{self.op}'")
        return self


class StepIn(Strict):
    event: Name | None = Field(None, description="Event name; null matches any event.")
    where: list[ConditionIn] = Field(default_factory=list, max_length=20)
    name: Name | None = None
    target_rate: Rate | None = Field(None, description="Target conversion from the previous step.")
    win_probability: Rate | None = Field(None, description="Chance an entry here is won.")
    rate_name: Name | None = Field(None, description="What the step's rate is called.")
    optional: bool = Field(
        False, description="May be skipped (never step 1; ordered and strict order only)."
    )


class WindowIn(Strict):
    """A conversion window in any unit: 1 second to 366 days in all."""

    value: Annotated[int, Field(ge=1, le=MAX_WINDOW_S)]
    unit: WindowUnit = "second"

    @property
    def seconds(self) -> int:
        return self.value * UNIT_SECONDS[self.unit]


def _window_fits(window: WindowIn, window_seconds: int | None, given: bool) -> int:
    """The window in seconds (a ``window_seconds`` given as well may only agree)."""
    if not MIN_WINDOW_S <= window.seconds <= MAX_WINDOW_S:
        raise ValueError(f"window: must be 1 second to 366 days, not {window.seconds} s")
    if given and window_seconds != window.seconds:
        raise ValueError("window: differs from window_seconds; give one of them")
    return window.seconds


def _optional_fits(steps: list[StepIn], order: str | None) -> None:
    for i, step in enumerate(steps):
        if step.optional and i == 0:
            raise ValueError("steps.0.optional: the first step cannot be optional")
        if step.optional and order == "any":
            raise ValueError(f"steps.{i}.optional: optional steps need order ordered or strict")


class ExclusionIn(Strict):
    event: Name
    where: list[ConditionIn] = Field(default_factory=list, max_length=20)
    from_step: Annotated[int, Field(ge=1, le=MAX_STEPS)] = 1
    to_step: Annotated[int, Field(ge=2, le=MAX_STEPS)] | None = None


class RemarketingRuleIn(Strict):
    """Notify when a person reached ``from_step`` but not ``goal_step`` after a while."""

    name: Name
    from_step: Annotated[int, Field(ge=1, le=MAX_STEPS)] = 1
    goal_step: Annotated[int, Field(ge=2, le=MAX_STEPS)] | None = None
    after_seconds: Annotated[int, Field(ge=1, le=MAX_WINDOW_S)]
    repeat_every_seconds: Annotated[int, Field(ge=1, le=MAX_WINDOW_S)] | None = None
    until_seconds: Annotated[int, Field(ge=1, le=MAX_WINDOW_S)] | None = None
    grace_seconds: Annotated[int, Field(ge=0, le=7 * 86_400)] = 4 * 3600
    created_at_us: int | None = Field(
        None, description="Set by the service when the rule is first stored.", ge=0
    )


@cache
def _zones() -> frozenset[str]:
    return frozenset(available_timezones() | {"UTC"})


def _known_zone(name: str) -> str:
    """An IANA zone name; looked up in the zone list, never as a path on disk."""
    if name not in _zones():
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as Europe/Paris)")
    return name


TimeZone = Annotated[str, Field(max_length=64), AfterValidator(_known_zone)]
Breakdowns = Annotated[list[Name], Field(max_length=10)]


TemplateId = Literal["aida", "search_marketing", "ecommerce", "product_growth", "b2b_pipeline"]


class FunnelIn(Strict):
    """A funnel definition; changing it recomputes the funnel from stored history."""

    name: Name
    steps: Annotated[list[StepIn], Field(min_length=MIN_STEPS, max_length=MAX_STEPS)]
    window_seconds: Annotated[int, Field(ge=MIN_WINDOW_S, le=MAX_WINDOW_S)] = DEFAULT_WINDOW_S
    window: WindowIn | None = Field(None, description="The window in a unit (sets window_seconds).")
    order: Order = "ordered"
    count: CountMode = "uniques"
    exclusions: list[ExclusionIn] = Field(default_factory=list, max_length=10)
    breakdowns: Breakdowns = Field(default_factory=list)
    value_property: Name | None = None
    timezone: TimeZone = Field("UTC", description="IANA zone for day boundaries of trends.")
    remarketing: list[RemarketingRuleIn] = Field(default_factory=list, max_length=10)
    template: TemplateId | None = Field(None, description="The template it was made from.")

    @model_validator(mode="after")
    def _steps_fit(self) -> FunnelIn:
        if self.window is not None:
            given = "window_seconds" in self.model_fields_set
            self.window_seconds = _window_fits(self.window, self.window_seconds, given)
        _optional_fits(self.steps, self.order)
        n = len(self.steps)
        for i, rule in enumerate(self.remarketing):
            goal = rule.goal_step or n
            if not rule.from_step < goal <= n:
                raise ValueError(f"remarketing.{i}: need 1 <= from_step < goal_step <= {n}")
            rule.goal_step = goal
        for i, x in enumerate(self.exclusions):
            to_step = x.to_step or n
            if not x.from_step < to_step <= n:
                raise ValueError(
                    f"exclusions.{i}: need 1 <= from_step < to_step <= {n} (the step count)"
                )
            x.to_step = to_step
        return self


class FunnelPatch(Strict):
    """Fields to change; the others keep their values."""

    name: Name | None = None
    steps: Annotated[list[StepIn], Field(min_length=MIN_STEPS, max_length=MAX_STEPS)] | None = None
    window_seconds: Annotated[int, Field(ge=MIN_WINDOW_S, le=MAX_WINDOW_S)] | None = None
    window: WindowIn | None = None
    order: Order | None = None
    count: CountMode | None = None
    exclusions: list[ExclusionIn] | None = None
    breakdowns: Breakdowns | None = None
    value_property: Name | None = None
    timezone: TimeZone | None = None
    remarketing: list[RemarketingRuleIn] | None = None

    @model_validator(mode="after")
    def _one_window(self) -> FunnelPatch:
        """A new window replaces the stored one in whichever form it was stored."""
        given = "window_seconds" in self.model_fields_set
        if self.window is not None:
            self.window_seconds = _window_fits(self.window, self.window_seconds, given)
        elif given:
            self.window = None  # set, so that the merged definition drops a stored "window"
        return self


class FromTemplate(Strict):
    """Create a funnel from a template; ``events`` renames the template's step events."""

    template: TemplateId
    name: Name | None = None
    events: list[Name | None] | None = Field(
        None, description="Your event name per step, in order (null keeps the template's)."
    )
    window_seconds: Annotated[int, Field(ge=MIN_WINDOW_S, le=MAX_WINDOW_S)] | None = None
    breakdowns: Breakdowns | None = None
    value_property: Name | None = None


class PlanIn(Strict):
    """A goal per period; rates default to those measured over the range (from, to)."""

    period: Literal["year", "quarter", "month", "week", "day"] = "year"
    target_conversions: Annotated[float, Field(gt=0, le=1e15)] | None = None
    target_value: Annotated[float, Field(gt=0, le=1e15)] | None = None
    average_value: Annotated[float, Field(gt=0, le=1e15)] | None = None
    overall_rate: Annotated[float, Field(gt=0, le=1)] | None = None
    step_rates: list[Annotated[float, Field(gt=0, le=1)]] | None = None
    from_: str | None = Field(None, alias="from", max_length=64)
    to: str | None = Field(None, max_length=64)

    @model_validator(mode="after")
    def _has_target(self) -> PlanIn:
        if (self.target_conversions is None) == (self.target_value is None):
            raise ValueError(
                "target_conversions: give exactly one of target_conversions and target_value"
            )
        return self


EventType = Literal["remarketing.due", "funnel.step_reached", "funnel.converted"]


Url = Annotated[str, Field(min_length=8, max_length=2000), AfterValidator(parsable_url)]
FunnelId = Annotated[str, Field(min_length=1, max_length=100)]


class WebhookIn(Strict):
    url: Url
    event_types: Annotated[list[EventType], Field(min_length=1)]
    funnel_id: FunnelId | None = Field(None, description="Only this funnel's events.")


class WebhookPatch(Strict):
    """Fields to change; ``funnel_id: null`` makes the endpoint hear every funnel again."""

    url: Url | None = None
    event_types: Annotated[list[EventType], Field(min_length=1)] | None = None
    funnel_id: FunnelId | None = None
    enabled: bool | None = Field(None, description="true re-enables a disabled endpoint.")

    @model_validator(mode="after")
    def _kept_fields_not_null(self) -> WebhookPatch:
        for name in ("url", "event_types", "enabled"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name}: must not be null (leave it out to keep it)")
        return self


ProjectId = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
]
DAY_S = 86_400
MAX_SHARE_S = 366 * DAY_S


class ProjectIn(Strict):
    id: ProjectId = Field(description="Letters, digits, '.', '_' and '-'; at most 64.")


class KeyIn(Strict):
    scope: Literal["write", "read", "admin"]
    name: Name | None = Field(None, description="What the key is for, to recognise it.")


class ShareLinkIn(Strict):
    """A public link to a funnel's chart. The range is the last ``last_days`` days (default:
    ``API_DEFAULT_RANGE_DAYS``) when the chart is fetched, or fixed: ``from`` (and ``to``,
    default: when fetched)."""

    funnel_id: FunnelId
    name: Name | None = None
    last_days: Annotated[int, Field(ge=1, le=3653)] | None = None
    from_: str | None = Field(None, alias="from", max_length=64)
    to: str | None = Field(None, max_length=64)
    count: CountMode | None = Field(None, description="Default: the funnel's count mode.")
    expires_in_seconds: Annotated[int, Field(ge=60, le=MAX_SHARE_S)] = 30 * DAY_S

    @model_validator(mode="after")
    def _one_range(self) -> ShareLinkIn:
        if self.last_days is not None and (self.from_ is not None or self.to is not None):
            raise ValueError("last_days: give last_days or a fixed from/to, not both")
        if self.to is not None and self.from_ is None:
            raise ValueError("to: a fixed range needs from as well")
        return self


# Query parameters several routes take.
From = Annotated[str | None, Query(alias="from", max_length=64, description="Entries from (incl.)")]
To = Annotated[str | None, Query(max_length=64, description="Entries until (excl.); default now")]
MAX_FILTERS = 20
Filters = Annotated[
    str | None,
    Query(
        max_length=4000,
        description=(
            'Conditions every event must meet, a JSON list like a step\'s "where": '
            '[{"property": "country", "op": "eq", "value": "DE"}].'
        ),
    ),
]
_FILTERS: TypeAdapter[list[ConditionIn]] = TypeAdapter(
    Annotated[list[ConditionIn], Field(max_length=MAX_FILTERS)]
)


def parse_filters(text: str | None) -> tuple[Condition, ...]:
    """The ``filters`` query parameter as conditions (400 naming the field at fault)."""
    if not text:
        return ()
    try:
        found = _FILTERS.validate_json(text)
    except ValidationError as exc:
        problems = [
            problem(".".join(["filters", *map(str, e["loc"])]), e["msg"]) for e in exc.errors()
        ]
        raise HTTPException(400, problems) from exc
    for i, c in enumerate(found):
        values = c.value if isinstance(c.value, list) else [c.value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise HTTPException(400, [problem(f"filters.{i}.value", "must be a finite number")])
    return tuple(Condition(c.property, c.op, c.value) for c in found)

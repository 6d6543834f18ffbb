"""Request and response shapes of projects, keys, share links and freshness."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from services.api.response_models import Out
from services.api.schemas import FunnelId, Name, Strict
from shared.events import format_time, from_micros
from shared.funnel import CountMode

ProjectId = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
]
DAY_S = 86_400
MAX_SHARE_S = 366 * DAY_S


def shown(us: int | None) -> str | None:
    """A stored instant (µs) as answers show it; ``None`` stays ``null``."""
    return None if us is None else format_time(from_micros(us))


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


class ProjectOut(Out):
    id: str
    created_at: str


class ProjectList(Out):
    projects: list[ProjectOut]


class KeyOut(Out):
    id: str
    prefix: str | None = Field(description="The key's first characters (null: made before ids).")
    scope: str
    project_id: str | None
    name: str | None
    created_at: str
    revoked_at: str | None


class NewKey(KeyOut):
    key: str = Field(description="The key itself: shown here only, stored as a hash.")


class KeyList(Out):
    keys: list[KeyOut]


class ShareLinkOut(Out):
    id: str
    funnel_id: str
    prefix: str
    name: str | None
    last_days: int | None
    from_: str | None = Field(alias="from")
    to: str | None
    count: str | None
    created_at: str
    expires_at: str
    revoked_at: str | None
    active: bool = Field(description="Neither expired nor revoked.")


class NewShareLink(ShareLinkOut):
    token: str = Field(description="Shown here only, stored as a hash.")
    path: str = Field(description="The chart's path: GET it without any header.")
    url: str


class ShareLinkList(Out):
    share_links: list[ShareLinkOut]


class PartitionFreshnessOut(Out):
    topic: str
    partition: int
    lag_records: int | None = Field(description="Records behind the end seen at observed_at.")
    complete_to: str | None
    lag_seconds: float | None = Field(description="How long ago complete_to is.")
    observed_at: str | None = Field(description="When the aggregator last asked for the end.")


class FreshnessOut(Out):
    complete_to: str | None = Field(
        description="Every event ingest acknowledged before this instant is counted (null: "
        "unknown, no aggregator has reported every partition yet)."
    )
    lag_records: int | None
    lag_seconds: float | None
    checked_at: str
    counted: bool | None = Field(
        None, description="With ?sent=: whether everything acknowledged before it is counted."
    )
    partitions: list[PartitionFreshnessOut]

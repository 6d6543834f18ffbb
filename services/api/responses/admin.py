"""What the project, key, share link and freshness routes answer."""

from __future__ import annotations

from pydantic import Field

from services.api.responses.common import Out


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

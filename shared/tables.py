"""Table definitions: the database contract between the services (changed only by migrations).

Instants are BIGINT microseconds since the Unix epoch (UTC): exact, ordered, and identical on
SQLite and PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only auto-increments an INTEGER PRIMARY KEY.
Serial = BigInteger().with_variant(Integer(), "sqlite")
# Columns that reports read inside PostgreSQL: binary JSON there (migration 0004).
Document = JSON().with_variant(JSONB(), "postgresql")

projects = Table(
    "projects",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("created_at_us", BigInteger, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_hash", String(64), primary_key=True),
    # NULL for an instance key (scope "instance"), which belongs to no project.
    Column("project_id", String(64), ForeignKey("projects.id", ondelete="CASCADE")),
    Column("scope", String(16), nullable=False),  # write | read | admin | instance
    Column("created_at_us", BigInteger, nullable=False),
    Column("revoked_at_us", BigInteger),
    # What a key is shown and revoked by (migration 0009); the key itself is never stored.
    Column("id", String(36), nullable=False),
    Column("prefix", String(16)),  # its first characters; NULL for keys made before 0009
    Column("name", String(200)),
    Index(None, "id", unique=True),
    Index(None, "project_id"),
    CheckConstraint(
        "(scope = 'instance') = (project_id IS NULL)",
        name="ck_api_keys_instance_key_has_no_project",
    ),
)

# Public links to a funnel's chart: the token is stored as its SHA-256 hash, like keys; what
# the link shows (range, count) is fixed here, so that a link cannot be altered.
share_links = Table(
    "share_links",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("token_hash", String(64), nullable=False),
    Column("prefix", String(16), nullable=False),
    Column("project_id", String(64), ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("funnel_id", String(36), ForeignKey("funnels.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200)),
    Column("last_days", Integer),  # a range relative to now, or [from_us, to_us)
    Column("from_us", BigInteger),
    Column("to_us", BigInteger),
    Column("count", String(16)),  # uniques | totals | NULL: the funnel's own
    Column("created_at_us", BigInteger, nullable=False),
    Column("expires_at_us", BigInteger, nullable=False),
    Column("revoked_at_us", BigInteger),
    Index(None, "token_hash", unique=True),
    Index(None, "project_id"),
)

events = Table(
    "events",
    metadata,
    Column("project_id", String(64), primary_key=True),
    Column("event_id", String(128), primary_key=True),
    Column("person_id", String(256), nullable=False),
    Column("name", String(200), nullable=False),
    Column("ts_us", BigInteger, nullable=False),
    Column("received_at_us", BigInteger, nullable=False),
    Column("properties", JSON, nullable=False),
    Column("context", JSON, nullable=False),
    # Both ids the event carried (person_id is one of them), for identity merge (0009).
    Column("user_id", String(256)),
    Column("anonymous_id", String(256)),
    Index(None, "project_id", "person_id", "ts_us"),
    # For the retention purge only: block ranges on PostgreSQL (migration 0008).
    Index(None, "ts_us", postgresql_using="brin"),
)

funnels = Table(
    "funnels",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("project_id", String(64), ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("definition", JSON, nullable=False),
    Column("version", Integer, nullable=False),
    Column("created_at_us", BigInteger, nullable=False),
    Column("updated_at_us", BigInteger, nullable=False),
    # Backfill of history for the current version: persons <= cursor are done.
    Column("backfill_cursor", String(256)),
    Column("backfill_done", Boolean, nullable=False),
    Column("backfill_persons", Integer, nullable=False),
    Index(None, "project_id"),
)

funnel_entries = Table(
    "funnel_entries",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    # No foreign key (migration 0007): the API deletes a funnel's rows with it.
    Column("funnel_id", String(36), nullable=False),
    Column("person_id", String(256), nullable=False),
    Column("t0_us", BigInteger, nullable=False),
    Column("reached", Integer, nullable=False),
    Column("step_times", Document, nullable=False),
    Column("disqualified", Boolean, nullable=False),
    Column("step_values", Document, nullable=False),
    # Where the entry is its person's counted one (shared.bounds, migration 0013): counted in
    # [lo, hi) when it starts there, lft_us < lo and rgt_us >= hi; NULL is unbounded.
    Column("lft_us", BigInteger),
    Column("rgt_us", BigInteger),
    Index(None, "funnel_id", "t0_us"),
    Index(None, "funnel_id", "person_id", "t0_us"),
)

funnel_touches = Table(
    "funnel_touches",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    # No foreign key (migration 0007): the API deletes a funnel's rows with it.
    Column("funnel_id", String(36), nullable=False),
    Column("person_id", String(256), nullable=False),
    Column("ts_us", BigInteger, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("values", Document, nullable=False),
    # Per property the touch has a value of, the instants of the person's previous and next
    # touch with a value of it: {property: [previous, next]} (shared.bounds, migration 0013).
    Column("neighbours", Document, nullable=False, server_default="{}"),
    Index(None, "funnel_id", "ts_us"),
    Index(None, "funnel_id", "person_id", "ts_us"),
)

# Changes of a funnel's stored progress, counted per Kafka partition (migration 0005).
funnel_changes = Table(
    "funnel_changes",
    metadata,
    Column(
        "funnel_id",
        String(36),
        ForeignKey("funnels.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("topic", String(249), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("changes", BigInteger, nullable=False),
)

consumer_offsets = Table(
    "consumer_offsets",
    metadata,
    Column("group_id", String(128), primary_key=True),
    Column("topic", String(249), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
    Column("updated_at_us", BigInteger, nullable=False),
)

# What the aggregator last saw of each partition, for the API's freshness figures (migration
# 0009): the partition's end offset and the instant just before it was asked for, and an
# instant up to which every event acknowledged in the partition is applied (never decreases).
aggregator_progress = Table(
    "aggregator_progress",
    metadata,
    Column("group_id", String(128), primary_key=True),
    Column("topic", String(249), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("end_offset", BigInteger),  # NULL: no aggregator has owned the partition yet
    Column("observed_at_us", BigInteger),
    Column("complete_to_us", BigInteger),
    Column("updated_at_us", BigInteger, nullable=False),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("topic", String(249), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("key", LargeBinary),
    Column("payload", LargeBinary),
    Column("reason", Text, nullable=False),
    Column("created_at_us", BigInteger, nullable=False),
)

remarketing_timers = Table(
    "remarketing_timers",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("funnel_id", String(36), ForeignKey("funnels.id", ondelete="CASCADE"), nullable=False),
    Column("person_id", String(256), nullable=False),
    Column("rule", String(200), nullable=False),
    Column("entry_t0_us", BigInteger, nullable=False),
    Column("occurrence", Integer, nullable=False),
    Column("due_us", BigInteger, nullable=False),
    Column("fire_at_us", BigInteger, nullable=False),  # due plus the rule's grace period
    Column("status", String(16), nullable=False),  # pending | fired | skipped
    Column("updated_at_us", BigInteger, nullable=False),
    UniqueConstraint(
        "funnel_id",
        "person_id",
        "rule",
        "entry_t0_us",
        "occurrence",
        name="uq_remarketing_timers_key",
    ),
    Index(None, "status", "fire_at_us"),
)

webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("project_id", String(64), ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("url", Text, nullable=False),
    Column("event_types", JSON, nullable=False),
    Column("funnel_id", String(36), ForeignKey("funnels.id", ondelete="CASCADE")),
    Column("secret", String(128), nullable=False),
    Column("previous_secret", String(128)),
    Column("previous_secret_until_us", BigInteger),
    Column("disabled_at_us", BigInteger),
    Column("disabled_reason", Text),
    Column("created_at_us", BigInteger, nullable=False),
    Column("updated_at_us", BigInteger, nullable=False),
    Index(None, "project_id"),
)

webhook_messages = Table(
    "webhook_messages",
    metadata,
    Column("id", String(64), primary_key=True),  # the webhook-id receivers deduplicate by
    Column("project_id", String(64), nullable=False),
    Column("type", String(64), nullable=False),
    Column("funnel_id", String(36)),
    Column("payload", JSON, nullable=False),
    Column("created_at_us", BigInteger, nullable=False),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("message_id", String(64), ForeignKey("webhook_messages.id"), nullable=False),
    Column(
        "endpoint_id",
        String(36),
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("status", String(16), nullable=False),  # pending | delivered | failed | disabled
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_us", BigInteger, nullable=False),
    Column("last_status_code", Integer),
    Column("created_at_us", BigInteger, nullable=False),
    Column("updated_at_us", BigInteger, nullable=False),
    UniqueConstraint("message_id", "endpoint_id"),
    Index(None, "status", "next_attempt_us"),
    Index(None, "endpoint_id", "created_at_us"),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column(
        "delivery_id",
        String(36),
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("attempted_at_us", BigInteger, nullable=False),
    Column("status_code", Integer),
    Column("latency_ms", Integer, nullable=False),
    Column("response", Text),
    Column("error", Text),
    Index(None, "delivery_id"),
)

# Identity merge (migration 0011). A claim: an event said that anon_id is user_id's. Claims
# are insert-only; what they resolve to (services/aggregator/identity.py) is kept in
# identity_links (one row per linked id: the id it is linked to and the claim that linked
# it; an id without a row is a person's root) and identity_refusals (a refused claim per
# pair of ids, with the reason). An id's rows are written only by the aggregator owning
# the id's partition; person_signals asks a partition's owner to re-resolve an id or to
# re-evaluate a person from an instant on (see docs/design.md, "Identity merge").
identity_claims = Table(
    "identity_claims",
    metadata,
    Column("project_id", String(64), primary_key=True),
    Column("event_id", String(128), primary_key=True),
    Column("anon_id", String(256), primary_key=True),
    Column("user_id", String(256), nullable=False),
    Column("ts_us", BigInteger, nullable=False),
    Index(None, "project_id", "anon_id"),
    Index(None, "project_id", "user_id"),
)

identity_links = Table(
    "identity_links",
    metadata,
    Column("project_id", String(64), primary_key=True),
    Column("id", String(256), primary_key=True),
    Column("target", String(256), nullable=False),
    Column("ts_us", BigInteger, nullable=False),
    Column("event_id", String(128), nullable=False),
    Index(None, "project_id", "target"),
)

identity_refusals = Table(
    "identity_refusals",
    metadata,
    Column("project_id", String(64), primary_key=True),
    Column("event_id", String(128), primary_key=True),
    Column("anon_id", String(256), primary_key=True),
    Column("user_id", String(256), nullable=False),
    Column("ts_us", BigInteger, nullable=False),
    Column("reason", Text, nullable=False),
    Index(None, "project_id", "user_id"),
)

person_signals = Table(
    "person_signals",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("topic", String(249), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("project_id", String(64), nullable=False),
    Column("person_id", String(256), nullable=False),
    Column("reason", String(16), nullable=False),  # resolve | evaluate
    Column("since_us", BigInteger, nullable=False),
    Index(None, "topic", "partition"),
)

# The (funnel, person) pairs whose stored progress each committed batch changed, written in
# the batch's transaction (migration 0012): the feed the API's columnar replicas follow.
# ``tx``: the writing transaction's id on PostgreSQL (NULL on SQLite, whose writers commit in
# id order). Rows older than the replicas need are purged (services/api/replica.py).
progress_log = Table(
    "progress_log",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("funnel_id", String(36), nullable=False),
    Column("person_id", String(256), nullable=False),
    Column("tx", BigInteger),
    Column("written_at_us", BigInteger, nullable=False),
    Index(None, "tx"),
    Index(None, "written_at_us"),
    sqlite_autoincrement=True,
)

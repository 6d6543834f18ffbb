"""Every metric the aggregator exports."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter(
    "funnel_aggregator_events_total",
    "Records consumed, by outcome (stored, duplicate, dead_letter, expired: older than the"
    " retention horizon, kept as dead letters too).",
    ["outcome"],
)
BATCH_SECONDS = Histogram(
    "funnel_aggregator_batch_duration_seconds",
    "Time to apply one poll batch, from decode to commit.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
LAG_RECORDS = Gauge(
    "funnel_aggregator_lag_records", "Records not yet applied, per partition.", ["partition"]
)
LAG_SECONDS = Gauge(
    "funnel_aggregator_lag_seconds",
    "Age of the newest applied record (now - its Kafka timestamp), per partition.",
    ["partition"],
)
LAST_EVENT_TIME = Gauge(
    "funnel_aggregator_last_event_timestamp_seconds",
    "Event time of the newest event applied, as a Unix timestamp.",
)
BACKFILL_PERSONS = Counter(
    "funnel_aggregator_backfill_persons_total", "Persons recomputed by funnel backfills."
)
PERSONS_READ = Counter(
    "funnel_aggregator_person_histories_total",
    "Persons re-evaluated by batches, by where their stored state came from (held in"
    " memory, or read from the database).",
    ["source"],
)
KNOWN_ITEMS = Gauge(
    "funnel_aggregator_known_items",
    "Persons plus their events held in memory (at most AGGREGATOR_KNOWN_CAPACITY).",
)
REMARKETING = Counter(
    "funnel_remarketing_triggers_total",
    "Re-marketing timers handled when due, by funnel (its id, and its name as an extra label),"
    " rule and outcome (fired, skipped).",
    ["funnel_id", "funnel_name", "rule", "outcome"],
)
WEBHOOK_DELIVERIES = Counter(
    "funnel_webhook_deliveries_total",
    "Webhook delivery attempts by outcome (delivered, retry, failed, disabled, refused).",
    ["outcome"],
)
WEBHOOK_PENDING = Gauge("funnel_webhook_pending", "Webhook deliveries waiting to be sent.")
WEBHOOK_SECONDS = Histogram(
    "funnel_webhook_delivery_duration_seconds", "Time for one webhook HTTP attempt."
)
DATABASE_ERRORS = Counter(
    "funnel_aggregator_database_errors_total",
    "Failures because the database was unavailable, each retried after a backoff, by"
    " operation (offsets, batch, backfill, purge, statistics, timers, webhooks).",
    ["operation"],
)

# Label values known in advance start at 0, so that a panel shows 0 rather than no data.
for _outcome in ("stored", "duplicate", "dead_letter", "expired"):
    EVENTS.labels(_outcome)
for _source in ("memory", "database"):
    PERSONS_READ.labels(_source)
for _operation in ("offsets", "batch", "backfill", "purge", "statistics", "timers", "webhooks"):
    DATABASE_ERRORS.labels(_operation)
for _outcome in ("delivered", "retry", "failed", "disabled", "refused"):
    WEBHOOK_DELIVERIES.labels(_outcome)
IDENTITY_LINKS = Counter(
    "funnel_identity_links_total",
    "Ids linked to another id (identity merge); a link that a late claim moves counts again.",
)
IDENTITY_REFUSALS = Counter(
    "funnel_identity_links_refused_total",
    "Refused links, once per pair of ids, by reason: already_linked (the anonymous id is"
    " linked to another id), both_have_links (both ids already have links of their own).",
    ["reason"],
)

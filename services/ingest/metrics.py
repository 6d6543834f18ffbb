"""Every metric ingest exports."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter(
    "funnel_ingest_events_total",
    "Events received, by outcome (accepted, rejected, unavailable, overloaded) and reason.",
    ["outcome", "reason"],
)
REQUEST_SECONDS = Histogram(
    "funnel_ingest_request_duration_seconds", "Time to answer an ingest request.", ["route"]
)
PRODUCE_SECONDS = Histogram(
    "funnel_ingest_produce_duration_seconds",
    "Time from handing a request's records to the producer to the broker's acknowledgement.",
)
IN_FLIGHT = Gauge("funnel_ingest_requests_in_flight", "Ingest requests being handled.")
SHED = Counter(
    "funnel_ingest_shed_requests_total",
    "Requests answered 429 before their body was read, by the bound they met "
    "(in_flight, body_bytes).",
    ["reason"],
)

# Label values known in advance start at 0, so that a panel shows 0 rather than no data.
OUTCOMES = (
    ("accepted", ""),
    ("rejected", "invalid"),
    ("unavailable", "broker"),
    ("overloaded", "rate_limited"),
    ("overloaded", "buffer_full"),
)
for _outcome, _reason in OUTCOMES:
    EVENTS.labels(_outcome, _reason)
for _route in ("events", "segment"):
    REQUEST_SECONDS.labels(_route)
for _reason in ("in_flight", "body_bytes"):
    SHED.labels(_reason)

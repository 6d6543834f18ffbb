"""The retention horizon: ingest never accepts what an aggregator lagging under a day expires."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared.events import to_micros
from shared.retention import DAY_US, ingest_horizon, retention_horizon

NOW = st.integers(min_value=1_700_000_000_000_000, max_value=2_100_000_000_000_000)


def test_the_horizon_is_midnight_utc_the_retention_days_ago():
    now = 1_796_140_000_000_000  # 2026-12-01T16:26:40Z
    assert retention_horizon(400, now) == (now // DAY_US - 400) * DAY_US
    assert retention_horizon(400, now) % DAY_US == 0
    assert to_micros(ingest_horizon(400, now)) == retention_horizon(399, now)


@given(now=NOW, lag=st.integers(min_value=0, max_value=DAY_US - 1), days=st.integers(1, 1000))
def test_an_event_ingest_accepts_is_not_expired_by_an_aggregator_less_than_a_day_behind(
    now, lag, days
):
    oldest_accepted = to_micros(ingest_horizon(days, now))
    assert oldest_accepted >= retention_horizon(days, now + lag)


@given(now=NOW, days=st.integers(1, 1000))
def test_ingest_refuses_nothing_the_aggregator_would_keep_for_another_day(now, days):
    refused_latest = to_micros(ingest_horizon(days, now)) - 1
    assert refused_latest < retention_horizon(days, now + DAY_US)

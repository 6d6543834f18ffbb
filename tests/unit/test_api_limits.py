"""Request bounds of the query API, checked without making what they bound."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from fastapi import HTTPException
from hypothesis import given, settings
from hypothesis import strategies as st

from services.api.body import loads
from services.api.limits import cohort_count
from services.api.reports.trends import cohort_bounds

ZONES = ["UTC", "Europe/Paris", "America/St_Johns", "Pacific/Kiritimati", "Pacific/Pago_Pago"]


@settings(deadline=None)
@given(
    start=st.datetimes(
        datetime(1970, 1, 1),  # noqa: DTZ001 - hypothesis takes naive bounds
        datetime(9000, 1, 1),  # noqa: DTZ001
        timezones=st.just(UTC),
    ),
    span=st.timedeltas(timedelta(0), timedelta(days=1200)),
    interval=st.sampled_from(["day", "week", "month"]),
    zone=st.sampled_from(ZONES),
)
def test_cohort_count_is_never_below_the_cohorts_made(start, span, interval, zone):
    made = sum(1 for _ in cohort_bounds(start, start + span, interval, ZoneInfo(zone)))
    assert made <= cohort_count(start, start + span, interval) <= made + 3


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        (b'{"a": [1, NaN]}', "a.1", "NaN is not a JSON number"),
        (b'{"a": {"b": -Infinity}}', "a.b", "-Infinity is not a JSON number"),
        (b'{"a": 1e400}', "a", "finite number"),
        (b'{"a": 9223372036854775808}', "a", "signed 64-bit range"),
        (b'{"a": "x\\u0000"}', "a", "NUL character"),
        (
            b"[" * 40 + b"]" * 40,
            "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0",
            "nests",
        ),
        (b"[" * 50_000, "(body)", "nests deeper"),
        (b'{"name": "\\ud800"}', "name", "lone surrogate"),
        (b'{"\\udfff": 1}', "\udfff", "key must not contain a lone surrogate"),
    ],
)
def test_bodies_the_database_cannot_keep_are_refused_naming_the_field(body, field, reason):
    with pytest.raises(HTTPException) as refused:
        loads(body)
    assert refused.value.status_code == 422
    [problem] = refused.value.detail
    assert (problem["field"], reason in problem["reason"]) == (field, True)


def test_the_64_bit_ends_and_ordinary_numbers_are_kept():
    assert loads(b"[9223372036854775807, -9223372036854775808, 1.5, -0.0, 1e308]") == [
        2**63 - 1,
        -(2**63),
        1.5,
        -0.0,
        1e308,
    ]

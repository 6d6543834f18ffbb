"""Which errors mean "the database is away, retry" and which "this data is refused"; backoff."""

from __future__ import annotations

import sqlite3

import asyncpg
import pytest
from sqlalchemy import exc as sa_exc

from services.aggregator.consumer import Backoff
from shared.db import is_unavailable


def _wrapped(kind, orig: BaseException) -> BaseException:
    return kind("INSERT ...", {}, orig)


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connect call failed"),
        TimeoutError(),
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
        asyncpg.exceptions.SerializationError("could not serialize access"),
        asyncpg.InterfaceError("connection is closed"),
        _wrapped(sa_exc.DBAPIError, asyncpg.exceptions.AdminShutdownError("shutting down")),
        _wrapped(sa_exc.OperationalError, sqlite3.OperationalError("database is locked")),
        _wrapped(sa_exc.InterfaceError, asyncpg.InterfaceError("connection is closed")),
        sa_exc.TimeoutError("QueuePool limit reached"),
    ],
    ids=repr,
)
def test_errors_of_an_unavailable_database_are_retried(error):
    assert is_unavailable(error)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.CharacterNotInRepertoireError("invalid byte sequence: 0x00"),
        asyncpg.exceptions.StringDataRightTruncationError("value too long"),
        asyncpg.exceptions.UniqueViolationError("duplicate key"),
        # asyncpg's client-side DataError is an InterfaceError to SQLAlchemy.
        _wrapped(sa_exc.InterfaceError, asyncpg.exceptions._base.DataError("invalid input")),
        _wrapped(sa_exc.IntegrityError, sqlite3.IntegrityError("refused by a trigger")),
        ValueError("a bug of ours, triggered by one event"),
        RecursionError(),
    ],
    ids=repr,
)
def test_errors_that_data_can_cause_are_not_unavailability(error):
    assert not is_unavailable(error)


def test_a_refused_statement_whose_connection_then_broke_is_retried():
    refused = asyncpg.exceptions.CharacterNotInRepertoireError("0x00")
    with pytest.raises(sa_exc.InterfaceError) as broken:
        _rollback_fails_after(refused)
    assert broken.value.__context__ is refused
    assert is_unavailable(broken.value)


def _rollback_fails_after(refused: BaseException) -> None:
    try:
        raise refused
    except asyncpg.PostgresError:
        raise _wrapped(sa_exc.InterfaceError, asyncpg.InterfaceError("closed")) from None


def test_backoff_doubles_up_to_its_cap_and_starts_again_after_a_success():
    backoff = Backoff(first_s=0.2, cap_s=10.0)
    delays = [backoff.next() for _ in range(10)]
    for delay, nominal in zip(delays, [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10, 10, 10, 10], strict=True):
        assert nominal * 0.9 <= delay <= nominal * 1.1
    assert backoff.reset() >= 0
    assert backoff.failures == 0
    assert backoff.next() <= 0.22

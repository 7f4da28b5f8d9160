"""A database outage is a 503 to retry, a bad statement is not (the soak saw 500s while
Postgres restarted and while pg_terminate_backend killed the web's connections)."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError, ProgrammingError

from infra.db import is_database_outage
from web.errors import error_answer


class _PgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


OUTAGES = [
    OperationalError("SELECT 1", {}, ConnectionRefusedError()),
    InterfaceError("SELECT 1", {}, Exception("the underlying connection is closed")),
    DBAPIError("SELECT 1", {}, _PgError("57P01"), connection_invalidated=False),  # admin shutdown
    DBAPIError("SELECT 1", {}, _PgError("57P03"), connection_invalidated=False),  # starting up
    DBAPIError("SELECT 1", {}, _PgError("08006"), connection_invalidated=False),  # connection failure
    DBAPIError("SELECT 1", {}, Exception("gone"), connection_invalidated=True),
    asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    ConnectionResetError(),
]
NOT_OUTAGES = [
    IntegrityError("INSERT", {}, _PgError("23505")),
    ProgrammingError("SELEC", {}, _PgError("42601")),
    DBAPIError("SELECT 1", {}, _PgError("22007"), connection_invalidated=False),  # bad interval text
    ValueError("not a database error"),
]


@pytest.mark.parametrize("exc", OUTAGES, ids=lambda e: type(e).__name__)
def test_an_outage_is_a_503(exc: Exception) -> None:
    assert is_database_outage(exc)
    answer = error_answer(exc)
    assert answer is not None and answer[0] == 503 and answer[1]["error"] == "unavailable"


@pytest.mark.parametrize("exc", NOT_OUTAGES, ids=lambda e: type(e).__name__)
def test_a_statement_error_is_not_an_outage(exc: Exception) -> None:
    assert not is_database_outage(exc)
    assert error_answer(exc) is None

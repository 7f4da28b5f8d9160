"""Postgres: the SQLAlchemy async engine and the start-up wait."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from infra.retry import STARTUP, retry
from infra.settings import Settings

# SQLSTATE classes of an outage rather than of the statement: 08 connection exception,
# 57 operator intervention (57P01 admin shutdown = pg_terminate_backend or a fast shutdown,
# 57P03 cannot connect now = still starting up).
_OUTAGE_SQLSTATE_CLASSES = ("08", "57")


def is_database_outage(exc: BaseException) -> bool:
    """Whether ``exc`` says Postgres is away (restarting, connection killed or refused),
    not that the statement was wrong: callers answer "retry later" instead of failing."""
    if isinstance(exc, (OperationalError, InterfaceError, asyncpg.PostgresConnectionError, ConnectionError)):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        exc = exc.orig if exc.orig is not None else exc
    sqlstate = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    return isinstance(sqlstate, str) and sqlstate[:2] in _OUTAGE_SQLSTATE_CLASSES


def create_engine(settings: Settings, pool_size: int = 5, pre_ping: bool = False) -> AsyncEngine:
    """The async engine. No ping per checkout by default: ``pool_pre_ping`` costs a round
    trip on every ``engine.connect()`` (18 % of a ``GET /deals`` in the web process, measured
    with py-spy; see docs/performance.md). A connection that died meanwhile (Postgres
    restarted) fails its one statement with a disconnect error, on which SQLAlchemy discards
    every pooled connection older than it, so at most one request per process sees the
    restart; ``pool_recycle`` keeps connections from outliving idle timeouts of proxies."""
    # ``pool_size`` kept connections plus as many again on demand, as before, but all of
    # them kept once opened: an overflow connection closed on return is reopened by the
    # next burst (a TLS/auth handshake, 3 % of a POST /offers under 16 connections).
    return create_async_engine(
        settings.sqlalchemy_url,
        pool_size=2 * pool_size,
        max_overflow=0,
        pool_pre_ping=pre_ping,
        pool_recycle=1800,
    )


@asynccontextmanager
async def read_connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A pooled connection for reads only, in autocommit: no ``BEGIN``/``ROLLBACK`` round
    trips around the query (21 % of a POST /offers' creator check, measured with py-spy).
    Under READ COMMITTED each statement sees its own snapshot either way, so reads see the
    same data; anything that writes uses ``engine.begin()``."""
    async with engine.connect() as conn:
        yield await conn.execution_options(isolation_level="AUTOCOMMIT")


async def wait_for_postgres(settings: Settings, timeout: float) -> None:
    async def connect() -> None:
        conn = await asyncpg.connect(settings.asyncpg_dsn, timeout=5)
        await conn.close()

    try:
        await retry(
            STARTUP,
            connect,
            what="postgres",
            retry_on=(TimeoutError, OSError, asyncpg.PostgresError),
            deadline_seconds=timeout,
        )
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        raise TimeoutError(f"Postgres not ready after {timeout:.0f}s: {exc}") from exc

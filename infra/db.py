"""Postgres: the SQLAlchemy async engine and the start-up wait."""

from __future__ import annotations

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from infra.retry import STARTUP, retry
from infra.settings import Settings


def create_engine(settings: Settings, pool_size: int = 5) -> AsyncEngine:
    return create_async_engine(settings.sqlalchemy_url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


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

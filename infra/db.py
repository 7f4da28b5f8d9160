"""Postgres: the SQLAlchemy async engine and the start-up wait."""

from __future__ import annotations

import asyncio

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from infra.logging import get_logger
from infra.settings import Settings

log = get_logger(__name__)


def create_engine(settings: Settings, pool_size: int = 5) -> AsyncEngine:
    return create_async_engine(settings.sqlalchemy_url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


async def wait_for_postgres(settings: Settings, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.5
    while True:
        try:
            conn = await asyncpg.connect(settings.asyncpg_dsn, timeout=5)
            await conn.close()
            return
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            if loop.time() >= deadline:
                raise TimeoutError(f"Postgres not ready after {timeout:.0f}s: {exc}") from exc
            log.warning("postgres_not_ready", error=type(exc).__name__, retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

"""A database and a topic namespace of their own for a test session or module: set up, then dropped."""

from __future__ import annotations

import asyncio

import asyncpg

from tests.support.stack import dev_env, run_cli


async def _admin(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def prepare_stack_env(name: str, **overrides: str) -> dict[str, str]:
    """A database and a topic namespace of its own, migrated, with schemas and topics."""
    import os

    env = {**os.environ, **dev_env()}
    base_dsn = env["DATABASE_URL"]
    database = f"sm_test_{name}"
    asyncio.run(_admin(base_dsn, f'CREATE DATABASE "{database}"'))
    env.update(
        {
            "DATABASE_URL": base_dsn.rsplit("/", 1)[0] + f"/{database}",
            "TOPIC_NAMESPACE": f"t{name}.",
            "CONSUMER_GROUP_PREFIX": f"test{name}",
            "LOG_LEVEL": "INFO",
            "STARTUP_RETRY_SECONDS": "120",
            "SSE_HEARTBEAT_SECONDS": "2",
            "METRICS_PORT": "0",
            "S3_BUCKET": f"sm-test-{name}",
            **overrides,
        }
    )
    run_cli(env, "migrate")
    run_cli(env, "schemas", "register")
    run_cli(env, "topics", "create")
    return env


def drop_stack_env(env: dict[str, str]) -> None:
    admin_dsn = env["DATABASE_URL"].rsplit("/", 1)[0] + "/spacemusic"
    database = env["DATABASE_URL"].rsplit("/", 1)[1]
    asyncio.run(_admin(admin_dsn, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))

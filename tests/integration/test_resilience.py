"""Start-up robustness: a worker started before Kafka is up keeps retrying and then works;
a process without a required setting fails fast with a clear message."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

from tests.support.deals import deal_status, offer_event
from tests.support.stack import Process, free_port, run_cli


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def tcp_forwarder(port: int, target_host: str, target_port: int):
    """Stands in for 'the broker comes up': nothing listens on `port` until this starts."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(target_host, target_port)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        yield server
    finally:
        server.close()


async def test_worker_started_before_kafka_retries_then_works(stack_env, engine, publisher) -> None:
    port = free_port()
    real_host, real_port = stack_env["KAFKA_BOOTSTRAP_SERVERS"].split(":")
    env = {
        **stack_env,
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
        "CONSUMER_GROUP_PREFIX": f"late{uuid.uuid4().hex[:6]}",
    }
    proc = Process("worker-before-kafka", env, "worker")
    try:
        proc.wait_for_log('"kafka_not_ready"', timeout=30, count=2)
        assert proc.proc.poll() is None, "the worker died instead of retrying"
        async with tcp_forwarder(port, real_host, int(real_port)):
            await asyncio.to_thread(proc.wait_for_log, '"partitions_assigned"', 90)
            event = offer_event()
            await publisher.publish(event)
            deadline = asyncio.get_running_loop().time() + 60
            while await deal_status(engine, event.offer_id) != "valued":
                assert asyncio.get_running_loop().time() < deadline, proc.output()[-3000:]
                await asyncio.sleep(0.3)
    finally:
        proc.stop()


def test_missing_required_setting_fails_fast(stack_env) -> None:
    env = {k: v for k, v in stack_env.items() if k != "SCHEMA_REGISTRY_URL"}
    for command in (["worker"], ["web"], ["topics", "create"]):
        result = run_cli(env, *command, check=False, timeout=30)
        assert result.returncode != 0
        assert "SCHEMA_REGISTRY_URL" in result.stderr


def test_migrations_downgrade_and_upgrade(stack_env) -> None:
    import asyncpg

    database = f"sm_mig_{uuid.uuid4().hex[:8]}"
    base = stack_env["DATABASE_URL"].rsplit("/", 1)[0]

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(base + "/spacemusic")
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{database}"'))
    try:
        env = {**stack_env, "DATABASE_URL": f"{base}/{database}"}
        run_cli(env, "migrate")
        run_cli(env, "migrate", "--downgrade", "--revision", "0001")

        async def indexes() -> set[str]:
            conn = await asyncpg.connect(f"{base}/{database}")
            try:
                rows = await conn.fetch("SELECT indexname FROM pg_indexes WHERE tablename = 'offers'")
                return {r["indexname"] for r in rows}
            finally:
                await conn.close()

        assert "ix_offers_status" not in asyncio.run(indexes())
        run_cli(env, "migrate", "--downgrade", "--revision", "base")
        run_cli(env, "migrate")
        assert "ix_offers_status" in asyncio.run(indexes())
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))

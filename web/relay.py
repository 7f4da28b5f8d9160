"""The outbox relay: publishes events a command committed but did not get out itself.

Every web process runs one (``cleanup_ctx``). Each round claims the oldest unsent rows queued
more than ``OUTBOX_RELAY_AFTER_SECONDS`` ago (the handler that queued a younger row is still
sending it), with ``FOR UPDATE SKIP LOCKED`` so several web processes share the work without
sending a row twice at once, publishes them in order and marks them sent in the same
transaction. A broker or database outage is retried with ``TRANSIENT_IO`` backoff (one log
line per outage). Sent rows are pruned after a week.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import timedelta

from aiohttp import web
from aiokafka.errors import KafkaError
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.kafka import EventPublisher
from infra.logging import get_logger
from infra.retry import TRANSIENT_IO, retry
from state import outbox
from web.keys import ENGINE, PUBLISHER, SETTINGS

log = get_logger(__name__)

BATCH = 200
KEEP_SENT = timedelta(days=7)
PRUNE_EVERY_SECONDS = 600.0
# Marks wait this long to collect the rows of concurrent requests into one UPDATE: each flush
# is four round trips (BEGIN, SET, UPDATE, COMMIT), and flushing on every wake-up cost ~8 %
# of a POST /offers under load. Far below OUTBOX_RELAY_AFTER_SECONDS, so the relay never
# takes a row whose handler has sent it and is only waiting for its mark.
MARK_COALESCE_SECONDS = 0.05
_TRANSIENT = (KafkaError, OSError, TimeoutError, OperationalError, DBAPIError)


class SentMarks:
    """Marks rows sent in batches, off the request path: one UPDATE for every row sent since
    the last one, committed without waiting for the WAL flush (``synchronous_commit`` off). A
    mark lost to a crash (or to a failed UPDATE) only makes the relay send the same message
    again later, which every consumer drops by its event id."""

    def __init__(self, engine: AsyncEngine, coalesce: float = MARK_COALESCE_SECONDS) -> None:
        self._engine = engine
        self._coalesce = coalesce
        self._pending: list[int] = []
        self._wake = asyncio.Event()

    def add(self, seqs: list[int]) -> None:
        self._pending.extend(seqs)
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self._coalesce)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        seqs, self._pending = self._pending, []
        if not seqs:
            return
        try:
            async with self._engine.begin() as conn:
                await conn.execute(text("SET LOCAL synchronous_commit TO OFF"))
                await outbox.mark_sent(conn, seqs)
        except Exception as exc:  # noqa: BLE001 - the relay re-sends what stays unmarked
            log.warning("outbox_mark_failed", error=type(exc).__name__, count=len(seqs))


SENT_MARKS = web.AppKey("outbox_sent_marks", SentMarks)


async def relay_once(engine: AsyncEngine, publisher: EventPublisher, after: timedelta, limit: int = BATCH) -> int:
    """Publish one batch of due rows; how many were sent."""
    async with engine.begin() as conn:
        due = await outbox.claim_due(conn, after, limit)
        if not due:
            return 0
        await publisher.send_encoded([p.message for p in due])
        await outbox.mark_sent(conn, [p.seq for p in due])
    log.info("outbox_relayed", count=len(due), oldest_seq=due[0].seq)
    return len(due)


async def relay_forever(engine: AsyncEngine, publisher: EventPublisher, after: timedelta, poll: float) -> None:
    pruned_at = time.monotonic()
    while True:
        try:
            sent = await retry(
                TRANSIENT_IO,
                lambda: relay_once(engine, publisher, after),
                what="outbox_relay",
                retry_on=_TRANSIENT,
            )
            if time.monotonic() - pruned_at > PRUNE_EVERY_SECONDS:
                pruned_at = time.monotonic()
                async with engine.begin() as conn:
                    await outbox.prune_sent(conn, KEEP_SENT)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the relay must outlive any one bad round
            log.error("outbox_relay_failed", error=type(exc).__name__, detail=str(exc)[:200])
            sent = 0
        if sent < BATCH:
            await asyncio.sleep(poll)


async def relay_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    after = timedelta(seconds=settings.outbox_relay_after_seconds)
    marks = app[SENT_MARKS] = SentMarks(app[ENGINE])
    tasks = [
        asyncio.create_task(marks.run(), name="outbox-sent-marks"),
        asyncio.create_task(
            relay_forever(app[ENGINE], app[PUBLISHER], after, settings.outbox_relay_poll_seconds), name="outbox-relay"
        ),
    ]
    yield
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await marks.flush()

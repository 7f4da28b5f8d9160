"""One LISTEN connection per web process, fanning deal changes out to SSE clients.

The NOTIFY payload is only a wake-up: the feed always re-reads ``deal_changes`` after the
last sequence it has broadcast, so a lost or coalesced notification costs nothing but a
little latency (a slow poll covers the case where LISTEN itself silently died). Postgres is
the truth; any number of web processes can run this feed side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.logging import get_logger
from infra.metrics import PROJECTION_LAG
from infra.retry import TRANSIENT_IO, retry
from projections.projector import NOTIFY_CHANNEL
from projections.queries import changes_after, latest_change_seq

log = get_logger(__name__)

SUBSCRIBER_QUEUE = 1000


class Broadcast:
    """One change as every subscriber receives it: its JSON and SSE frame are encoded once
    for all streams, not once per stream (2,000 streams: 2,000 ``json.dumps`` per change)."""

    __slots__ = ("_frame", "change", "data")

    def __init__(self, change: dict[str, Any]) -> None:
        self.change = change
        self.data = json.dumps(change, separators=(",", ":"))
        self._frame: bytes | None = None

    def frame(self, sep: str = "\r\n") -> bytes:
        """``id``, ``event: deal`` and ``data`` lines as aiohttp_sse's ``send`` writes them
        (the JSON has no line breaks: ``json.dumps`` escapes them)."""
        if self._frame is None:
            self._frame = f"id: {self.change['seq']}{sep}event: deal{sep}data: {self.data}{sep}{sep}".encode()
        return self._frame


# A wake-up a stream schedules for itself once per heartbeat (see web/stream.py).
TICK = object()


@dataclass(eq=False)
class Subscription:
    queue: asyncio.Queue[Broadcast | object | None] = field(default_factory=lambda: asyncio.Queue(SUBSCRIBER_QUEUE))
    overflowed: bool = False


class DealChangeFeed:
    def __init__(self, dsn: str, engine: AsyncEngine, poll_interval: float = 5.0) -> None:
        self._dsn = dsn
        self._engine = engine
        self._poll_interval = poll_interval
        self._wake = asyncio.Event()
        self._subscribers: set[Subscription] = set()
        self._head = 0
        self._task: asyncio.Task[None] | None = None
        self._listen_conn: asyncpg.Connection | None = None

    @property
    def head(self) -> int:
        return self._head

    async def start(self) -> None:
        async with self._engine.connect() as conn:
            self._head = await latest_change_seq(conn)
        self._task = asyncio.create_task(self._run(), name="deal-change-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close_listener()
        for sub in list(self._subscribers):
            sub.queue.put_nowait(None)

    def subscribe(self) -> Subscription:
        sub = Subscription()
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def _ensure_listener(self) -> None:
        if self._listen_conn is not None and not self._listen_conn.is_closed():
            return
        await self._close_listener()
        self._listen_conn = await asyncpg.connect(self._dsn)
        await self._listen_conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
        self._wake.set()  # re-read: changes may have landed while we were not listening
        log.info("deal_feed_listening", channel=NOTIFY_CHANNEL, head=self._head)

    async def _close_listener(self) -> None:
        if self._listen_conn is not None:
            with contextlib.suppress(Exception):
                await self._listen_conn.close()
            self._listen_conn = None

    async def _run(self) -> None:
        # The database going away is an outage to wait out: clients keep their sequence
        # and catch up from Postgres once it is back.
        while True:
            await retry(TRANSIENT_IO, self._wait_and_drain, what="deal_feed", retry_on=(Exception,))

    async def _wait_and_drain(self) -> None:
        try:
            await self._ensure_listener()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_interval)
            self._wake.clear()
            await self._drain()
        except Exception:
            await self._close_listener()
            raise

    async def _drain(self) -> None:
        while True:
            async with self._engine.connect() as conn:
                batch = await changes_after(conn, self._head, limit=500)
            if not batch:
                return
            for change in batch:
                self._head = change["seq"]
                self._broadcast(change)
            PROJECTION_LAG.set(self._head)

    def _broadcast(self, change: dict[str, Any]) -> None:
        item = Broadcast(change)
        for sub in list(self._subscribers):
            try:
                sub.queue.put_nowait(item)
            except asyncio.QueueFull:
                # A slow client: stop queueing for it; it re-reads from Postgres by sequence.
                sub.overflowed = True

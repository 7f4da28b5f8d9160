"""GET /offers/events/deals: the SSE deals stream.

``id:`` is the change sequence. A client that reconnects sends ``Last-Event-ID`` and is
first served everything after it from Postgres, then live changes from the feed; sequences
already sent are skipped, so the switch-over neither loses nor repeats an update.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import web
from aiohttp_sse import EventSourceResponse

from infra.metrics import SSE_CLIENTS, SSE_EVENTS_SENT
from projections.queries import changes_after
from web.auth.permissions import CREATOR_SCOPE, PRINCIPAL
from web.contract import MAX_SEQ
from web.deals import hide_staff_in_deal
from web.feed import TICK, Broadcast
from web.keys import ENGINE, FEED, SETTINGS

BACKFILL_BATCH = 500


def _start_seq(request: web.Request, head: int) -> int:
    raw = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    if raw is None or raw == "":
        return head
    try:
        value = int(raw)
    except ValueError as exc:
        raise web.HTTPBadRequest(text="Last-Event-ID must be a change sequence number") from exc
    if value < 0:
        raise web.HTTPBadRequest(text="Last-Event-ID must not be negative")
    if value > MAX_SEQ:
        raise web.HTTPBadRequest(text="Last-Event-ID is not a change sequence (too large)")
    return value


def stream_filter(request: web.Request) -> str | None:
    """Which creator's deals this caller may see (None: all). The auth layer sets it."""
    return request.get(CREATOR_SCOPE)


# Below this many bytes waiting in the socket's buffer a write returns at once, so it needs
# no send timeout (a timer per stream per event is most of a fan-out's CPU; see
# docs/performance.md). A client that lets more pile up gets aiohttp_sse's timed send, which
# aborts a stalled connection.
FAST_WRITE_BUFFER = 16 * 1024


async def _send(resp: EventSourceResponse, change: dict[str, Any]) -> None:
    await resp.send(json.dumps(change, separators=(",", ":")), id=str(change["seq"]), event="deal")
    SSE_EVENTS_SENT.inc()


async def _send_broadcast(resp: EventSourceResponse, transport: Any, item: Broadcast) -> None:
    if transport is not None and transport.get_write_buffer_size() < FAST_WRITE_BUFFER:
        await resp.write(item.frame())
    else:
        await resp.send(item.data, id=str(item.change["seq"]), event="deal")
    SSE_EVENTS_SENT.inc()


async def deals_stream(request: web.Request) -> web.StreamResponse:
    feed = request.app[FEED]
    engine = request.app[ENGINE]
    last = _start_seq(request, feed.head)
    creator = stream_filter(request)
    # A creator's stream shows staff subjects as "staff" (web/deals.py), like its reads.
    principal = request.get(PRINCIPAL)
    own = principal.subject if creator is not None and principal is not None else ""
    subscription = feed.subscribe()
    SSE_CLIENTS.inc()
    heartbeat = request.app[SETTINGS].sse_heartbeat_seconds
    resp = EventSourceResponse(ping_interval=heartbeat, headers={"X-Accel-Buffering": "no"})
    try:
        await resp.prepare(request)
        await resp.send(json.dumps({"head": feed.head, "resume_from": last}), event="ready")
        last = await _backfill(resp, engine, last, creator, own)
        await _relay(resp, request.transport, subscription, engine, last, creator, heartbeat, own)
    except (ConnectionResetError, ConnectionError):
        pass  # the client went away; nothing to answer
    finally:
        feed.unsubscribe(subscription)
        SSE_CLIENTS.dec()
        if resp.prepared:
            resp.stop_streaming()
            with contextlib.suppress(Exception):
                await resp.wait()
    return resp


async def _relay(
    resp: EventSourceResponse,
    transport: Any,
    subscription: Any,
    engine: Any,
    last: int,
    creator: str | None,
    heartbeat: float,
    own: str = "",
) -> None:
    """Live changes from the feed until the client leaves or the feed stops; after an
    overflow the gap is served from Postgres again."""
    loop = asyncio.get_running_loop()
    ticker: asyncio.TimerHandle | None = None

    def tick() -> None:
        # Once per heartbeat, so a client that left while nothing changed is noticed (the
        # heartbeat ping fails, is_connected() turns False) and its subscription released.
        # One timer per stream per heartbeat, not one per event as a bounded get() costs.
        nonlocal ticker
        if not subscription.queue.full():
            subscription.queue.put_nowait(TICK)
        ticker = loop.call_later(heartbeat, tick)

    ticker = loop.call_later(heartbeat, tick)
    try:
        while resp.is_connected():
            item = await subscription.queue.get()
            if item is TICK:
                continue
            if item is None:
                return
            if subscription.overflowed:
                subscription.overflowed = False
                while not subscription.queue.empty():
                    subscription.queue.get_nowait()
                last = await _backfill(resp, engine, last, creator, own)
                continue
            change = item.change
            if change["seq"] <= last:
                continue
            last = change["seq"]
            if creator is None:
                await _send_broadcast(resp, transport, item)
            elif change["deal"].get("creator_id") == creator:
                shown = _for_creator(change, own)
                if shown is change:
                    await _send_broadcast(resp, transport, item)
                else:
                    await _send(resp, shown)
    finally:
        if ticker is not None:
            ticker.cancel()


def _for_creator(change: dict[str, Any], own: str) -> dict[str, Any]:
    deal = hide_staff_in_deal(change["deal"], own)
    return change if deal is change["deal"] else {**change, "deal": deal}


async def _backfill(resp: EventSourceResponse, engine: Any, last: int, creator: str | None, own: str = "") -> int:
    while True:
        async with engine.connect() as conn:
            batch = await changes_after(conn, last, limit=BACKFILL_BATCH, creator_id=creator)
        if not batch:
            return last
        for change in batch:
            await _send(resp, change if creator is None else _for_creator(change, own))
            last = change["seq"]

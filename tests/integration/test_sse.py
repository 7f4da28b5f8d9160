"""The SSE deals stream: resume with Last-Event-ID, several web processes, heartbeats."""

from __future__ import annotations

import asyncio

import aiohttp
from sqlalchemy import select

from projections.tables import deal_changes
from tests.support.deals import post_offer
from tests.support.sse import SseStream
from tests.support.stack import Process, admin_headers, eventually, free_port


async def changes_since(engine, seq: int) -> list[int]:
    async with engine.connect() as conn:
        return list(
            (
                await conn.scalars(
                    select(deal_changes.c.seq).where(deal_changes.c.seq > seq).order_by(deal_changes.c.seq)
                )
            ).all()
        )


async def test_reconnect_with_last_event_id_gets_exactly_what_was_missed(web_client, worker, engine) -> None:
    url = web_client.make_url("/offers/events/deals")
    async with web_client.session.get(url) as resp:
        stream = SseStream(resp)
        await stream.next()  # ready
        first = await post_offer(web_client)
        change = await stream.next_deal(lambda c: c["deal"]["offer_id"] == first and c["deal"]["status"] == "valued")
        last_seen = change["seq"]
    # disconnected: three more offers move (created + valued each)
    missed_offers = [await post_offer(web_client) for _ in range(3)]

    async def all_valued() -> bool:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(deal_changes.c.offer_id, deal_changes.c.status).where(deal_changes.c.seq > last_seen)
                )
            ).all()
        return sum(1 for o, s in rows if o in missed_offers and s == "valued") == 3

    await eventually(all_valued, timeout=30, what="offers valued")
    expected = await changes_since(engine, last_seen)
    async with web_client.session.get(url, headers={"Last-Event-ID": str(last_seen)}) as resp:
        stream = SseStream(resp)
        ready = (await stream.next()).json()
        assert ready["resume_from"] == last_seen
        received = [(await stream.next_deal())["seq"] for _ in expected]
        assert received == expected
        # and nothing more than what was missed, until something new happens
        try:
            extra = await stream.next_deal(timeout=1.5)
        except TimeoutError:
            extra = None
        assert extra is None or extra["seq"] > expected[-1]


async def test_bad_last_event_id_is_a_400(web_client) -> None:
    resp = await web_client.get("/offers/events/deals", headers={"Last-Event-ID": "abc"})
    assert resp.status == 400
    assert "Last-Event-ID" in (await resp.json())["message"]


async def test_heartbeats_keep_an_idle_stream_alive(web_client) -> None:
    async with web_client.session.get(web_client.make_url("/offers/events/deals")) as resp:
        await SseStream(resp).next()  # ready
        async with asyncio.timeout(10):
            while True:
                line = await resp.content.readline()
                if line.startswith(b": ping"):
                    break


async def test_two_web_processes_both_stream_an_update_written_once(stack_env, settings, worker) -> None:
    ports = [free_port(), free_port()]
    procs = [Process(f"web-{i}", {**stack_env, "WEB_PORT": str(port)}, "web") for i, port in enumerate(ports)]
    try:
        for proc in procs:
            proc.wait_for_log('"deal_feed_listening"', timeout=60)
        async with aiohttp.ClientSession(headers=admin_headers(settings)) as session:
            streams = []
            responses = [await session.get(f"http://127.0.0.1:{port}/offers/events/deals") for port in ports]
            for resp in responses:
                stream = SseStream(resp)
                await stream.next()
                streams.append(stream)
            creator = await session.post(f"http://127.0.0.1:{ports[1]}/creators", json={"display_name": "Two Webs"})
            assert creator.status == 201
            created = await session.post(
                f"http://127.0.0.1:{ports[0]}/offers",
                json={
                    "creator_id": (await creator.json())["creator_id"],
                    "currency": "USD",
                    "royalty_history": [{"period": f"2025-0{m}", "amount_minor": 1000} for m in range(1, 7)],
                },
            )
            offer_id = (await created.json())["offer_id"]
            got = await asyncio.gather(
                *(
                    s.next_deal(lambda c: c["deal"]["offer_id"] == offer_id and c["deal"]["status"] == "valued")
                    for s in streams
                )
            )
            assert got[0]["seq"] == got[1]["seq"]
            for resp in responses:
                resp.close()
    finally:
        for proc in procs:
            proc.stop()
    for proc in procs:
        lines = [line for line in proc.output().splitlines() if '"http_request"' in line and '"/offers"' in line]
        assert len(lines) <= 1  # one access-log line per request, never duplicated

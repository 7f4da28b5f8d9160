"""API throughput: req/s, p50 and p99 of POST /offers, GET /deals?limit=20 and GET /offers/{id}.

Starts its own web process and pipeline worker on a fresh database and topic namespace of
the running local stack (``make stack-up``), seeds a creator and some projected offers, and
drives each route closed-loop at 16 and 64 connections from a separate load process. In
the same run it drives a **peer**: a plain aiohttp app written here doing the same work
per request without the project's layers (PyJWT RS256 verification of the same token,
asyncpg for the creator check, the outbox row and the reads, the same Avro encoding, one
aiokafka producer with acks=all and idempotence, awaited), and prints app/peer ratios.

Usage: ``python bench/api_throughput.py [--seconds 5] [--connections 16,64] [--no-peer]
[--routes "POST /offers"]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.loadtest.stack import load, spacemusic_stack  # noqa: E402
from tests.support.stack import free_port  # noqa: E402

HISTORY = [{"period": f"2025-{m:02d}", "amount_minor": 200_000 + 5_000 * m} for m in range(1, 13)]
ROUTES = ("POST /offers", "GET /deals?limit=20", "GET /offers/{id}")


# --- the load process ---------------------------------------------------------------------


async def drive(base: str, route: str, connections: int, seconds: float, token: str, context: dict[str, Any]) -> dict:
    headers = {"Authorization": f"Bearer {token}"}
    latencies: list[float] = []
    errors = 0
    offer_ids = context["offer_ids"]
    body = json.dumps({"creator_id": context["creator_id"], "currency": "EUR", "royalty_history": HISTORY})
    deadline = time.perf_counter() + seconds

    async def worker(session: aiohttp.ClientSession, n: int) -> None:
        nonlocal errors
        i = n
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            if route == "POST /offers":
                request = session.post(
                    f"{base}/offers", data=body, headers={**headers, "Content-Type": "application/json"}
                )
            elif route == "GET /deals?limit=20":
                request = session.get(f"{base}/deals?limit=20", headers=headers)
            else:
                i += 1
                request = session.get(f"{base}/offers/{offer_ids[i % len(offer_ids)]}", headers=headers)
            async with request as resp:
                await resp.read()
                ok = resp.status in (200, 202)
            latencies.append(time.perf_counter() - started)
            errors += not ok

    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session, n) for n in range(connections)))
    ms = sorted(x * 1000 for x in latencies)
    q = statistics.quantiles(ms, n=100) if len(ms) > 1 else [ms[0]] * 99
    return {"requests": len(ms), "errors": errors, "rps": len(ms) / seconds, "p50": q[49], "p99": q[98]}


def run_drive(base: str, route: str, connections: int, seconds: float, token: str, context: dict[str, Any]) -> dict:
    """One load run in a process of its own, so the client never shares a GIL with us."""
    spec = json.dumps(
        {"base": base, "route": route, "connections": connections, "seconds": seconds, "token": token, **context}
    )
    out = subprocess.run(
        [sys.executable, __file__, "--drive", spec], capture_output=True, text=True, check=True, timeout=seconds + 120
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- the peer -----------------------------------------------------------------------------


async def serve_peer(port: int) -> None:
    import asyncpg
    import jwt
    from aiohttp import web
    from aiokafka import AIOKafkaProducer

    from infra.avro import codec_from_settings
    from infra.settings import Settings
    from models.events import OfferCreated, RoyaltyPeriod
    from web.auth.dev_idp import DevIdp, dev_issuer

    settings = Settings.from_env(dict(os.environ))
    idp = DevIdp.from_settings(settings)
    public_key = idp._key.public_key()
    issuer, audience = dev_issuer(settings), settings.oidc_audience
    pool = await asyncpg.create_pool(settings.asyncpg_dsn, min_size=4, max_size=10)
    codec = codec_from_settings(settings)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", enable_idempotence=True, linger_ms=0
    )
    await producer.start()
    topic = settings.topic(OfferCreated.TOPIC)

    def authorize(request: web.Request) -> None:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        jwt.decode(token, public_key, algorithms=["RS256"], audience=audience, issuer=issuer)

    def rows_json(rows: list[Any]) -> str:
        return json.dumps([dict(r) for r in rows], default=str)

    async def post_offer(request: web.Request) -> web.Response:
        authorize(request)
        body = await request.json()
        creator_id = str(uuid.UUID(body["creator_id"]))
        history = tuple(RoyaltyPeriod(p["period"], int(p["amount_minor"])) for p in body["royalty_history"])
        async with pool.acquire() as conn:
            if await conn.fetchval("SELECT 1 FROM creators WHERE creator_id = $1", creator_id) is None:
                return web.json_response({"error": "unknown creator"}, status=422)
        event = OfferCreated(
            event_id=str(uuid.uuid4()),
            offer_id=str(uuid.uuid4()),
            creator_id=creator_id,
            occurred_at=datetime.now(UTC),
            correlation_id=str(uuid.uuid4()),
            currency=body["currency"],
            royalty_history=history,
        )
        value = await codec.encode_event(event)
        # The same guarantee as the app: the event is in the outbox before it is sent, and
        # marked sent after (plain code: one UPDATE per request, where the app batches them).
        async with pool.acquire() as conn:
            seq = await conn.fetchval(
                "INSERT INTO event_outbox (event_id, topic, message_key, value, headers)"
                " VALUES ($1, $2, $3, $4, '[]') RETURNING seq",
                event.event_id,
                OfferCreated.TOPIC,
                event.offer_id.encode(),
                value,
            )
        await (await producer.send(topic, value=value, key=event.offer_id.encode()))
        async with pool.acquire() as conn:
            await conn.execute("UPDATE event_outbox SET sent_at = now() WHERE seq = $1", seq)
        return web.json_response({"offer_id": event.offer_id, "status": "accepted_for_processing"}, status=202)

    async def get_deals(request: web.Request) -> web.Response:
        authorize(request)
        limit = int(request.query.get("limit", "50"))
        async with pool.acquire() as conn:
            rows = await conn.fetch("SELECT * FROM offers ORDER BY first_seq DESC LIMIT $1", limit + 1)
        return web.Response(text=rows_json(rows[:limit]), content_type="application/json")

    async def get_offer(request: web.Request) -> web.Response:
        authorize(request)
        async with pool.acquire() as conn:
            row = await conn.fetchrow("SELECT * FROM offers WHERE offer_id = $1", request.match_info["offer_id"])
        if row is None:
            return web.json_response({"error": "not found"}, status=404)
        return web.Response(text=json.dumps(dict(row), default=str), content_type="application/json")

    app = web.Application()
    app.router.add_post("/offers", post_offer)
    app.router.add_get("/deals", get_deals)
    app.router.add_get("/offers/{offer_id}", get_offer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    # The collector settings `spacemusic web` runs with (infra/gc_tuning.py): the ratio
    # compares the code, not the garbage collector's defaults.
    from infra.gc_tuning import tune_gc

    tune_gc(settings.gc_gen0_threshold)
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("peer_listening", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await producer.stop()
        await pool.close()


# --- the run ------------------------------------------------------------------------------


async def seed(base: str, token: str, offers: int = 40) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.post(f"{base}/creators", json={"display_name": "Bench"}) as resp:
            creator_id = (await resp.json())["creator_id"]
        body = {"creator_id": creator_id, "currency": "EUR", "royalty_history": HISTORY}
        ids = []
        for _ in range(offers):
            async with session.post(f"{base}/offers", json=body) as resp:
                ids.append((await resp.json())["offer_id"])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until the last one is projected
            async with session.get(f"{base}/offers/{ids[-1]}") as resp:
                if resp.status == 200:
                    break
            await asyncio.sleep(0.2)
    return {"creator_id": creator_id, "offer_ids": ids}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="per route and connection count")
    parser.add_argument("--connections", default="16,64")
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--routes", default=",".join(ROUTES), help=f"comma-separated subset of: {', '.join(ROUTES)}")
    parser.add_argument("--drive", help=argparse.SUPPRESS)
    parser.add_argument("--serve-peer", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        spec = json.loads(args.drive)
        result = asyncio.run(
            drive(spec["base"], spec["route"], spec["connections"], spec["seconds"], spec["token"], spec)
        )
        print(json.dumps(result))
        return
    if args.serve_peer:
        asyncio.run(serve_peer(args.serve_peer))
        return
    connections = [int(c) for c in args.connections.split(",")]
    routes = [r.strip() for r in args.routes.split(",")]
    if unknown := set(routes) - set(ROUTES):
        parser.error(f"unknown routes: {', '.join(sorted(unknown))}")
    with spacemusic_stack("api", roles=("pipeline",)) as stack:
        token = stack.token()
        context = asyncio.run(seed(stack.base_url, token))
        targets = {"app": stack.base_url}
        peer = None
        if not args.no_peer:
            port = free_port()
            peer = subprocess.Popen(
                [sys.executable, __file__, "--serve-peer", str(port)],
                env={**stack.env, "PYTHONPATH": os.environ.get("PYTHONPATH", str(REPO))},
                stdout=subprocess.PIPE,
                text=True,
            )
            assert peer.stdout is not None
            if "peer_listening" not in peer.stdout.readline():
                raise SystemExit("the peer did not start")
            targets["peer"] = f"http://127.0.0.1:{port}"
        results: dict[tuple[str, str, int], dict] = {}
        try:
            print(f"api_throughput: {args.seconds:g} s per run, closed loop; {load()}")
            for route in routes:
                for c in connections:
                    for name, base in targets.items():
                        r = run_drive(base, route, c, args.seconds, token, context)
                        results[(name, route, c)] = r
                        print(
                            f"  {name:<4} {route:<20} {c:>3} conns: {r['rps']:7.0f} req/s  p50 {r['p50']:6.1f} ms  "
                            f"p99 {r['p99']:6.1f} ms  errors {r['errors']}; {load()}",
                            flush=True,
                        )
                    if "peer" in targets:
                        app, peer_r = results[("app", route, c)], results[("peer", route, c)]
                        print(f"  ratio app/peer {route} at {c}: {app['rps'] / peer_r['rps']:.2f} (req/s)")
        finally:
            if peer is not None:
                peer.terminate()
                peer.wait(10)
    print(json.dumps({f"{n} {r} {c}": v for (n, r, c), v in results.items()}))


if __name__ == "__main__":
    main()

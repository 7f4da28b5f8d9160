"""End-to-end latency: POST /offers -> the valued deal arrives on the SSE stream.

Starts its own worker and web processes on a fresh database and topic namespace of the
running local stack (`make stack-up` first), posts offers at a steady rate, and prints the
median, p90, p99 and max latency. Usage: `python bench/e2e_latency.py [--offers 300] [--rate 20]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from infra.settings import Settings  # noqa: E402
from tests.conftest import drop_stack_env, prepare_stack_env  # noqa: E402
from tests.money import HISTORY  # noqa: E402
from tests.sse import SseStream  # noqa: E402
from tests.stack import Process, admin_headers, free_port  # noqa: E402

DONE = {"valued", "valuation_failed", "termsheet_issued"}


async def measure(base: str, headers: dict[str, str], offers: int, rate: float) -> list[float]:
    posted: dict[str, float] = {}
    latencies: dict[str, float] = {}
    async with aiohttp.ClientSession(headers=headers) as session:
        creator = (await (await session.post(f"{base}/creators", json={"display_name": "Bench"})).json())["creator_id"]
        async with session.get(f"{base}/offers/events/deals", timeout=aiohttp.ClientTimeout(total=None)) as resp:
            stream = SseStream(resp)
            await stream.next()

            async def listen() -> None:
                while len(latencies) < offers:
                    change = await stream.next_deal(timeout=60)
                    offer_id = change["deal"]["offer_id"]
                    if change["deal"]["status"] in DONE and offer_id in posted and offer_id not in latencies:
                        latencies[offer_id] = time.perf_counter() - posted[offer_id]

            listener = asyncio.create_task(listen())
            body = {"creator_id": creator, "currency": "EUR", "royalty_history": HISTORY}
            for _ in range(offers):
                started = time.perf_counter()
                created = await session.post(f"{base}/offers", json=body)
                posted[(await created.json())["offer_id"]] = started
                await asyncio.sleep(max(0.0, 1.0 / rate - (time.perf_counter() - started)))
            await asyncio.wait_for(listener, timeout=120)
    return sorted(latencies.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--offers", type=int, default=300)
    parser.add_argument("--rate", type=float, default=20.0, help="offers per second")
    args = parser.parse_args()
    name = f"bench{uuid.uuid4().hex[:6]}"
    env = prepare_stack_env(name, WEB_PORT=str(free_port()))
    # The production split (see Procfile): documents and payouts in their own processes.
    workers = [
        Process(f"{name}-{role}", env, "worker", "--role", role) for role in ("pipeline", "documents", "payouts")
    ]
    web = Process(f"{name}-web", env, "web")
    try:
        for worker in workers:
            worker.wait_for_log('"partitions_assigned"', timeout=90)
        web.wait_for_log('"deal_feed_listening"', timeout=60)
        headers = admin_headers(Settings.from_env(env))
        lat = asyncio.run(measure(f"http://127.0.0.1:{env['WEB_PORT']}", headers, args.offers, args.rate))
    finally:
        for worker in workers:
            worker.stop()
        web.stop()
        drop_stack_env(env)
    ms = [x * 1000 for x in lat]
    q = statistics.quantiles(ms, n=100)
    print(f"e2e POST /offers -> valued deal on SSE: {len(ms)} offers at {args.rate:g}/s")
    print(f"  median {statistics.median(ms):.1f} ms   p90 {q[89]:.1f} ms   p99 {q[98]:.1f} ms   max {ms[-1]:.1f} ms")
    print(json.dumps({"offers": len(ms), "median_ms": round(statistics.median(ms), 1), "p99_ms": round(q[98], 1)}))


if __name__ == "__main__":
    main()

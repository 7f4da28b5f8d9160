"""End-to-end latency: POST /offers -> the valued deal arrives on the SSE stream, open loop.

Starts its own worker processes (pipeline, documents, payouts: the production split, see
Procfile) and web process on a fresh database and topic namespace of the running local
stack (``make stack-up``). For each rate (default 50, 100 and 200 offers/s) it sends POSTs
on a fixed schedule, **open loop**: the n-th offer goes out at ``start + n / rate`` whether
or not earlier ones were answered, and its latency is counted from that scheduled instant
(no coordinated omission: a stalled server shows up as latency, not as a lower rate). Prints
p50/p90/p99/max from the scheduled send to the deal's valued (or valuation_failed) change on
SSE, the achieved send rate, errors and offers that never arrived. Target: p99 <= 250 ms at
200 offers/s.

Usage: ``python bench/e2e_latency.py [--rates 50,100,200] [--seconds 10]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.loadtest.stack import load, spacemusic_stack  # noqa: E402
from tests.support.money import HISTORY  # noqa: E402
from tests.support.sse import SseStream  # noqa: E402

DONE = {"valued", "valuation_failed", "termsheet_issued"}
MAX_IN_FLIGHT = 512  # connections the sender may open; beyond that sends queue (and count)


async def measure_rate(
    session: aiohttp.ClientSession, base: str, creator: str, rate: float, seconds: float, arrived: dict[str, float]
) -> dict:
    """One open-loop run; ``arrived`` is filled by the SSE listener (offer_id -> time)."""
    count = max(1, int(rate * seconds))
    body = json.dumps({"creator_id": creator, "currency": "EUR", "royalty_history": HISTORY})
    scheduled: dict[str, float] = {}
    errors = 0
    sent_last = 0.0

    async def send(at: float) -> None:
        nonlocal errors, sent_last
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            async with session.post(f"{base}/offers", data=body, headers={"Content-Type": "application/json"}) as resp:
                if resp.status != 202:
                    errors += 1
                    return
                scheduled[(await resp.json())["offer_id"]] = at
        except aiohttp.ClientError:
            errors += 1
        finally:
            sent_last = max(sent_last, time.perf_counter())

    start = time.perf_counter() + 0.2
    await asyncio.gather(*(send(start + n / rate) for n in range(count)))
    send_span = max(sent_last - start, 1e-9)
    deadline = time.perf_counter() + 60
    while time.perf_counter() < deadline and any(o not in arrived for o in scheduled):  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    latencies = sorted((arrived[o] - at) * 1000 for o, at in scheduled.items() if o in arrived)
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [latencies[0] if latencies else 0.0] * 99
    return {
        "rate": rate,
        "offers": count,
        "achieved_rate": round(count / send_span, 1),
        "errors": errors,
        "lost": sum(o not in arrived for o in scheduled),
        "p50_ms": round(q[49], 1),
        "p90_ms": round(q[89], 1),
        "p99_ms": round(q[98], 1),
        "max_ms": round(latencies[-1], 1) if latencies else None,
    }


async def measure(base: str, headers: dict[str, str], rates: list[float], seconds: float) -> list[dict]:
    arrived: dict[str, float] = {}
    connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        async with session.post(f"{base}/creators", json={"display_name": "Bench"}) as resp:
            creator = (await resp.json())["creator_id"]
        async with aiohttp.ClientSession(headers=headers) as stream_session:
            async with stream_session.get(
                f"{base}/offers/events/deals", timeout=aiohttp.ClientTimeout(total=None)
            ) as resp:
                stream = SseStream(resp)
                await stream.next()

                async def listen() -> None:
                    while True:
                        change = await stream.next_deal(timeout=3600)
                        deal = change["deal"]
                        if deal["status"] in DONE:
                            arrived.setdefault(deal["offer_id"], time.perf_counter())

                listener = asyncio.create_task(listen())
                results = []
                try:
                    for rate in rates:
                        result = await measure_rate(session, base, creator, rate, seconds, arrived)
                        result["load"] = load()
                        results.append(result)
                        print(
                            f"  {rate:>5g} offers/s (sent at {result['achieved_rate']:g}/s, {result['offers']} offers): "
                            f"p50 {result['p50_ms']} ms  p90 {result['p90_ms']} ms  p99 {result['p99_ms']} ms  "
                            f"max {result['max_ms']} ms  errors {result['errors']}  lost {result['lost']}; {result['load']}",
                            flush=True,
                        )
                finally:
                    listener.cancel()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="50,100,200", help="offers per second, comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of arrivals per rate")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    with spacemusic_stack("e2e", roles=("pipeline", "documents", "payouts")) as stack:
        print(f"e2e POST /offers -> valued deal on SSE, open loop, {args.seconds:g} s per rate; {load()}")
        results = asyncio.run(measure(stack.base_url, stack.headers(), rates, args.seconds))
    print(json.dumps(results))


if __name__ == "__main__":
    main()

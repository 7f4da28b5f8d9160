"""SSE fan-out: one web process holding N authenticated deal streams; time for one update to reach all.

Starts its own web process and pipeline worker on a fresh database and topic namespace of
the running local stack (``make stack-up``), opens ``--streams`` (default 2,000) streams on
``GET /offers/events/deals`` with a bearer token from ``--clients`` load processes, waits
until every stream has its ``ready`` event, then posts ``--updates`` offers one at a time.
For each update it prints, over all streams: the time from the first stream receiving the
change to p50/p95/max of the others (the fan-out), the POST-to-first-delivery time (the
pipeline), and how many streams got it. Target: p95 fan-out <= 200 ms at 2,000 streams.

Usage: ``python bench/sse_fanout.py [--streams 2000] [--clients 2] [--updates 5]``.
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
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.loadtest.stack import load, spacemusic_stack  # noqa: E402

HISTORY = [{"period": f"2025-{m:02d}", "amount_minor": 200_000 + 5_000 * m} for m in range(1, 13)]


# --- a load process: holds streams, reports when each deal change arrives ------------------


async def hold_streams(host: str, port: int, path: str, token: str, count: int, seconds: float) -> None:
    """Raw HTTP/1.0 SSE readers (no chunked framing, little client CPU per event). Prints
    ``ready N`` once every stream is open, then one JSON line per stream at the end: the
    first arrival time (``time.time()``) of each change sequence it saw."""
    request = (
        f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
    ).encode()
    ready = 0
    all_ready = asyncio.Event()
    arrivals: list[dict[int, float]] = [{} for _ in range(count)]
    gate = asyncio.Semaphore(100)  # connect in waves, as browsers would

    async def one(i: int) -> None:
        nonlocal ready
        async with gate:
            reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            if b" 200 " not in head.split(b"\r\n", 1)[0]:
                raise SystemExit(f"stream {i}: {head.split(chr(13).encode(), 1)[0]!r}")
        seen = arrivals[i]
        got_ready = False
        buffer = b""
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                now = time.time()
                buffer += chunk
                *events, buffer = buffer.replace(b"\r\n", b"\n").split(b"\n\n")
                for event in events:
                    if b"event: ready" in event and not got_ready:
                        got_ready = True
                        ready += 1
                        if ready == count:
                            all_ready.set()
                    elif b"event: deal" in event:
                        for line in event.split(b"\n"):
                            if line.startswith(b"id:"):
                                seen.setdefault(int(line[3:].strip()), now)
        finally:
            writer.close()

    tasks = [asyncio.create_task(one(i)) for i in range(count)]
    await asyncio.wait_for(all_ready.wait(), timeout=300)
    print(f"ready {count}", flush=True)
    await asyncio.sleep(seconds)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps([{str(k): v for k, v in a.items()} for a in arrivals]), flush=True)


# --- the run ------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fmt(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    q = statistics.quantiles(ms, n=100) if len(ms) > 1 else [ms[0]] * 99
    return f"p50 {q[49]:6.1f} ms  p95 {q[94]:6.1f} ms  max {ms[-1]:6.1f} ms"


async def post_updates(base: str, token: str, updates: int, spacing: float) -> list[tuple[str, float]]:
    posted = []
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as session:
        async with session.post(f"{base}/creators", json={"display_name": "Fan-out"}) as resp:
            creator = (await resp.json())["creator_id"]
        await asyncio.sleep(spacing)
        for _ in range(updates):
            started = time.time()
            async with session.post(
                f"{base}/offers", json={"creator_id": creator, "currency": "EUR", "royalty_history": HISTORY}
            ) as resp:
                posted.append(((await resp.json())["offer_id"], started))
            await asyncio.sleep(spacing)
    return posted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=2, help="load processes holding the streams")
    parser.add_argument("--updates", type=int, default=5)
    parser.add_argument("--spacing", type=float, default=3.0, help="seconds between updates")
    parser.add_argument("--hold", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hold:
        host, port, token, count, seconds = args.hold
        asyncio.run(hold_streams(host, int(port), "/offers/events/deals", token, int(count), float(seconds)))
        return
    # Production's heartbeat (15 s), not the tests' 2 s: 2,000 pings every 2 s is load of its own.
    with spacemusic_stack("sse", roles=("pipeline",), SSE_HEARTBEAT_SECONDS="15") as stack:
        token = stack.token()
        port = stack.base_url.rsplit(":", 1)[1]
        hold_seconds = args.spacing * (2 * args.updates + 3) + 15
        per_client = [args.streams // args.clients + (i < args.streams % args.clients) for i in range(args.clients)]
        started = time.monotonic()
        clients = [
            subprocess.Popen(
                [sys.executable, __file__, "--hold", "127.0.0.1", port, token, str(n), str(hold_seconds)],
                stdout=subprocess.PIPE,
                text=True,
                env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", str(REPO))},
            )
            for n in per_client
        ]
        for client in clients:
            assert client.stdout is not None
            line = client.stdout.readline()
            if not line.startswith("ready"):
                raise SystemExit(f"a load process failed to open its streams: {line!r}")
        web = next(p for p in stack.processes if p.name.endswith("-web"))
        rss = int(Path(f"/proc/{web.proc.pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        print(
            f"sse_fanout: {args.streams} streams open in {time.monotonic() - started:.1f} s "
            f"({args.clients} load processes); web RSS {rss:.0f} MiB; {load()}"
        )
        # The web process's CPU per update, net of what holding the streams costs anyway:
        # steadier than wall-clock figures on a shared machine.
        time.sleep(3)  # let the opening settle
        idle_cpu, idle_t = cpu_seconds(web.proc.pid), time.monotonic()
        time.sleep(args.spacing * (args.updates + 1))
        idle_rate = (cpu_seconds(web.proc.pid) - idle_cpu) / (time.monotonic() - idle_t)
        busy_cpu, busy_t = cpu_seconds(web.proc.pid), time.monotonic()
        posted = asyncio.run(post_updates(stack.base_url, stack.token(), args.updates, args.spacing))
        busy_cpu = cpu_seconds(web.proc.pid) - busy_cpu - idle_rate * (time.monotonic() - busy_t)
        per_update_cpu = max(0.0, busy_cpu) / args.updates
        arrivals: list[dict[str, float]] = []
        for client in clients:
            out, _ = client.communicate(timeout=hold_seconds + 120)
            arrivals.extend(json.loads(out.strip().splitlines()[-1]))
    print(f"after the updates: {load()}")
    # Which change sequence carried each posted offer: the first seq every stream saw after
    # the POST (the offer's own first projection, offer.created) is the update measured.
    fanouts: list[float] = []
    for n, (_offer_id, t_post) in enumerate(posted, 1):
        candidates = sorted({int(seq) for a in arrivals for seq, t in a.items() if t >= t_post})
        if not candidates:
            print(f"  update {n}: never arrived")
            continue
        seq = str(candidates[0])
        times = [a[seq] for a in arrivals if seq in a]
        first = min(times)
        spread = [t - first for t in times]
        fanouts.extend(spread)
        print(
            f"  update {n} (seq {seq}): reached {len(times)}/{args.streams} streams; "
            f"fan-out after the first: {fmt(spread)}; POST -> first delivery {1000 * (first - t_post):.0f} ms"
        )
    if fanouts:
        print(f"all updates, fan-out to {args.streams} streams: {fmt(fanouts)} (target p95 <= 200 ms)")
    print(
        f"web process CPU per update (POST + 2 changes fanned out; net of holding the streams): "
        f"{1000 * per_update_cpu:.0f} ms "
        f"= {1e6 * per_update_cpu / args.streams:.0f} us per stream"
    )


if __name__ == "__main__":
    main()

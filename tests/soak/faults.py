"""The fault soak (`make soak`): offers flow through the whole lifecycle while faults are
injected at random moments, on a PRIVATE stack (tests/faults/stack.py: own Postgres, Kafka,
registry and S3; the shared stack is never touched), then it checks and prints the table.

Processes: one web, two pipeline workers, two payouts workers, one documents worker.
Traffic: creator -> recipient -> offer (202 counted) -> term sheet -> accept -> payout
(202) -> paid -> receipt, a deal every 1/RATE seconds, each deal as its own operator
(the API rate-limits per subject), retried through outages with the same idempotency key.
Faults (round robin, at random moments): Kafka kill -9 + restart, Postgres fast restart,
pg_terminate_backend of every application connection, registry stopped 30-60 s, S3 away
30-60 s, a worker SIGKILLed + restarted (rebalance), the web process killed mid-request +
restarted. At the end: lost (202 but never final) and duplicated effects (two successful
transfers, two postings, two documents for one input) must be 0; dead letters, ledger
check, rebuild --verify-only, maximum consumer lag and time to lag 0 after the last fault.

    make soak                                   # 10 minutes
    make soak FAULT_SOAK_ARGS="--minutes 30"
    make soak FAULT_SOAK_ARGS="--minutes 3 --fault-every 25 --outage 10"   # a quick look
    make soak LEDGER_EXAMPLES=20000             # the ledger state machine's count (printed)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import aioboto3
import asyncpg
import httpx

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from infra.consumer_lag import ConsumerLagExporter  # noqa: E402
from infra.settings import Settings  # noqa: E402
from models.events import DEADLETTER_TOPIC, LIFECYCLE_EVENTS  # noqa: E402
from tests.faults.stack import PrivateStack  # noqa: E402
from tests.support.money import HISTORY, HOLDER, IBAN, STRIPE_ACCOUNT  # noqa: E402
from tests.support.stack import Process, free_port, run_cli  # noqa: E402

KINDS = ("kafka_kill", "pg_restart", "pg_terminate", "registry_down", "s3_down", "worker_kill", "web_kill")
DRAIN_SECONDS = 240.0
ROLES = {"pipeline-1": "pipeline", "pipeline-2": "pipeline", "payouts-1": "payouts", "payouts-2": "payouts"}


def retry_after(resp: httpx.Response) -> float | None:
    """The seconds a 429/503 asks the client to wait (RFC 9110 delay-seconds), if any."""
    value = resp.headers.get("Retry-After", "")
    return float(value) if value.strip().isdigit() else None


@dataclass
class Deal:
    offer_id: str | None = None
    accepted_202: bool = False
    payout_202: bool = False
    started: float = field(default_factory=time.monotonic)


@dataclass
class Soak:
    stack: PrivateStack
    env: dict[str, str]
    web_url: str
    procs: dict[str, Process] = field(default_factory=dict)
    deals: list[Deal] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    fault_log: list[tuple[float, str]] = field(default_factory=list)
    last_fault_end: float = 0.0
    max_lag: int = 0
    lag_zero_at: float | None = None
    http_errors: Counter[str] = field(default_factory=Counter)

    # ---- processes -----------------------------------------------------------------
    def start(self, name: str) -> None:
        if name == "web":
            self.procs[name] = Process("soak-web", self.env, "web")
        else:
            role = ROLES.get(name, "documents")
            self.procs[name] = Process(f"soak-{name}", self.env, "worker", "--role", role)

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        proc.stop(signal.SIGKILL)

    # ---- traffic -------------------------------------------------------------------
    def headers(self) -> dict[str, str]:
        from web.auth import ADMIN, mint_token

        settings = Settings.from_env(self.env)
        return {"Authorization": f"Bearer {mint_token(settings, f'soak|{uuid.uuid4()}', [ADMIN])}"}

    async def call(
        self, client: httpx.AsyncClient, method: str, path: str, ok: tuple[int, ...], **kw
    ) -> httpx.Response:
        """Retry through outages (5xx, 409, 429, connection errors) until one of ``ok``: for as
        long as it takes (the drain bounds a deal as a whole), pausing as long as a 429's or
        503's ``Retry-After`` asks, with the same request (and so the same Idempotency-Key)."""
        while True:
            pause = 1.0
            try:
                resp = await client.request(method, path, **kw)
                if resp.status_code in ok:
                    return resp
                self.http_errors[str(resp.status_code)] += 1
                if resp.status_code < 500 and resp.status_code not in (409, 429):
                    raise RuntimeError(f"{method} {path}: {resp.status_code} {resp.text[:200]}")
                pause = retry_after(resp) or pause
            except httpx.HTTPError as exc:
                self.http_errors[type(exc).__name__] += 1
            await asyncio.sleep(pause)

    async def status(self, client: httpx.AsyncClient, offer_id: str) -> dict:
        return (await self.call(client, "GET", f"/offers/{offer_id}", (200,))).json()

    async def wait_status(self, client: httpx.AsyncClient, offer_id: str, want: str) -> None:
        # 404 until the projector has seen the offer.
        while True:
            resp = await self.call(client, "GET", f"/offers/{offer_id}", (200, 404))
            if resp.status_code == 200 and resp.json().get("status") == want:
                return
            await asyncio.sleep(0.5)

    async def deal(self, deal: Deal) -> None:
        async with httpx.AsyncClient(base_url=self.web_url, headers=self.headers(), timeout=15) as client:
            creator = (
                await self.call(client, "POST", "/creators", (201,), json={"display_name": HOLDER, "country": "GB"})
            ).json()["creator_id"]
            recipient = (
                await self.call(
                    client,
                    "POST",
                    f"/creators/{creator}/recipients",
                    (201,),
                    json={
                        "currency": "EUR",
                        "stripe_account_id": STRIPE_ACCOUNT,
                        "bank_account": {"holder_name": HOLDER, "iban": IBAN, "bic": "COBADEFFXXX"},
                    },
                )
            ).json()["recipient_id"]
            offer = await self.call(
                client,
                "POST",
                "/offers",
                (202,),
                json={"creator_id": creator, "currency": "EUR", "royalty_history": HISTORY},
            )
            deal.offer_id = offer.json()["offer_id"]
            deal.accepted_202 = True
            await self.wait_status(client, deal.offer_id, "termsheet_issued")
            await self.call(client, "POST", f"/offers/{deal.offer_id}/accept", (200, 202))
            key = str(uuid.uuid4())
            await self.call(
                client,
                "POST",
                f"/offers/{deal.offer_id}/payout",
                (202,),
                json={"recipient_id": recipient},
                headers={"Idempotency-Key": key},
            )
            deal.payout_202 = True

    async def traffic(self, until: float, rate: float) -> None:
        tasks: list[asyncio.Task[None]] = []
        while time.monotonic() < until:
            d = Deal()
            self.deals.append(d)
            tasks.append(asyncio.create_task(self.deal(d)))
            await asyncio.sleep(1 / rate)
        # The clients finish their deals (bounded: a deal still stuck then counts as lost).
        done, pending = await asyncio.wait(tasks, timeout=DRAIN_SECONDS)
        for task in pending:
            task.cancel()
            self.http_errors["deal_unfinished_by_client"] += 1
        for task in done:
            if task.exception() is not None:
                self.http_errors[f"deal_failed:{type(task.exception()).__name__}"] += 1

    # ---- faults --------------------------------------------------------------------
    async def inject(self, kind: str, outage: float) -> None:
        s = self.stack
        t0 = time.monotonic()
        if kind == "kafka_kill":
            await asyncio.to_thread(s.kill_kafka)
            await asyncio.sleep(5)
            await asyncio.to_thread(s.start_kafka)
        elif kind == "pg_restart":
            await asyncio.to_thread(s.stop_pg, "fast")
            await asyncio.sleep(3)
            await asyncio.to_thread(s.start_pg)
        elif kind == "pg_terminate":
            conn = await asyncpg.connect(Settings.from_env(self.env).asyncpg_dsn)
            try:
                await conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = 'spacemusic' AND pid <> pg_backend_pid()"
                )
            finally:
                await conn.close()
        elif kind == "registry_down":
            await asyncio.to_thread(s.stop_registry)
            await asyncio.sleep(outage)
            await asyncio.to_thread(s.start_registry)
        elif kind == "s3_down":
            await asyncio.to_thread(s.s3_down)
            await asyncio.sleep(outage)
            await asyncio.to_thread(s.s3_up)
        elif kind == "worker_kill":
            name = random.choice(list(ROLES))
            await asyncio.to_thread(self.kill, name)
            await asyncio.sleep(2)
            self.start(name)
        elif kind == "web_kill":
            await asyncio.to_thread(self.kill, "web")
            await asyncio.sleep(1)
            self.start("web")
        self.faults[kind] += 1
        self.fault_log.append((t0 - START, kind))
        self.last_fault_end = time.monotonic()
        self.lag_zero_at = None  # recovery is measured from the end of this fault
        print(f"  [{time.monotonic() - START:6.0f}s] fault {kind} ({time.monotonic() - t0:.0f}s)", flush=True)

    async def faults_loop(self, until: float, every: float, outage_max: float) -> None:
        order = list(KINDS)
        random.shuffle(order)
        i = 0
        while True:
            wait = random.uniform(every * 0.5, every * 1.5)
            if time.monotonic() + wait > until:
                return
            await asyncio.sleep(wait)
            await self.inject(order[i % len(order)], random.uniform(min(30.0, outage_max), outage_max))
            i += 1

    # ---- lag -----------------------------------------------------------------------
    async def lag_loop(self, stop: asyncio.Event) -> None:
        settings = Settings.from_env(self.env)
        every = [cls.TOPIC for cls in LIFECYCLE_EVENTS]
        consumed = {  # what each role's agents read (a topic a group never reads is not its lag)
            "pipeline": every,
            "payouts": ["offer.payout.requested"],
            "documents": ["offer.valuated", "offer.payout.completed"],
        }
        while not stop.is_set():
            total = 0
            try:
                for role, names in consumed.items():
                    group = settings.consumer_group(f"workers-{role}")
                    topics = [settings.topic(t) for t in names]
                    exporter = ConsumerLagExporter(settings.kafka_bootstrap_servers, group, topics)
                    await asyncio.wait_for(exporter.start(), 10)
                    try:
                        total = max(total, sum((await asyncio.wait_for(exporter.collect(), 10)).values()))
                    finally:
                        with contextlib.suppress(BaseException):
                            await exporter.stop()
            except Exception:
                total = -1  # broker away: unknown
            if total >= 0:
                self.max_lag = max(self.max_lag, total)
                if total == 0 and self.lag_zero_at is None and self.last_fault_end:
                    self.lag_zero_at = time.monotonic()
                if total > 0:
                    self.lag_zero_at = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 3)


START = time.monotonic()


async def final_checks(soak: Soak) -> dict[str, object]:
    env = soak.env
    settings = Settings.from_env(env)
    out: dict[str, object] = {}
    accepted = [d for d in soak.deals if d.accepted_202 and d.offer_id]
    paid_asked = [d for d in accepted if d.payout_202]
    conn = await asyncpg.connect(settings.asyncpg_dsn)
    try:
        ids = [d.offer_id for d in paid_asked]
        deadline = time.monotonic() + 180
        while True:
            final = await conn.fetch(
                "SELECT offer_id::text FROM offers WHERE offer_id = ANY($1::uuid[]) AND receipt_key IS NOT NULL", ids
            )
            if len(final) == len(ids) or time.monotonic() > deadline:
                break
            await asyncio.sleep(2)
        final_ids = {r[0] for r in final}
        stuck_before_payout = [d.offer_id for d in accepted if not d.payout_202]
        out["accepted"] = len(accepted)
        out["final"] = len(final_ids)
        # Lost: accepted with 202 and never final, whatever the reason (the harness drives
        # every accepted offer to its payout; one it could not drive counts too).
        out["lost"] = len([d for d in accepted if d.offer_id not in final_ids])
        out["never_reached_payout"] = len(stuck_before_payout)
        out["two_transfers"] = await conn.fetchval(
            "SELECT count(*) FROM (SELECT payout_id FROM payout_attempts WHERE status = 'succeeded'"
            " GROUP BY payout_id HAVING count(*) > 1) x"
        )
        out["two_postings"] = await conn.fetchval(
            "SELECT count(*) FROM (SELECT offer_id FROM ledger_transactions GROUP BY offer_id HAVING count(*) > 1) x"
        )
        out["two_payouts_per_offer"] = await conn.fetchval(
            "SELECT count(*) FROM (SELECT offer_id FROM payouts GROUP BY offer_id HAVING count(*) > 1) x"
        )
    finally:
        await conn.close()
    docs = 0
    async with aioboto3.Session().client(
        "s3", endpoint_url=settings.s3_endpoint_url, region_name="eu-west-1",
        aws_access_key_id="local", aws_secret_access_key="local",
    ) as s3:  # fmt: skip
        per_input: Counter[str] = Counter()
        token = None
        while True:
            kw = {"Bucket": settings.s3_bucket, **({"ContinuationToken": token} if token else {})}
            page = await s3.list_objects_v2(**kw)
            for o in page.get("Contents", []):
                kind, offer, _ = o["Key"].split("/", 2)
                per_input[f"{kind}/{offer}"] += 1
            if not page.get("IsTruncated"):
                break
            token = page["NextContinuationToken"]
        docs = sum(1 for c in per_input.values() if c > 1)
    out["two_documents"] = docs
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await consumer.start()
    try:
        tps = [TopicPartition(settings.topic(DEADLETTER_TOPIC), p) for p in range(settings.topic_partitions)]
        ends, starts = await consumer.end_offsets(tps), await consumer.beginning_offsets(tps)
        out["dead_letters"] = sum(ends[tp] - starts[tp] for tp in tps)
    finally:
        with contextlib.suppress(asyncio.CancelledError):
            await consumer.stop()
    ledger = await asyncio.to_thread(run_cli, env, "ledger", "check", check=False)
    out["ledger_check"] = "OK" if ledger.returncode == 0 else "FAILED"
    rebuild = await asyncio.to_thread(run_cli, env, "rebuild-projections", "--verify-only", check=False, timeout=600)
    out["rebuild_verify"] = "rebuilt == live" if rebuild.returncode == 0 else f"DIFFERS (exit {rebuild.returncode})"
    if rebuild.returncode != 0:
        print(f"rebuild --verify-only said:\n{(rebuild.stdout or '')[-3000:]}\n{(rebuild.stderr or '')[-3000:]}")
    if ledger.returncode != 0:
        print(f"ledger check said:\n{(ledger.stdout or '')[-3000:]}")
    return out


def ledger_machine(examples: int) -> subprocess.Popen | None:
    if examples <= 0:
        return None
    env = {**os.environ, "LEDGER_MACHINE_EXAMPLES": str(examples)}
    return subprocess.Popen(
        # No per-test timeout: make test's 300 s stopped 2,000 examples mid-run (Hypothesis then
        # reported the interrupted example as Flaky).
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "-o", "timeout=0",
         "tests/integration/test_ledger_machine.py"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


async def main(args: argparse.Namespace) -> int:
    global START
    # The harness's own lag and dead-letter clients: a broker away is a fault it injected
    # (the lag then reads "unknown"), not something to print a line for on every reconnect.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    random.seed(args.seed)
    print(f"soak: {args.minutes} min, {args.rate} deals/s, a fault every ~{args.fault_every}s", flush=True)
    machine = ledger_machine(args.ledger_examples)
    stack = PrivateStack()
    soak: Soak | None = None
    try:
        env = await asyncio.to_thread(stack.start)
        port = free_port()
        env = {**env, "WEB_PORT": str(port), "PAYOUT_PROVIDER_TIMEOUT_SECONDS": "5", "SPACEMUSIC_ENV": "dev"}
        stack.env = env
        soak = Soak(stack, env, f"http://127.0.0.1:{port}")
        for name in ("web", *ROLES, "documents-1"):
            soak.start(name)
        for name, proc in soak.procs.items():
            await asyncio.to_thread(
                proc.wait_for_log, '"web_starting"' if name == "web" else '"partitions_assigned"', 180
            )
        await asyncio.sleep(2)
        START = time.monotonic()
        until = START + args.minutes * 60
        stop = asyncio.Event()
        lag = asyncio.create_task(soak.lag_loop(stop))
        await asyncio.gather(soak.traffic(until, args.rate), soak.faults_loop(until, args.fault_every, args.outage))
        print(f"  [{time.monotonic() - START:6.0f}s] traffic stopped; draining", flush=True)
        results = await final_checks(soak)
        # Lag back to 0 after the last fault (the lag loop keeps measuring through the checks).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if soak.lag_zero_at is not None:
                break
            await asyncio.sleep(1)
        stop.set()
        await lag
        recovery = (soak.lag_zero_at - soak.last_fault_end) if soak.lag_zero_at and soak.last_fault_end else None
        print_table(soak, results, recovery)
        if machine is not None:
            output, _ = machine.communicate(timeout=7200)
            line = next((x for x in output.splitlines() if x.startswith("ledger state machine:")), output[-500:])
            print(f"\n{line}\nledger machine: {'passed' if machine.returncode == 0 else 'FAILED'}")
        ok = results["lost"] == 0 and all(
            results[k] == 0 for k in ("two_transfers", "two_postings", "two_payouts_per_offer", "two_documents")
        )
        ok = ok and results["ledger_check"] == "OK" and str(results["rebuild_verify"]).startswith("rebuilt")
        return 0 if ok and (machine is None or machine.returncode == 0) else 1
    finally:
        for proc in soak.procs.values() if soak is not None else ():
            proc.stop()
        stack.stop()


def print_table(soak: Soak, r: dict[str, object], recovery: float | None) -> None:
    print("\nfaults injected")
    print(f"  {'kind':<16}{'count':>6}")
    for kind in KINDS:
        print(f"  {kind:<16}{soak.faults[kind]:>6}")
    print(f"  {'total':<16}{sum(soak.faults.values()):>6}")
    print("\noutcome")
    rows = [
        ("offers accepted (202)", r["accepted"]),
        ("reached final state (paid + receipt)", r["final"]),
        ("LOST (202 but no final state)", r["lost"]),
        ("  of which the client never got to the payout", r["never_reached_payout"]),
        ("DUPLICATED: two transfers for one payout", r["two_transfers"]),
        ("DUPLICATED: two postings for one offer", r["two_postings"]),
        ("DUPLICATED: two payouts for one offer", r["two_payouts_per_offer"]),
        ("DUPLICATED: two documents for one input", r["two_documents"]),
        ("dead letters", r["dead_letters"]),
        ("ledger check", r["ledger_check"]),
        ("rebuild --verify-only", r["rebuild_verify"]),
        ("max consumer lag (messages)", soak.max_lag),
        ("lag back to 0 after last fault (s)", f"{recovery:.0f}" if recovery is not None else "not measured"),
    ]
    for name, value in rows:
        print(f"  {name:<44}{value!s:>18}")
    errors = defaultdict(int, soak.http_errors)
    print(f"\nclient-side retries through outages: {dict(errors)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument(
        "--rate", type=float, default=0.15, help="deals per second (the API allows 10 payouts a minute)"
    )
    parser.add_argument("--fault-every", type=float, default=45.0, help="mean seconds between faults")
    parser.add_argument("--outage", type=float, default=60.0, help="longest registry/S3 outage (30..this)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--ledger-examples", type=int, default=int(os.environ.get("LEDGER_EXAMPLES", "2000")),
        help="ledger state machine examples run alongside (LEDGER_EXAMPLES; 20000 for the full count)",
    )  # fmt: skip
    sys.exit(asyncio.run(main(parser.parse_args())))

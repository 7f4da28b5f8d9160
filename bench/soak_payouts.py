"""Randomised fault soak for the payout state machine (not a timed test).

    make soak-payouts                    # 1,000 payouts
    .venv/bin/python -m bench.soak_payouts --payouts 1000 --concurrency 24 --seed 7

Against the real Postgres (a database of its own, migrated) and the stateful provider fake
over real HTTP, two ``PayoutRunner`` drivers (two "workers", each with its own resolver)
pay N payouts. Every payout draws its faults at random: Stripe 5xx, timeout, late visibility
(executes, answers 500, shows up in lookups later), decline (-> Wise), Wise lost funding with
late visibility, both declining, a bounce after the money was counted as paid, a worker
"SIGKILL" at a random phase boundary (the driver dies there: nothing after that point runs,
its lock goes with it), duplicate delivery, and the second driver handling the same request
at the same time. Outcome events go to an in-memory recorder (Kafka is not under test here).

It prints: payouts, transfers executed at the fake, duplicates (must be 0), lost (must be 0:
a payout with no terminal phase, a success without exactly one transfer, a failure with a
transfer, or an outcome never published), still parked after resolution (must be 0), the
ledger check, the reconcile result (only the planted bounces may show, as
``returned_after_paid``), and wall time. Exit 1 if an invariant fails.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select

from agents.payouts import PayoutRunner
from agents.reconcile import reconcile
from infra.crypto import RecipientVault
from infra.db import create_engine
from infra.logging import configure_logging
from infra.providers import StripeClient, WiseClient
from infra.retry import RetryPolicy
from infra.settings import Settings
from models.events import PayoutRequested
from models.payout import payout_id_for
from projections.tables import offers
from state.creators import insert_creator, insert_recipient
from state.ledger import check_ledger, ledger_transactions
from state.provider_objects import SqlProviderObjects
from state.tables import payouts
from tests.fakes.providers import ProviderFake
from tests.support.environments import drop_stack_env, prepare_stack_env

STRIPE_KEY = "sk_test_soak"
WISE_TOKEN = "wise-soak-token"
CLIENT_TIMEOUT = 0.4
HANG = 0.8
SETTLE = 2.0
CRASH_POINTS = (
    "after:intent",
    "after:stripe_pending",
    "after_call:STRIPE",
    "after:stripe_unknown",
    "after:stripe_failed",
    "after:wise_pending",
    "after_call:WISE",
    "after:succeeded",
    "after:parked",
)
SCENARIOS = (
    ("ok", 30),
    ("stripe_5xx", 10),
    ("stripe_timeout", 10),
    ("stripe_late", 10),
    ("stripe_decline", 10),
    ("wise_lost_late", 10),
    ("both_decline", 5),
    ("bounce", 5),
    ("stripe_409", 10),
)


class Crash(BaseException):
    """The worker dies here (like SIGKILL: nothing after this point runs)."""


class Recorder:
    """Stands in for the Kafka publisher: counts outcome events by id."""

    def __init__(self) -> None:
        self.events: Counter[str] = Counter()
        self.by_payout: dict[str, str] = {}

    async def publish(self, event: Any) -> None:
        self.events[event.event_id] += 1
        self.by_payout[event.payout_id] = event.status.value


def plan_faults(fake: ProviderFake, rng: random.Random, payout_id: str, scenario: str) -> None:
    add = fake.add_payout_fault
    if scenario == "stripe_5xx":
        add("stripe", payout_id, "server_error", times=rng.choice([1, 2]))
    elif scenario == "stripe_timeout":
        add("stripe", payout_id, "execute_then_timeout", hang_seconds=HANG)
    elif scenario == "stripe_late":
        add("stripe", payout_id, "execute_then_500", visible_after=SETTLE * rng.uniform(0.2, 0.8))
    elif scenario == "stripe_409":
        add("stripe", payout_id, "execute_then_timeout", hang_seconds=HANG * 2, visible_after=HANG * 3)
    elif scenario in ("stripe_decline", "bounce", "wise_lost_late", "both_decline"):
        add("stripe", payout_id, "decline", times=None)
        if scenario == "wise_lost_late":
            add("wise", payout_id, "execute_then_500", visible_after=rng.uniform(0.2, 1.5))
        elif scenario == "both_decline":
            add("wise", payout_id, "decline", step="transfer", times=None)


async def setup(engine: Any, vault: RecipientVault, n: int) -> tuple[str, str, list[tuple[str, int]]]:
    creator_id, recipient_id = str(uuid.uuid4()), str(uuid.uuid4())
    details = {
        "stripe_account_id": "acct_soak42",
        "bank_account": {"holder_name": "Soak Tester", "iban": "DE89370400440532013000", "bic": "COBADEFFXXX"},
    }
    deals = [(str(uuid.uuid4()), 100_00 + i) for i in range(n)]
    async with engine.begin() as conn:
        await insert_creator(conn, creator_id, "Soak", "GB")
        await insert_recipient(
            conn,
            recipient_id,
            creator_id,
            "EUR",
            vault.seal(details, recipient_id=recipient_id, creator_id=creator_id),
            {"iban": "DE89…3000"},
        )
        await conn.execute(
            insert(offers),
            [
                {
                    "offer_id": offer_id,
                    "creator_id": creator_id,
                    "status": "accepted",
                    "currency": "EUR",
                    "valuation_median_minor": amount,
                    "advance_minor": amount,
                    "first_seq": 0,
                    "change_seq": 0,
                }
                for offer_id, amount in deals
            ],
        )
    return creator_id, recipient_id, deals


async def soak(n: int, concurrency: int, seed: int, env: dict[str, str]) -> int:
    rng = random.Random(seed)
    settings = Settings.from_env(env)
    engine = create_engine(settings, pool_size=concurrency + 8)
    vault = RecipientVault.from_settings(settings)
    fake = ProviderFake(hang_seconds=HANG, stripe_api_key=STRIPE_KEY, wise_token=WISE_TOKEN)
    await fake.start()
    recorder = Recorder()
    armed: dict[str, str] = {}  # payout_id -> the boundary where its driver dies

    def die(where: str, payout_id: str) -> None:
        if armed.get(payout_id) == where:
            del armed[payout_id]
            raise Crash(where)

    def runner(name: str) -> tuple[PayoutRunner, StripeClient, WiseClient]:
        stripe = StripeClient(fake.stripe_url, STRIPE_KEY, CLIENT_TIMEOUT, rate_limit_backoff_seconds=0.05)
        wise = WiseClient(fake.wise_url, WISE_TOKEN, "4242", CLIENT_TIMEOUT, objects=SqlProviderObjects(engine, "WISE"))
        r = PayoutRunner(
            engine,
            recorder,  # type: ignore[arg-type]
            vault,
            stripe,
            wise,
            settle_seconds=SETTLE,
            inline_unknown_rounds=1,
            resolve_policy=RetryPolicy("soak_ambiguity", 0.2, 1.0),
            resolver_poll_seconds=0.2,
            driver=name,
            checkpoint=die,
        )
        return r, stripe, wise

    drivers = [runner("worker-a"), runner("worker-b")]
    creator_id, recipient_id, deals = await setup(engine, vault, n)
    started = time.monotonic()
    stop = asyncio.Event()

    async def resolver(r: PayoutRunner) -> None:
        while not stop.is_set():
            try:
                await r.resolve_due()
            except Crash:
                pass  # that worker died mid-resolve; its successor (either resolver) adopts the payout
            await asyncio.sleep(0.2)

    resolvers = [asyncio.ensure_future(resolver(d[0])) for d in drivers]
    scenarios = [name for name, weight in SCENARIOS for _ in range(weight)]
    drawn: Counter[str] = Counter()
    bounces: list[str] = []
    gate = asyncio.Semaphore(concurrency)

    async def one(offer_id: str, amount: int) -> None:
        async with gate:
            payout_id = payout_id_for(offer_id)
            scenario = rng.choice(scenarios)
            drawn[scenario] += 1
            plan_faults(fake, rng, payout_id, scenario)
            if rng.random() < 0.25:
                armed[payout_id] = rng.choice(CRASH_POINTS)
                drawn["crash"] += 1
            event = PayoutRequested(
                event_id=str(uuid.uuid4()),
                offer_id=offer_id,
                creator_id=creator_id,
                occurred_at=datetime.now(UTC),
                correlation_id="soak",
                payout_id=payout_id,
                recipient_id=recipient_id,
                amount_minor=amount,
                currency="EUR",
                requested_by="soak",
            )
            first, second = rng.sample(drivers, 2)
            calls = [first[0].handle(event)]
            if rng.random() < 0.3:  # a second driver (the other consumer group) at the same time
                calls.append(second[0].handle(event))
                drawn["second_driver"] += 1
            results = await asyncio.gather(*calls, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException) and not isinstance(result, Crash):
                    raise result
            if rng.random() < 0.2:  # redelivery of the same message
                drawn["duplicate_delivery"] += 1
                try:
                    await second[0].handle(event)
                except Crash:
                    pass
            if scenario == "bounce":
                bounces.append(payout_id)

    await asyncio.gather(*(one(o, a) for o, a in deals))

    async def unfinished() -> int:
        async with engine.connect() as conn:
            return int(
                await conn.scalar(
                    select(func.count()).select_from(payouts).where(payouts.c.phase.not_in(("succeeded", "failed")))
                )
                or 0
            )

    deadline = time.monotonic() + 180
    for _ in range(360):  # poll the database until every payout is terminal (or 3 minutes pass)
        if not await unfinished() or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(6)  # let the resolvers publish outcomes a crash left unpublished
    stop.set()
    for task in resolvers:
        await task

    # Bounce the Wise transfers of the "bounce" payouts that were paid through Wise.
    async with engine.connect() as conn:
        rows = {str(r["payout_id"]): dict(r) for r in (await conn.execute(select(payouts))).mappings()}
    planted = 0
    for payout_id in bounces:
        row = rows.get(payout_id)
        if row and row["phase"] == "succeeded" and row["provider"] == "WISE":
            fake.bounce_wise_transfer(row["provider_reference"])
            planted += 1
    wall = time.monotonic() - started

    executed_total = sum(fake.executed("stripe").values()) + sum(fake.executed("wise").values())
    duplicates = [p for p in rows if fake.executed_count(p) > 1]
    lost = []
    for payout_id, row in rows.items():
        moved = fake.executed_count(payout_id)
        if row["phase"] not in ("succeeded", "failed"):
            lost.append((payout_id, "unfinished"))
        elif row["phase"] == "succeeded" and moved != 1:
            lost.append((payout_id, f"succeeded with {moved} transfers"))
        elif row["phase"] == "failed" and moved != 0:
            lost.append((payout_id, f"failed with {moved} transfers"))
        elif payout_id not in recorder.by_payout or row["outcome_published_at"] is None:
            lost.append((payout_id, "outcome never published"))
    lost += [(payout_id_for(o), "no payout row") for o, _ in deals if payout_id_for(o) not in rows]
    parked = sum(1 for r in rows.values() if r["phase"] == "parked")
    async with engine.connect() as conn:
        ledger = await check_ledger(conn)
        postings = int(
            await conn.scalar(
                select(func.count())
                .select_from(ledger_transactions)
                .where(ledger_transactions.c.reference_id.like("payout:%"))
            )
            or 0
        )
    succeeded = sum(1 for r in rows.values() if r["phase"] == "succeeded")
    drift = await reconcile(engine, drivers[0][1], drivers[0][2], None)
    drift_kinds = Counter(d.kind for d in drift.drifts)
    unexpected_drift = {k: v for k, v in drift_kinds.items() if k != "returned_after_paid"}

    print(f"payouts                    {len(deals)}")
    print(f"faults drawn               {dict(sorted(drawn.items()))}")
    print(f"succeeded / failed         {succeeded} / {sum(1 for r in rows.values() if r['phase'] == 'failed')}")
    print(f"transfers executed at fake {executed_total}")
    print(f"duplicates                 {len(duplicates)}")
    print(f"lost                       {len(lost)} {lost[:5] if lost else ''}")
    print(f"still parked               {parked}")
    print(f"ledger postings            {postings} (succeeded payouts: {succeeded})")
    print(f"ledger check               {'ok' if ledger.ok else 'VIOLATIONS ' + str(ledger.violations[:3])}")
    print(
        f"reconcile                  {dict(drift_kinds) or 'clean'} "
        f"(planted bounces: {planted}; only returned_after_paid expected)"
    )
    print(f"outcome events (distinct)  {len(recorder.events)}")
    print(f"wall time                  {wall:.1f} s")
    for _, stripe, wise in drivers:
        await stripe.aclose()
        await wise.aclose()
    await fake.stop()
    await engine.dispose()
    ok = (
        not duplicates
        and not lost
        and parked == 0
        and ledger.ok
        and postings == succeeded
        and not unexpected_drift
        and drift_kinds.get("returned_after_paid", 0) == planted
    )
    print("RESULT", "ok" if ok else "FAILED")
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payouts", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=24)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    print(f"seed {args.seed}")
    # The `spacemusic migrate` subprocess must run this checkout's code and migrations.
    root = str(Path(__file__).resolve().parent.parent)
    os.environ["PYTHONPATH"] = root + os.pathsep + os.environ.get("PYTHONPATH", "")
    configure_logging("WARNING", sys.stderr)
    env = prepare_stack_env(f"soak{uuid.uuid4().hex[:6]}", LOG_LEVEL="WARNING")
    try:
        code = asyncio.run(soak(args.payouts, args.concurrency, args.seed, env))
    finally:
        drop_stack_env(env)
    sys.exit(code)


if __name__ == "__main__":
    main()

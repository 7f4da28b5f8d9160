"""Payout failure modes, crashes and redelivery, against a stateful provider fake.

This module runs its own worker and web PROCESSES (own database and topic namespace) wired
to `tests.fakes.providers.ProviderFake` for both Stripe and Wise, so a test can make a
provider decline, fail, or execute and lose its answer, and can SIGKILL the worker while a
provider call is in flight.
"""

from __future__ import annotations

import asyncio
import re
import signal
import uuid
from datetime import UTC, datetime

import aiohttp
import pytest
from sqlalchemy import func, select, update

from infra.db import create_engine
from infra.settings import Settings
from models.events import PayoutRequested
from models.payout import payout_id_for
from projections.tables import offers
from state.ledger import check_ledger, ledger_transactions
from state.tables import payout_attempts, payout_recipients, payouts
from tests.fakes.providers import ProviderFake
from tests.support.environments import drop_stack_env, prepare_stack_env
from tests.support.kafka import read_all
from tests.support.money import (
    FAST_RESOLVER,
    HOLDER,
    IBAN,
    STRIPE_ACCOUNT,
    accepted_offer,
    onboard,
    provider_env,
    request_payout,
    wait_status,
)
from tests.support.stack import ARTIFACTS, Process, admin_headers, eventually, free_port

STRIPE_KEY = "sk_test_fake_provider"
WISE_TOKEN = "wise-test-token-not-real"
CLIENT_TIMEOUT = 2.0
SETTLE_SECONDS = 5.0


class Http:
    """A tiny HTTP client with the same call shape as aiohttp's TestClient."""

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        self.base = base
        self.session = aiohttp.ClientSession(headers=headers)

    async def post(self, path: str, **kwargs):  # type: ignore[no-untyped-def]
        return await self.session.post(self.base + path, **kwargs)

    async def get(self, path: str, **kwargs):  # type: ignore[no-untyped-def]
        return await self.session.get(self.base + path, **kwargs)


class WorkerHandle:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.generation = 0
        self.proc: Process | None = None

    def start(self) -> None:
        self.generation += 1
        self.proc = Process(f"payout-worker-{self.generation}", self.env, "worker")
        self.proc.wait_for_log('"partitions_assigned"', timeout=90)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.stop(sig=signal.SIGKILL)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


@pytest.fixture(scope="module")
async def fake():
    provider = ProviderFake(hang_seconds=CLIENT_TIMEOUT * 3, stripe_api_key=STRIPE_KEY, wise_token=WISE_TOKEN)
    await provider.start()
    yield provider
    await provider.stop()


@pytest.fixture(scope="module")
def money_env(fake, run_id):
    env = prepare_stack_env(
        f"{run_id}p",
        **provider_env(
            fake,
            STRIPE_KEY,
            WISE_TOKEN,
            PAYOUT_PROVIDER_TIMEOUT_SECONDS=str(CLIENT_TIMEOUT),
            PAYOUT_SETTLE_SECONDS=str(SETTLE_SECONDS),
            **FAST_RESOLVER,
        ),
    )
    yield env
    drop_stack_env(env)


@pytest.fixture(scope="module")
async def money(money_env):
    worker = await asyncio.to_thread(_started, WorkerHandle(money_env))
    web = Process("payout-web", money_env, "web")
    await asyncio.to_thread(web.wait_for_log, '"deal_feed_listening"', 60)
    settings = Settings.from_env(money_env)
    client = Http(f"http://127.0.0.1:{money_env['WEB_PORT']}", admin_headers(settings))
    engine = create_engine(settings)
    yield {"worker": worker, "client": client, "engine": engine, "settings": settings, "env": money_env}
    await client.session.close()
    await engine.dispose()
    web.stop()
    worker.stop()


def _started(handle: WorkerHandle) -> WorkerHandle:
    handle.start()
    return handle


@pytest.fixture(autouse=True)
def reset_fake(fake):
    fake.reset()
    yield


async def metrics(money) -> str:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{money['env']['METRICS_PORT']}/metrics") as r:
            return await r.text()


def counter(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(name + "{"):
            got = ",".join(sorted(line[line.index("{") + 1 : line.index("}")].split(",")))
            if got == wanted:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


async def payout_row(engine, payout_id: str) -> dict | None:
    async with engine.connect() as conn:
        row = (await conn.execute(select(payouts).where(payouts.c.payout_id == payout_id))).mappings().first()
        return dict(row) if row else None


async def deal(engine, offer_id: str) -> dict:
    async with engine.connect() as conn:
        return dict((await conn.execute(select(offers).where(offers.c.offer_id == offer_id))).mappings().one())


async def ledger_count(engine, offer_id: str) -> int:
    async with engine.connect() as conn:
        return int(
            await conn.scalar(
                select(func.count()).select_from(ledger_transactions).where(ledger_transactions.c.offer_id == offer_id)
            )
        )


async def paid_offer_setup(money, **onboard_kwargs) -> tuple[str, str, str]:
    # One creator for the module (the web rate-limits recipient creation per caller).
    if onboard_kwargs or "creator" not in money:
        onboarded = await onboard(money["client"], **onboard_kwargs)
        if onboard_kwargs:
            creator_id, recipient_id = onboarded
        else:
            money["creator"] = onboarded
    if not onboard_kwargs:
        creator_id, recipient_id = money["creator"]
    offer_id = await accepted_offer(money["client"], money["engine"], creator_id)
    return creator_id, recipient_id, offer_id


async def test_stripe_pays_and_metrics_count_it(money, fake) -> None:
    before = await metrics(money)
    _, recipient_id, offer_id = await paid_offer_setup(money)
    assert (await request_payout(money["client"], offer_id, recipient_id)).status == 202
    await wait_status(money["engine"], offer_id, "paid")
    d = await deal(money["engine"], offer_id)
    assert d["payout_provider"] == "STRIPE" and fake.executed_count(payout_id_for(offer_id)) == 1
    assert await ledger_count(money["engine"], offer_id) == 1
    after = await metrics(money)
    assert (
        counter(after, "spacemusic_stripe_transfers_total", outcome="succeeded")
        == counter(before, "spacemusic_stripe_transfers_total", outcome="succeeded") + 1
    )


async def test_stripe_declines_and_wise_pays(money, fake) -> None:
    before = await metrics(money)
    fake.set_mode("stripe", "decline")
    _, recipient_id, offer_id = await paid_offer_setup(money)
    await request_payout(money["client"], offer_id, recipient_id)
    await wait_status(money["engine"], offer_id, "paid")
    d = await deal(money["engine"], offer_id)
    payout_id = payout_id_for(offer_id)
    assert d["payout_provider"] == "WISE"
    assert fake.executed_count(payout_id, "stripe") == 0 and fake.executed_count(payout_id, "wise") == 1
    assert await ledger_count(money["engine"], offer_id) == 1
    after = await metrics(money)
    assert (
        counter(after, "spacemusic_wise_transfers_total", outcome="succeeded")
        == counter(before, "spacemusic_wise_transfers_total", outcome="succeeded") + 1
    )
    assert counter(after, "spacemusic_stripe_transfers_total", outcome="definite_failure") >= 1


async def test_both_providers_fail(money, fake) -> None:
    fake.set_mode("stripe", "decline")
    fake.set_mode("wise", "decline", step="transfer")
    _, recipient_id, offer_id = await paid_offer_setup(money)
    await request_payout(money["client"], offer_id, recipient_id)
    await wait_status(money["engine"], offer_id, "payout_failed")
    d = await deal(money["engine"], offer_id)
    assert (
        d["payout_provider"] == "NONE"
        and "stripe" in d["payout_failure_reason"]
        and "wise" in d["payout_failure_reason"]
    )
    assert fake.executed_count(payout_id_for(offer_id)) == 0
    assert await ledger_count(money["engine"], offer_id) == 0


async def test_stripe_times_out_after_executing_and_no_wise_follows(money, fake) -> None:
    fake.set_mode("stripe", "execute_then_timeout", times=1)
    _, recipient_id, offer_id = await paid_offer_setup(money)
    await request_payout(money["client"], offer_id, recipient_id)
    await wait_status(money["engine"], offer_id, "paid")
    payout_id = payout_id_for(offer_id)
    assert fake.executed_count(payout_id, "stripe") == 1 and fake.executed_count(payout_id, "wise") == 0
    assert not [r for r in fake.requests if r.provider == "wise"]
    d = await deal(money["engine"], offer_id)
    assert d["payout_provider"] == "STRIPE"
    assert await ledger_count(money["engine"], offer_id) == 1
    async with money["engine"].connect() as conn:
        statuses = (
            await conn.execute(
                select(payout_attempts.c.operation, payout_attempts.c.status)
                .where(payout_attempts.c.payout_id == payout_id)
                .order_by(payout_attempts.c.attempt_id)
            )
        ).all()
    assert [tuple(s) for s in statuses] == [("transfer", "unknown"), ("lookup", "succeeded")]


async def test_stripe_5xx_then_lookup_finds_nothing_retries_with_a_fresh_key(money, fake) -> None:
    fake.set_mode("stripe", "server_error", times=1)
    _, recipient_id, offer_id = await paid_offer_setup(money)
    await request_payout(money["client"], offer_id, recipient_id)
    await wait_status(money["engine"], offer_id, "paid")
    assert fake.executed_count(payout_id_for(offer_id)) == 1
    keys = {r.headers.get("Idempotency-Key") for r in fake.requests if r.provider == "stripe" and r.method == "POST"}
    assert len(keys) == 2  # the stored 500 is replayed for the old key, so the retry needs a new one


async def _publish_request(money, offer_id: str, creator_id: str, recipient_id: str, amount: int) -> PayoutRequested:
    from infra.avro import codec_from_settings
    from infra.kafka import EventPublisher

    settings = money["settings"]
    codec = codec_from_settings(settings)
    publisher = EventPublisher(settings, codec)
    await publisher.start()
    event = PayoutRequested(
        event_id=str(uuid.uuid4()),
        offer_id=offer_id,
        creator_id=creator_id,
        occurred_at=datetime.now(UTC),
        correlation_id="direct",
        payout_id=payout_id_for(offer_id),
        recipient_id=recipient_id,
        amount_minor=amount,
        currency="EUR",
        requested_by="test",
    )
    try:
        await publisher.publish(event)
        await publisher.publish(event)  # delivered twice
    finally:
        await publisher.stop()
    return event


async def test_offer_not_found_and_no_median_price_call_no_provider(money, fake) -> None:
    before = await metrics(money)
    creator_id, recipient_id = await onboard(money["client"])
    ghost = str(uuid.uuid4())
    await _publish_request(money, ghost, creator_id, recipient_id, 1000)
    resp = await money["client"].post(
        "/offers",
        json={
            "creator_id": creator_id,
            "currency": "EUR",
            "royalty_history": [{"period": "2025-01", "amount_minor": 0}],
        },
    )
    unpriced = (await resp.json())["offer_id"]
    await wait_status(money["engine"], unpriced, "valuation_failed")
    await _publish_request(money, unpriced, creator_id, recipient_id, 1000)

    async def both_failed() -> bool:
        rows = [await payout_row(money["engine"], payout_id_for(o)) for o in (ghost, unpriced)]
        return all(r and r["phase"] == "failed" for r in rows)

    await eventually(both_failed, timeout=30, what="refusals recorded")
    assert (await payout_row(money["engine"], payout_id_for(ghost)))["failure_reason"] == "offer_not_found"
    assert (await payout_row(money["engine"], payout_id_for(unpriced)))["failure_reason"] == "no_median_price"
    await wait_status(money["engine"], unpriced, "payout_failed")
    assert fake.requests == []
    after = await metrics(money)
    for reason in ("offer_not_found", "no_median_price"):
        assert (
            counter(after, "spacemusic_app_errors_total", component="payouts", reason=reason)
            == counter(before, "spacemusic_app_errors_total", component="payouts", reason=reason) + 1
        )

    async def outcomes() -> bool:
        records = await read_all(money["settings"], "offer.payout.completed")
        return len({r.key for r in records if r.key.decode() in (ghost, unpriced)}) == 2

    await eventually(outcomes, timeout=20, what="an explicit failed outcome for each")


async def test_payout_requested_delivered_twice_pays_once(money, fake) -> None:
    creator_id, recipient_id, offer_id = await paid_offer_setup(money)
    d = await deal(money["engine"], offer_id)
    await _publish_request(money, offer_id, creator_id, recipient_id, d["advance_minor"])
    await wait_status(money["engine"], offer_id, "paid")
    await asyncio.sleep(2)  # let the second delivery be processed too
    assert fake.executed_count(payout_id_for(offer_id)) == 1
    assert await ledger_count(money["engine"], offer_id) == 1


@pytest.mark.parametrize("where", ["stripe_in_flight", "wise_in_flight"])
async def test_worker_killed_mid_payout_resumes_without_paying_twice(money, fake, where) -> None:
    creator_id, recipient_id, offer_id = await paid_offer_setup(money)
    payout_id = payout_id_for(offer_id)
    if where == "stripe_in_flight":
        fake.set_mode("stripe", "execute_then_timeout", times=1, hang_seconds=30)
        provider = "stripe"
    else:
        fake.set_mode("stripe", "decline", times=1)
        fake.set_mode("wise", "execute_then_timeout", times=1, hang_seconds=30)
        provider = "wise"
    await request_payout(money["client"], offer_id, recipient_id)
    await eventually(lambda: fake.executed_count(payout_id, provider) == 1, timeout=30, interval=0.02, what="executed")
    money["worker"].kill()  # the provider moved money; the worker never heard back or committed
    row = await payout_row(money["engine"], payout_id)
    assert row["phase"] in ("stripe_pending", "wise_pending"), row["phase"]
    await asyncio.to_thread(money["worker"].start)
    await wait_status(money["engine"], offer_id, "paid", timeout=60)
    assert fake.executed_count(payout_id) == 1
    assert await ledger_count(money["engine"], offer_id) == 1
    assert (await deal(money["engine"], offer_id))["payout_provider"] == provider.upper()
    async with money["engine"].connect() as conn:
        successes = await conn.scalar(
            select(func.count())
            .select_from(payout_attempts)
            .where(payout_attempts.c.payout_id == payout_id, payout_attempts.c.status == "succeeded")
        )
        assert successes == 1
        assert (await check_ledger(conn)).ok


# --- ambiguity, parking, drivers and crashes (issue 9) ----------------------------------------


async def stripe_keys(fake, payout_id: str) -> set[str]:
    return {
        r.headers.get("Idempotency-Key", "")
        for r in fake.requests
        if r.provider == "stripe" and r.method == "POST" and r.body.get("transfer_group") == [payout_id]
    }


async def test_a_5xx_whose_transfer_shows_up_late_is_found_and_never_paid_again(money, fake) -> None:
    """Stripe documents a 500 as indeterminate: the transfer executes, the answer is a 500
    (replayed for the same key), and the transfer becomes visible only later. Within the
    settle window the payout keeps looking and never uses a fresh key."""
    _, recipient_id, offer_id = await paid_offer_setup(money)
    payout_id = payout_id_for(offer_id)
    fake.set_mode("stripe", "execute_then_500", times=1, visible_after=SETTLE_SECONDS - 2, payout_id=payout_id)
    await request_payout(money["client"], offer_id, recipient_id)
    await wait_status(money["engine"], offer_id, "paid", timeout=60)
    assert fake.executed_count(payout_id) == 1
    assert await stripe_keys(fake, payout_id) == {f"spacemusic-payout-{payout_id}"}
    assert await ledger_count(money["engine"], offer_id) == 1


async def test_a_timeout_then_409_while_in_flight_keeps_the_same_key(money, fake) -> None:
    """A timed-out request still being processed: the lookup sees nothing yet, the retry with
    the same key gets 409 (key in use), later the same key returns the stored success."""
    _, recipient_id, offer_id = await paid_offer_setup(money)
    payout_id = payout_id_for(offer_id)
    fake.set_mode("stripe", "execute_then_timeout", times=1, hang_seconds=5, visible_after=30, payout_id=payout_id)
    await request_payout(money["client"], offer_id, recipient_id)
    await wait_status(money["engine"], offer_id, "paid", timeout=60)
    assert fake.executed_count(payout_id) == 1
    assert await stripe_keys(fake, payout_id) == {f"spacemusic-payout-{payout_id}"}
    async with money["engine"].connect() as conn:
        reasons = (
            await conn.execute(select(payout_attempts.c.failure_reason).where(payout_attempts.c.payout_id == payout_id))
        ).scalars()
        assert "idempotency_conflict" in set(reasons)
    assert not [r for r in fake.requests if r.provider == "wise"]


async def test_a_parked_payout_does_not_delay_the_next_deals_payout(money, fake) -> None:
    _, recipient_a, offer_a = await paid_offer_setup(money)
    payout_a = payout_id_for(offer_a)
    fake.set_mode("stripe", "server_error", payout_id=payout_a)  # sticky, only for deal A
    await request_payout(money["client"], offer_a, recipient_a)

    async def parked() -> bool:
        row = await payout_row(money["engine"], payout_a)
        return row is not None and row["phase"] == "parked"

    await eventually(parked, timeout=30, what="deal A parked")
    _, recipient_b, offer_b = await paid_offer_setup(money)
    await request_payout(money["client"], offer_b, recipient_b)
    await wait_status(money["engine"], offer_b, "paid", timeout=30)
    row_a = await payout_row(money["engine"], payout_a)
    assert row_a["phase"] in ("parked", "stripe_unknown", "stripe_pending") and row_a["parked_from"] == "STRIPE"
    assert fake.executed_count(payout_a) == 0

    async def gauge() -> bool:
        return counter(await metrics(money), "spacemusic_payouts_parked", phase="parked") >= 1

    await eventually(gauge, timeout=30, what="parked gauge")
    listed = await asyncio.to_thread(_cli, money["env"], "payouts", "list", "--stuck", "--json")
    assert payout_a in listed
    fake.set_mode("stripe", "ok")  # the provider recovers: the resolver finishes deal A
    await wait_status(money["engine"], offer_a, "paid", timeout=60)
    assert fake.executed_count(payout_a) == 1 and await ledger_count(money["engine"], offer_a) == 1


def _cli(env: dict[str, str], *args: str) -> str:
    import subprocess

    from tests.support.stack import SPACEMUSIC

    done = subprocess.run([SPACEMUSIC, *args], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_terminal_phases_are_immutable_in_the_database(money, fake) -> None:
    from sqlalchemy import update
    from sqlalchemy.exc import DBAPIError

    _, recipient_id, offer_id = await paid_offer_setup(money)
    await request_payout(money["client"], offer_id, recipient_id)
    await wait_status(money["engine"], offer_id, "paid")
    payout_id = payout_id_for(offer_id)
    for change in ({"phase": "stripe_unknown"}, {"provider_reference": "tr_other"}, {"amount_minor": 1}):
        with pytest.raises(DBAPIError, match="terminal"):
            async with money["engine"].begin() as conn:
                await conn.execute(update(payouts).where(payouts.c.payout_id == payout_id).values(**change))
    with pytest.raises(DBAPIError, match="terminal"):
        async with money["engine"].begin() as conn:
            await conn.execute(payouts.delete().where(payouts.c.payout_id == payout_id))
    assert (await payout_row(money["engine"], payout_id))["phase"] == "succeeded"


async def test_wise_objects_are_created_once_and_lookups_create_nothing(money, fake) -> None:
    _, recipient_id, offer_id = await paid_offer_setup(money)
    payout_id = payout_id_for(offer_id)
    fake.set_mode("stripe", "decline", payout_id=payout_id)
    fake.set_mode("wise", "execute_then_500", times=1, visible_after=3, payout_id=payout_id)
    await request_payout(money["client"], offer_id, recipient_id)
    await wait_status(money["engine"], offer_id, "paid", timeout=60)
    assert fake.executed_count(payout_id, "wise") == 1 and fake.executed_count(payout_id, "stripe") == 0
    assert fake.wise_objects_created["quote"] == 1 and fake.wise_objects_created["transfer"] == 1
    assert fake.wise_objects_created["recipient"] <= 1  # reused across payouts of this recipient
    posts = [r.path for r in fake.requests if r.provider == "wise" and r.method == "POST"]
    assert posts.count("/v1/accounts") <= 1 and posts.count("/v1/transfers") == 1


async def test_two_payouts_workers_in_two_groups_pay_once(money, fake) -> None:
    """The `all` role worker of this module plus a `--role payouts` worker (its own consumer
    group) both receive every request: one drives, the other finds the payout taken."""
    env = {**money["env"], "METRICS_PORT": str(free_port())}
    second = Process("payout-worker-split", env, "worker", "--role", "payouts")
    try:
        await asyncio.to_thread(second.wait_for_log, '"partitions_assigned"', 90)
        offers_ = []
        for _ in range(3):
            _, recipient_id, offer_id = await paid_offer_setup(money)
            fake.set_mode("stripe", "execute_then_timeout", times=1, hang_seconds=3, payout_id=payout_id_for(offer_id))
            await request_payout(money["client"], offer_id, recipient_id)
            offers_.append(offer_id)
        for offer_id in offers_:
            await wait_status(money["engine"], offer_id, "paid", timeout=60)
        await asyncio.sleep(3)
        for offer_id in offers_:
            payout_id = payout_id_for(offer_id)
            assert fake.executed_count(payout_id) == 1
            assert (await payout_row(money["engine"], payout_id))["phase"] == "succeeded"
            assert await ledger_count(money["engine"], offer_id) == 1
        assert '"payout_driven_elsewhere"' in second.output() + money["worker"].proc.output()
    finally:
        second.stop()


class Crash(BaseException):
    """The worker dies here (BaseException: nothing in the runner catches it)."""


CRASH_POINTS = [
    ("after:intent", "ok"),
    ("after:stripe_pending", "ok"),
    ("after_call:STRIPE", "ok"),
    ("after:succeeded", "ok"),
    ("after:stripe_unknown", "stripe_5xx"),
    ("after:parked", "stripe_5xx"),
    ("after:stripe_failed", "stripe_declines"),
    ("after:wise_pending", "stripe_declines"),
    ("after_call:WISE", "stripe_declines"),
    ("after:wise_unknown", "wise_lost"),
    ("after:failed", "both_decline"),
]


@pytest.mark.parametrize(("where", "scenario"), CRASH_POINTS)
async def test_a_crash_at_every_phase_boundary_resumes_to_one_transfer(money, fake, where, scenario) -> None:
    from agents.payouts import PayoutRunner
    from infra.avro import codec_from_settings
    from infra.crypto import RecipientVault
    from infra.kafka import EventPublisher
    from infra.providers import StripeClient, WiseClient

    creator_id, recipient_id, offer_id = await paid_offer_setup(money)
    payout_id = payout_id_for(offer_id)
    if scenario == "stripe_5xx":
        fake.set_mode("stripe", "server_error", times=1, payout_id=payout_id)
    elif scenario in ("stripe_declines", "wise_lost", "both_decline"):
        fake.set_mode("stripe", "decline", payout_id=payout_id)
    if scenario == "wise_lost":
        fake.set_mode("wise", "execute_then_500", times=1, payout_id=payout_id)
    if scenario == "both_decline":
        fake.set_mode("wise", "decline", step="transfer", payout_id=payout_id)
    settings = money["settings"]
    publisher = EventPublisher(settings, codec_from_settings(settings))
    await publisher.start()
    stripe = StripeClient(fake.stripe_url, STRIPE_KEY, CLIENT_TIMEOUT)
    wise = WiseClient(fake.wise_url, WISE_TOKEN, "4242", CLIENT_TIMEOUT)
    crashed: list[str] = []

    def die(point: str, _payout_id: str) -> None:
        if point == where and not crashed:
            crashed.append(point)
            raise Crash(point)

    runner = PayoutRunner(
        money["engine"],
        publisher,
        RecipientVault.from_settings(settings),
        stripe,
        wise,
        settle_seconds=SETTLE_SECONDS,
        inline_unknown_rounds=1,
        checkpoint=die,
    )
    d = await deal(money["engine"], offer_id)
    requested = PayoutRequested(
        event_id=str(uuid.uuid4()),
        offer_id=offer_id,
        creator_id=creator_id,
        occurred_at=datetime.now(UTC),
        correlation_id="crash-test",
        payout_id=payout_id,
        recipient_id=recipient_id,
        amount_minor=d["advance_minor"],
        currency="EUR",
        requested_by="test",
    )
    try:
        with pytest.raises(Crash):
            await runner.handle(requested)
        assert crashed == [where]
        # The successor: the module's worker (its resolver adopts the orphan) or this
        # redelivery, whichever gets the payout first.
        for _ in range(3):
            await runner.handle(requested)
            row = await payout_row(money["engine"], payout_id)
            if row["phase"] in ("succeeded", "failed"):
                break
            await asyncio.sleep(SETTLE_SECONDS / 2)
        expected = "payout_failed" if scenario == "both_decline" else "paid"
        await wait_status(money["engine"], offer_id, expected, timeout=60)
        assert fake.executed_count(payout_id) == (0 if scenario == "both_decline" else 1)
        assert await ledger_count(money["engine"], offer_id) == (0 if scenario == "both_decline" else 1)
        async with money["engine"].connect() as conn:
            assert (await check_ledger(conn)).ok
    finally:
        await publisher.stop()
        await stripe.aclose()
        await wise.aclose()


async def test_reconcile_finds_one_planted_drift_of_each_kind_and_is_clean_otherwise(money, fake) -> None:
    import subprocess
    from datetime import timedelta

    from sqlalchemy import insert

    from tests.support.stack import SPACEMUSIC

    def reconcile_cli(since: datetime) -> tuple[int, list[dict]]:
        import json

        done = subprocess.run(
            [SPACEMUSIC, "reconcile", "--since", since.isoformat(), "--json"],
            env=money["env"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.returncode, [json.loads(line) for line in done.stdout.splitlines() if line.strip()]

    since = datetime.now(UTC) - timedelta(seconds=2)
    creator_id, recipient_id, stripe_offer = await paid_offer_setup(money)
    await request_payout(money["client"], stripe_offer, recipient_id)
    _, _, wise_offer = await paid_offer_setup(money)
    fake.set_mode("stripe", "decline", payout_id=payout_id_for(wise_offer))
    await request_payout(money["client"], wise_offer, recipient_id)
    _, _, failed_offer = await paid_offer_setup(money)
    fake.set_mode("stripe", "decline", payout_id=payout_id_for(failed_offer))
    fake.set_mode("wise", "decline", step="transfer", payout_id=payout_id_for(failed_offer))
    await request_payout(money["client"], failed_offer, recipient_id)
    await wait_status(money["engine"], stripe_offer, "paid")
    await wait_status(money["engine"], wise_offer, "paid")
    await wait_status(money["engine"], failed_offer, "payout_failed")
    mine = {payout_id_for(o) for o in (stripe_offer, wise_offer, failed_offer)}
    code, drifts = await asyncio.to_thread(reconcile_cli, since)
    # Earlier tests' payouts lost their transfers when the fake was reset: only ours count.
    assert [d for d in drifts if d["payout_id"] in mine] == [], drifts

    paid = await payout_row(money["engine"], payout_id_for(stripe_offer))
    via_wise = await payout_row(money["engine"], payout_id_for(wise_offer))
    failed = await payout_row(money["engine"], payout_id_for(failed_offer))
    fake.plant_stripe_transfer(paid["payout_id"], paid["amount_minor"], "EUR", STRIPE_ACCOUNT)  # two for one
    fake.plant_stripe_transfer(failed["payout_id"], failed["amount_minor"] + 1, "EUR", STRIPE_ACCOUNT)  # not posted
    fake.plant_stripe_transfer(via_wise["payout_id"], via_wise["amount_minor"], "USD", STRIPE_ACCOUNT)  # currency
    fake.plant_stripe_transfer(str(uuid.uuid4()), 100, "EUR", STRIPE_ACCOUNT)  # nobody's
    fake.bounce_wise_transfer(via_wise["provider_reference"])  # bounced after it was counted as paid
    async with money["engine"].begin() as conn:  # a success the provider never saw
        await conn.execute(
            insert(payouts).values(
                payout_id=str(uuid.uuid4()),
                offer_id=str(uuid.uuid4()),
                creator_id=creator_id,
                recipient_id=recipient_id,
                amount_minor=500,
                currency="EUR",
                phase="succeeded",
                provider="STRIPE",
                provider_reference="tr_ghost",
                requested_event_id=str(uuid.uuid4()),
                correlation_id="planted",
                completed_at=datetime.now(UTC),
                outcome_published_at=datetime.now(UTC),
            )
        )
    code, drifts = await asyncio.to_thread(reconcile_cli, since)
    drifts = [
        d for d in drifts if d["payout_id"] in mine or d["reference"] == "tr_ghost" or d["kind"] == "unknown_transfer"
    ]
    kinds = {d["kind"] for d in drifts}
    assert code == 1
    assert kinds == {
        "duplicate_transfers",
        "missing_in_ledger",
        "amount_mismatch",
        "currency_mismatch",
        "unknown_transfer",
        "returned_after_paid",
        "missing_at_provider",
    }, drifts
    by_kind = {d["kind"]: d for d in drifts}
    assert by_kind["missing_in_ledger"]["payout_id"] == failed["payout_id"]
    assert by_kind["returned_after_paid"]["payout_id"] == via_wise["payout_id"]
    assert by_kind["missing_at_provider"]["reference"] == "tr_ghost"


def _cli_rc(env: dict[str, str], *args: str) -> tuple[int, str]:
    import subprocess

    from tests.support.stack import SPACEMUSIC

    done = subprocess.run([SPACEMUSIC, *args], env=env, capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout + done.stderr


async def test_cancel_after_confirmation_then_retry_pays_once_to_the_new_recipient(money, fake) -> None:
    creator_id, recipient_id, offer_id = await paid_offer_setup(money)
    first = payout_id_for(offer_id)
    fake.set_mode("stripe", "server_error", payout_id=first)  # sticky: the first payout parks
    await request_payout(money["client"], offer_id, recipient_id)

    async def parked() -> bool:
        row = await payout_row(money["engine"], first)
        return row is not None and row["phase"] == "parked"

    await eventually(parked, timeout=30, what="first payout parked")
    code, out = await asyncio.to_thread(_cli_rc, money["env"], "payouts", "retry", offer_id, "--by", "ops@example")
    assert code != 0 and "only a failed payout can be retried" in out
    # Cancel takes the payout from the resolver, waits out the settle window after the last
    # Stripe call (a late transfer would show by then), and only then asks Stripe.
    code, out = await asyncio.to_thread(_cli_rc, money["env"], "payouts", "cancel", first, "--by", "ops@example")
    assert code == 0 and "cancelled" in out, out
    await wait_status(money["engine"], offer_id, "payout_failed")
    row = await payout_row(money["engine"], first)
    assert row["phase"] == "failed" and "cancelled by ops@example" in row["failure_reason"]

    new_recipient = await money["client"].post(
        f"/creators/{creator_id}/recipients", json={"currency": "EUR", "stripe_account_id": "acct_1NewAccount77"}
    )
    assert new_recipient.status == 201, await new_recipient.text()
    new_recipient_id = (await new_recipient.json())["recipient_id"]
    code, out = await asyncio.to_thread(
        _cli_rc, money["env"], "payouts", "retry", offer_id, "--recipient", new_recipient_id, "--by", "ops@example"
    )
    assert code == 0, out
    second = payout_id_for(offer_id, 1)
    await wait_status(money["engine"], offer_id, "paid", timeout=60)
    assert fake.executed_count(first) == 0 and fake.executed_count(second) == 1
    assert [t["destination"] for t in fake.transfers["stripe"] if t["transfer_group"] == second] == [
        "acct_1NewAccount77"
    ]
    row = await payout_row(money["engine"], second)
    assert row["retry_of"] == first and row["recipient_id"] == new_recipient_id
    assert await ledger_count(money["engine"], offer_id) == 1
    history = [r for r in await read_all(money["settings"], "offer.payout.requested") if r.key.decode() == offer_id]
    assert len(history) == 2  # the retry is an event in the deal's history
    code, out = await asyncio.to_thread(_cli_rc, money["env"], "payouts", "retry", offer_id, "--by", "ops@example")
    assert code != 0  # paid: nothing left to retry


async def test_details_copied_from_another_recipients_row_are_never_paid(money, fake) -> None:
    """Issue 9, point 8: whoever can write the table copies their own sealed details into a
    victim's row. The ciphertext is bound to its recipient and creator, so the worker cannot
    open it there: no provider is asked and the payout fails as recipient_unreadable."""
    _, attacker_recipient = await onboard(money["client"], bank=False)
    _, recipient_id, offer_id = await paid_offer_setup(money, bank=False)
    async with money["engine"].begin() as conn:
        copied = await conn.scalar(
            select(payout_recipients.c.details_ciphertext).where(payout_recipients.c.recipient_id == attacker_recipient)
        )
        await conn.execute(
            update(payout_recipients)
            .where(payout_recipients.c.recipient_id == recipient_id)
            .values(details_ciphertext=copied)
        )
    assert (await request_payout(money["client"], offer_id, recipient_id)).status == 202
    await wait_status(money["engine"], offer_id, "payout_failed")
    payout_id = payout_id_for(offer_id)
    row = await payout_row(money["engine"], payout_id)
    assert row["phase"] == "failed" and "recipient_unreadable" in row["failure_reason"], row["failure_reason"]
    assert fake.executed_count(payout_id) == 0
    async with money["engine"].connect() as conn:
        statuses = (
            await conn.execute(select(payout_attempts.c.status).where(payout_attempts.c.payout_id == payout_id))
        ).scalars()
        assert set(statuses) <= {"refused", "failed"}


async def test_no_recipient_detail_in_kafka_or_logs(money) -> None:
    """Runs last in this module: every payout above used the same recipient details."""
    secrets = [IBAN, HOLDER, STRIPE_ACCOUNT, IBAN[4:], "Lovelace"]
    settings = money["settings"]
    from infra.kafka import all_logical_topics

    for topic in all_logical_topics():
        for record in await read_all(settings, topic):
            blob = (record.value or b"") + (record.key or b"") + b"".join(v for _, v in record.headers)
            for secret in secrets:
                assert secret.encode() not in blob, f"{secret} found in {topic}"
    logs = list(ARTIFACTS.glob("payout-*.log")) + list(ARTIFACTS.glob("worker*.log"))
    assert logs
    for path in logs:
        text = path.read_text(errors="replace")
        for secret in secrets:
            assert secret not in text, f"{secret} found in {path.name}"
        assert not re.search(r"DE\d{2}\s?\d{4}", text), path.name

"""Security state shared by web processes (issue 11, points 2 and 3), against two real
`spacemusic web` processes and the test session's Postgres:

- a ticket redeemed on one process is refused on the other;
- a session lives server-side: logout on one process, or `spacemusic sessions revoke`,
  ends it on both, and an SSE stream open with it is closed;
- a session never outlives its token, and a stream opened with it closes when it expires;
- the rate-limit buckets are shared by every process and survive a restart (a new engine).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from infra.db import create_engine
from state.sessions import PostgresAuthStore
from tests.support.sse import SseStream
from tests.support.stack import ARTIFACTS, Process, free_port, run_cli
from web.auth import ADMIN, CREATORS_WRITE, DEALS_READ, OFFERS_WRITE, PAYOUTS_WRITE, mint_token
from web.auth.permissions import METRICS_READ

COOKIE = "sm_session"  # dev runs on plain http


@pytest.fixture(scope="module")
def two_webs(stack_env: dict[str, str]) -> Iterator[list[str]]:
    ports = [free_port(), free_port()]
    env = {**stack_env, "SESSION_CHECK_SECONDS": "0.5"}
    procs = [Process(f"web-auth-{i}", {**env, "WEB_PORT": str(port)}, "web") for i, port in enumerate(ports)]
    try:
        for proc in procs:
            proc.wait_for_log('"deal_feed_listening"', timeout=90)
        yield [f"http://127.0.0.1:{port}" for port in ports]
    finally:
        for proc in procs:
            proc.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # No cookie jar: each request sends exactly the credential the test means.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


def bearer(settings, subject: str, *permissions: str, ttl: int = 600) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"Authorization": f"Bearer {mint_token(settings, subject, permissions or (DEALS_READ,), ttl=ttl)}"}


async def ticket(http: aiohttp.ClientSession, base: str, headers: dict[str, str]) -> str:
    async with http.post(f"{base}/auth/sse-ticket", headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        return (await resp.json())["ticket"]


async def session_cookie(http: aiohttp.ClientSession, base: str, headers: dict[str, str]) -> dict[str, str]:
    async with http.post(f"{base}/auth/session", headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        return {"Cookie": f"{COOKIE}={resp.cookies[COOKIE].value}"}


async def error_of(resp: aiohttp.ClientResponse) -> str:
    return (await resp.json())["error"]


async def closed_within(stream: SseStream, seconds: float) -> float:
    """Reads until the server ends the stream; how long that took."""
    started = time.monotonic()
    with pytest.raises((ConnectionError, aiohttp.ClientPayloadError)):
        async with asyncio.timeout(seconds):
            while True:
                await stream.next(timeout=seconds)
    return time.monotonic() - started


async def test_a_ticket_used_on_one_process_is_refused_on_the_other(two_webs, http, settings) -> None:
    one, other = two_webs
    headers = bearer(settings, "test|tickets")
    for first, second in ((one, other), (other, one)):
        value = await ticket(http, first, headers)
        async with http.get(f"{first}/offers/events/deals", params={"ticket": value}) as resp:
            assert resp.status == 200
            assert (await SseStream(resp).next()).event == "ready"
        async with http.get(f"{second}/offers/events/deals", params={"ticket": value}) as replay:
            assert replay.status == 401 and await error_of(replay) == "ticket_reused"
        async with http.get(f"{first}/offers/events/deals", params={"ticket": value}) as again:
            assert again.status == 401 and await error_of(again) == "ticket_reused"


async def test_logout_on_one_process_ends_the_session_and_its_stream_on_the_other(two_webs, http, settings) -> None:
    one, other = two_webs
    cookie = await session_cookie(http, one, bearer(settings, "test|logout"))
    async with http.get(f"{other}/deals", headers=cookie) as resp:
        assert resp.status == 200
    async with http.get(f"{other}/offers/events/deals", headers=cookie) as resp:
        assert resp.status == 200
        stream = SseStream(resp)
        assert (await stream.next()).event == "ready"
        async with http.post(f"{one}/auth/logout", headers=cookie) as out:
            assert out.status == 204
        assert await closed_within(stream, 5) < 5
    for base in (one, other):
        async with http.get(f"{base}/deals", headers=cookie) as resp:
            assert resp.status == 401 and await error_of(resp) == "invalid_session"
        async with http.get(f"{base}/admin", headers=cookie, allow_redirects=False) as page:
            assert page.status == 303  # the page shell checks the server-side row too


async def test_sessions_revoke_command_ends_sessions_and_streams(two_webs, http, settings, stack_env) -> None:
    one, other = two_webs
    subject = f"test|revoke-{uuid.uuid4().hex[:6]}"
    cookies = [await session_cookie(http, base, bearer(settings, subject, ADMIN)) for base in two_webs]
    bystander = await session_cookie(http, one, bearer(settings, "test|bystander"))
    listed = run_cli(stack_env, "sessions", "list", "--subject", subject)
    assert listed.stdout.count(subject) == 2
    async with http.get(f"{one}/offers/events/deals", headers=cookies[1]) as resp:
        stream = SseStream(resp)
        assert (await stream.next()).event == "ready"
        revoked = run_cli(stack_env, "sessions", "revoke", "--subject", subject)
        assert revoked.stdout.strip() == "2"
        assert await closed_within(stream, 5) < 5
    for cookie in cookies:
        for base in two_webs:
            async with http.get(f"{base}/deals", headers=cookie) as resp:
                assert resp.status == 401 and await error_of(resp) == "invalid_session"
    async with http.get(f"{other}/deals", headers=bystander) as resp:
        assert resp.status == 200
    assert run_cli(stack_env, "sessions", "revoke", check=False).returncode != 0  # says what to revoke


async def test_a_session_and_its_stream_end_with_the_token(two_webs, http, settings) -> None:
    one, other = two_webs
    cookie = await session_cookie(http, one, bearer(settings, "test|short", ttl=4))
    async with http.get(f"{other}/offers/events/deals", headers=cookie) as resp:
        assert resp.status == 200
        stream = SseStream(resp)
        assert (await stream.next()).event == "ready"
        assert await closed_within(stream, 8) < 6
    async with http.get(f"{one}/deals", headers=cookie) as resp:
        assert resp.status == 401 and await error_of(resp) in ("session_expired", "invalid_session")


async def test_rate_limit_buckets_are_shared_and_survive_a_restart(settings) -> None:
    engines = [create_engine(settings, pool_size=1) for _ in range(2)]
    stores = [PostgresAuthStore(engine) for engine in engines]
    key = f"sub:test|{uuid.uuid4().hex[:8]}"
    try:
        results = [await stores[i % 2].acquire("test-shared", key, per_minute=3) for i in range(4)]
        assert results[:3] == [None, None, None]
        assert results[3] is not None and 0 < results[3] <= 20
        # both "processes" at once: exactly the budget is granted
        other = f"sub:test|{uuid.uuid4().hex[:8]}"
        burst = await asyncio.gather(*(stores[i % 2].acquire("test-shared", other, per_minute=5) for i in range(12)))
        assert sum(r is None for r in burst) == 5
    finally:
        for engine in engines:
            await engine.dispose()
    restarted = create_engine(settings, pool_size=1)
    try:
        assert await PostgresAuthStore(restarted).acquire("test-shared", key, per_minute=3) is not None
    finally:
        await restarted.dispose()


async def test_ticket_nonces_are_single_use_across_stores(settings) -> None:
    engines = [create_engine(settings, pool_size=2) for _ in range(2)]
    stores = [PostgresAuthStore(engine) for engine in engines]
    try:
        nonce = uuid.uuid4().hex
        expires = time.time() + 60
        outcomes = await asyncio.gather(*(stores[i % 2].consume_nonce(nonce, expires) for i in range(6)))
        assert outcomes.count(True) == 1
    finally:
        for engine in engines:
            await engine.dispose()


# --- rate limits across processes, fail-closed routes, correlation in the web log ------------


async def test_a_rate_limit_counts_across_both_processes(two_webs, http, settings) -> None:
    headers = {
        **bearer(settings, f"test|payer-{uuid.uuid4().hex[:6]}", PAYOUTS_WRITE),
        "Idempotency-Key": uuid.uuid4().hex,
    }
    statuses = []
    for i in range(12):
        async with http.post(f"{two_webs[i % 2]}/offers/{uuid.uuid4()}/payout", headers=headers, json={}) as resp:
            statuses.append(resp.status)
            if resp.status == 429:
                assert int(resp.headers["Retry-After"]) >= 1
    # payouts allow 10 a minute per caller, whichever process answers
    assert all(s != 429 for s in statuses[:10]), statuses
    assert statuses[10:] == [429, 429], statuses


async def test_metrics_need_a_permission_and_readiness_details_too(two_webs, http, settings) -> None:
    base = two_webs[0]
    async with http.get(f"{base}/metrics") as resp:
        assert resp.status == 401
    async with http.get(f"{base}/metrics", headers=bearer(settings, "test|reader", DEALS_READ)) as resp:
        assert resp.status == 403
    async with http.get(f"{base}/metrics", headers=bearer(settings, "test|prometheus", METRICS_READ)) as resp:
        assert resp.status == 200 and "spacemusic_http_requests_total" in await resp.text()
    async with http.get(f"{base}/readyz") as resp:
        assert resp.status == 200 and await resp.json() == {"status": "ready"}
    async with http.get(f"{base}/readyz", headers=bearer(settings, "test|prometheus", METRICS_READ)) as resp:
        assert (await resp.json())["checks"] == {"postgres": "ok", "kafka": "ok"}


async def test_creators_can_only_create_themselves(two_webs, http, settings) -> None:
    own, other = str(uuid.uuid4()), str(uuid.uuid4())
    token = mint_token(settings, f"test|creator-{own[:6]}", [CREATORS_WRITE], creator_id=own)
    headers = {"Authorization": f"Bearer {token}"}
    async with http.post(
        f"{two_webs[0]}/creators", headers=headers, json={"display_name": "Not Me", "creator_id": other}
    ) as resp:
        assert resp.status == 403 and await error_of(resp) == "not_own_creator"
    async with http.post(f"{two_webs[0]}/creators", headers=headers, json={"display_name": "Me"}) as resp:
        assert resp.status == 201 and (await resp.json())["creator_id"] == own


async def test_the_request_correlation_id_is_on_the_web_log_lines(two_webs, http, settings) -> None:
    correlation = f"trace-{uuid.uuid4().hex}"
    headers = {**bearer(settings, "test|ops", CREATORS_WRITE), "X-Correlation-ID": correlation}
    async with http.post(f"{two_webs[1]}/creators", headers=headers, json={"display_name": "Traced"}) as resp:
        assert resp.status == 201
    log = (ARTIFACTS / "web-auth-1.log").read_text()
    lines = [line for line in log.splitlines() if correlation in line]
    assert any('"http_request"' in line and '"correlation_id"' in line for line in lines), lines


async def test_a_deals_correlation_id_is_in_the_web_and_the_worker_logs(
    two_webs, http, settings, worker, stack_env
) -> None:
    from tests.support.stack import eventually

    correlation = f"deal-{uuid.uuid4().hex}"
    headers = {**bearer(settings, "test|ops", CREATORS_WRITE, OFFERS_WRITE), "X-Correlation-ID": correlation}
    async with http.post(f"{two_webs[1]}/creators", headers=headers, json={"display_name": "Followed"}) as resp:
        creator_id = (await resp.json())["creator_id"]
    body = {
        "creator_id": creator_id,
        "currency": "USD",
        "royalty_history": [{"period": f"2025-0{m}", "amount_minor": 100_000} for m in range(1, 7)],
    }
    async with http.post(f"{two_webs[1]}/offers", headers=headers, json=body) as resp:
        assert resp.status == 202, await resp.text()
        offer_id = (await resp.json())["offer_id"]

    def worker_lines() -> list[str]:
        return [line for line in worker.output().splitlines() if correlation in line]

    # valuation, projection and the term sheet each log while handling the deal's events
    await eventually(lambda: len({line.split('"logger": "')[-1][:30] for line in worker_lines()}) >= 2, timeout=90)
    assert all(offer_id in line for line in worker_lines() if '"offer_id"' in line)
    web_log = ARTIFACTS / "web-auth-1.log"
    assert any(correlation in line for line in web_log.read_text().splitlines())
    traced = run_cli(stack_env, "trace", offer_id, str(web_log), str(worker.log_path), "--json")
    sources = {line.split('"source": "')[1].split('"')[0] for line in traced.stdout.splitlines()}
    assert sources == {"web-auth-1.log", worker.log_path.name}, traced.stdout[-2000:]

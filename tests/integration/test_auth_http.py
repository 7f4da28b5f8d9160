"""Authentication and authorization over real HTTP: a small aiohttp app with the real
middleware chain, ``setup_auth`` and dummy handlers carrying the production routes'
permissions. Needs no Kafka or Postgres (and none of tests/conftest.py's stack fixtures)."""

from __future__ import annotations

import asyncio
import base64
import json
import stat
import time
import uuid
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import respx
from aiohttp import DummyCookieJar, web
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import rsa

from bootstrap.commands.devtoken import dev_token
from infra.settings import Settings
from tests.support.tokens import base_claims, build_hostile_tokens, public_jwk, sign
from web.auth import (
    ADMIN,
    AUTH,
    CREATOR_SCOPE,
    DEALS_READ,
    DEALS_READ_ALL,
    OFFERS_WRITE,
    PAYOUTS_WRITE,
    PRINCIPAL,
    MemoryAuthStore,
    auth_middleware,
    rate_limited,
    requires,
    session_guard,
    setup_auth,
    visible_to,
)
from web.auth.dev_idp import DEV_IDP, DevIdpDisabled, load_or_create_signing_key, mint_token
from web.auth.permissions import CREATORS_WRITE
from web.auth.tokens import Principal
from web.middleware import json_errors, request_context

ISSUER = "http://127.0.0.1:8080/dev-idp/"
AUDIENCE = "https://api.spacemusic.local"
SECRET = "integration-test-session-secret-0123456789"
PROD_ISSUER = "https://spacemusic-test.eu.auth0.com/"
PROD_JWKS = f"{PROD_ISSUER}.well-known/jwks.json"
CREATOR_A = str(uuid.uuid4())
CREATOR_B = str(uuid.uuid4())
OFFERS = {str(uuid.uuid4()): CREATOR_A, str(uuid.uuid4()): CREATOR_B}


# --- a miniature of the real app's routes, with their real permissions ------------------------


@requires(OFFERS_WRITE)
async def create_offer(request: web.Request) -> web.Response:
    return web.json_response({"created_by": request[PRINCIPAL].subject}, status=202)


@requires(DEALS_READ, ticket=True)
async def deals_stream(request: web.Request) -> web.StreamResponse:
    # Stands in for the SSE stream: what matters is who got in and with which scope.
    ready = json.dumps({"subject": request[PRINCIPAL].subject, "scope": request.get(CREATOR_SCOPE)})
    return web.Response(text=f"event: ready\ndata: {ready}\n\n", content_type="text/event-stream")


@requires(DEALS_READ)
async def get_offer(request: web.Request) -> web.Response:
    offer_id = request.match_info["offer_id"]
    creator = OFFERS.get(offer_id)
    if creator is None or not visible_to(request, creator):
        return web.json_response({"error": "not_found", "message": f"no offer {offer_id}"}, status=404)
    return web.json_response({"offer_id": offer_id, "creator_id": creator})


@requires(DEALS_READ)
async def get_deals(request: web.Request) -> web.Response:
    scope = request.get(CREATOR_SCOPE)
    return web.json_response({"scope": scope, "offers": [o for o, c in OFFERS.items() if scope in (None, c)]})


@requires(PAYOUTS_WRITE)
@rate_limited("test-payouts", per_minute=3)
async def request_payout(request: web.Request) -> web.Response:
    return web.json_response({"ok": True}, status=202)


@requires(CREATORS_WRITE)
@rate_limited("test-recipients", per_minute=2)
async def add_recipient(request: web.Request) -> web.Response:
    return web.json_response({"ok": True}, status=201)


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def build_app(settings: Settings, *, list_auth_middleware: bool = True) -> web.Application:
    middlewares = (
        [request_context, auth_middleware, json_errors] if list_auth_middleware else [request_context, json_errors]
    )
    app = web.Application(middlewares=middlewares)
    # The per-process store: these tests need no Postgres (test_sessions_shared.py uses it).
    setup_auth(app, settings, store=MemoryAuthStore())
    app.router.add_post("/offers", create_offer)
    app.router.add_get("/offers/events/deals", deals_stream)
    app.router.add_get("/offers/{offer_id}", get_offer)
    app.router.add_get("/deals", get_deals)
    app.router.add_post("/offers/{offer_id}/payout", request_payout)
    app.router.add_post("/creators/{creator_id}/recipients", add_recipient)
    app.router.add_get("/healthz", healthz)
    return app


@pytest.fixture(scope="module")
def dev_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        kafka_bootstrap_servers="127.0.0.1:1",
        schema_registry_url="http://127.0.0.1:1",
        database_url="postgresql://unused:unused@127.0.0.1:1/unused",
        env="dev",
        oidc_issuer=ISSUER,
        oidc_audience=AUDIENCE,
        oidc_jwks_url=f"{ISSUER}.well-known/jwks.json",
        dev_idp_key_path=tmp_path_factory.mktemp("auth") / "dev-idp" / "signing-key.pem",
        session_secret=SECRET,
    )


@pytest.fixture(scope="module")
async def client(dev_settings: Settings) -> AsyncIterator[TestClient]:
    # No cookie jar: every test sends exactly the cookies it means to.
    client = TestClient(TestServer(build_app(dev_settings)), cookie_jar=DummyCookieJar())
    await client.start_server()
    yield client
    await client.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def token(settings: Settings, *permissions: str, creator_id: str | None = None, sub: str | None = None) -> str:
    return mint_token(settings, sub or f"auth0|{uuid.uuid4().hex[:8]}", permissions, creator_id)


def set_cookies(response: Any) -> SimpleCookie:
    jar: SimpleCookie = SimpleCookie()
    for header in response.headers.getall("Set-Cookie", []):
        jar.load(header)
    return jar


async def error_of(response: Any) -> str:
    assert response.content_type == "application/json"
    return (await response.json())["error"]


# --- bearer tokens ----------------------------------------------------------------------------


async def test_missing_token_is_401_with_a_bearer_challenge(client: TestClient) -> None:
    response = await client.get("/deals")
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")
    assert await error_of(response) == "missing_token"
    assert response.headers["X-Request-ID"]  # request_context still wraps auth failures


async def test_non_bearer_authorization_is_401(client: TestClient) -> None:
    response = await client.get("/deals", headers={"Authorization": "Basic YWxpY2U6c2VjcmV0"})
    assert response.status == 401
    assert await error_of(response) == "invalid_request"


async def test_token_without_the_permission_is_403(client: TestClient, dev_settings: Settings) -> None:
    response = await client.post("/offers", headers=bearer(token(dev_settings, DEALS_READ)))
    assert response.status == 403
    assert await error_of(response) == "insufficient_permission"
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]


async def test_token_with_the_permission_is_200(client: TestClient, dev_settings: Settings) -> None:
    response = await client.post("/offers", headers=bearer(token(dev_settings, OFFERS_WRITE, sub="auth0|writer")))
    assert response.status == 202
    assert (await response.json())["created_by"] == "auth0|writer"
    assert (await client.get("/deals", headers=bearer(token(dev_settings, ADMIN)))).status == 200


async def test_public_routes_and_unknown_paths_need_no_token(client: TestClient) -> None:
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/no-such-route")).status == 404


def _hostile(settings: Settings) -> list[Any]:
    key = load_or_create_signing_key(settings.dev_idp_key_path)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return build_hostile_tokens(key, _dev_kid(settings), ISSUER, AUDIENCE, other, None)


def _dev_kid(settings: Settings) -> str:
    return json.loads(base64.urlsafe_b64decode(token(settings, DEALS_READ).split(".")[0] + "=="))["kid"]


async def test_hostile_tokens_are_rejected_on_a_normal_endpoint(client: TestClient, dev_settings: Settings) -> None:
    hostile = _hostile(dev_settings)
    assert len(hostile) >= 20
    for case in hostile:
        response = await client.get("/deals", headers=bearer(case.token))
        if case.name == "very_long":
            # aiohttp refuses a header this big before any handler runs.
            assert response.status in (400, 401), case.name
            continue
        assert response.status == 401, case.name
        expected = "invalid_request" if case.token == "" else case.code
        assert await error_of(response) == expected, case.name
        assert response.headers["WWW-Authenticate"].startswith("Bearer "), case.name


async def test_hostile_tokens_are_rejected_on_the_sse_route(client: TestClient, dev_settings: Settings) -> None:
    cookie_name = client.app[AUTH].cookie_name
    for case in _hostile(dev_settings):
        if case.name == "very_long" or case.token == "":
            continue
        # Neither as a ticket, nor as a session cookie, nor to obtain a ticket.
        as_ticket = await client.get("/offers/events/deals", params={"ticket": case.token})
        assert as_ticket.status == 401 and await error_of(as_ticket) == "invalid_ticket", case.name
        as_cookie = await client.get("/offers/events/deals", headers={"Cookie": f"{cookie_name}={case.token}"})
        assert as_cookie.status == 401 and await error_of(as_cookie) == "invalid_session", case.name
        minting = await client.post("/auth/sse-ticket", headers=bearer(case.token))
        assert minting.status == 401, case.name


# --- SSE tickets --------------------------------------------------------------------------------


async def _ticket(client: TestClient, access_token: str) -> str:
    response = await client.post("/auth/sse-ticket", headers=bearer(access_token))
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = await response.json()
    assert body["expires_in"] == 60
    return body["ticket"]


async def test_ticket_opens_the_stream_once(client: TestClient, dev_settings: Settings) -> None:
    ticket = await _ticket(client, token(dev_settings, DEALS_READ, sub="auth0|viewer"))
    first = await client.get("/offers/events/deals", params={"ticket": ticket})
    assert first.status == 200
    assert first.content_type == "text/event-stream"
    assert '"subject": "auth0|viewer"' in await first.text()
    replay = await client.get("/offers/events/deals", params={"ticket": ticket})
    assert replay.status == 401
    assert await error_of(replay) == "ticket_reused"


async def test_expired_ticket_is_rejected(client: TestClient) -> None:
    state = client.app[AUTH]
    stale = state.tickets.issue(Principal("auth0|late", frozenset({DEALS_READ})), now=time.time() - 61)
    response = await client.get("/offers/events/deals", params={"ticket": stale})
    assert response.status == 401
    assert await error_of(response) == "ticket_expired"


async def test_ticket_is_accepted_only_on_the_sse_route(client: TestClient, dev_settings: Settings) -> None:
    ticket = await _ticket(client, token(dev_settings, DEALS_READ, OFFERS_WRITE))
    assert (await client.get("/deals", params={"ticket": ticket})).status == 401
    assert (await client.post("/offers", params={"ticket": ticket})).status == 401
    # Nor is a bearer token accepted in the URL, under any name.
    access = token(dev_settings, DEALS_READ)
    for name in ("ticket", "access_token", "token"):
        response = await client.get("/offers/events/deals", params={name: access})
        assert response.status == 401, name


async def test_tampered_or_cross_purpose_tickets_are_rejected(client: TestClient, dev_settings: Settings) -> None:
    state = client.app[AUTH]
    ticket = await _ticket(client, token(dev_settings, DEALS_READ, creator_id=CREATOR_A))
    version, body, sig = ticket.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=="))
    widened = (
        base64.urlsafe_b64encode(json.dumps(payload | {"cid": None, "prm": [ADMIN]}).encode()).rstrip(b"=").decode()
    )
    session_value = state.sessions.issue(Principal("auth0|s", frozenset({DEALS_READ})))
    for bad in (f"{version}.{widened}.{sig}", session_value):
        response = await client.get("/offers/events/deals", params={"ticket": bad})
        assert response.status == 401
        assert await error_of(response) == "invalid_ticket"
    # and a ticket is not a session cookie
    response = await client.get("/deals", headers={"Cookie": f"{state.cookie_name}={ticket}"})
    assert response.status == 401
    assert await error_of(response) == "invalid_session"


async def test_ticket_keeps_permissions_and_creator_scope(client: TestClient, dev_settings: Settings) -> None:
    no_read = await _ticket(client, token(dev_settings, OFFERS_WRITE))
    assert (await client.get("/offers/events/deals", params={"ticket": no_read})).status == 403
    creator = await _ticket(client, token(dev_settings, DEALS_READ, creator_id=CREATOR_A))
    response = await client.get("/offers/events/deals", params={"ticket": creator})
    assert response.status == 200
    assert f'"scope": "{CREATOR_A}"' in await response.text()


# --- creator scoping ----------------------------------------------------------------------------


async def test_creator_sees_only_their_own_deals(client: TestClient, dev_settings: Settings) -> None:
    creator = bearer(token(dev_settings, DEALS_READ, creator_id=CREATOR_A))
    body = await (await client.get("/deals", headers=creator)).json()
    assert body["scope"] == CREATOR_A
    assert all(OFFERS[o] == CREATOR_A for o in body["offers"])
    mine = next(o for o, c in OFFERS.items() if c == CREATOR_A)
    theirs = next(o for o, c in OFFERS.items() if c == CREATOR_B)
    assert (await client.get(f"/offers/{mine}", headers=creator)).status == 200
    # Someone else's offer is indistinguishable from a missing one.
    assert (await client.get(f"/offers/{theirs}", headers=creator)).status == 404


@pytest.mark.parametrize("extra", [DEALS_READ_ALL, ADMIN])
async def test_read_all_or_admin_is_not_scoped(client: TestClient, dev_settings: Settings, extra: str) -> None:
    headers = bearer(token(dev_settings, DEALS_READ, extra, creator_id=CREATOR_A))
    assert (await (await client.get("/deals", headers=headers)).json())["scope"] is None


async def test_staff_without_creator_claim_is_not_scoped(client: TestClient, dev_settings: Settings) -> None:
    body = await (await client.get("/deals", headers=bearer(token(dev_settings, DEALS_READ)))).json()
    assert body["scope"] is None and len(body["offers"]) == len(OFFERS)


# --- session cookie ---------------------------------------------------------------------------


async def test_session_cookie_flow(client: TestClient, dev_settings: Settings) -> None:
    exchange = await client.post("/auth/session", headers=bearer(token(dev_settings, DEALS_READ, creator_id=CREATOR_A)))
    assert exchange.status == 200
    cookie = set_cookies(exchange)["sm_session"]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/"
    assert not cookie["secure"]  # dev runs on plain http
    # bound to the token: mint_token's tokens live an hour, so the session does too
    assert 3590 <= int(cookie["max-age"]) <= 3600
    headers = {"Cookie": f"sm_session={cookie.value}"}
    listing = await client.get("/deals", headers=headers)
    assert listing.status == 200 and (await listing.json())["scope"] == CREATOR_A
    stream = await client.get("/offers/events/deals", headers=headers)
    assert stream.status == 200
    # A cookie cannot mint a new cookie (that would make sessions immortal)...
    assert (await client.post("/auth/session", headers=headers)).status == 401
    # ...but can get an SSE ticket.
    assert (await client.post("/auth/sse-ticket", headers=headers)).status == 200
    logout = await client.post("/auth/logout", headers=headers)
    assert logout.status == 204
    cleared = set_cookies(logout)["sm_session"]
    assert cleared.value == "" and cleared["max-age"] == "0"
    # Logout revoked it server-side: a copy of the cookie is worthless now, on every route.
    for path in ("/deals", "/offers/events/deals"):
        after = await client.get(path, headers=headers)
        assert after.status == 401 and await error_of(after) == "invalid_session", path
        assert set_cookies(after)["sm_session"].value == ""
    assert (await client.post("/auth/sse-ticket", headers=headers)).status == 401


async def test_a_session_never_outlives_its_token(client: TestClient, dev_settings: Settings) -> None:
    short = mint_token(dev_settings, "auth0|short", [DEALS_READ], ttl=2)
    exchange = await client.post("/auth/session", headers=bearer(short))
    assert exchange.status == 200 and (await exchange.json())["expires_in"] <= 2
    cookie = set_cookies(exchange)["sm_session"]
    assert int(cookie["max-age"]) <= 2
    headers = {"Cookie": f"sm_session={cookie.value}"}
    assert (await client.get("/deals", headers=headers)).status == 200
    await asyncio.sleep(2.2)
    expired = await client.get("/deals", headers=headers)
    assert expired.status == 401 and await error_of(expired) == "session_expired"


async def test_cookie_writes_must_come_from_the_same_origin(client: TestClient, dev_settings: Settings) -> None:
    exchange = await client.post("/auth/session", headers=bearer(token(dev_settings, OFFERS_WRITE)))
    value = set_cookies(exchange)["sm_session"].value
    cookie = {"Cookie": f"sm_session={value}"}
    cross = await client.post("/offers", headers={**cookie, "Origin": "https://evil.example"})
    assert cross.status == 403 and await error_of(cross) == "cross_origin"
    same = await client.post("/offers", headers={**cookie, "Origin": f"http://{client.host}:{client.port}"})
    assert same.status == 202


async def test_expired_or_forged_session_cookie_is_401_and_cleared(client: TestClient) -> None:
    state = client.app[AUTH]
    principal = Principal("auth0|old", frozenset({DEALS_READ}))
    expired = state.sessions.issue(principal, now=time.time() - 8 * 3600 - 1)
    response = await client.get("/deals", headers={"Cookie": f"sm_session={expired}"})
    assert response.status == 401 and await error_of(response) == "session_expired"
    assert set_cookies(response)["sm_session"].value == ""
    forged = state.sessions.issue(principal)[:-4] + "AAAA"
    response = await client.get("/deals", headers={"Cookie": f"sm_session={forged}"})
    assert response.status == 401 and await error_of(response) == "invalid_session"


# --- rate limits --------------------------------------------------------------------------------


async def test_payouts_are_rate_limited_per_subject(client: TestClient, dev_settings: Settings) -> None:
    alice = bearer(token(dev_settings, PAYOUTS_WRITE))
    offer = next(iter(OFFERS))
    statuses = [(await client.post(f"/offers/{offer}/payout", headers=alice)).status for _ in range(3)]
    assert statuses == [202, 202, 202]
    limited = await client.post(f"/offers/{offer}/payout", headers=alice)
    assert limited.status == 429
    assert await error_of(limited) == "rate_limited"
    assert int(limited.headers["Retry-After"]) >= 1
    bob = bearer(token(dev_settings, PAYOUTS_WRITE))
    assert (await client.post(f"/offers/{offer}/payout", headers=bob)).status == 202
    # The permission check comes first: no permission, no bucket consumed, 403.
    assert (await client.post(f"/offers/{offer}/payout", headers=bearer(token(dev_settings, DEALS_READ)))).status == 403


async def test_recipients_are_rate_limited(client: TestClient, dev_settings: Settings) -> None:
    headers = bearer(token(dev_settings, CREATORS_WRITE))
    path = f"/creators/{CREATOR_A}/recipients"
    assert [(await client.post(path, headers=headers)).status for _ in range(3)] == [201, 201, 429]


# --- dev IdP ------------------------------------------------------------------------------------


async def test_dev_idp_publishes_its_key_and_discovery(client: TestClient, dev_settings: Settings) -> None:
    jwks = await (await client.get("/dev-idp/.well-known/jwks.json")).json()
    assert [k["kid"] for k in jwks["keys"]] == [client.app[DEV_IDP].kid]
    assert all("d" not in k for k in jwks["keys"])  # public half only
    discovery = await (await client.get("/dev-idp/.well-known/openid-configuration")).json()
    assert discovery["issuer"] == ISSUER
    assert discovery["jwks_uri"] == f"{ISSUER}.well-known/jwks.json"
    mode = dev_settings.dev_idp_key_path.stat().st_mode
    assert stat.S_IMODE(mode) == 0o600


async def test_dev_login_sets_the_session_cookie(client: TestClient) -> None:
    page = await client.get("/dev-idp/login")
    assert page.status == 200 and "<form" in await page.text()
    login = await client.post(
        "/dev-idp/login", data={"identity": "creator", "creator_id": CREATOR_B}, allow_redirects=False
    )
    assert login.status == 303
    assert login.headers["Location"] == "/admin"
    value = set_cookies(login)["sm_session"].value
    body = await (await client.get("/deals", headers={"Cookie": f"sm_session={value}"})).json()
    assert body["scope"] == CREATOR_B
    bad = await client.post("/dev-idp/login", data={"identity": "creator", "creator_id": "nope"}, allow_redirects=False)
    assert bad.status == 422
    admin = await client.post("/dev-idp/login", data={"identity": "admin"}, allow_redirects=False)
    assert admin.status == 303


async def test_dev_idp_key_is_created_once_with_private_permissions(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "key.pem"
    first = load_or_create_signing_key(path)
    second = load_or_create_signing_key(path)
    assert first.private_numbers() == second.private_numbers()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --- production mode ------------------------------------------------------------------------------


@pytest.fixture
def prod_settings(dev_settings: Settings) -> Settings:
    return dev_settings.replace(env="prod", oidc_issuer=PROD_ISSUER, oidc_jwks_url=PROD_JWKS)


async def test_prod_has_no_dev_idp_and_verifies_against_the_remote_jwks(prod_settings: Settings) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with respx.mock(assert_all_called=True) as mock:
        jwks_route = mock.get(PROD_JWKS).mock(
            return_value=httpx.Response(200, json={"keys": [public_jwk(key, "prod-1")]})
        )
        app = build_app(prod_settings, list_auth_middleware=False)
        # inserted after request_context, with the shared-state guard right before it
        assert app.middlewares.index(auth_middleware) == 2
        assert app.middlewares[1] is session_guard
        async with TestClient(TestServer(app), cookie_jar=DummyCookieJar()) as client:
            for path in (
                "/dev-idp/.well-known/jwks.json",
                "/dev-idp/.well-known/openid-configuration",
                "/dev-idp/login",
            ):
                assert (await client.get(path)).status == 404, path
            assert (await client.post("/dev-idp/login", data={"identity": "admin"})).status == 404
            good = sign(base_claims(iss=PROD_ISSUER, aud=AUDIENCE, permissions=[DEALS_READ]), key, "prod-1")
            assert (await client.get("/deals", headers=bearer(good))).status == 200
            # The dev IdP's tokens mean nothing in production.
            dev = token(prod_settings.replace(env="dev", oidc_issuer=ISSUER), DEALS_READ)
            assert (await client.get("/deals", headers=bearer(dev))).status == 401
            exchange = await client.post("/auth/session", headers=bearer(good))
            cookie = set_cookies(exchange)["__Host-sm_session"]
            assert cookie["secure"] and cookie["httponly"] and cookie["samesite"] == "Strict"
        assert jwks_route.call_count == 1  # warmed up at start-up, then served from cache
    with pytest.raises(DevIdpDisabled):
        mint_token(prod_settings, "auth0|x", [ADMIN])


async def test_an_undeclared_route_stops_the_app_from_starting(dev_settings: Settings) -> None:
    app = build_app(dev_settings)

    async def forgotten(_: web.Request) -> web.Response:
        return web.json_response({"leak": True})

    app.router.add_get("/forgotten", forgotten)
    client = TestClient(TestServer(app))
    with pytest.raises(RuntimeError, match="GET /forgotten"):
        await client.start_server()
    await client.close()


def test_weak_config_is_refused(dev_settings: Settings) -> None:
    with pytest.raises(ValueError):
        setup_auth(web.Application(), dev_settings.replace(session_secret="short"))
    with pytest.raises(ValueError):
        setup_auth(web.Application(), dev_settings.replace(oidc_algorithms=("RS256", "HS256")))
    with pytest.raises(RuntimeError):
        setup_auth(web.Application(), dev_settings.replace(env="prod", oidc_issuer="", oidc_jwks_url=""))


# --- the dev-token command ------------------------------------------------------------------------


def _cli_env(settings: Settings, env: str) -> dict[str, str]:
    return {
        "SPACEMUSIC_ENV": env,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "SCHEMA_REGISTRY_URL": settings.schema_registry_url,
        "DATABASE_URL": settings.database_url.get_secret_value(),
        "OIDC_ISSUER": ISSUER,
        "OIDC_AUDIENCE": AUDIENCE,
        "DEV_IDP_KEY_PATH": str(settings.dev_idp_key_path),
        "LOG_LEVEL": "WARNING",
    }


async def test_dev_token_command_mints_a_token_the_app_accepts(client: TestClient, dev_settings: Settings) -> None:
    args = ["--sub", "alice", "--permission", DEALS_READ, "--creator-id", CREATOR_A.upper(), "--ttl", "120"]
    result = CliRunner().invoke(dev_token, args, env=_cli_env(dev_settings, "dev"))
    assert result.exit_code == 0, result.output
    minted = result.stdout.strip()
    body = await (await client.get("/deals", headers=bearer(minted))).json()
    assert body["scope"] == CREATOR_A
    refused = CliRunner().invoke(dev_token, ["--sub", "alice"], env=_cli_env(dev_settings, "prod"))
    assert refused.exit_code != 0
    assert "SPACEMUSIC_ENV=dev" in refused.output


# --- fail closed (issue 11, point 4) ----------------------------------------------------------------


def _signed_by_dev_idp(settings: Settings, **claims: Any) -> str:
    import time as _time

    import jwt as _jwt

    from web.auth.dev_idp import DevIdp

    idp = DevIdp.from_settings(settings)
    now = int(_time.time())
    body = {"iss": idp.issuer, "aud": settings.oidc_audience, "sub": "auth0|c", "iat": now, "exp": now + 300}
    return _jwt.encode({**body, **claims}, idp._key, algorithm="RS256", headers={"kid": idp.kid})


async def test_creator_role_without_creator_id_is_403_on_rest_and_sse(
    client: TestClient, dev_settings: Settings
) -> None:
    from web.auth.tokens import DEFAULT_ROLES_CLAIM

    unscoped = _signed_by_dev_idp(dev_settings, permissions=[DEALS_READ], **{DEFAULT_ROLES_CLAIM: ["creator"]})
    for path in ("/deals", "/offers/events/deals"):
        response = await client.get(path, headers=bearer(unscoped))
        assert response.status == 403, path
        assert await error_of(response) == "creator_without_id"
    # and it cannot be laundered into a session cookie or a ticket
    assert (await client.post("/auth/session", headers=bearer(unscoped))).status == 403
    assert (await client.post("/auth/sse-ticket", headers=bearer(unscoped))).status == 403
    # the dev IdP's own creator tokens carry the role and the id
    scoped = token(dev_settings, DEALS_READ, creator_id=CREATOR_A)
    assert (await (await client.get("/deals", headers=bearer(scoped))).json())["scope"] == CREATOR_A


async def test_scope_admin_grants_nothing_on_rest_and_sse(client: TestClient, dev_settings: Settings) -> None:
    sneaky = _signed_by_dev_idp(dev_settings, scope="openid admin deals:read")
    for path in ("/deals", "/offers/events/deals"):
        response = await client.get(path, headers=bearer(sneaky))
        assert response.status == 403, path
        assert await error_of(response) == "insufficient_permission"


# --- an open stream ends with its ticket ------------------------------------------------------------


@requires(DEALS_READ, ticket=True)
async def endless_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    try:
        while True:
            await response.write(b": ping\n\n")
            await asyncio.sleep(0.2)
    except (ConnectionResetError, ConnectionError):
        pass
    return response


async def test_a_stream_opened_with_a_ticket_closes_when_the_ticket_expires(dev_settings: Settings) -> None:
    from web.auth.sessions import SignedPrincipalCodec

    app = web.Application(middlewares=[request_context, auth_middleware, json_errors])
    setup_auth(app, dev_settings, store=MemoryAuthStore())
    app[AUTH].tickets = SignedPrincipalCodec(SECRET, "sse-ticket", 2, kind="ticket")
    app.router.add_get("/offers/events/deals", endless_stream)
    async with TestClient(TestServer(app), cookie_jar=DummyCookieJar()) as short:
        issued = await short.post("/auth/sse-ticket", headers=bearer(token(dev_settings, DEALS_READ)))
        ticket = (await issued.json())["ticket"]
        started = time.monotonic()
        response = await short.get("/offers/events/deals", params={"ticket": ticket})
        assert response.status == 200
        with pytest.raises((aiohttp.ClientPayloadError, ConnectionError, asyncio.TimeoutError)):
            async with asyncio.timeout(6):
                while await response.content.readline():
                    pass
                raise ConnectionError("stream ended")
        assert 1.0 < time.monotonic() - started < 4.5


class BrokenStore(MemoryAuthStore):
    """The shared store when Postgres is down."""

    async def session_expiry(self, session_id: str) -> float | None:
        raise OSError("connection refused")

    async def consume_nonce(self, nonce: str, expires_at: float) -> bool:
        raise OSError("connection refused")

    async def create_session(self, *args: Any, **kwargs: Any) -> None:
        raise OSError("connection refused")

    async def acquire(self, *args: Any, **kwargs: Any) -> float | None:
        raise OSError("connection refused")


async def test_with_the_shared_store_down_browser_credentials_fail_closed(
    client: TestClient, dev_settings: Settings
) -> None:
    state = client.app[AUTH]
    exchange = await client.post("/auth/session", headers=bearer(token(dev_settings, DEALS_READ, PAYOUTS_WRITE)))
    cookie = {"Cookie": f"sm_session={set_cookies(exchange)['sm_session'].value}"}
    ticket = (await (await client.post("/auth/sse-ticket", headers=cookie)).json())["ticket"]
    working, state.store = state.store, BrokenStore()
    try:
        for response in (
            await client.get("/deals", headers=cookie),
            await client.get("/offers/events/deals", params={"ticket": ticket}),
            await client.post("/auth/session", headers=bearer(token(dev_settings, DEALS_READ))),
        ):
            assert response.status == 503 and await error_of(response) == "auth_unavailable"
        # bearer tokens need no store; rate limits fall back to this process's limiter
        payer = bearer(token(dev_settings, PAYOUTS_WRITE))
        assert (await client.post(f"/offers/{uuid.uuid4()}/payout", headers=payer)).status == 202
    finally:
        state.store = working

"""POST /calculator over real HTTP: a minimal aiohttp app with the real handler, the real
``flags_ctx`` on a temp LaunchDarkly flag file, and the JSON error middleware. Needs no
Kafka, Postgres or network (and none of tests/conftest.py's stack fixtures)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from infra.flags import FlagContext
from models.events import RoyaltyPeriod
from models.pricing import Valuation, ValuationFailure, value_catalog
from tests.support.flags import CREATOR, OTHER_CREATOR, boolean_flag, local_settings, write_flags
from web.auth.permissions import CREATOR_SCOPE, OFFERS_WRITE, PRINCIPAL, creator_scope_for, requirement_of
from web.auth.tokens import Principal
from web.calculator import CALCULATOR_V2_FLAG, FLAGS, calculate_offer, flags_ctx
from web.keys import SETTINGS
from web.middleware import json_errors
from web.routes import add_routes, route_named

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Client = TestClient[web.Request, web.Application]

HISTORY = [
    {"period": f"2024-{month:02d}", "amount_minor": amount}
    for month, amount in enumerate(
        [120_00, 80_00, 95_50, 130_00, 0, 101_01, 99_99, 150_00, 75_25, 88_00, 92_00, 110_10], start=1
    )
]
V2_KEYS = {
    "version",
    "currency",
    "priceable",
    "low_minor",
    "median_minor",
    "high_minor",
    "median_monthly_royalty_minor",
    "months_considered",
    "model_version",
}


def expected_valuation(history: list[dict[str, Any]]) -> Valuation | ValuationFailure:
    return value_catalog(tuple(RoyaltyPeriod(period=i["period"], amount_minor=i["amount_minor"]) for i in history))


@web.middleware
async def fake_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Stands in for the auth middleware: ``X-Test-Principal`` holds the principal as JSON."""
    raw = request.headers.get("X-Test-Principal")
    if raw is not None:
        data = json.loads(raw)
        principal = Principal(data["sub"], frozenset(data.get("permissions", [])), data.get("creator_id"))
        request[PRINCIPAL] = principal
        scope = creator_scope_for(principal)
        if scope is not None:
            request[CREATOR_SCOPE] = scope
    return await handler(request)


@pytest.fixture
async def calculator(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    """An app on a flag file made of the given flags; clients are closed afterwards."""
    clients: list[Client] = []

    async def start(*flags: dict[str, Any]) -> Client:
        path = write_flags(tmp_path / f"flags-{len(clients)}.json", *flags)
        app = web.Application(middlewares=[fake_auth, json_errors])
        app[SETTINGS] = local_settings(path)
        app.cleanup_ctx.append(flags_ctx)
        app.router.add_post("/calculator", calculate_offer)
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


def as_principal(sub: str, *permissions: str, creator_id: str | None = None) -> dict[str, str]:
    return {"X-Test-Principal": json.dumps({"sub": sub, "permissions": list(permissions), "creator_id": creator_id})}


async def quote(client: Client, body: object, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    response = await client.post("/calculator", json=body, headers=headers or {})
    return response.status, await response.json()


# --- v1 / v2 as the flag file says ----------------------------------------------------------------


async def test_v1_for_everyone_when_the_flag_falls_through_false(calculator: Callable[..., Any]) -> None:
    client = await calculator(boolean_flag(fallthrough=False))
    status, body = await quote(client, {"royalty_history": HISTORY, "currency": "EUR"})
    expected = expected_valuation(HISTORY)
    assert isinstance(expected, Valuation)
    assert status == 200
    assert body == {
        "version": "v1",
        "currency": "EUR",
        "priceable": True,
        "advance_minor": expected.median_minor,
        "model_version": expected.model_version,
    }


async def test_v2_for_everyone_when_the_flag_falls_through_true(calculator: Callable[..., Any]) -> None:
    client = await calculator(boolean_flag(fallthrough=True))
    status, body = await quote(client, {"royalty_history": HISTORY, "currency": "USD"})
    expected = expected_valuation(HISTORY)
    assert isinstance(expected, Valuation)
    assert status == 200 and set(body) == V2_KEYS
    assert body["version"] == "v2" and body["currency"] == "USD" and body["priceable"] is True
    assert (body["low_minor"], body["median_minor"], body["high_minor"]) == (
        expected.low_minor,
        expected.median_minor,
        expected.high_minor,
    )
    assert body["median_monthly_royalty_minor"] == expected.median_monthly_royalty_minor
    assert body["months_considered"] == expected.months_considered == 12
    assert body["model_version"] == expected.model_version
    assert body["low_minor"] <= body["median_minor"] <= body["high_minor"]


async def test_v2_only_for_the_targeted_creator(calculator: Callable[..., Any]) -> None:
    client = await calculator(boolean_flag(creators=[CREATOR]))
    _, targeted = await quote(client, {"royalty_history": HISTORY, "currency": "EUR", "creator_id": CREATOR})
    _, other = await quote(client, {"royalty_history": HISTORY, "currency": "EUR", "creator_id": OTHER_CREATOR})
    _, anonymous = await quote(client, {"royalty_history": HISTORY, "currency": "EUR"})
    assert targeted["version"] == "v2"
    assert other["version"] == "v1" and anonymous["version"] == "v1"
    # Both shapes price the same catalog the same way.
    assert other["advance_minor"] == targeted["median_minor"]


async def test_creator_comes_from_the_principal_when_not_in_the_body(calculator: Callable[..., Any]) -> None:
    client = await calculator(boolean_flag(creators=[CREATOR]))
    creator = as_principal("auth0|creator", OFFERS_WRITE, creator_id=CREATOR)
    _, body = await quote(client, {"royalty_history": HISTORY, "currency": "EUR"}, creator)
    assert body["version"] == "v2"


async def test_v2_for_a_targeted_user(calculator: Callable[..., Any]) -> None:
    client = await calculator(boolean_flag(users=["auth0|tester"]))
    request = {"royalty_history": HISTORY, "currency": "EUR", "creator_id": OTHER_CREATOR}
    _, tester = await quote(client, request, as_principal("auth0|tester", OFFERS_WRITE))
    _, admin = await quote(client, request, as_principal("auth0|admin", "admin"))
    assert tester["version"] == "v2" and admin["version"] == "v1"


async def test_flag_absent_from_the_file_means_v1(calculator: Callable[..., Any]) -> None:
    client = await calculator(boolean_flag("some-other-flag", fallthrough=True))
    _, body = await quote(client, {"royalty_history": HISTORY, "currency": "EUR"})
    assert body["version"] == "v1"


async def test_a_creator_cannot_quote_as_another_creator(calculator: Callable[..., Any]) -> None:
    client = await calculator(boolean_flag(creators=[OTHER_CREATOR]))
    creator = as_principal("auth0|creator", OFFERS_WRITE, creator_id=CREATOR)
    status, body = await quote(
        client, {"royalty_history": HISTORY, "currency": "EUR", "creator_id": OTHER_CREATOR}, creator
    )
    assert status == 403
    assert body["fields"][0]["field"] == "creator_id"


# --- unpriceable histories --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("history", "reason"),
    [
        ([], "no_royalty_history"),
        (HISTORY[:2], "insufficient_history"),
        ([{"period": f"2024-0{m}", "amount_minor": 0} for m in range(1, 5)], "zero_royalties"),
    ],
)
@pytest.mark.parametrize("v2", [False, True])
async def test_unpriceable_history_is_200_with_the_reason(
    calculator: Callable[..., Any], history: list[dict[str, Any]], reason: str, v2: bool
) -> None:
    client = await calculator(boolean_flag(fallthrough=v2))
    status, body = await quote(client, {"royalty_history": history, "currency": "EUR"})
    expected = expected_valuation(history)
    assert isinstance(expected, ValuationFailure) and expected.reason == reason
    assert status == 200
    assert body == {
        "version": "v2" if v2 else "v1",
        "currency": "EUR",
        "priceable": False,
        "reason": reason,
        "months_considered": expected.months_considered,
        "model_version": expected.model_version,
    }


# --- validation: the same rules as POST /offers -------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"currency": "EUR"}, "royalty_history"),
        ({"royalty_history": "lots", "currency": "EUR"}, "royalty_history"),
        ({"royalty_history": HISTORY}, "currency"),
        ({"royalty_history": HISTORY, "currency": "XXX1"}, "currency"),
        ({"royalty_history": HISTORY, "currency": "EUR", "creator_id": "not-a-uuid"}, "creator_id"),
        ({"royalty_history": HISTORY, "currency": "EUR", "creator_id": 42}, "creator_id"),
        ({"royalty_history": HISTORY, "currency": "EUR", "surprise": 1}, "surprise"),
        (
            {"royalty_history": [{"period": "2024-13", "amount_minor": 1}], "currency": "EUR"},
            "royalty_history[0].period",
        ),
        (
            {"royalty_history": [{"period": "2024-01", "amount_minor": 1.5}], "currency": "EUR"},
            "royalty_history[0].amount_minor",
        ),
        (
            {"royalty_history": [{"period": "2024-01", "amount_minor": -1}], "currency": "EUR"},
            "royalty_history[0].amount_minor",
        ),
        (
            {"royalty_history": [HISTORY[0], HISTORY[0]], "currency": "EUR"},
            "royalty_history[1].period",
        ),
        ([HISTORY], "body"),
    ],
)
async def test_invalid_requests_are_422_naming_the_field(
    calculator: Callable[..., Any], body: object, field: str
) -> None:
    client = await calculator(boolean_flag(fallthrough=True))
    status, answer = await quote(client, body)
    assert status == 422
    assert answer["error"] == "validation_failed"
    assert field in [problem["field"] for problem in answer["fields"]]


async def test_body_that_is_not_json_is_400(calculator: Callable[..., Any]) -> None:
    client = await calculator(boolean_flag())
    response = await client.post("/calculator", data=b"{nope", headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert (await response.json())["error"] == "bad_request"


async def test_null_creator_id_is_the_same_as_none(calculator: Callable[..., Any]) -> None:
    client = await calculator(boolean_flag())
    status, body = await quote(client, {"royalty_history": HISTORY, "currency": "EUR", "creator_id": None})
    assert status == 200 and body["version"] == "v1"


# --- wiring --------------------------------------------------------------------------------------


async def test_flags_ctx_stores_and_closes_the_flag_source(tmp_path: Path) -> None:
    app = web.Application()
    app[SETTINGS] = local_settings(write_flags(tmp_path / "flags.json", boolean_flag(fallthrough=True)))
    context = flags_ctx(app)
    await anext(context)
    flags = app[FLAGS]
    assert await flags.variation(CALCULATOR_V2_FLAG, FlagContext(), False) is True
    with pytest.raises(StopAsyncIteration):
        await anext(context)
    assert await flags.variation(CALCULATOR_V2_FLAG, FlagContext(), False) is False, "closed: defaults"


def test_the_route_declares_its_permission() -> None:
    app = web.Application()
    add_routes(app, (route_named("calculate_offer"),))
    (route,) = app.router.routes()
    requirement = requirement_of(route.handler)
    assert requirement is not None and requirement.permissions == frozenset({OFFERS_WRITE})

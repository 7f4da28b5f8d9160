"""A stateful fake of the Stripe and Wise HTTP APIs we use, as a real aiohttp server.

Real HTTP, so a worker running in another process can be pointed at it (`stripe_url`,
`wise_url`) and a test can steer it from outside (`POST /_control`) and read what happened
(`GET /_state`). It keeps the provider semantics that matter for money safety:

- Stripe: `Idempotency-Key` replays the stored status and body (including 5xx and declines,
  as Stripe does for v1) and rejects the same key with different parameters
  (400 idempotency_error); `GET /v1/transfers?transfer_group=` answers from stored state.
- Wise: recipient -> quote -> transfer -> fund; a repeated `customerTransactionId` returns
  the existing transfer; funding twice is 422 `transfer.invalid-state`; money "moves" only
  when a transfer is funded.

Faults per provider (Python `set_mode` or `POST /_control`): `ok`, `decline`, `reject` (Wise
funding answered 200 REJECTED), `server_error` (500, nothing executed), `rate_limited` (429,
nothing executed), `execute_then_timeout` (execute, then hold the response longer than the
client waits), `execute_then_500` (execute, then answer 500). A fault applies to one step
(Stripe: `transfer` | `lookup`; Wise: `recipient` | `quote` | `transfer` | `fund` | `lookup`;
default: the money-moving step) and to `times` requests (None: until changed).

Webhooks (tests/fakes/webhooks.py): with ``webhook_url`` set (the web app's base URL), a
Stripe reversal and a Wise bounce are also sent there as signed webhooks -- Stripe's
``transfer.reversed`` under ``stripe_webhook_secret``, Wise's ``transfers#state-change``
under the fake's own RSA key (``wise_webhook_public_key_pem`` is what the web app verifies
with). ``bounce_wise_transfer_later`` models a transfer that is ``processing`` and bounces
back after a delay. Every delivery is kept in ``webhooks`` (and can be sent again).

Run standalone: `python -m tests.fakes.providers --port 12112`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from aiohttp import web

from infra.providers.wise import customer_transaction_id, dumps_exact
from models.money import CURRENCY_EXPONENTS
from tests.fakes.webhooks import (
    DEFAULT_STRIPE_SECRET,
    WebhookDelivery,
    new_wise_key,
    public_pem,
    send,
    signed_stripe,
    signed_wise,
    stripe_event_body,
    wise_state_change_body,
)

PROVIDERS = ("stripe", "wise")
MODES = frozenset(
    {"ok", "decline", "reject", "server_error", "rate_limited", "execute_then_timeout", "execute_then_500"}
)
STEPS = {
    "stripe": frozenset({"transfer", "lookup"}),
    "wise": frozenset({"recipient", "quote", "transfer", "fund", "lookup"}),
}
DEFAULT_STEP = {"stripe": "transfer", "wise": "fund"}
_NOT_EXECUTING = frozenset({"decline", "reject", "server_error", "rate_limited"})


@dataclass
class Fault:
    mode: str = "ok"
    step: str = ""
    times: int | None = None  # None: sticky until changed
    hang_seconds: float | None = None
    # Only requests for this payout (Stripe transfer_group / Wise customerTransactionId's payout).
    payout_id: str | None = None
    # Late visibility: money that moved under this fault shows up in lookups only this much later.
    visible_after: float | None = None


@dataclass
class RecordedRequest:
    provider: str
    method: str
    path: str  # without the /stripe or /wise prefix
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    at: float = field(default_factory=time.time)

    def public(self) -> dict[str, Any]:
        data = asdict(self)
        data["headers"] = {k: v for k, v in self.headers.items() if k.lower() != "authorization"}
        return data


class ProviderFake:
    def __init__(
        self,
        *,
        hang_seconds: float = 5.0,
        stripe_api_key: str | None = None,
        wise_token: str | None = None,
        stripe_replays_5xx: bool = True,
        webhook_url: str | None = None,
        stripe_webhook_secret: str = DEFAULT_STRIPE_SECRET,
    ) -> None:
        self.hang_seconds = hang_seconds
        # Where signed webhooks go (None: none are sent, as before webhooks existed).
        self.webhook_url = webhook_url
        self.stripe_webhook_secret = stripe_webhook_secret
        self.wise_webhook_key = new_wise_key()
        self.webhooks: list[WebhookDelivery] = []
        self._timers: set[asyncio.Task[None]] = set()
        self._stripe_api_key = stripe_api_key
        self._wise_token = wise_token
        self.stripe_replays_5xx = stripe_replays_5xx
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self.url = ""
        self.reset()

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        app = web.Application()
        app.router.add_post("/_control", self._control)
        app.router.add_get("/_state", self._state)
        app.router.add_get("/_requests", self._requests)
        app.router.add_post("/stripe/v1/transfers", self._stripe_create)
        app.router.add_get("/stripe/v1/transfers", self._stripe_list)
        app.router.add_get("/stripe/v1/transfers/{transfer_id}", self._stripe_get)
        app.router.add_post("/wise/v1/accounts", self._wise_recipient)
        app.router.add_post("/wise/v3/profiles/{profile_id}/quotes", self._wise_quote)
        app.router.add_post("/wise/v1/transfers", self._wise_transfer)
        app.router.add_get("/wise/v1/transfers", self._wise_list)
        app.router.add_get("/wise/v1/transfers/{transfer_id}", self._wise_get)
        app.router.add_post("/wise/v3/profiles/{profile_id}/transfers/{transfer_id}/payments", self._wise_fund)
        self._stopping = asyncio.Event()
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self.url = f"http://{bound_host}:{bound_port}"

    async def stop(self) -> None:
        self._stopping.set()  # wakes handlers that are "losing" a response
        for timer in list(self._timers):
            timer.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> ProviderFake:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def stripe_url(self) -> str:
        return f"{self.url}/stripe"

    @property
    def wise_url(self) -> str:
        return f"{self.url}/wise"

    # --- steering and inspection (Python side) --------------------------------------------

    def reset(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.faults: dict[str, Fault] = {p: Fault(step=DEFAULT_STEP[p]) for p in PROVIDERS}
        # Faults for one payout each, beside the provider-wide one (the soak gives every payout its own).
        self.payout_faults: dict[tuple[str, str], list[Fault]] = {}
        self.transfers: dict[str, list[dict[str, Any]]] = {p: [] for p in PROVIDERS}
        self._idempotency: dict[str, tuple[dict[str, list[str]], int, dict[str, Any]]] = {}
        # Recipients outlive a reset, as on Wise: callers keep reusing the ids they stored.
        self._recipients: dict[int, dict[str, Any]] = getattr(self, "_recipients", {})
        self._quotes: dict[str, dict[str, Any]] = {}
        self._used_quotes: set[str] = set()
        self._wise_by_ctid: dict[str, dict[str, Any]] = {}
        self._next_wise_id = getattr(self, "_next_wise_id", 50_000_000)
        self._stripe_in_flight: set[str] = set()
        self.wise_objects_created: dict[str, int] = {"recipient": 0, "quote": 0, "transfer": 0}

    def set_mode(
        self,
        provider: str,
        mode: str,
        *,
        step: str | None = None,
        times: int | None = None,
        hang_seconds: float | None = None,
        payout_id: str | None = None,
        visible_after: float | None = None,
    ) -> None:
        if provider not in PROVIDERS:
            raise ValueError(f"provider must be one of {PROVIDERS}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {sorted(MODES)}")
        step = step or DEFAULT_STEP[provider]
        if step not in STEPS[provider]:
            raise ValueError(f"step for {provider} must be one of {sorted(STEPS[provider])}")
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 or None")
        self.faults[provider] = Fault(
            mode=mode,
            step=step,
            times=times,
            hang_seconds=hang_seconds,
            payout_id=str(uuid.UUID(payout_id)) if payout_id else None,
            visible_after=visible_after,
        )

    def add_payout_fault(
        self,
        provider: str,
        payout_id: str,
        mode: str,
        *,
        step: str | None = None,
        times: int | None = 1,
        hang_seconds: float | None = None,
        visible_after: float | None = None,
    ) -> None:
        """Queue a fault for one payout's requests (several queue up, in order)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {sorted(MODES)}")
        step = step or DEFAULT_STEP[provider]
        key = str(uuid.UUID(payout_id)) if provider == "stripe" else customer_transaction_id(payout_id)
        self.payout_faults.setdefault((provider, key), []).append(
            Fault(mode=mode, step=step, times=times, hang_seconds=hang_seconds, visible_after=visible_after)
        )

    def executed(self, provider: str) -> dict[str, int]:
        """Executed money movements per idempotency identity: Stripe transfers by
        transfer_group (= payout id), Wise funded transfers by customerTransactionId."""
        counts: dict[str, int] = {}
        for transfer in self.transfers[provider]:
            if provider == "stripe":
                key = transfer.get("transfer_group") or ""
            elif transfer.get("_funded"):
                key = transfer["customerTransactionId"]
            else:
                continue
            counts[key] = counts.get(key, 0) + 1
        return counts

    def executed_count(self, payout_id: str, provider: str | None = None) -> int:
        """How many times money moved for this payout (both providers unless one is named)."""
        per = {
            "stripe": self.executed("stripe").get(payout_id, 0),
            "wise": self.executed("wise").get(customer_transaction_id(payout_id), 0),
        }
        return per[provider] if provider else sum(per.values())

    def bounce_wise_transfer(self, transfer_id: str | int) -> WebhookDelivery:
        """The bank returned the money after Wise had sent it (``processing`` -> ``bounced_back``).
        Returns the signed ``transfers#state-change`` webhook (kept in ``webhooks``; sent by
        ``deliver`` / ``bounce_wise_transfer_later``)."""
        transfer = self._wise_transfer_by_id(str(transfer_id))
        if transfer is None:
            raise KeyError(transfer_id)
        previous = transfer["status"]
        transfer["status"] = "bounced_back"
        delivery = signed_wise(wise_state_change_body(transfer, previous, "bounced_back"), self.wise_webhook_key)
        self.webhooks.append(delivery)
        return delivery

    def bounce_wise_transfer_later(self, transfer_id: str | int, after_seconds: float) -> None:
        """A transfer Wise shows ``processing`` bounces back ``after_seconds`` later, and the
        signed webhook is sent to ``webhook_url`` (when set) at that moment."""
        if self._wise_transfer_by_id(str(transfer_id)) is None:
            raise KeyError(transfer_id)

        async def later() -> None:
            await asyncio.sleep(after_seconds)
            delivery = self.bounce_wise_transfer(transfer_id)
            if self.webhook_url:
                await self.deliver(delivery)

        timer = asyncio.ensure_future(later())
        self._timers.add(timer)
        timer.add_done_callback(self._timers.discard)

    @property
    def wise_webhook_public_key_pem(self) -> str:
        return public_pem(self.wise_webhook_key)

    async def deliver(self, delivery: WebhookDelivery, url: str | None = None) -> int:
        """POST a (possibly earlier) delivery to the web app, as the provider's retry would."""
        target = url or self.webhook_url
        if not target:
            raise ValueError("no webhook_url configured")
        return await send(delivery, target)

    def plant_stripe_transfer(self, payout_id: str, amount: int, currency: str, destination: str) -> str:
        """A transfer nobody asked for through the API (reconciliation drift tests)."""
        params = {
            "amount": [str(amount)],
            "currency": [currency.lower()],
            "destination": [destination],
            "transfer_group": [payout_id],
            "metadata[payout_id]": [payout_id],
        }
        transfer = _stripe_transfer(params)
        self.transfers["stripe"].append(transfer)
        return str(transfer["id"])

    def reverse_stripe_transfer(self, transfer_id: str, amount: int | None = None) -> WebhookDelivery:
        """Reverse a transfer, all of it (default) or ``amount`` more of it (Stripe's unit), as
        ``POST /v1/transfers/{id}/reversals`` does; returns the signed ``transfer.reversed``
        webhook (kept in ``webhooks``)."""
        for transfer in self.transfers["stripe"]:
            if transfer["id"] == transfer_id:
                left = transfer["amount"] - transfer["amount_reversed"]
                part = left if amount is None else min(amount, left)
                transfer["amount_reversed"] += part
                transfer["reversed"] = transfer["amount_reversed"] == transfer["amount"]
                transfer["reversals"]["data"].append(
                    {"id": "trr_" + uuid.uuid4().hex[:24], "object": "transfer_reversal", "amount": part}
                )
                delivery = signed_stripe(stripe_event_body(transfer), self.stripe_webhook_secret)
                self.webhooks.append(delivery)
                return delivery
        raise KeyError(transfer_id)

    def state(self, payout_id: str | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {
            p: {
                "fault": asdict(self.faults[p]),
                "transfers": [_public_transfer(t) for t in self.transfers[p]],
                "executed": self.executed(p),
                "requests": sum(1 for r in self.requests if r.provider == p),
            }
            for p in PROVIDERS
        }
        data["stripe"]["replays_5xx"] = self.stripe_replays_5xx
        data["webhooks"] = [d.public() for d in self.webhooks]
        data["wise"]["objects_created"] = dict(self.wise_objects_created)
        if payout_id is not None:
            stripe_n = self.executed_count(payout_id, "stripe")
            wise_n = self.executed_count(payout_id, "wise")
            data["payout"] = {"payout_id": payout_id, "stripe": stripe_n, "wise": wise_n, "total": stripe_n + wise_n}
        return data

    # --- control endpoints (HTTP side) ----------------------------------------------------

    async def _control(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            action = body.get("action", "set_mode")
            if action == "reset":
                self.reset()
            elif action == "reverse_stripe_transfer":
                delivery = self.reverse_stripe_transfer(body["transfer_id"], body.get("amount"))
                if body.get("notify") and self.webhook_url:
                    await self.deliver(delivery)
            elif action == "bounce_wise_transfer":
                if body.get("after_seconds") is not None:
                    self.bounce_wise_transfer_later(body["transfer_id"], float(body["after_seconds"]))
                else:
                    delivery = self.bounce_wise_transfer(body["transfer_id"])
                    if body.get("notify") and self.webhook_url:
                        await self.deliver(delivery)
            elif action == "webhooks":
                self.webhook_url = body.get("url", self.webhook_url)
                self.stripe_webhook_secret = body.get("stripe_secret", self.stripe_webhook_secret)
            elif action == "set_mode":
                if "replay_5xx" in body:
                    self.stripe_replays_5xx = bool(body["replay_5xx"])
                if "mode" in body:
                    self.set_mode(
                        body["provider"],
                        body["mode"],
                        step=body.get("step"),
                        times=body.get("times"),
                        hang_seconds=body.get("hang_seconds"),
                        payout_id=body.get("payout_id"),
                        visible_after=body.get("visible_after"),
                    )
            else:
                raise ValueError(f"unknown action {action!r}")
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return _exact_json(self.state())

    async def _state(self, request: web.Request) -> web.Response:
        return _exact_json(self.state(request.query.get("payout_id")))

    async def _requests(self, request: web.Request) -> web.Response:
        return _exact_json([r.public() for r in self.requests])

    # --- fault plumbing -------------------------------------------------------------------

    def _take_fault(self, provider: str, step: str, payout_id: str | None = None) -> Fault:
        queued = self.payout_faults.get((provider, payout_id or ""))
        if queued and queued[0].step == step:
            first = queued[0]
            if first.times is not None:
                first.times -= 1
                if first.times <= 0:
                    queued.pop(0)
            return Fault(mode=first.mode, step=step, hang_seconds=first.hang_seconds, visible_after=first.visible_after)
        fault = self.faults[provider]
        if fault.mode == "ok" or fault.step != step:
            return Fault(mode="ok", step=step)
        if fault.payout_id is not None:
            wanted = fault.payout_id if provider == "stripe" else customer_transaction_id(fault.payout_id)
            if wanted != payout_id:
                return Fault(mode="ok", step=step)
        taken = Fault(
            mode=fault.mode,
            step=step,
            hang_seconds=fault.hang_seconds,
            payout_id=fault.payout_id,
            visible_after=fault.visible_after,
        )
        if fault.times is not None:
            fault.times -= 1
            if fault.times <= 0:
                self.faults[provider] = Fault(step=DEFAULT_STEP[provider])
        return taken

    async def _lose_response(self, fault: Fault) -> None:
        """Hold the response until the client has given up (or the fake stops)."""
        seconds = fault.hang_seconds if fault.hang_seconds is not None else self.hang_seconds
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except TimeoutError:
            pass

    def _record(self, provider: str, request: web.Request, path: str, body: Any) -> None:
        self.requests.append(
            RecordedRequest(provider, request.method, path, dict(request.query), dict(request.headers), body)
        )

    # --- Stripe ---------------------------------------------------------------------------

    def _stripe_auth_error(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        key = ""
        if header.startswith("Basic "):
            try:
                key = base64.b64decode(header[6:]).decode().split(":", 1)[0]
            except (ValueError, binascii.Error):
                key = ""
        elif header.startswith("Bearer "):
            key = header[7:]
        if not key.startswith("sk_") or (self._stripe_api_key is not None and key != self._stripe_api_key):
            return _stripe_error(401, "invalid_request_error", None, "Invalid API Key provided.")
        return None

    async def _stripe_create(self, request: web.Request) -> web.Response:
        form = await request.post()
        params: dict[str, list[str]] = {}
        for k, v in form.items():
            params.setdefault(k, []).append(str(v))
        self._record("stripe", request, "/v1/transfers", params)
        if (denied := self._stripe_auth_error(request)) is not None:
            return denied
        if (invalid := _stripe_validate_transfer(params)) is not None:
            return invalid  # validation errors are not stored under the key, as on Stripe
        key = request.headers.get("Idempotency-Key")
        if key is not None and key in self._idempotency:
            stored_params, status, body = self._idempotency[key]
            if stored_params != params:
                return _stripe_error(
                    400,
                    "idempotency_error",
                    None,
                    "Keys for idempotent requests can only be used with the same parameters they were first used with.",
                )
            return web.json_response(body, status=status, headers={"Idempotent-Replayed": "true"})
        if key is not None and key in self._stripe_in_flight:
            # Stripe: a request with this key is still being processed.
            return _stripe_error(
                409,
                "invalid_request_error",
                "idempotency_key_in_use",
                "There is currently another in-progress request.",
            )
        group = (params.get("transfer_group") or [None])[0]
        fault = self._take_fault("stripe", "transfer", _uuid_or_none(group))
        if fault.mode == "rate_limited":
            return _stripe_error(429, "invalid_request_error", "rate_limit", "Too many requests.")
        if fault.mode in ("decline", "reject"):
            return self._stripe_store(key, params, 402, _stripe_error_body("card_error", "card_declined", "Declined."))
        if fault.mode == "server_error":
            return self._stripe_store(key, params, 500, _stripe_error_body("api_error", None, "Internal error."))

        transfer = _stripe_transfer(params)
        if fault.visible_after:
            transfer["_visible_at"] = time.time() + fault.visible_after
        self.transfers["stripe"].append(transfer)
        if fault.mode == "execute_then_500":
            return self._stripe_store(key, params, 500, _stripe_error_body("api_error", None, "Internal error."))
        if fault.mode == "execute_then_timeout":
            if key is not None:
                self._stripe_in_flight.add(key)
            try:
                await self._lose_response(fault)
            finally:
                self._stripe_in_flight.discard(key or "")
        return self._stripe_store(key, params, 200, _public_transfer(transfer))

    def _stripe_store(
        self, key: str | None, params: dict[str, list[str]], status: int, body: dict[str, Any]
    ) -> web.Response:
        if key is not None and (status < 500 or self.stripe_replays_5xx):
            self._idempotency[key] = (params, status, body)
        return web.json_response(body, status=status)

    async def _stripe_list(self, request: web.Request) -> web.Response:
        self._record("stripe", request, "/v1/transfers", None)
        if (denied := self._stripe_auth_error(request)) is not None:
            return denied
        if (
            faulted := await self._read_fault("stripe", _uuid_or_none(request.query.get("transfer_group")))
        ) is not None:
            return faulted
        try:
            limit = int(request.query.get("limit", "10"))
            created_gte = int(request.query.get("created[gte]", "0"))
        except ValueError:
            return _stripe_error(400, "invalid_request_error", "parameter_invalid_integer", "Invalid integer")
        now = time.time()
        matches = [
            t
            for t in reversed(self.transfers["stripe"])  # newest first, as Stripe lists
            if all(request.query[k] == t.get(k) for k in ("transfer_group", "destination") if k in request.query)
            and t.get("_visible_at", 0) <= now
            and t["created"] >= created_gte
        ]
        after = request.query.get("starting_after")
        if after is not None:
            ids = [t["id"] for t in matches]
            matches = matches[ids.index(after) + 1 :] if after in ids else []
        return web.json_response(
            {
                "object": "list",
                "data": [_public_transfer(t) for t in matches[:limit]],
                "has_more": len(matches) > limit,
                "url": "/v1/transfers",
            }
        )

    async def _stripe_get(self, request: web.Request) -> web.Response:
        self._record("stripe", request, f"/v1/transfers/{request.match_info['transfer_id']}", None)
        if (denied := self._stripe_auth_error(request)) is not None:
            return denied
        for transfer in self.transfers["stripe"]:
            if transfer["id"] == request.match_info["transfer_id"]:
                return web.json_response(_public_transfer(transfer))
        return _stripe_error(404, "invalid_request_error", "resource_missing", "No such transfer.")

    async def _read_fault(self, provider: str, payout_id: str | None = None) -> web.Response | None:
        """Faults on read-only lookups: nothing to execute, only errors and lost answers."""
        fault = self._take_fault(provider, "lookup", payout_id)
        if fault.mode in ("server_error", "execute_then_500"):
            return web.json_response({"error": {"type": "api_error"}}, status=500)
        if fault.mode == "rate_limited":
            return web.json_response({"error": {"type": "rate_limit"}}, status=429)
        if fault.mode == "execute_then_timeout":
            await self._lose_response(fault)
        return None

    # --- Wise -----------------------------------------------------------------------------

    def _wise_auth_error(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else ""
        if not token or (self._wise_token is not None and token != self._wise_token):
            return web.json_response({"error": "invalid_token", "error_description": "Invalid token"}, status=401)
        return None

    async def _wise_json(self, request: web.Request, path: str) -> tuple[Any, web.Response | None]:
        raw = await request.read()
        try:
            body = json.loads(raw, parse_float=Decimal) if raw else None
        except ValueError:
            body = None
        self._record("wise", request, path, body)
        if (denied := self._wise_auth_error(request)) is not None:
            return body, denied
        if not isinstance(body, dict):
            return body, _wise_errors(400, "error.body", "Request body must be a JSON object", None)
        return body, None

    async def _wise_step_fault(self, step: str, ctid: str | None = None) -> tuple[Fault, web.Response | None]:
        """The pre-execution part of a fault: refuse, fail or throttle without executing."""
        fault = self._take_fault("wise", step, ctid)
        if fault.mode == "decline":
            return fault, _wise_errors(422, _WISE_DECLINE_CODE[step], "Declined by the fake.", None)
        if fault.mode == "reject" and step != "fund":
            return fault, _wise_errors(422, _WISE_DECLINE_CODE[step], "Declined by the fake.", None)
        if fault.mode == "server_error":
            return fault, web.json_response({"errors": [{"code": "internal.error"}]}, status=500)
        if fault.mode == "rate_limited":
            return fault, web.json_response({"errors": [{"code": "rate.limit"}]}, status=429)
        return fault, None

    async def _wise_finish(self, fault: Fault, body: Any, status: int = 200) -> web.Response:
        """The post-execution part: answer, lose the answer, or answer 500."""
        if fault.mode == "execute_then_500":
            return web.json_response({"errors": [{"code": "internal.error"}]}, status=500)
        response = _exact_json(body, status)
        if fault.mode == "execute_then_timeout":
            await self._lose_response(fault)
        return response

    async def _wise_recipient(self, request: web.Request) -> web.Response:
        body, error = await self._wise_json(request, "/v1/accounts")
        if error is not None:
            return error
        details = body.get("details") if isinstance(body.get("details"), dict) else {}
        problems = [
            (path, message)
            for path, ok, message in (
                ("currency", body.get("currency") in CURRENCY_EXPONENTS, "Unknown currency"),
                ("type", body.get("type") == "iban", "Only iban recipients are faked"),
                ("profile", isinstance(body.get("profile"), int), "profile must be an integer"),
                ("accountHolderName", bool(str(body.get("accountHolderName", "")).strip()), "Required"),
                ("legalType", details.get("legalType") in ("PRIVATE", "BUSINESS"), "PRIVATE or BUSINESS"),
                ("IBAN", _iban_valid(str(details.get("IBAN", ""))), "Please specify a valid IBAN."),
            )
            if not ok
        ]
        if problems:
            return web.json_response(
                {"errors": [{"code": "NOT_VALID", "message": m, "path": p, "arguments": []} for p, m in problems]},
                status=422,
            )
        fault, refused = await self._wise_step_fault("recipient")
        if refused is not None:
            return refused
        recipient_id = self._wise_id()
        recipient = {
            "id": recipient_id,
            "business": None,
            "profile": body["profile"],
            "accountHolderName": body["accountHolderName"],
            "currency": body["currency"],
            "country": str(details["IBAN"])[:2],
            "type": "iban",
            "details": dict(details),
        }
        self._recipients[recipient_id] = recipient
        self.wise_objects_created["recipient"] += 1
        return await self._wise_finish(fault, recipient)

    async def _wise_quote(self, request: web.Request) -> web.Response:
        body, error = await self._wise_json(request, f"/v3/profiles/{request.match_info['profile_id']}/quotes")
        if error is not None:
            return error
        source, target = body.get("sourceCurrency"), body.get("targetCurrency")
        if source not in CURRENCY_EXPONENTS or target not in CURRENCY_EXPONENTS:
            return _wise_errors(422, "NOT_VALID", "Unknown currency", "targetCurrency")
        amounts = [k for k in ("sourceAmount", "targetAmount") if body.get(k) is not None]
        if len(amounts) != 1:
            return _wise_errors(422, "NOT_VALID", "Either sourceAmount or targetAmount, never both", "targetAmount")
        amount = _decimal(body[amounts[0]])
        currency = source if amounts[0] == "sourceAmount" else target
        exponent = amount.as_tuple().exponent if amount is not None else None
        if amount is None or amount <= 0 or not isinstance(exponent, int) or -exponent > CURRENCY_EXPONENTS[currency]:
            return _wise_errors(422, "error.greaterThanZero", "Invalid amount", amounts[0])
        if body.get("targetAccount") is not None and body["targetAccount"] not in self._recipients:
            return _wise_errors(422, "NOT_VALID", "Unknown targetAccount", "targetAccount")
        fault, refused = await self._wise_step_fault("quote")
        if refused is not None:
            return refused
        quote = {
            "id": str(uuid.uuid4()),
            "sourceCurrency": source,
            "targetCurrency": target,
            "sourceAmount": amount,
            "targetAmount": amount,
            "rate": 1,
            "payOut": body.get("payOut", "BANK_TRANSFER"),
            "preferredPayIn": body.get("preferredPayIn"),
            "targetAccount": body.get("targetAccount"),
            "profile": int(request.match_info["profile_id"]),
            "status": "PENDING",
            "rateType": "FIXED",
            "expirationTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1800)),
        }
        self._quotes[quote["id"]] = quote
        self.wise_objects_created["quote"] += 1
        return await self._wise_finish(fault, quote)

    async def _wise_transfer(self, request: web.Request) -> web.Response:
        body, error = await self._wise_json(request, "/v1/transfers")
        if error is not None:
            return error
        ctid = body.get("customerTransactionId")
        try:
            ctid = str(uuid.UUID(str(ctid)))
        except ValueError:
            return _wise_errors(422, "NOT_VALID", "customerTransactionId must be a UUID", "customerTransactionId")
        if body.get("targetAccount") not in self._recipients:
            return _wise_errors(422, "NOT_VALID", "Unknown targetAccount", "targetAccount")
        quote = self._quotes.get(str(body.get("quoteUuid")))
        if quote is None:
            return _wise_errors(422, "NOT_VALID", "Unknown quoteUuid", "quoteUuid")
        fault, refused = await self._wise_step_fault("transfer", ctid)
        if refused is not None:
            return refused
        existing = self._wise_by_ctid.get(ctid)
        if existing is not None:
            # Wise's idempotency: the same customerTransactionId is the same transfer.
            return await self._wise_finish(fault, _public_transfer(existing))
        if quote["id"] in self._used_quotes:
            return _wise_errors(422, "error.quote.already.used", "Quote already used", "quoteUuid")
        self._used_quotes.add(quote["id"])
        transfer = {
            "id": self._wise_id(),
            "user": 1,
            "targetAccount": body["targetAccount"],
            "sourceAccount": None,
            "quote": None,
            "quoteUuid": quote["id"],
            "status": "incoming_payment_waiting",
            "reference": "",
            "rate": 1,
            "created": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
            "business": None,
            "details": {"reference": (body.get("details") or {}).get("reference", "")},
            "hasActiveIssues": False,
            "sourceCurrency": quote["sourceCurrency"],
            "sourceValue": quote["sourceAmount"],
            "targetCurrency": quote["targetCurrency"],
            "targetValue": quote["targetAmount"],
            "customerTransactionId": ctid,
        }
        self.transfers["wise"].append(transfer)
        self._wise_by_ctid[ctid] = transfer
        self.wise_objects_created["transfer"] += 1
        return await self._wise_finish(fault, _public_transfer(transfer))

    async def _wise_fund(self, request: web.Request) -> web.Response:
        transfer_id = request.match_info["transfer_id"]
        body, error = await self._wise_json(
            request, f"/v3/profiles/{request.match_info['profile_id']}/transfers/{transfer_id}/payments"
        )
        if error is not None:
            return error
        transfer = self._wise_transfer_by_id(transfer_id)
        if transfer is None:
            return _wise_errors(404, "transfer.not-found", "Transfer not found", None)
        if body.get("type") != "BALANCE":
            return _wise_errors(422, "balance.payment-option-unavailable", "Only BALANCE is faked", "type")
        if transfer["status"] != "incoming_payment_waiting":
            return _wise_errors(422, "transfer.invalid-state", "Transfer cannot be funded", None)
        fault, refused = await self._wise_step_fault("fund", transfer["customerTransactionId"])
        if refused is not None:
            return refused
        if fault.mode == "reject":
            return web.json_response(
                {"type": "BALANCE", "status": "REJECTED", "errorCode": "transfer.insufficient_funds"}
            )
        transfer["status"] = "processing"
        transfer["_funded"] = True
        if fault.visible_after:
            transfer["_visible_at"] = time.time() + fault.visible_after
        return await self._wise_finish(fault, {"type": "BALANCE", "status": "COMPLETED", "errorCode": None})

    async def _wise_get(self, request: web.Request) -> web.Response:
        transfer_id = request.match_info["transfer_id"]
        self._record("wise", request, f"/v1/transfers/{transfer_id}", None)
        if (denied := self._wise_auth_error(request)) is not None:
            return denied
        transfer = self._wise_transfer_by_id(transfer_id)
        ctid = transfer["customerTransactionId"] if transfer is not None else None
        if (faulted := await self._read_fault("wise", ctid)) is not None:
            return faulted
        if transfer is None:
            return _wise_errors(404, "transfer.not-found", "Transfer not found", None)
        public = _public_transfer(transfer)
        if transfer.get("_visible_at", 0) > time.time():
            public["status"] = "incoming_payment_waiting"  # late visibility: the funding is not shown yet
        return _exact_json(public)

    async def _wise_list(self, request: web.Request) -> web.Response:
        # Like Wise: filters by status/currency, NOT by customerTransactionId.
        self._record("wise", request, "/v1/transfers", None)
        if (denied := self._wise_auth_error(request)) is not None:
            return denied
        if (faulted := await self._read_fault("wise")) is not None:
            return faulted
        statuses = set(request.query["status"].split(",")) if "status" in request.query else None
        offset, limit = int(request.query.get("offset", "0")), int(request.query.get("limit", "10"))
        matches = [t for t in self.transfers["wise"] if statuses is None or t["status"] in statuses]
        page = [_public_transfer(t) for t in matches[offset : offset + limit]]
        return _exact_json(page)

    def _wise_transfer_by_id(self, transfer_id: str) -> dict[str, Any] | None:
        return next((t for t in self.transfers["wise"] if str(t["id"]) == transfer_id), None)

    def _wise_id(self) -> int:
        self._next_wise_id += 1
        return self._next_wise_id


# --- helpers -------------------------------------------------------------------------------

_WISE_DECLINE_CODE = {
    "recipient": "NOT_VALID",
    "quote": "error.route.not.supported",
    "transfer": "error.transfer.rejected",
    "fund": "transfer.insufficient_funds",
    "lookup": "NOT_VALID",
}


def _exact_json(data: Any, status: int = 200) -> web.Response:
    # Wise amounts are Decimals here; keep them exact numbers on the wire.
    return web.Response(text=dumps_exact(data), status=status, content_type="application/json")


def _public_transfer(transfer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in transfer.items() if not k.startswith("_")}


def _stripe_error_body(type_: str, code: str | None, message: str) -> dict[str, Any]:
    error: dict[str, Any] = {"type": type_, "message": message}
    if code is not None:
        error["code"] = code
    return {"error": error}


def _stripe_error(status: int, type_: str, code: str | None, message: str) -> web.Response:
    return web.json_response(_stripe_error_body(type_, code, message), status=status)


def _stripe_validate_transfer(params: dict[str, list[str]]) -> web.Response | None:
    def one(name: str) -> str:
        values = params.get(name, [])
        return values[0] if len(values) == 1 else ""

    if not one("amount").isdigit() or int(one("amount")) <= 0:
        return _stripe_error(400, "invalid_request_error", "parameter_invalid_integer", "Invalid amount")
    if one("currency").upper() not in CURRENCY_EXPONENTS or one("currency") != one("currency").lower():
        return _stripe_error(400, "invalid_request_error", "parameter_invalid", "Invalid currency")
    if one("currency") == "isk" and int(one("amount")) % 100:
        return _stripe_error(
            400, "invalid_request_error", "invalid_charge_amount_no_decimal_compatible", "ISK must be whole kr."
        )
    if not one("destination").startswith("acct_"):
        return _stripe_error(400, "invalid_request_error", "resource_missing", "No such destination")
    return None


def _stripe_transfer(params: dict[str, list[str]]) -> dict[str, Any]:
    def one(name: str) -> str | None:
        values = params.get(name)
        return values[0] if values else None

    metadata = {
        k[len("metadata[") : -1]: v[0] for k, v in params.items() if k.startswith("metadata[") and k.endswith("]")
    }
    transfer_id = "tr_" + uuid.uuid4().hex[:24]
    return {
        "id": transfer_id,
        "object": "transfer",
        "amount": int(one("amount") or 0),
        "amount_reversed": 0,
        "balance_transaction": "txn_" + uuid.uuid4().hex[:24],
        "created": int(time.time()),
        "currency": one("currency"),
        "description": one("description"),
        "destination": one("destination"),
        "destination_payment": "py_" + uuid.uuid4().hex[:24],
        "livemode": False,
        "metadata": metadata,
        "reversals": {"object": "list", "data": [], "has_more": False, "url": f"/v1/transfers/{transfer_id}/reversals"},
        "reversed": False,
        "source_type": "card",
        "transfer_group": one("transfer_group"),
    }


def _uuid_or_none(value: str | None) -> str | None:
    try:
        return str(uuid.UUID(value)) if value else None
    except ValueError:
        return None


def _wise_errors(status: int, code: str, message: str, path: str | None) -> web.Response:
    return web.json_response(
        {"errors": [{"code": code, "message": message, "path": path, "arguments": []}]}, status=status
    )


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


def _iban_valid(iban: str) -> bool:
    iban = iban.replace(" ", "").upper()
    if len(iban) < 15 or len(iban) > 34 or not iban.isalnum() or not iban[:2].isalpha():
        return False
    digits = "".join(str(int(c, 36)) for c in iban[4:] + iban[:4])
    return int(digits) % 97 == 1


async def _serve(host: str, port: int, webhook_url: str | None, stripe_webhook_secret: str) -> None:
    fake = ProviderFake(webhook_url=webhook_url, stripe_webhook_secret=stripe_webhook_secret)
    await fake.start(host, port)
    print(
        json.dumps(
            {
                "stripe_url": fake.stripe_url,
                "wise_url": fake.wise_url,
                "control": f"{fake.url}/_control",
                # For the web app: WISE_WEBHOOK_PUBLIC_KEY (one line, \n escapes).
                "wise_webhook_public_key": fake.wise_webhook_public_key_pem.strip().replace("\n", "\\n"),
            }
        ),
        flush=True,
    )
    try:
        await asyncio.Event().wait()
    finally:
        await fake.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Run the Stripe/Wise provider fake")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--webhook-url", default=None, help="the web app's base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--stripe-webhook-secret", default=DEFAULT_STRIPE_SECRET)
    args = parser.parse_args()
    asyncio.run(_serve(args.host, args.port, args.webhook_url, args.stripe_webhook_secret))

"""Creators and their payout recipients. Bank details are encrypted before they touch the
database and only ever returned masked; events carry the recipient id alone."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from infra.logging import get_logger
from models.iban import is_valid_iban, mask_account, mask_iban, mask_name, normalize_iban
from state.creators import get_creator, insert_creator, insert_recipient, list_recipients
from web.auth.permissions import visible_to
from web.errors import ValidationFailed
from web.keys import ENGINE, VAULT
from web.offers import read_json
from web.validation import parse_currency, parse_uuid

log = get_logger(__name__)


def _creator_id(request: web.Request) -> str:
    problems: list[dict[str, str]] = []
    creator_id = parse_uuid(request.match_info["creator_id"], "creator_id", problems)
    if problems or creator_id is None:
        raise ValidationFailed(problems)
    if not visible_to(request, creator_id):
        # A creator-scoped caller sees only itself; others do not exist as far as it knows.
        raise web.HTTPNotFound(text=f"no creator {creator_id}")
    return creator_id


async def create_creator(request: web.Request) -> web.Response:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ValidationFailed([{"field": "body", "problem": "must be a JSON object"}])
    problems: list[dict[str, str]] = []
    name = body.get("display_name")
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 200:
        problems.append({"field": "display_name", "problem": "is required: 1 to 200 characters"})
    country = body.get("country")
    if country is not None and (not isinstance(country, str) or len(country) != 2 or not country.isalpha()):
        problems.append({"field": "country", "problem": "must be an ISO 3166-1 alpha-2 code, e.g. DE"})
    creator_id = str(uuid.uuid4())
    if "creator_id" in body:
        creator_id = parse_uuid(body["creator_id"], "creator_id", problems) or creator_id
    unknown = sorted(set(body) - {"display_name", "country", "creator_id"})
    problems += [{"field": name_, "problem": "is not a known field"} for name_ in unknown]
    if problems:
        raise ValidationFailed(problems)
    async with request.app[ENGINE].begin() as conn:
        created = await insert_creator(conn, creator_id, name.strip(), country.upper() if country else None)
        creator = await get_creator(conn, creator_id)
    if not created:
        return web.json_response({"error": "conflict", "message": f"creator {creator_id} exists"}, status=409)
    return web.json_response(creator, status=201, headers={"Location": f"/creators/{creator_id}"})


async def show_creator(request: web.Request) -> web.Response:
    creator_id = _creator_id(request)
    async with request.app[ENGINE].connect() as conn:
        creator = await get_creator(conn, creator_id)
        if creator is None:
            return web.json_response({"error": "not_found", "message": f"no creator {creator_id}"}, status=404)
        creator["recipients"] = await list_recipients(conn, creator_id)
    return web.json_response(creator)


def parse_recipient(body: Any) -> tuple[str, dict[str, Any], dict[str, str]]:
    """-> (currency, secret details, masked view)."""
    if not isinstance(body, dict):
        raise ValidationFailed([{"field": "body", "problem": "must be a JSON object"}])
    problems: list[dict[str, str]] = []
    currency = parse_currency(body.get("currency"), "currency", problems)
    details: dict[str, Any] = {}
    masked: dict[str, str] = {}
    stripe_account = body.get("stripe_account_id")
    if stripe_account is not None:
        if not isinstance(stripe_account, str) or not stripe_account.startswith("acct_") or len(stripe_account) > 64:
            problems.append(
                {"field": "stripe_account_id", "problem": "must be a Stripe connected account id (acct_...)"}
            )
        else:
            details["stripe_account_id"] = stripe_account
            masked["stripe_account"] = mask_account(stripe_account)
    bank = body.get("bank_account")
    if bank is not None:
        if not isinstance(bank, dict):
            problems.append({"field": "bank_account", "problem": "must be an object {holder_name, iban, bic?}"})
        else:
            holder, iban, bic = bank.get("holder_name"), bank.get("iban"), bank.get("bic")
            if not isinstance(holder, str) or not 2 <= len(holder.strip()) <= 140:
                problems.append({"field": "bank_account.holder_name", "problem": "is required: 2 to 140 characters"})
            if not isinstance(iban, str) or not is_valid_iban(iban):
                problems.append({"field": "bank_account.iban", "problem": "must be a valid IBAN (checksum verified)"})
            if bic is not None and (not isinstance(bic, str) or len(bic) not in (8, 11) or not bic.isalnum()):
                problems.append({"field": "bank_account.bic", "problem": "must be an 8 or 11 character BIC"})
            if not any(p["field"].startswith("bank_account") for p in problems):
                details["bank_account"] = {"holder_name": holder.strip(), "iban": normalize_iban(iban), "bic": bic}
                masked["iban"] = mask_iban(iban)
                masked["holder_name"] = mask_name(holder)
    if stripe_account is None and bank is None:
        problems.append({"field": "stripe_account_id", "problem": "give a stripe_account_id, a bank_account, or both"})
    unknown = sorted(set(body) - {"currency", "stripe_account_id", "bank_account"})
    problems += [{"field": name, "problem": "is not a known field"} for name in unknown]
    if problems:
        raise ValidationFailed(problems)
    assert currency is not None
    return currency, details, masked


async def add_recipient(request: web.Request) -> web.Response:
    creator_id = _creator_id(request)
    currency, details, masked = parse_recipient(await read_json(request))
    recipient_id = str(uuid.uuid4())
    ciphertext = request.app[VAULT].seal(details)
    async with request.app[ENGINE].begin() as conn:
        if await get_creator(conn, creator_id) is None:
            return web.json_response({"error": "not_found", "message": f"no creator {creator_id}"}, status=404)
        await insert_recipient(conn, recipient_id, creator_id, currency, ciphertext, masked)
    log.info("recipient_added", creator_id=creator_id, recipient_id=recipient_id, kinds=sorted(masked))
    return web.json_response(
        {"recipient_id": recipient_id, "creator_id": creator_id, "currency": currency, "masked": masked}, status=201
    )

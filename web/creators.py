"""Creators and their payout recipients. Bank details are encrypted before they touch the
database and only ever returned masked; events carry the recipient id alone."""

from __future__ import annotations

import uuid

from aiohttp import web

from models.errors import CreatorNotFound
from models.iban import mask_account, mask_iban, mask_name
from models.rules import visible_to
from state.creators import get_creator, list_recipients
from web import commands
from web.auth.permissions import CREATOR_SCOPE
from web.contract import CreatorIn, RecipientIn
from web.errors import json_error
from web.keys import ENGINE, VAULT
from web.validation import path_uuid, read_body


def _creator_id(request: web.Request) -> str:
    creator_id = path_uuid(request, "creator_id")
    if not visible_to(request.get(CREATOR_SCOPE), creator_id):
        # A creator-scoped caller sees only itself; others do not exist as far as it knows.
        raise CreatorNotFound(creator_id)
    return creator_id


async def create_creator(request: web.Request) -> web.Response:
    body = await read_body(request, CreatorIn)
    own = request.get(CREATOR_SCOPE)
    if own is not None and body.creator_id not in (None, own):
        # Fail closed: a creator registers itself only, never another creator id.
        return json_error(403, "not_own_creator", "a creator can only register itself")
    command = commands.CreateCreator(
        creator_id=own or body.creator_id or str(uuid.uuid4()), display_name=body.display_name, country=body.country
    )
    creator = await commands.create_creator(command, request.app[ENGINE])
    return web.json_response(creator, status=201, headers={"Location": f"/creators/{command.creator_id}"})


async def show_creator(request: web.Request) -> web.Response:
    creator_id = _creator_id(request)
    async with request.app[ENGINE].connect() as conn:
        creator = await get_creator(conn, creator_id)
        if creator is None:
            raise CreatorNotFound(creator_id)
        creator["recipients"] = await list_recipients(conn, creator_id)
    return web.json_response(creator)


def secret_and_masked(body: RecipientIn) -> tuple[dict[str, object], dict[str, str]]:
    """-> (the details to seal, the masked view that may be shown and stored in clear)."""
    details: dict[str, object] = {}
    masked: dict[str, str] = {}
    if body.stripe_account_id is not None:
        details["stripe_account_id"] = body.stripe_account_id
        masked["stripe_account"] = mask_account(body.stripe_account_id)
    if body.bank_account is not None:
        bank = body.bank_account
        details["bank_account"] = {"holder_name": bank.holder_name, "iban": bank.iban, "bic": bank.bic}
        masked["iban"] = mask_iban(bank.iban)
        masked["holder_name"] = mask_name(bank.holder_name)
    return details, masked


async def add_recipient(request: web.Request) -> web.Response:
    creator_id = _creator_id(request)
    body = await read_body(request, RecipientIn)
    details, masked = secret_and_masked(body)
    recipient_id = str(uuid.uuid4())
    command = commands.AddRecipient(
        creator_id=creator_id,
        recipient_id=recipient_id,
        currency=body.currency,
        ciphertext=request.app[VAULT].seal(details, recipient_id=recipient_id, creator_id=creator_id),
        masked=masked,
    )
    await commands.add_recipient(command, request.app[ENGINE])
    return web.json_response(
        {"recipient_id": command.recipient_id, "creator_id": creator_id, "currency": body.currency, "masked": masked},
        status=201,
    )

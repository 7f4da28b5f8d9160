"""`spacemusic simulate`: a steady trickle of realistic offers through the HTTP API."""

from __future__ import annotations

import asyncio
import random
import uuid

import click
import httpx
from rich.console import Console

from bootstrap.commands.support import load_settings, run
from infra.retry import TRANSIENT_IO, retry
from web.auth import ADMIN, mint_token

console = Console(stderr=True)


def realistic_history(rng: random.Random, months: int, end_year: int = 2026, end_month: int = 10) -> list[dict]:
    """Royalties with a catalog's usual shape: a base level, seasonality, slow decay, and
    the odd viral month. Occasionally a catalog that earned nothing (a failed valuation)."""
    base = rng.choice([15_000, 60_000, 250_000, 1_200_000])  # minor units per month
    decay = rng.uniform(0.97, 1.01)
    zero_catalog = rng.random() < 0.05
    history = []
    index = end_year * 12 + end_month - 1 - (months - 1)
    level = float(base)
    for _ in range(months):
        year, month = divmod(index, 12)
        season = 1.0 + 0.15 * (1 if month in (10, 11) else 0) - 0.1 * (1 if month in (0, 1) else 0)
        spike = rng.uniform(2.0, 5.0) if rng.random() < 0.04 else 1.0
        amount = 0 if zero_catalog else int(level * season * spike * rng.uniform(0.85, 1.15))
        history.append({"period": f"{year:04d}-{month + 1:02d}", "amount_minor": max(amount, 0)})
        level *= decay
        index += 1
    return history


ARTISTS = [
    "Nova Reyes",
    "The Velvet Static",
    "Kofi Mensah",
    "Luna Park Trio",
    "Ada Okafor",
    "Siren Lake",
    "Marek Nowak",
    "Juno & The Tides",
    "Ravi Shah",
    "Hollow Pines",
]


SIM_IBAN = "DE89370400440532013000"  # the standard example IBAN: valid checksum, no real account


async def ensure_creators(client: httpx.AsyncClient, pool: dict[str, str], rng: random.Random) -> dict[str, str]:
    """The simulated creators exist, each with a payout recipient in its home currency
    (409 on the creator means it is already there). Returns creator id -> recipient id."""
    recipients: dict[str, str] = {}

    async def one_pass() -> dict[str, str]:
        for creator_id, currency in pool.items():
            name = f"{rng.choice(ARTISTS)} #{creator_id[:4]}"
            response = await client.post("/creators", json={"creator_id": creator_id, "display_name": name})
            if response.status_code not in (201, 409):
                console.print(f"[yellow]creator {creator_id}: {response.status_code} {response.text[:200]}[/yellow]")
                continue
            shown = (await client.get(f"/creators/{creator_id}")).json()
            existing = [r for r in shown.get("recipients", []) if r["currency"] == currency]
            if existing:
                recipients[creator_id] = existing[0]["recipient_id"]
                continue
            added = await client.post(
                f"/creators/{creator_id}/recipients",
                json={
                    "currency": currency,
                    "stripe_account_id": f"acct_sim{creator_id.replace('-', '')[:12]}",
                    "bank_account": {"holder_name": shown["display_name"], "iban": SIM_IBAN},
                },
            )
            if added.status_code == 429:  # recipient creation is rate limited per caller
                raise _RateLimited(float(added.headers.get("Retry-After", "6")))
            if added.status_code == 201:
                recipients[creator_id] = added.json()["recipient_id"]
        return recipients

    # The web app may still be starting, and recipients are rate limited: start the pass
    # again until every creator has one (what is done already is skipped).
    return await retry(
        TRANSIENT_IO,
        one_pass,
        what="web_app",
        retry_on=(httpx.HTTPError, _RateLimited),
        wait_hint=lambda exc: exc.retry_after if isinstance(exc, _RateLimited) else None,
    )


class _RateLimited(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limited; retry after {retry_after:.0f}s")
        self.retry_after = retry_after


async def advance(client: httpx.AsyncClient, plans: dict[str, dict], recipients: dict[str, str]) -> None:
    """Move simulated offers on like a creator and an operator would: accept most term
    sheets, request payout for most accepted offers."""
    for offer_id, plan in list(plans.items())[:20]:
        deal = (await client.get(f"/offers/{offer_id}")).json()
        status = deal.get("status")
        if status == "termsheet_issued" and plan["accept"]:
            await client.post(f"/offers/{offer_id}/accept")
        elif status == "accepted" and plan["pay"] and plan["creator_id"] in recipients:
            await client.post(
                f"/offers/{offer_id}/payout",
                json={"recipient_id": recipients[plan["creator_id"]]},
                headers={"Idempotency-Key": f"simulate-{offer_id}"},
            )
        elif (
            status in ("paid", "payout_failed", "valuation_failed")
            or (status == "termsheet_issued" and not plan["accept"])
            or (status == "accepted" and not plan["pay"])
        ):
            plans.pop(offer_id)


@click.command()
@click.option("--url", default="http://127.0.0.1:8080", show_default=True, help="Base URL of the web app.")
@click.option("--rate", default=1.0, show_default=True, help="Offers per second.")
@click.option("--count", default=0, show_default=True, help="Stop after this many offers (0: run until Ctrl-C).")
@click.option("--creators", default=8, show_default=True, help="Size of the simulated creator pool.")
@click.option("--seed", default=None, type=int, help="Random seed for a reproducible run.")
@click.option(
    "--token",
    envvar="SPACEMUSIC_TOKEN",
    default=None,
    help="Bearer token (default in dev: one minted by the dev identity provider).",
)
def simulate(url: str, rate: float, count: int, creators: int, seed: int | None, token: str | None) -> None:
    """Post realistic offers, accept most term sheets and pay most accepted offers, so
    deals move through the whole lifecycle on the SSE stream and the admin page."""
    if token is None:
        settings = load_settings()
        if not settings.is_dev:
            raise click.ClickException("give --token (or SPACEMUSIC_TOKEN): only dev can mint its own")
        token = mint_token(settings, "dev|simulator", [ADMIN])
    headers = {"Authorization": f"Bearer {token}"}
    rng = random.Random(seed)
    currencies = ["EUR", "EUR", "USD", "GBP"]
    pool = {str(uuid.UUID(int=rng.getrandbits(128), version=4)): rng.choice(currencies) for _ in range(creators)}

    async def go() -> None:
        sent = 0
        async with httpx.AsyncClient(base_url=url, timeout=10, headers=headers) as client:
            recipients = await ensure_creators(client, pool, rng)
            plans: dict[str, dict] = {}
            while count == 0 or sent < count or plans:
                creator_id = rng.choice(list(pool))
                body = {
                    "creator_id": creator_id,
                    "currency": pool[creator_id],
                    "royalty_history": realistic_history(rng, rng.randint(6, 36)),
                }
                try:
                    await advance(client, plans, recipients)
                    if count and sent >= count:
                        await asyncio.sleep(1)
                        continue
                    response = await client.post("/offers", json=body)
                    if response.status_code == 202:
                        sent += 1
                        offer_id = response.json()["offer_id"]
                        plans[offer_id] = {
                            "creator_id": creator_id,
                            "accept": rng.random() < 0.8,
                            "pay": rng.random() < 0.85,
                        }
                        console.print(f"[green]offer {offer_id}[/green] ({sent})")
                    else:
                        console.print(f"[yellow]{response.status_code}[/yellow] {response.text[:200]}")
                except httpx.HTTPError as exc:
                    console.print(f"[red]web app not reachable at {url}: {exc}[/red]")
                await asyncio.sleep(1.0 / rate if rate > 0 else 0)

    try:
        run(go())
    except KeyboardInterrupt:
        pass

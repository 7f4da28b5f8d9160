"""Backups that restore: a backup taken while deals flow, restored into a fresh database,
checked (ledger, payouts, recipients still decryptable) and caught up from Kafka."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import select

from infra.backup import BackupError, Manifest, dump_database, restore_database
from infra.crypto import RecipientVault
from infra.settings import Settings
from projections.tables import offers
from tests.support.money import IBAN, accepted_offer, onboard, request_payout, wait_status
from tests.support.stack import eventually, run_cli

_ENV: dict[str, str] = {}
# Columns the restored projection may legitimately number differently (sequence draws).
_SEQ_COLUMNS = {"first_seq", "last_seq", "seq", "change_seq"}


async def _admin(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


class _As:
    """The test client acting as its own operator: the API's rate limits are per subject."""

    def __init__(self, client, settings: Settings) -> None:
        from web.auth import ADMIN, mint_token

        self._client = client
        self._headers = {"Authorization": f"Bearer {mint_token(settings, f'test|backup-{uuid.uuid4()}', [ADMIN])}"}

    async def post(self, path: str, **kwargs):  # type: ignore[no-untyped-def]
        return await self._client.post(path, **{**kwargs, "headers": {**self._headers, **kwargs.get("headers", {})}})

    async def get(self, path: str, **kwargs):  # type: ignore[no-untyped-def]
        return await self._client.get(path, **{**kwargs, "headers": {**self._headers, **kwargs.get("headers", {})}})


async def _deal(web_client, engine, *, pay: bool) -> str:
    client = _As(web_client, Settings.from_env(_ENV))
    creator_id, recipient_id = await onboard(client)
    offer_id = await accepted_offer(client, engine, creator_id)
    if pay:
        resp = await request_payout(client, offer_id, recipient_id)
        assert resp.status == 202, await resp.text()
    return offer_id


async def _final(client, offer_id: str) -> bool:
    deal = await (await client.get(f"/offers/{offer_id}")).json()
    return deal.get("receipt_key") is not None


async def _offer_rows(dsn: str, offer_ids: list[str]) -> dict[str, dict]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT * FROM offers WHERE offer_id = ANY($1::uuid[])", offer_ids)
    finally:
        await conn.close()
    return {str(r["offer_id"]): {k: v for k, v in dict(r).items() if k not in _SEQ_COLUMNS} for r in rows}


async def test_backup_mid_traffic_restores_and_replays_kafka(stack_env, web_client, worker, engine, settings) -> None:
    _ENV.update(stack_env)
    env = {**stack_env, "BACKUP_BUCKET": f"sm-bk-{uuid.uuid4().hex[:8]}"}
    # Some deals fully paid before the backup, so the ledger and payouts have rows...
    before = await asyncio.gather(*(_deal(web_client, engine, pay=True) for _ in range(2)))
    for offer_id in before:
        await wait_status(engine, offer_id, "paid", timeout=60)
    # ...and traffic flowing while it is taken and after it (a deal a second).
    stop = asyncio.Event()
    flowing: list[asyncio.Task[str]] = []

    async def traffic() -> None:
        while not stop.is_set():
            flowing.append(asyncio.create_task(_deal(web_client, engine, pay=True)))
            await asyncio.sleep(1.0)

    feeder = asyncio.create_task(traffic())
    await asyncio.sleep(1.0)
    backup = await asyncio.to_thread(run_cli, env, "backup")
    manifest = Manifest.from_json(backup.stdout)
    await asyncio.sleep(1.5)
    stop.set()
    await feeder
    after = await asyncio.gather(*flowing)
    offer_ids = [*before, *after]
    for offer_id in offer_ids:
        await eventually(lambda o=offer_id: _final(web_client, o), timeout=90, what=f"receipt of {offer_id}")

    assert manifest.tables["payouts"] >= 2 and manifest.tables["ledger_transactions"] >= 2
    assert manifest.kafka_positions, "the backup recorded no projector positions"
    assert len(manifest.sha256) == 64 and manifest.schema_version

    base = stack_env["DATABASE_URL"].rsplit("/", 1)[0]
    fresh = f"sm_restored_{uuid.uuid4().hex[:8]}"
    await _admin(f"{base}/spacemusic", f'CREATE DATABASE "{fresh}"')
    restored_url = f"{base}/{fresh}"
    try:
        result = await asyncio.to_thread(run_cli, env, "restore", "--database-url", restored_url, timeout=180)
        summary = json.loads(result.stdout)
        assert summary["backup_id"] == manifest.backup_id
        assert summary["ledger_ok"], summary["ledger_violations"]
        assert summary["recipients_undecryptable"] == 0
        assert summary["recipients_decrypted"] == manifest.tables["payout_recipients"] > 0
        # The catch-up applied what happened after the backup (at least the receipts).
        assert summary["catch_up"]["applied"] > 0, summary["catch_up"]

        restored_env = {**stack_env, "DATABASE_URL": restored_url}
        check = await asyncio.to_thread(run_cli, restored_env, "ledger", "check")
        assert "ledger OK" in check.stdout

        live_dsn = Settings.from_env(stack_env).asyncpg_dsn
        restored_dsn = Settings.from_env(restored_env).asyncpg_dsn
        conn = await asyncpg.connect(restored_dsn)
        live = await asyncpg.connect(live_dsn)
        try:
            # Payouts: exactly what the backup held, identical to the live rows of the same
            # phase; every succeeded payout has its one posting.
            restored_payouts = {str(r["payout_id"]): dict(r) for r in await conn.fetch("SELECT * FROM payouts")}
            assert len(restored_payouts) == manifest.tables["payouts"]
            live_payouts = {str(r["payout_id"]): dict(r) for r in await live.fetch("SELECT * FROM payouts")}
            for payout_id, row in restored_payouts.items():
                if row["phase"] == "succeeded":
                    assert live_payouts[payout_id] == row
                    postings = await conn.fetchval(
                        "SELECT count(*) FROM ledger_transactions WHERE reference_id = $1", f"payout:{payout_id}"
                    )
                    assert postings == 1
            # Recipients: still decryptable with the configured key, and the details are right.
            vault = RecipientVault.from_settings(settings)
            recipients = await conn.fetch("SELECT recipient_id, creator_id, details_ciphertext FROM payout_recipients")
            details = [
                vault.open(
                    bytes(r["details_ciphertext"]), recipient_id=str(r["recipient_id"]), creator_id=str(r["creator_id"])
                )
                for r in recipients
            ]
            assert any(IBAN in json.dumps(d) for d in details)
            # The restored ledger is append-only again (triggers came back with the schema).
            with pytest.raises(asyncpg.PostgresError):
                await conn.execute("UPDATE ledger_entries SET amount_minor = amount_minor + 1")
        finally:
            await conn.close()
            await live.close()

        # Projections: after the catch-up, the restored deals are the live ones.
        restored_offers = await _offer_rows(restored_dsn, offer_ids)
        live_offers = await _offer_rows(live_dsn, offer_ids)
        assert set(restored_offers) == set(offer_ids)
        differ = {
            o: {k: (v, live_offers[o].get(k)) for k, v in row.items() if live_offers[o].get(k) != v}
            for o, row in restored_offers.items()
            if row != live_offers[o]
        }
        assert not differ, differ
        async with engine.connect() as c:
            statuses = {r[0] for r in await c.execute(select(offers.c.status).where(offers.c.offer_id.in_(offer_ids)))}
        assert statuses == {"paid"}
    finally:
        await _admin(f"{base}/spacemusic", f'DROP DATABASE IF EXISTS "{fresh}" WITH (FORCE)')


async def test_restore_refuses_a_corrupt_dump_and_a_non_empty_database(settings, tmp_path: Path) -> None:
    dump = tmp_path / "db.dump"
    manifest = await dump_database(settings, dump, "test-corrupt")
    # Not empty: the live database itself.
    with pytest.raises(BackupError, match="not empty"):
        await restore_database(settings.asyncpg_dsn, dump, manifest)
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))
    with pytest.raises(BackupError, match="SHA-256"):
        await restore_database(settings.asyncpg_dsn, dump, manifest)

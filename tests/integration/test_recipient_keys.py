"""Recipient keys rotate on the real database (issue 9, point 8): rows under k1 and legacy Fernet
rows are re-sealed under k2 by `spacemusic recipients rotate-key`, then open with k2 alone;
details copied from another recipient's row are refused by open() and by `recipients check`;
a second rotation is a no-op; a row a writer holds is left for the next run.

A database of its own: rotating re-keys every row, which the session database's other tests
(sealed under the dev keyring) must not see."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from click.testing import CliRunner
from cryptography.fernet import Fernet

from bootstrap.commands.recipients import recipients
from bootstrap.commands.setup import migrate
from infra.crypto import RecipientDetailsUnreadable, RecipientVault
from infra.db import create_engine
from infra.settings import Settings
from state.creators import insert_creator, insert_recipient
from tests.support.environments import _admin
from tests.support.stack import dev_env

IBAN = "DE89370400440532013000"
K1, K2 = os.urandom(32), os.urandom(32)
LEGACY = Fernet.generate_key().decode()


def keyring(*entries: tuple[str, bytes]) -> str:
    return ",".join(f"{key_id}:{base64.b64encode(key).decode()}" for key_id, key in entries)


def details(n: int) -> dict[str, object]:
    return {"bank_account": {"holder_name": f"Holder {n}", "iban": IBAN, "bic": None}, "stripe_account_id": f"acct_{n}"}


@pytest.fixture(scope="module")
async def db() -> AsyncIterator[dict[str, str]]:
    # Only Postgres is needed: no topics or schemas (the session's stack_env would set those up).
    stack = {**os.environ, **dev_env()}
    base = stack["DATABASE_URL"].rsplit("/", 1)[0]
    name = f"sm_keys_{uuid.uuid4().hex[:8]}"
    await _admin(f"{base}/spacemusic", f'CREATE DATABASE "{name}"')
    env = {**stack, "DATABASE_URL": f"{base}/{name}", "LOG_LEVEL": "WARNING"}
    try:
        # In this process (alembic runs its own loop, so off this test's loop): no CLI start-up.
        migrated = await asyncio.to_thread(CliRunner().invoke, migrate, [], env=env, catch_exceptions=False)
        assert migrated.exit_code == 0, migrated.output
        yield env
    finally:
        await _admin(f"{base}/spacemusic", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _cli(env: dict[str, str], keys: str, legacy: str, *args: str) -> tuple[int, dict, str]:
    """`spacemusic recipients ...` in this process (click's runner: seconds saved per call)."""
    environ = {**env, "RECIPIENT_ENCRYPTION_KEYS": keys, "RECIPIENT_ENCRYPTION_KEY": legacy}
    result = CliRunner().invoke(recipients, [*args, "--no-progress"], env=environ, catch_exceptions=False)
    output = result.stdout + result.stderr
    assert IBAN not in output and "Holder " not in output  # nothing secret in what operators see
    return result.exit_code, json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


async def cli(env: dict[str, str], keys: str, legacy: str, *args: str) -> tuple[int, dict, str]:
    # The command runs its own event loop: off this test's loop, in a thread.
    return await asyncio.to_thread(_cli, env, keys, legacy, *args)


async def rows(dsn: str) -> dict[str, asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        found = await conn.fetch("SELECT recipient_id, creator_id, details_ciphertext, key_id FROM payout_recipients")
    finally:
        await conn.close()
    return {str(r["recipient_id"]): r for r in found}


def opens(vault: RecipientVault, row: asyncpg.Record) -> dict:
    return vault.open(
        bytes(row["details_ciphertext"]), recipient_id=str(row["recipient_id"]), creator_id=str(row["creator_id"])
    )


async def test_rotate_to_a_new_key_then_drop_the_old_one(db: dict[str, str]) -> None:
    settings = Settings.from_env(db)
    dsn = settings.asyncpg_dsn
    engine = create_engine(settings, pool_size=1)
    old = RecipientVault((("k1", K1),))
    creators = [str(uuid.uuid4()), str(uuid.uuid4())]
    expected: dict[str, dict] = {}
    try:
        async with engine.begin() as conn:
            for creator_id in creators:
                await insert_creator(conn, creator_id, "Keys", "DE")
            for n in range(20):  # under k1, across two creators
                recipient_id, creator_id = str(uuid.uuid4()), creators[n % 2]
                sealed = old.seal(details(n), recipient_id=recipient_id, creator_id=creator_id)
                await insert_recipient(conn, recipient_id, creator_id, "EUR", sealed, {"iban": "DE89…3000"})
                expected[recipient_id] = details(n)
            for n in range(20, 23):  # written before the keyring: legacy Fernet tokens
                recipient_id = str(uuid.uuid4())
                token = Fernet(LEGACY.encode()).encrypt(json.dumps(details(n), sort_keys=True).encode())
                await insert_recipient(conn, recipient_id, creators[0], "EUR", token, {"iban": "DE89…3000"})
                expected[recipient_id] = details(n)
            # The attack: a writer copies its own sealed details into the victim's row.
            victim, attacker = str(uuid.uuid4()), next(iter(expected))
            await insert_recipient(conn, victim, creators[1], "EUR", b"placeholder", {"iban": "DE44…0000"})
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(
                "UPDATE payout_recipients SET details_ciphertext = (SELECT details_ciphertext FROM payout_recipients"
                " WHERE recipient_id = $1), key_id = 'k1' WHERE recipient_id = $2",
                uuid.UUID(attacker),
                uuid.UUID(victim),
            )
        finally:
            await conn.close()
        before = await rows(dsn)
        assert sum(r["key_id"] is None for r in before.values()) == 3
        with pytest.raises(RecipientDetailsUnreadable, match="copied from another row"):
            opens(RecipientVault((("k1", K1),), LEGACY), before[victim])

        both = keyring(("k2", K2), ("k1", K1))
        # A dry run opens what it would rotate and writes nothing.
        code, summary, _ = await cli(db, both, LEGACY, "rotate-key", "--dry-run")
        assert (code, summary["would_rotate"], summary["failed"]) == (1, 23, 1)
        assert await rows(dsn) == before

        # A writer holds one row: rotation skips it (no waiting) and reports it as left.
        held = next(r for r in before if r not in (victim, attacker))
        blocker = await asyncpg.connect(dsn)
        try:
            tx = blocker.transaction()
            await tx.start()
            await blocker.execute("SELECT 1 FROM payout_recipients WHERE recipient_id = $1 FOR UPDATE", uuid.UUID(held))
            code, summary, stderr = await cli(db, both, LEGACY, "rotate-key", "--batch", "7")
            await tx.rollback()
        finally:
            await blocker.close()
        assert code == 1  # the victim's row does not open
        assert summary == {
            "current_key_id": "k2",
            "dry_run": False,
            "rotated": 22,
            "already_current": 0,
            "failed": 1,
            "left": 2,  # the held row and the victim's
        }
        assert victim in stderr and "copied from another row" in stderr

        # Resumed: only the held row is left to do; the victim's still fails, untouched.
        code, summary, _ = await cli(db, both, LEGACY, "rotate-key")
        assert (code, summary["rotated"], summary["already_current"], summary["failed"]) == (1, 1, 22, 1)
        after = await rows(dsn)
        assert after[victim]["details_ciphertext"] == before[victim]["details_ciphertext"]

        # `check` with every key still configured: the copied row is the one refused.
        code, summary, stderr = await cli(db, both, LEGACY, "check")
        assert code == 1 and summary["failed"] == 1 and victim in stderr
        assert summary["by_key"] == {"k2": 23}

        # The operator removes the copied row (the creator re-enters the real details).
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("DELETE FROM payout_recipients WHERE recipient_id = $1", uuid.UUID(victim))
        finally:
            await conn.close()

        # k1 and the legacy key removed: every row still opens, with the right details.
        new_only = RecipientVault((("k2", K2),))
        after = await rows(dsn)
        assert {r: opens(new_only, row) for r, row in after.items()} == expected
        assert {row["key_id"] for row in after.values()} == {"k2"}
        assert all(bytes(row["details_ciphertext"]).startswith(b"v2:k2:") for row in after.values())
        code, summary, _ = await cli(db, keyring(("k2", K2)), "", "check", "--require-current")
        assert code == 0 and summary == {
            "by_key": {"k2": 23},
            "current_key_id": "k2",
            "failed": 0,
            "not_under_current_key": 0,
            "opened": 23,
        }

        # Rotating again is a no-op: nothing rewritten.
        code, summary, _ = await cli(db, keyring(("k2", K2)), "", "rotate-key")
        assert (code, summary["rotated"], summary["already_current"], summary["left"]) == (0, 0, 23, 0)
        assert await rows(dsn) == after

        # After the rotation, a k2 envelope copied into another row is refused by `check` as well.
        source, target = list(after)[:2]
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(
                "UPDATE payout_recipients SET details_ciphertext = $1 WHERE recipient_id = $2",
                bytes(after[source]["details_ciphertext"]),
                uuid.UUID(target),
            )
        finally:
            await conn.close()
        code, summary, stderr = await cli(db, keyring(("k2", K2)), "", "check")
        assert code == 1 and summary["failed"] == 1 and target in stderr and "copied from another row" in stderr
    finally:
        await engine.dispose()

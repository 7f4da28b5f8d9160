"""`spacemusic backup` and `spacemusic restore`: the database to S3 and back (runbooks/backup-restore.md).

`backup` dumps the database in one snapshot (infra.backup) and uploads dump + manifest.
`restore` downloads a backup, checks its SHA-256, loads it into an EMPTY database, checks
row counts and schema version against the manifest, runs the ledger check, checks every
payout recipient still decrypts with the configured key, and then (unless told not to)
catches the projections up by replaying Kafka from the positions the backup recorded.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from aiokafka import TopicPartition
from rich.console import Console
from sqlalchemy import select

from bootstrap.commands.support import load_settings, run
from infra.avro import DecodeError, RegistryUnavailable, codec_from_settings
from infra.backup import BackupError, BackupStore, Manifest, database_name, dump_database, new_backup_id
from infra.backup import restore_database as load_dump
from infra.crypto import RecipientVault
from infra.db import create_engine
from infra.logging import get_logger
from infra.retry import QUICK, retry
from infra.settings import Settings
from infra.topic_reader import PartitionRange, ReadPlan, TopicReader, decode_record
from models.events import LIFECYCLE_EVENTS, Event
from projections.projector import LIVE_CONSUMER, Located, Position, project_batch
from projections.tables import projection_tracking
from state.ledger import check_ledger
from state.tables import payout_recipients

console = Console(stderr=True)
log = get_logger(__name__)
CATCH_UP_BATCH = 500


async def take_backup(settings: Settings) -> Manifest:
    backup_id = new_backup_id()
    with tempfile.TemporaryDirectory(prefix="spacemusic-backup-") as tmp:
        dump = Path(tmp) / "spacemusic.dump"
        started = time.monotonic()
        manifest = await dump_database(settings, dump, backup_id, settings.pg_bin_dir)
        async with BackupStore(settings, retry_seconds=settings.backup_retry_seconds) as store:
            await store.ensure_bucket()
            await store.upload(dump, manifest)
    log.info(
        "backup_written",
        backup_id=backup_id,
        bucket=settings.backup_bucket,
        size_bytes=manifest.size_bytes,
        sha256=manifest.sha256,
        seconds=round(time.monotonic() - started, 2),
    )
    return manifest


@click.command()
def backup() -> None:
    """Dump the database (pg_dump custom format, one snapshot) with its manifest to S3.

    The manifest records the schema version, the dump's SHA-256, every table's row count and
    the projector's Kafka positions; it is written last, so a listed backup is complete.
    Prints the manifest as JSON on stdout.
    """
    settings = load_settings(logs_to_stderr=True)
    try:
        manifest = run(take_backup(settings))
    except BackupError as exc:
        raise click.ClickException(str(exc)) from exc
    print(manifest.to_json())


async def _decryptable(settings: Settings, engine: Any) -> tuple[int, int]:
    if not settings.recipient_keyring:
        return 0, 0
    vault = RecipientVault.from_settings(settings)
    ok = bad = 0
    columns = (payout_recipients.c.recipient_id, payout_recipients.c.creator_id, payout_recipients.c.details_ciphertext)
    async with engine.connect() as conn:
        for recipient_id, creator_id, ciphertext in await conn.execute(select(*columns)):
            try:
                vault.open(bytes(ciphertext), recipient_id=str(recipient_id), creator_id=str(creator_id))
                ok += 1
            except ValueError:
                bad += 1
    return ok, bad


async def catch_up(settings: Settings, engine: Any) -> dict[str, int]:
    """Replay every lifecycle topic from the restored projector positions to the end of the log.

    The positions come from the restored ``projection_tracking`` (= the manifest's for a
    full backup); the projector's own tracking makes anything already applied a no-op, so
    this is safe to run again and safe to run while a live projector runs too.
    """
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(projection_tracking.c.topic, projection_tracking.c.partition, projection_tracking.c.offset).where(
                projection_tracking.c.consumer == LIVE_CONSUMER
            )
        )
        tracked = {(topic, partition): offset for topic, partition, offset in rows}
    codec = codec_from_settings(settings)
    logical = [cls.TOPIC for cls in LIFECYCLE_EVENTS]
    stats = {"read": 0, "applied": 0, "duplicates": 0, "already_tracked": 0, "undecodable": 0}
    async with TopicReader(settings, client_id="spacemusic-restore") as reader:
        by_topic = await reader.partitions(logical)
        tps = [TopicPartition(settings.topic(t), p) for t, parts in by_topic.items() for p in parts]
        lows = await reader.consumer.beginning_offsets(tps)
        highs = await reader.consumer.end_offsets(tps)
        ranges = []
        for tp in tps:
            start = max(lows[tp], tracked.get((tp.topic, tp.partition), -1) + 1)
            ranges.append(
                PartitionRange(
                    topic=reader.logical(tp.topic),
                    partition=tp.partition,
                    start=start,
                    end=max(start, highs[tp]),
                    low=lows[tp],
                    high=highs[tp],
                )
            )
        plan = ReadPlan(tuple(ranges))
        stats["planned"] = plan.total
        batch: list[Located] = []

        async def flush() -> None:
            if not batch:
                return
            async with engine.begin() as conn:
                result = await project_batch(conn, LIVE_CONSUMER, batch)
            stats["applied"] += result.applied
            stats["duplicates"] += result.duplicates
            stats["already_tracked"] += result.already_tracked
            batch.clear()

        async for record in reader.read(plan):
            stats["read"] += 1
            try:
                obj = await retry(
                    QUICK,
                    lambda record=record: decode_record(codec, record),
                    what="registry",
                    retry_on=(RegistryUnavailable,),
                )
            except DecodeError:
                # The live projector dead-lettered it when it first came by.
                stats["undecodable"] += 1
                continue
            if not isinstance(obj, Event):
                continue
            batch.append(Located(obj, Position(settings.topic(record.topic), record.partition, record.offset)))
            if len(batch) >= CATCH_UP_BATCH:
                await flush()
        await flush()
    return stats


async def restore_backup(
    settings: Settings, backup_id: str | None, target_url: str | None, do_catch_up: bool
) -> dict[str, Any]:
    target = settings.replace(database_url=target_url) if target_url else settings
    started = time.monotonic()
    async with BackupStore(settings, retry_seconds=settings.backup_retry_seconds) as store:
        if backup_id is None:
            ids = await store.list_ids()
            if not ids:
                raise BackupError(f"no backups in s3://{settings.backup_bucket}/")
            backup_id = ids[-1]
        manifest = await store.manifest(backup_id)
        with tempfile.TemporaryDirectory(prefix="spacemusic-restore-") as tmp:
            dump = Path(tmp) / "spacemusic.dump"
            await store.download(manifest, dump)
            counts = await load_dump(target.asyncpg_dsn, dump, manifest, settings.pg_bin_dir)
    restored_at = time.monotonic()
    engine = create_engine(target, pool_size=2)
    try:
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                report = await check_ledger(conn)
        decrypted, undecryptable = await _decryptable(target, engine)
        caught_up = await catch_up(target, engine) if do_catch_up else None
    finally:
        await engine.dispose()
    summary = {
        "backup_id": manifest.backup_id,
        "backup_created_at": manifest.created_at,
        "database": database_name(target.asyncpg_dsn),
        "schema_version": list(manifest.schema_version),
        "tables": counts,
        "ledger_ok": report.ok,
        "ledger_violations": list(report.violations),
        "recipients_decrypted": decrypted,
        "recipients_undecryptable": undecryptable,
        "restore_seconds": round(restored_at - started, 2),
        "catch_up": caught_up,
        "catch_up_seconds": round(time.monotonic() - restored_at, 2) if do_catch_up else None,
    }
    log.info("restore_done", **{k: v for k, v in summary.items() if k not in ("tables", "ledger_violations")})
    return summary


async def _list(settings: Settings) -> Sequence[Manifest]:
    async with BackupStore(settings, retry_seconds=settings.backup_retry_seconds) as store:
        return [await store.manifest(i) for i in await store.list_ids()]


@click.command()
@click.option("--backup-id", default=None, help="Which backup (default: the latest complete one).")
@click.option(
    "--database-url",
    default=None,
    help="The EMPTY database to restore into (default DATABASE_URL). It must exist and have no tables.",
)
@click.option(
    "--catch-up/--no-catch-up",
    default=True,
    show_default=True,
    help="Replay Kafka from the backup's recorded projector positions into the restored projections.",
)
@click.option("--list", "list_only", is_flag=True, help="List the complete backups in BACKUP_BUCKET and exit.")
def restore(backup_id: str | None, database_url: str | None, catch_up: bool, list_only: bool) -> None:
    """Restore a backup from S3 into an empty database, verify it, and catch the projections up.

    Verifies the dump's SHA-256 before touching the database, loads it in one transaction,
    compares every table's row count and the schema version with the manifest, runs the
    ledger check and decrypts every payout recipient. Prints a JSON summary on stdout; exit
    1 if the ledger check fails or a recipient cannot be decrypted.
    """
    settings = load_settings(logs_to_stderr=True)
    try:
        if list_only:
            for m in run(_list(settings)):
                print(json.dumps({"backup_id": m.backup_id, "created_at": m.created_at, "size_bytes": m.size_bytes}))
            return
        summary = run(restore_backup(settings, backup_id, database_url, catch_up))
    except BackupError as exc:
        raise click.ClickException(str(exc)) from exc
    print(json.dumps(summary, indent=2, sort_keys=True))
    if not summary["ledger_ok"] or summary["recipients_undecryptable"]:
        console.print("[red]restored, but the checks failed: see ledger_violations / recipients_undecryptable[/red]")
        sys.exit(1)

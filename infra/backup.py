"""Database backups: a consistent ``pg_dump`` (custom format) with a manifest, kept in S3.

A backup is two objects under ``backups/<backup_id>/`` in ``BACKUP_BUCKET``:

- ``spacemusic.dump``: ``pg_dump --format=custom`` of the whole database (schema, owned
  state, read models), taken inside one exported snapshot;
- ``manifest.json``: the schema version (Alembic heads), the dump's SHA-256 and size, the row
  count of every table and the projector's Kafka positions (``projection_tracking``), all
  read *in the same snapshot* as the dump, so they describe exactly what the dump holds.

Restoring verifies the checksum before anything touches the target, refuses a target that
already has tables, and checks the restored row counts and schema version against the
manifest. Transient S3 trouble (the server away, 5xx) is retried through ``infra.retry``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from glob import glob
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import unquote, urlsplit

import aioboto3
import asyncpg
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from infra.logging import get_logger
from infra.retry import TRANSIENT_IO, retry
from infra.settings import Settings

log = get_logger(__name__)

DUMP_NAME = "spacemusic.dump"
MANIFEST_NAME = "manifest.json"
PREFIX = "backups/"
FORMAT = "pg_dump-custom-v1"

# The state nothing else can rebuild (see state/ and the ledger). A backup holds every
# table; these are the ones whose loss would be a loss of money or of people's data.
OWNED_TABLES = (
    "creators",
    "payout_recipients",
    "payouts",
    "payout_attempts",
    "ledger_transactions",
    "ledger_entries",
    "api_idempotency",
    "event_outbox",  # committed events not yet published (web/idempotent.py)
    "sessions",
)


class BackupError(RuntimeError):
    """A backup or restore that cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class KafkaPosition:
    consumer: str
    topic: str  # physical topic name
    partition: int
    offset: int  # last offset applied (the next one to read is offset + 1)


@dataclass(frozen=True)
class Manifest:
    backup_id: str
    created_at: str
    database: str
    server_version: str
    schema_version: tuple[str, ...]
    sha256: str
    size_bytes: int
    tables: dict[str, int]
    kafka_positions: tuple[KafkaPosition, ...]
    topic_namespace: str = ""
    format: str = FORMAT
    dump_key: str = ""
    owned_tables: tuple[str, ...] = field(default=())

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        raw = json.loads(text)
        if raw.get("format") != FORMAT:
            raise BackupError(f"unknown backup format {raw.get('format')!r} (this version reads {FORMAT})")
        raw["schema_version"] = tuple(raw["schema_version"])
        raw["owned_tables"] = tuple(raw.get("owned_tables", ()))
        raw["kafka_positions"] = tuple(KafkaPosition(**p) for p in raw["kafka_positions"])
        return cls(**raw)


def new_backup_id(now: datetime | None = None) -> str:
    """Sortable by time: ``20261203T065500Z-1a2b3c4d``."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---- Postgres client tools ------------------------------------------------------------------


def pg_tool(name: str, bin_dir: str = "") -> str:
    """``pg_dump``/``pg_restore``: from PG_BIN_DIR, else PATH, else the newest Debian install."""
    if bin_dir:
        candidate = Path(bin_dir) / name
        if not candidate.exists():
            raise BackupError(f"{candidate} does not exist (PG_BIN_DIR={bin_dir})")
        return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    installed = sorted(glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(Path(p).parts[-3]))
    if installed:
        return installed[-1]
    raise BackupError(f"{name} not found: install the PostgreSQL client or set PG_BIN_DIR")


def libpq_args(dsn: str) -> tuple[list[str], dict[str, str]]:
    """Connection arguments for the client tools; the password goes in PGPASSWORD, never argv."""
    url = urlsplit(dsn)
    args = [
        "--host",
        url.hostname or "127.0.0.1",
        "--port",
        str(url.port or 5432),
        "--username",
        unquote(url.username or ""),
        "--dbname",
        unquote(url.path.lstrip("/")),
    ]
    env = {"PGPASSWORD": unquote(url.password or ""), "PGCONNECT_TIMEOUT": "10"}
    return args, env


def database_name(dsn: str) -> str:
    return unquote(urlsplit(dsn).path.lstrip("/"))


async def _run_tool(argv: list[str], env: Mapping[str, str]) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env={**os.environ, **env},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        detail = (err or out).decode(errors="replace").strip()[-2000:]
        raise BackupError(f"{Path(argv[0]).name} failed (exit {proc.returncode}): {detail}")


async def _table_counts(conn: asyncpg.Connection) -> dict[str, int]:
    names = [
        r["tablename"]
        for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")
    ]
    counts = {}
    for name in names:
        counts[name] = int(await conn.fetchval(f'SELECT count(*) FROM public."{name}"'))
    return counts


async def _positions(conn: asyncpg.Connection, tables: Mapping[str, int]) -> tuple[KafkaPosition, ...]:
    if "projection_tracking" not in tables:
        return ()
    rows = await conn.fetch(
        'SELECT consumer, topic, "partition", "offset" FROM projection_tracking ORDER BY consumer, topic, "partition"'
    )
    return tuple(KafkaPosition(r["consumer"], r["topic"], int(r["partition"]), int(r["offset"])) for r in rows)


async def _schema_version(conn: asyncpg.Connection, tables: Mapping[str, int]) -> tuple[str, ...]:
    if "alembic_version" not in tables:
        return ()
    return tuple(sorted(r["version_num"] for r in await conn.fetch("SELECT version_num FROM alembic_version")))


async def dump_database(settings: Settings, out: Path, backup_id: str, pg_bin_dir: str = "") -> Manifest:
    """``pg_dump`` inside an exported REPEATABLE READ snapshot; the manifest reads the same one."""
    dsn = settings.asyncpg_dsn
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        tx = conn.transaction(isolation="repeatable_read", readonly=True)
        await tx.start()
        try:
            snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
            tables = await _table_counts(conn)
            positions = await _positions(conn, tables)
            version = await _schema_version(conn, tables)
            server_version = str(await conn.fetchval("SHOW server_version"))
            args, env = libpq_args(dsn)
            # The exporting transaction stays open until pg_dump has read everything.
            await _run_tool(
                [
                    pg_tool("pg_dump", pg_bin_dir),
                    *args,
                    "--format=custom",
                    "--compress=6",
                    "--no-owner",
                    "--no-privileges",
                    f"--snapshot={snapshot}",
                    f"--file={out}",
                ],
                env,
            )
        finally:
            await tx.rollback()
    finally:
        await conn.close()
    return Manifest(
        backup_id=backup_id,
        created_at=datetime.now(UTC).isoformat(),
        database=database_name(dsn),
        server_version=server_version,
        schema_version=version,
        sha256=await asyncio.to_thread(sha256_file, out),
        size_bytes=(await asyncio.to_thread(out.stat)).st_size,
        tables=tables,
        kafka_positions=positions,
        topic_namespace=settings.topic_namespace,
        dump_key=f"{PREFIX}{backup_id}/{DUMP_NAME}",
        owned_tables=tuple(t for t in OWNED_TABLES if t in tables),
    )


async def target_tables(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return [r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
    finally:
        await conn.close()


async def restore_database(dsn: str, dump: Path, manifest: Manifest, pg_bin_dir: str = "") -> dict[str, int]:
    """Load a verified dump into an EMPTY database in one transaction; check it against the manifest."""
    if await asyncio.to_thread(sha256_file, dump) != manifest.sha256:
        raise BackupError(f"{dump} does not match the manifest's SHA-256 {manifest.sha256}: refusing to restore")
    existing = await target_tables(dsn)
    if existing:
        raise BackupError(
            f"database {database_name(dsn)} is not empty ({len(existing)} tables, e.g. {sorted(existing)[0]}); "
            "restore only into a new, empty database"
        )
    args, env = libpq_args(dsn)
    await _run_tool(
        [
            pg_tool("pg_restore", pg_bin_dir),
            *args,
            "--no-owner",
            "--no-privileges",
            "--single-transaction",
            "--exit-on-error",
            str(dump),
        ],
        env,
    )
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        counts = await _table_counts(conn)
        version = await _schema_version(conn, counts)
    finally:
        await conn.close()
    if version != manifest.schema_version:
        raise BackupError(f"restored schema version {version} != manifest {manifest.schema_version}")
    differ = {t: (n, counts.get(t)) for t, n in manifest.tables.items() if counts.get(t) != n}
    if differ:
        raise BackupError(f"restored row counts differ from the manifest (table: (manifest, restored)): {differ}")
    return counts


# ---- S3 -------------------------------------------------------------------------------------


def _transient_s3(exc: BaseException) -> bool:
    if isinstance(exc, ClientError):
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        return status >= 500 or status == 0
    return isinstance(exc, BotoCoreError | OSError | asyncio.TimeoutError)


class BackupStore:
    """Backups in S3 (moto locally), for the lifetime of an ``async with`` block."""

    def __init__(self, settings: Settings, environ: Mapping[str, str] | None = None, retry_seconds: float = 120.0):
        env = os.environ if environ is None else environ
        self.bucket = settings.backup_bucket
        self.retry_seconds = retry_seconds
        self._region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None
        self._kwargs: dict[str, Any] = {
            "endpoint_url": settings.s3_endpoint_url,
            "region_name": self._region,
            "aws_access_key_id": env.get("AWS_ACCESS_KEY_ID") or None,
            "aws_secret_access_key": env.get("AWS_SECRET_ACCESS_KEY") or None,
            "aws_session_token": env.get("AWS_SESSION_TOKEN") or None,
            "config": Config(
                signature_version="s3v4",
                s3={"addressing_style": "path" if settings.s3_endpoint_url else "auto"},
                retries={"max_attempts": 2, "mode": "standard"},
                connect_timeout=5,
                read_timeout=60,
            ),
        }
        self._cm: Any = None
        self._client: Any = None

    async def __aenter__(self) -> Self:
        self._cm = aioboto3.Session().client("s3", **self._kwargs)
        self._client = await self._cm.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        cm, self._cm, self._client = self._cm, None, None
        if cm is not None:
            await cm.__aexit__(exc_type, exc, tb)

    async def _retry(self, what: str, call: Any) -> Any:
        return await retry(
            TRANSIENT_IO,
            call,
            what=what,
            retry_on=_transient_s3,
            deadline_seconds=self.retry_seconds,
            bucket=self.bucket,
        )

    async def ensure_bucket(self) -> None:
        async def go() -> None:
            try:
                await self._client.head_bucket(Bucket=self.bucket)
                return
            except ClientError as exc:
                if int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)) != 404:
                    raise
            params: dict[str, Any] = {"Bucket": self.bucket}
            if self._region and self._region != "us-east-1":
                params["CreateBucketConfiguration"] = {"LocationConstraint": self._region}
            try:
                await self._client.create_bucket(**params)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                    raise

        await self._retry("backup_s3", go)

    async def upload(self, dump: Path, manifest: Manifest) -> None:
        """The dump first, the manifest last: a manifest in S3 means a complete backup."""
        body = await asyncio.to_thread(dump.read_bytes)

        async def put_dump() -> None:
            await self._client.put_object(
                Bucket=self.bucket, Key=manifest.dump_key, Body=body, Metadata={"sha256": manifest.sha256}
            )

        async def put_manifest() -> None:
            await self._client.put_object(
                Bucket=self.bucket,
                Key=f"{PREFIX}{manifest.backup_id}/{MANIFEST_NAME}",
                Body=manifest.to_json().encode(),
                ContentType="application/json",
            )

        await self._retry("backup_s3", put_dump)
        await self._retry("backup_s3", put_manifest)

    async def list_ids(self) -> list[str]:
        """Complete backups (those with a manifest), oldest first."""

        async def go() -> list[str]:
            ids: list[str] = []
            token: str | None = None
            while True:
                params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": PREFIX}
                if token:
                    params["ContinuationToken"] = token
                page = await self._client.list_objects_v2(**params)
                ids += [
                    o["Key"][len(PREFIX) : -len(MANIFEST_NAME) - 1]
                    for o in page.get("Contents", [])
                    if o["Key"].endswith("/" + MANIFEST_NAME)
                ]
                if not page.get("IsTruncated"):
                    return sorted(ids)
                token = page.get("NextContinuationToken")

        return await self._retry("backup_s3", go)

    async def manifest(self, backup_id: str) -> Manifest:
        async def go() -> bytes:
            obj = await self._client.get_object(Bucket=self.bucket, Key=f"{PREFIX}{backup_id}/{MANIFEST_NAME}")
            async with obj["Body"] as stream:
                return await stream.read()

        try:
            return Manifest.from_json((await self._retry("backup_s3", go)).decode())
        except ClientError as exc:
            raise BackupError(f"no backup {backup_id!r} in s3://{self.bucket}/{PREFIX}: {exc}") from exc

    async def download(self, manifest: Manifest, out: Path) -> None:
        async def go() -> None:
            obj = await self._client.get_object(Bucket=self.bucket, Key=manifest.dump_key)
            async with obj["Body"] as stream:
                data = await stream.read()
            await asyncio.to_thread(out.write_bytes, data)

        await self._retry("backup_s3", go)

"""Security state shared by every web process, in Postgres: browser sessions, redeemed SSE
ticket nonces and rate-limit buckets. A second web process or a restart sees the same rows,
so a ticket is single-use and a rate limit holds across all of them.

- ``auth_sessions``: one row per signed-in browser. The cookie carries the random session id
  (signed); the row stores only its SHA-256, the principal as it was at sign-in, and an
  expiry that never passes the access token's ``exp``. Logout and ``spacemusic sessions
  revoke`` set ``revoked_at``; a revoked or expired row authenticates nothing.
- ``auth_ticket_nonces``: a ticket's nonce is inserted on redemption; a second insert of the
  same nonce (any process) finds the row and the ticket is refused. Rows past their expiry
  are purged opportunistically.
- ``auth_rate_limits``: a token bucket per (bucket, key), updated in one statement.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Column, Float, Index, PrimaryKeyConstraint, Table, Text, func, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY, UUID, insert
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.sql import TS, metadata

auth_sessions = Table(
    "auth_sessions",
    metadata,
    Column("session_hash", Text, primary_key=True),
    Column("subject", Text, nullable=False),
    Column("permissions", ARRAY(Text), nullable=False),
    Column("creator_id", UUID(as_uuid=False)),
    Column("correlation_id", Text),
    Column("created_at", TS, nullable=False, server_default=func.now()),
    Column("expires_at", TS, nullable=False),
    Column("revoked_at", TS),
    Column("revoked_reason", Text),
    Index("ix_auth_sessions_subject", "subject"),
    Index("ix_auth_sessions_expires_at", "expires_at"),
)

auth_ticket_nonces = Table(
    "auth_ticket_nonces",
    metadata,
    Column("nonce_hash", Text, primary_key=True),
    Column("expires_at", TS, nullable=False),
    Index("ix_auth_ticket_nonces_expires_at", "expires_at"),
)

auth_rate_limits = Table(
    "auth_rate_limits",
    metadata,
    Column("bucket", Text, nullable=False),
    Column("key", Text, nullable=False),
    Column("tokens", Float, nullable=False),
    Column("updated_at", TS, nullable=False),
    PrimaryKeyConstraint("bucket", "key"),
)


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _ts(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


@dataclass(frozen=True)
class SessionRow:
    session_hash: str
    subject: str
    permissions: frozenset[str]
    creator_id: str | None
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    revoked_reason: str | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None and self.expires_at > datetime.now(UTC)


class PostgresAuthStore:
    """The shared store; every method is one short autocommit-sized transaction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    # --- sessions ---------------------------------------------------------------------------

    async def create_session(
        self,
        session_id: str,
        subject: str,
        permissions: Iterable[str],
        creator_id: str | None,
        expires_at: float,
        correlation_id: str | None = None,
    ) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(auth_sessions).values(
                    session_hash=digest(session_id),
                    subject=subject,
                    permissions=sorted(permissions),
                    creator_id=creator_id,
                    correlation_id=correlation_id,
                    expires_at=_ts(expires_at),
                )
            )

    async def session_expiry(self, session_id: str) -> float | None:
        """The session's expiry (epoch seconds) while it is active; None once revoked,
        expired or unknown."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(auth_sessions.c.expires_at).where(
                        auth_sessions.c.session_hash == digest(session_id),
                        auth_sessions.c.revoked_at.is_(None),
                        auth_sessions.c.expires_at > func.now(),
                    )
                )
            ).first()
        return None if row is None else row[0].timestamp()

    async def revoke_session(self, session_id: str, reason: str = "logout") -> bool:
        return bool(await self._revoke(auth_sessions.c.session_hash == digest(session_id), reason))

    async def revoke(
        self, *, subject: str | None = None, session_hash: str | None = None, everyone: bool = False, reason: str
    ) -> int:
        """Admin revocation (``spacemusic sessions revoke``): by subject, by id hash, or all."""
        if everyone:
            return await self._revoke(text("true"), reason)
        if subject is not None:
            return await self._revoke(auth_sessions.c.subject == subject, reason)
        if session_hash is not None:
            return await self._revoke(auth_sessions.c.session_hash == session_hash, reason)
        raise ValueError("name a subject, a session, or everyone")

    async def _revoke(self, where: object, reason: str) -> int:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(auth_sessions)
                .where(where, auth_sessions.c.revoked_at.is_(None))  # type: ignore[arg-type]
                .values(revoked_at=func.now(), revoked_reason=reason)
            )
        return int(result.rowcount or 0)

    async def list_sessions(self, *, subject: str | None = None, include_inactive: bool = False) -> list[SessionRow]:
        query = select(
            auth_sessions.c.session_hash,
            auth_sessions.c.subject,
            auth_sessions.c.permissions,
            auth_sessions.c.creator_id,
            auth_sessions.c.created_at,
            auth_sessions.c.expires_at,
            auth_sessions.c.revoked_at,
            auth_sessions.c.revoked_reason,
        ).order_by(auth_sessions.c.created_at.desc())
        if subject is not None:
            query = query.where(auth_sessions.c.subject == subject)
        if not include_inactive:
            query = query.where(auth_sessions.c.revoked_at.is_(None), auth_sessions.c.expires_at > func.now())
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            SessionRow(r[0], r[1], frozenset(r[2]), None if r[3] is None else str(r[3]), r[4], r[5], r[6], r[7])
            for r in rows
        ]

    async def purge(self, older_than_seconds: float = 86_400) -> int:
        """Deletes sessions and nonces that ended more than a day ago (housekeeping)."""
        async with self.engine.begin() as conn:
            sessions = await conn.execute(
                auth_sessions.delete().where(
                    auth_sessions.c.expires_at < func.now() - text(f"interval '{int(older_than_seconds)} seconds'")
                )
            )
            await conn.execute(auth_ticket_nonces.delete().where(auth_ticket_nonces.c.expires_at < func.now()))
        return int(sessions.rowcount or 0)

    # --- tickets ----------------------------------------------------------------------------

    async def consume_nonce(self, nonce: str, expires_at: float) -> bool:
        """True the first time any process redeems this nonce; False on every replay."""
        async with self.engine.begin() as conn:
            inserted = await conn.execute(
                insert(auth_ticket_nonces)
                .values(nonce_hash=digest(nonce), expires_at=_ts(expires_at))
                .on_conflict_do_nothing(index_elements=["nonce_hash"])
                .returning(auth_ticket_nonces.c.nonce_hash)
            )
            first = inserted.first() is not None
            if first and int.from_bytes(hashlib.sha256(nonce.encode()).digest()[:1], "big") < 8:
                # about one redemption in 32 sweeps the expired nonces
                await conn.execute(auth_ticket_nonces.delete().where(auth_ticket_nonces.c.expires_at < func.now()))
        return first

    # --- rate limits ------------------------------------------------------------------------

    async def acquire(self, bucket: str, key: str, per_minute: int, burst: int | None = None) -> float | None:
        """Takes one token from the shared bucket: None when allowed, else seconds to wait."""
        capacity = float(burst if burst is not None else per_minute)
        rate = per_minute / 60.0
        refill = (
            "LEAST(:capacity, auth_rate_limits.tokens"
            " + EXTRACT(EPOCH FROM (clock_timestamp() - auth_rate_limits.updated_at)) * :rate)"
        )
        statement = text(
            "INSERT INTO auth_rate_limits (bucket, key, tokens, updated_at)"
            " VALUES (:bucket, :key, :capacity - 1, clock_timestamp())"
            " ON CONFLICT (bucket, key) DO UPDATE"
            f" SET tokens = {refill} - 1, updated_at = clock_timestamp()"
            f" WHERE {refill} >= 1"
            " RETURNING tokens"
        )
        params = {"bucket": bucket, "key": key, "capacity": capacity, "rate": rate}
        async with self.engine.begin() as conn:
            taken = (await conn.execute(statement, params)).first()
            if taken is not None:
                return None
            tokens = (
                await conn.execute(
                    text(f"SELECT {refill} FROM auth_rate_limits WHERE bucket = :bucket AND key = :key"),
                    params,
                )
            ).scalar_one()
        return max(0.0, (1.0 - float(tokens)) / rate)

"""Provider-side objects we created once and reuse (``infra.providers.base.ProviderObjects``
over Postgres): Wise recipients per recipient and currency, quotes and transfers per payout."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from state.tables import provider_objects


class SqlProviderObjects:
    def __init__(self, engine: AsyncEngine, provider: str) -> None:
        self._engine = engine
        self._provider = provider

    async def get(self, kind: str, key: str) -> tuple[str, datetime | None] | None:
        t = provider_objects.c
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(t.object_id, t.expires_at).where(
                        t.provider == self._provider, t.kind == kind, t.object_key == key
                    )
                )
            ).first()
        return (row[0], row[1]) if row else None

    async def put(self, kind: str, key: str, object_id: str) -> str:
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(provider_objects)
                .values(provider=self._provider, kind=kind, object_key=key, object_id=object_id)
                .on_conflict_do_nothing(index_elements=["provider", "kind", "object_key"])
            )
        stored = await self.get(kind, key)
        assert stored is not None
        return stored[0]

    async def replace(self, kind: str, key: str, object_id: str, expires_at: datetime | None) -> None:
        stmt = insert(provider_objects).values(
            provider=self._provider, kind=kind, object_key=key, object_id=object_id, expires_at=expires_at
        )
        async with self._engine.begin() as conn:
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["provider", "kind", "object_key"],
                    set_={"object_id": stmt.excluded.object_id, "expires_at": stmt.excluded.expires_at},
                )
            )

"""KnownCreators: the creator check asks the database once per creator id that exists, every
time for one that does not, and stays right only because creators are never deleted."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from state.creators import KnownCreators

REPO = Path(__file__).resolve().parents[2]


class CountingConnection:
    """Answers the existence query from a set and counts the round trips."""

    def __init__(self, existing: set[str]) -> None:
        self.existing = existing
        self.queries = 0

    async def scalar(self, _statement: Any, params: dict[str, str]) -> str | None:
        self.queries += 1
        return params["creator_id"] if params["creator_id"] in self.existing else None


def _exists(known: KnownCreators, conn: CountingConnection, creator_id: str) -> bool:
    return asyncio.run(known.exists(conn, creator_id))  # type: ignore[arg-type]


def test_an_existing_creator_is_asked_once() -> None:
    conn, known = CountingConnection({"c1"}), KnownCreators()
    assert [_exists(known, conn, "c1") for _ in range(5)] == [True] * 5
    assert conn.queries == 1


def test_an_unknown_creator_is_asked_every_time_and_found_once_created() -> None:
    conn, known = CountingConnection(set()), KnownCreators()
    assert not _exists(known, conn, "c2")
    assert not _exists(known, conn, "c2")
    conn.existing.add("c2")
    assert _exists(known, conn, "c2")
    assert _exists(known, conn, "c2")
    assert conn.queries == 3


def test_past_the_limit_the_oldest_are_asked_again() -> None:
    conn, known = CountingConnection({f"c{i}" for i in range(10)}), KnownCreators(limit=4)
    for i in range(5):
        _exists(known, conn, f"c{i}")
    assert conn.queries == 5
    _exists(known, conn, "c4")  # the newest is still known
    assert conn.queries == 5
    _exists(known, conn, "c0")  # among the oldest half, forgotten
    assert conn.queries == 6


def test_no_code_deletes_a_creator() -> None:
    """The cache's premise. A deletion (ORM or SQL) anywhere in the shipped code fails here;
    whoever adds one must drop the cache or invalidate it across processes first."""
    deleting = re.compile(r"delete\(\s*creators\b|DELETE\s+FROM\s+creators\b|TRUNCATE[^;\"']*\bcreators\b", re.I)
    offenders = []
    for folder in ("agents", "bootstrap", "infra", "models", "projections", "state", "web", "migrations"):
        for path in (REPO / folder).rglob("*.py"):
            if deleting.search(path.read_text()):
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == []

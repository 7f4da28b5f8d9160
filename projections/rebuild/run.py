"""The rebuild, phase by phase (the operator's view is docs/runbooks/rebuild.md):

1. **read** (no lock): every partition of every lifecycle topic, from its first offset up
   to the high-water mark taken at the start, folded into UNLOGGED shadow tables with COPY
   by a pool of reader processes (``workers``).
2. **catch-up** (no lock): the shadow follows the live projector's tracking positions
   until it stands where the live projector stands (the projector keeps running).
3. **reconcile**, ONE transaction: read the live positions, apply the last few events to
   the shadow so both reflect the same input, compare row by row and by canonical hash,
   and (``swap``) merge the shadow into the live tables.
   * verify: REPEATABLE READ, no lock. The projector commits its tracking rows with its
     projection rows, so any snapshot is a consistent (positions, tables) pair.
   * swap: READ COMMITTED after ``take_write_lock``: the live projector waits, it does
     not fail.

Nothing here produces to Kafka, calls a provider or renders a document.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from infra.db import create_engine
from infra.settings import Settings
from models.events import LIFECYCLE_EVENTS
from projections.projector import LIVE_CONSUMER, record_position, take_write_lock
from projections.rebuild import compare, shadow
from projections.rebuild.reading import CatchUp, kafka_spans, live_positions
from projections.rebuild.report import TP, ReadResult, RebuildError, RebuildOptions, RebuildReport, TableComparison
from projections.rebuild.swap import swap
from projections.rebuild.workers import default_workers, read_phase
from projections.writers import Position

# Session-level advisory lock held for a whole run: two rebuilds would share shadow tables.
REBUILD_GUARD_LOCK = 0x5EA_3005_1D


class Stopwatch:
    """Seconds per named phase, for the report."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.timings: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = time.perf_counter() - started

    def total(self) -> dict[str, float]:
        self.timings["total"] = time.perf_counter() - self.started
        return self.timings


async def _raw(conn: AsyncConnection) -> asyncpg.Connection:
    """The asyncpg connection under a SQLAlchemy one (same session, same transaction)."""
    raw = await conn.get_raw_connection()
    return raw.driver_connection  # type: ignore[return-value]


async def rebuild_projections(
    settings: Settings,
    options: RebuildOptions,
    *,
    progress: Callable[[int, int], None] | None = None,
    phase: Callable[[str], None] | None = None,
) -> RebuildReport:
    """Run the rebuild. ``progress(advance, total)`` is called as events are read;
    ``phase(name)`` when a phase starts. Raises RebuildError if it cannot proceed."""
    watch = Stopwatch()
    say = phase or (lambda _: None)
    guard = await asyncpg.connect(settings.asyncpg_dsn)
    engine = create_engine(settings, pool_size=1)
    catch_up: CatchUp | None = None
    owner = False
    try:
        if not await guard.fetchval("SELECT pg_try_advisory_lock($1)", REBUILD_GUARD_LOCK):
            raise RebuildError("another rebuild-projections is running against this database")
        owner = True
        await shadow.create(guard)
        spans = await kafka_spans(settings)
        total = sum(s.end - s.begin for s in spans)
        workers = options.workers or default_workers(spans)

        say("read")
        with watch.phase("read"):
            advance = (lambda n: progress(n, total)) if progress else None
            state = await read_phase(settings, spans, workers, advance)
        read_stats = state.snapshot()

        say("index")
        with watch.phase("index"):
            await shadow.add_keys(guard)

        say("catch-up")
        topics = [settings.topic(cls.TOPIC) for cls in LIFECYCLE_EVENTS]
        catch_up = CatchUp(settings, state)
        with watch.phase("catch_up"):
            await _follow_live(engine, catch_up, state, topics, options.live_wait_seconds)

        say("compare" if not options.swap else "lock, compare, swap")
        with watch.phase("reconcile"):
            outcome = await _reconcile(engine, catch_up, state, topics, options, watch)
        return RebuildReport(
            mode="swap" if options.swap else "verify",
            forced=options.force,
            workers=workers,
            read=read_stats,
            catch_up_events=catch_up.events,
            positions=dict(state.applied),
            live_positions=outcome.live,
            live_behind=outcome.behind,
            tables=outcome.tables,
            swapped=outcome.swapped,
            changed_offers=outcome.changed,
            handed_over=outcome.handed,
            timings=watch.total(),
            truncated_partitions=tuple(s.tp for s in spans if s.begin > 0),
        )
    finally:
        if catch_up is not None:
            await catch_up.close()
        await engine.dispose()
        try:
            if owner:  # never the shadow tables of the run that holds the guard
                await shadow.drop(guard)
        finally:
            await guard.close()  # also releases the guard lock


class _Reconciled:
    def __init__(self) -> None:
        self.live: dict[TP, int] = {}
        self.behind: dict[TP, int] = {}
        self.tables: tuple[TableComparison, ...] = ()
        self.swapped = False
        self.changed = 0
        self.handed: dict[TP, int] = {}


async def _reconcile(
    engine: AsyncEngine,
    catch_up: CatchUp,
    state: ReadResult,
    topics: Sequence[str],
    options: RebuildOptions,
    watch: Stopwatch,
) -> _Reconciled:
    """Phase 3 in one transaction: positions, last catch-up, compare, and the swap."""
    out = _Reconciled()
    async with engine.connect() as conn:
        if not options.swap:
            conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            with watch.phase("locked" if options.swap else "snapshot"):
                if options.swap:
                    with watch.phase("lock_wait"):
                        await take_write_lock(conn)
                out.live = await live_positions(conn, topics)  # verify: this statement fixes the snapshot
                await catch_up.to(conn, out.live)
                out.behind = {
                    tp: applied - out.live.get(tp, -1)
                    for tp, applied in state.applied.items()
                    if applied > out.live.get(tp, -1)
                }
                db = await _raw(conn)
                with watch.phase("compare"):
                    out.tables = (
                        await compare.compare_table(db, compare.OFFERS_SPEC, options.samples),
                        await compare.compare_table(db, compare.EVENTS_SPEC, options.samples),
                    )
                identical = all(c.identical for c in out.tables)
                if options.swap and (identical or options.force):
                    with watch.phase("swap"):
                        out.changed = await swap(db, uuid.uuid4().hex, *out.tables)
                        # Hand over: the live projector resumes after what the live tables now hold.
                        for tp, offset in sorted(state.applied.items()):
                            if offset > out.live.get(tp, -1):
                                await record_position(conn, LIVE_CONSUMER, Position(tp[0], tp[1], offset))
                                out.handed[tp] = offset
                    out.swapped = True
    return out


async def _follow_live(
    engine: AsyncEngine, catch_up: CatchUp, state: ReadResult, topics: Sequence[str], wait_seconds: float
) -> None:
    """Without any lock: catch the shadow up to the moving live positions, and give a
    lagging live projector time to reach the shadow, so the locked step has little to do."""
    deadline = time.monotonic() + wait_seconds
    while True:
        async with engine.begin() as conn:
            live = await live_positions(conn, topics)
            await catch_up.to(conn, live)
        lagging = any(applied > live.get(tp, -1) for tp, applied in state.applied.items())
        if not lagging or time.monotonic() >= deadline:
            return
        await asyncio.sleep(0.2)

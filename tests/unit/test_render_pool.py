"""The render pool: worker processes give the in-process bytes, survive a dead worker,
are recycled, and refuse work once closed. No network, no stack."""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import UTC, datetime, timedelta

import pytest

from infra.documents import RenderPool, produce_termsheet
from infra.documents.render import render_receipt_html, render_termsheet_html, write_pdf
from tests.support.documents import MemoryStore, receipt, termsheet

ISSUED = datetime(2025, 3, 3, 14, 5, 12, tzinfo=UTC)


async def _worker_pid(pool: RenderPool) -> int:
    return await asyncio.get_running_loop().run_in_executor(pool._pool(), os.getpid)


async def test_pool_renders_the_in_process_bytes_concurrently() -> None:
    documents = [(render_termsheet_html(termsheet(advance_minor=2_880_000 + i)), ISSUED) for i in range(4)]
    documents.append((render_receipt_html(receipt()), receipt().paid_at))
    async with RenderPool(workers=2) as pool:
        rendered = await asyncio.gather(*(pool.render(html, at) for html, at in documents))
    assert rendered == [write_pdf(html, at) for html, at in documents]


async def test_workers_are_recycled_after_max_tasks() -> None:
    async with RenderPool(workers=1, max_tasks_per_child=1) as pool:
        first = await _worker_pid(pool)
        await pool.render("<p>one</p>", ISSUED)
        second = await _worker_pid(pool)
        assert len({first, second, await _worker_pid(pool)}) == 3  # one task per process


async def test_a_backlog_past_the_recycling_limit_is_all_rendered() -> None:
    """CPython gh-115634: ProcessPoolExecutor(max_tasks_per_child=N) stops replacing a worker
    that exits at its limit while tasks are queued; the queue then waits forever (the fault
    soak's documents worker stopped after 400 documents, 2 workers x 200)."""
    async with RenderPool(workers=1, max_tasks_per_child=2) as pool:
        pages = [f"<p>page {i}</p>" for i in range(7)]
        rendered = await asyncio.wait_for(asyncio.gather(*(pool.render(p, ISSUED) for p in pages)), 90)
    assert rendered == [write_pdf(p, ISSUED) for p in pages]


async def test_a_killed_worker_does_not_break_the_pool() -> None:
    async with RenderPool(workers=1) as pool:
        expected = await pool.render("<p>x</p>", ISSUED)
        os.kill(await _worker_pid(pool), signal.SIGKILL)
        await asyncio.sleep(0.2)
        assert await pool.render("<p>x</p>", ISSUED) == expected


async def test_closed_pool_and_naive_timestamps_are_refused() -> None:
    pool = RenderPool(workers=1)
    with pytest.raises(ValueError):
        await pool.render("<p>x</p>", datetime(2025, 1, 1))
    await pool.aclose()
    with pytest.raises(RuntimeError):
        await pool.render("<p>x</p>", ISSUED)


async def test_produce_uses_the_renderer_it_is_given() -> None:
    store = MemoryStore()
    async with RenderPool(workers=1) as pool:
        stored = await produce_termsheet(store, termsheet(valid_until=ISSUED + timedelta(days=10)), renderer=pool)
    data = termsheet(valid_until=ISSUED + timedelta(days=10))
    assert store.objects[stored.key] == write_pdf(render_termsheet_html(data), data.issued_at)

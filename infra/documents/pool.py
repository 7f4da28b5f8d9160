"""Render PDFs in recycled worker processes, off the caller's event loop.

Why processes, not threads: a WeasyPrint render is ~90 ms of mostly pure-Python work, so a
thread holds the GIL against the event loop (Kafka heartbeats, HTTP) and two threads do not
use two cores; and WeasyPrint 70 leaks in a long-lived process (400 term sheets grew a
process from 125 to 222 MiB; ``gc.collect()`` does not help), so the workers are replaced
after ``max_tasks_per_child`` renders each (see ``RenderPool._pool``). Workers start from a forkserver that has
already imported WeasyPrint, so a replacement costs a fork and one warm-up render, not a
fresh interpreter.

Each worker reuses its font configuration and parsed stylesheets
(``render._ProcessRenderer``); the bytes are those of a fresh render.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime
from types import TracebackType

from infra.documents import render
from infra.logging import get_logger

log = get_logger(__name__)

DEFAULT_MAX_TASKS_PER_CHILD = 200
_WARM_UP_HTML = "<html><body><p>SpaceMusic</p></body></html>"
_WARM_UP_AT = datetime(2025, 1, 1, tzinfo=UTC)


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _warm_up() -> None:
    """Worker initializer: load fontconfig, Pango and the templates' stylesheet before the
    first real document, so no document pays for it."""
    render.write_pdf(_WARM_UP_HTML, _WARM_UP_AT)
    for sample in _sample_documents():
        render.write_pdf(sample, _WARM_UP_AT)
    # What is loaded now lives as long as the worker: keep the cycle collector off it, and
    # let it run less often (a render allocates hundreds of thousands of short-lived
    # objects; the worker is replaced after max_tasks_per_child renders anyway).
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def _sample_documents() -> list[str]:
    # The stylesheet cache is keyed by the CSS text, which is the same for every document of
    # a template: rendering one sample of each parses what every later document reuses.
    from models.documents import ReceiptData, TermsheetData

    at = _WARM_UP_AT
    termsheet = TermsheetData(
        offer_id="warm-up",
        creator_id="warm-up",
        currency="EUR",
        advance_minor=2,
        low_minor=1,
        high_minor=3,
        median_monthly_royalty_minor=1,
        months_considered=1,
        model_version="warm-up",
        issued_at=at,
        valid_until=at.replace(year=2026),
    )
    receipt = ReceiptData(
        offer_id="warm-up",
        creator_id="warm-up",
        payout_id="warm-up",
        amount_minor=1,
        currency="EUR",
        provider="STRIPE",
        provider_reference="warm-up",
        paid_at=at,
        recipient_label="warm-up",
    )
    return [render.render_termsheet_html(termsheet), render.render_receipt_html(receipt)]


class RenderPool:
    """A process pool for PDF rendering: ``await pool.render(html, created_at)``.

    ``workers`` defaults to the cores this process may run on. Concurrent ``render`` calls
    run in parallel, up to ``workers`` at a time; a caller that awaits one render after
    another gets the per-render speed-up but not the parallelism. Use as an async context
    manager, or call ``close()``.
    """

    def __init__(
        self,
        workers: int | None = None,
        max_tasks_per_child: int = DEFAULT_MAX_TASKS_PER_CHILD,
        start_method: str = "forkserver",
    ) -> None:
        if max_tasks_per_child < 1:
            raise ValueError("max_tasks_per_child must be at least 1")
        self.workers = workers or available_cores()
        self.max_tasks_per_child = max_tasks_per_child
        self._context = multiprocessing.get_context(start_method)
        if start_method == "forkserver":
            # The forkserver imports WeasyPrint once; every worker forks from it warm.
            self._context.set_forkserver_preload(["infra.documents.render", "weasyprint"])
        self._lock = threading.Lock()
        self._executor: ProcessPoolExecutor | None = None
        self._submitted = 0  # tasks handed to the current executor
        self._closed = False

    def _pool(self) -> ProcessPoolExecutor:
        """The executor for one more task. Workers are recycled by replacing the whole
        executor after ``workers * max_tasks_per_child`` tasks (the old one finishes what it
        was given), not with ProcessPoolExecutor's own ``max_tasks_per_child``: on Python
        3.11-3.13 that stops replacing a worker that exits at its limit while tasks are
        queued, and the queued renders then wait forever (CPython gh-115634). The fault soak's
        documents worker hung that way after its 400th document."""
        retired: ProcessPoolExecutor | None = None
        with self._lock:
            if self._closed:
                raise RuntimeError("RenderPool is closed")
            if self._executor is not None and self._submitted >= self.workers * self.max_tasks_per_child:
                retired, self._executor = self._executor, None
            if self._executor is None:
                self._executor = ProcessPoolExecutor(
                    max_workers=self.workers, mp_context=self._context, initializer=_warm_up
                )
                self._submitted = 0
                log.info("render_pool_started", workers=self.workers, max_tasks_per_child=self.max_tasks_per_child)
            self._submitted += 1
            executor = self._executor
        if retired is not None:
            retired.shutdown(wait=False)  # its queued renders still run; then its workers exit
        return executor

    def _discard(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._executor is broken:
                self._executor = None
        broken.shutdown(wait=False, cancel_futures=True)

    async def render(self, html: str, created_at: datetime) -> bytes:
        if created_at.tzinfo is None or created_at.utcoffset() is None:
            raise ValueError("created_at must be timezone-aware")
        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            executor = self._pool()
            try:
                return await loop.run_in_executor(executor, render.write_pdf, html, created_at)
            except BrokenProcessPool:
                # A worker died (OOM killer, a crash in Pango): start a fresh pool and try
                # once more; a second failure is the caller's to retry.
                log.warning("render_pool_broken", attempt=attempt)
                self._discard(executor)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    async def __aenter__(self) -> RenderPool:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


_default: RenderPool | None = None
_default_lock = threading.Lock()


def default_pool() -> RenderPool:
    """The process-wide pool ``render_pdf`` uses when given none: created on first use
    (never at import), its workers started on the first render; the executor shuts them
    down at interpreter exit."""
    global _default
    with _default_lock:
        if _default is None:
            _default = RenderPool()
        return _default

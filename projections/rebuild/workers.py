"""The read phase across processes: decoding is CPU-bound, so partitions are split over a
pool of fresh interpreters (``spawn``), each folding its own offers into the shadow.

Partition *p* of every topic goes to the same worker (the topics are co-partitioned by
offer_id). Progress comes back over a queue the pool's initializer hands each worker.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import queue
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from infra.settings import Settings
from projections.rebuild.reading import read_into_shadow
from projections.rebuild.report import PartitionSpan, ReadResult

Progress = Callable[[int], None]
_progress_queue: Any = None


def default_workers(spans: Sequence[PartitionSpan]) -> int:
    return max(1, min(os.cpu_count() or 1, len({s.partition for s in spans})))


def split_by_partition(spans: Sequence[PartitionSpan], workers: int) -> list[list[PartitionSpan]]:
    """Partition *p* of every topic goes to the same worker (co-partitioned by offer_id)."""
    numbers = sorted({s.partition for s in spans})
    groups: list[list[PartitionSpan]] = [[] for _ in range(min(workers, len(numbers)) or 1)]
    for i, number in enumerate(numbers):
        groups[i % len(groups)].extend(s for s in spans if s.partition == number)
    return [g for g in groups if g]


def _init_worker(progress_queue: Any) -> None:
    global _progress_queue
    _progress_queue = progress_queue


def _read_group(settings: Settings, spans: list[PartitionSpan]) -> ReadResult:
    """Runs in a worker process: one event loop, one group of partitions."""
    return asyncio.run(read_into_shadow(settings, spans, _progress_queue.put))


async def read_phase(
    settings: Settings, spans: Sequence[PartitionSpan], workers: int, progress: Progress | None
) -> ReadResult:
    groups = split_by_partition(spans, workers)
    if len(groups) == 1:
        return await read_into_shadow(settings, groups[0], progress)
    context = multiprocessing.get_context("spawn")
    progress_queue = context.Queue()
    loop = asyncio.get_running_loop()
    merged = ReadResult()
    with ProcessPoolExecutor(
        max_workers=len(groups), mp_context=context, initializer=_init_worker, initargs=(progress_queue,)
    ) as pool:
        running = [loop.run_in_executor(pool, _read_group, settings, group) for group in groups]
        pending = set(running)
        while pending:
            _, pending = await asyncio.wait(pending, timeout=0.2)
            _drain(progress_queue, progress)
        for future in running:
            merged.merge(future.result())  # re-raises a worker's failure
    _drain(progress_queue, progress)
    return merged


def _drain(progress_queue: Any, progress: Progress | None) -> None:
    while True:
        try:
            count = progress_queue.get_nowait()
        except queue.Empty:
            return
        if progress:
            progress(count)

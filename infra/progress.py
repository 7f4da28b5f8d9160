"""Is this worker making progress on the partitions it owns? A pure tracker fed with lag
measurements (``infra.consumer_lag``), so ``/readyz`` and ``/healthz`` can say "stuck" about
an agent that awaits forever or retries against a dependency that is gone, while its event
loop still beats.

A partition is *stalled* when it is assigned to this worker, has lag, and the group's
committed offset has not moved for ``stall_after`` seconds. Its clock starts when it is
first seen assigned with lag (an idle partition's offset may not have moved for days, that
is no stall), and restarts whenever the committed offset moves; lag 0 or losing the
partition ends the episode.

Durations are measured up to the latest measurement, not to "now", and measurements
further apart than ``max_gap`` restart the clocks: while nothing can be measured (the
broker is away, which readiness reports on its own) a stall does not grow, so a liveness
restart is never inferred from an outage the worker could not have worked through.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from aiokafka.structs import TopicPartition


@dataclass(frozen=True, slots=True)
class Stall:
    partition: TopicPartition
    lag: int
    seconds: float

    def describe(self) -> str:
        return (
            f"no progress on {self.partition.topic}[{self.partition.partition}]"
            f" for {self.seconds:.0f}s with {self.lag} waiting"
        )


@dataclass(frozen=True, slots=True)
class Transitions:
    """What one measurement changed, at the tracker's own ``stall_after``: each partition
    appears once when its episode starts and once when it ends."""

    stalled: tuple[Stall, ...] = ()
    recovered: tuple[tuple[TopicPartition, str], ...] = ()  # (partition, why it ended)


@dataclass(slots=True)
class _Clock:
    committed: int
    lag: int
    since: float | None  # when it last had lag with this committed offset; None: no lag


class ProgressTracker:
    """Per-partition progress clocks. Not thread-safe: feed and read it from one thread."""

    def __init__(self, stall_after: float, max_gap: float | None = None) -> None:
        self.stall_after = stall_after
        # Nobody saw whether a partition moved during a longer gap (see the module docstring).
        self.max_gap = max_gap
        self._clocks: dict[TopicPartition, _Clock] = {}
        self._measured_at: float | None = None
        self._stalled: set[TopicPartition] = set()  # episodes open at ``stall_after``

    def observe(
        self,
        committed: Mapping[TopicPartition, int],
        lag: Mapping[TopicPartition, int],
        assigned: Iterable[TopicPartition],
        now: float,
    ) -> Transitions:
        """One measurement: per partition the group's committed offset (-1: none yet) and
        its lag, the partitions assigned here, and when it was taken (monotonic seconds)."""
        # Faust's TP and aiokafka's TopicPartition are both (topic, partition) tuples.
        owned = {TopicPartition(tp.topic, tp.partition) for tp in assigned}
        gap = self._measured_at is not None and self.max_gap is not None and now - self._measured_at > self.max_gap
        clocks: dict[TopicPartition, _Clock] = {}
        for tp, waiting in lag.items():
            if tp not in owned:
                continue  # another member's (or nobody's) partition: not ours to judge
            offset = committed.get(tp, -1)
            before = self._clocks.get(tp)
            if waiting <= 0:
                since = None
            elif gap or before is None or before.since is None or before.committed != offset:
                since = now  # new here, lag just appeared, the offset moved, or a gap: a fresh clock
            else:
                since = before.since
            clocks[tp] = _Clock(offset, waiting, since)
        self._clocks, self._measured_at = clocks, now
        return self._transitions(gap)

    def stalls(self, stall_after: float | None = None) -> list[Stall]:
        """Partitions without progress for at least ``stall_after`` (default: the tracker's),
        the longest first."""
        threshold = self.stall_after if stall_after is None else stall_after
        if threshold <= 0 or self._measured_at is None:
            return []  # 0 turns the check off
        found = [
            Stall(tp, clock.lag, self._measured_at - clock.since)
            for tp, clock in self._clocks.items()
            if clock.since is not None and self._measured_at - clock.since >= threshold
        ]
        return sorted(found, key=lambda s: (-s.seconds, s.partition.topic, s.partition.partition))

    def verdict(self, stall_after: float | None = None) -> tuple[bool, str]:
        """(ok, why): why names the longest stall, and how many others there are."""
        found = self.stalls(stall_after)
        if not found:
            return True, "ok"
        why = found[0].describe()
        if len(found) > 1:
            why += f" (and {len(found) - 1} more partition{'s' if len(found) > 2 else ''})"
        return False, why

    def _transitions(self, gap: bool) -> Transitions:
        now_stalled = {s.partition: s for s in self.stalls()}
        started = tuple(s for tp, s in now_stalled.items() if tp not in self._stalled)
        ended: list[tuple[TopicPartition, str]] = []
        for tp in sorted(self._stalled - set(now_stalled)):
            clock = self._clocks.get(tp)
            if clock is None:
                ended.append((tp, "no longer assigned here"))
            elif clock.lag <= 0:
                ended.append((tp, "caught up"))
            elif gap:
                ended.append((tp, "unknown after a gap in measurements"))
            else:  # lag left, clock restarted: the committed offset moved
                ended.append((tp, "progressing"))
        self._stalled = set(now_stalled)
        return Transitions(stalled=started, recovered=tuple(ended))

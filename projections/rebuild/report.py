"""What a rebuild reports: what it read, how the live and rebuilt tables compare, timings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

TP = tuple[str, int]  # (physical topic, partition): picklable, usable as a dict key
SKIPPED_SAMPLES = 20


class RebuildError(RuntimeError):
    """The rebuild cannot proceed (nothing live was changed); the message says why."""


@dataclass(frozen=True)
class RebuildOptions:
    swap: bool = True  # False: --verify-only
    force: bool = False  # swap even when the comparison found differences
    workers: int | None = None  # None: one per CPU, at most one per partition
    live_wait_seconds: float = 30.0  # how long to wait for a lagging live projector
    samples: int = 20  # differing rows described in detail, per table


@dataclass(frozen=True, slots=True)
class PartitionSpan:
    """One partition to read: offsets ``begin`` (first) up to ``end`` (high-water, exclusive)."""

    topic: str  # physical
    partition: int
    begin: int
    end: int

    @property
    def tp(self) -> TP:
        return (self.topic, self.partition)


@dataclass(frozen=True, slots=True)
class SkippedMessage:
    topic: str
    partition: int
    offset: int
    error_type: str
    error: str


@dataclass
class ReadResult:
    """What one reader (a worker process, or the catch-up) consumed and applied."""

    consumed: dict[TP, int] = field(default_factory=dict)  # last offset read
    applied: dict[TP, int] = field(default_factory=dict)  # last offset of a valid event
    events_read: int = 0
    events_applied: int = 0
    duplicates: int = 0
    skipped: int = 0
    skipped_samples: list[SkippedMessage] = field(default_factory=list)
    offers: int = 0

    def merge(self, other: ReadResult) -> None:
        for tp, offset in other.consumed.items():
            self.consumed[tp] = max(offset, self.consumed.get(tp, -1))
        for tp, offset in other.applied.items():
            self.applied[tp] = max(offset, self.applied.get(tp, -1))
        self.events_read += other.events_read
        self.events_applied += other.events_applied
        self.duplicates += other.duplicates
        self.skipped += other.skipped
        room = SKIPPED_SAMPLES - len(self.skipped_samples)
        self.skipped_samples.extend(other.skipped_samples[: max(room, 0)])
        self.offers += other.offers

    def snapshot(self) -> ReadResult:
        copy = ReadResult()
        copy.merge(self)
        return copy


@dataclass(frozen=True, slots=True)
class RowDiff:
    table: str
    key: str
    kind: str  # "missing" (rebuild has it, live not), "extra" (live only), "differs"
    columns: tuple[str, ...] = ()
    live: Mapping[str, Any] | None = None
    shadow: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class TableComparison:
    table: str
    live_rows: int
    shadow_rows: int
    live_hash: str
    shadow_hash: str
    missing: tuple[str, ...]
    extra: tuple[str, ...]
    differing: tuple[str, ...]
    samples: tuple[RowDiff, ...]

    @property
    def differences(self) -> int:
        return len(self.missing) + len(self.extra) + len(self.differing)

    @property
    def identical(self) -> bool:
        return self.differences == 0 and self.live_hash == self.shadow_hash


@dataclass
class RebuildReport:
    mode: str  # "verify" or "swap"
    forced: bool
    workers: int
    read: ReadResult
    catch_up_events: int
    positions: dict[TP, int]  # where the shadow stands (last applied offset per partition)
    live_positions: dict[TP, int]
    live_behind: dict[TP, int]  # partitions where the live projector had not reached the shadow
    tables: tuple[TableComparison, ...]
    swapped: bool
    changed_offers: int
    handed_over: dict[TP, int]
    timings: dict[str, float]
    truncated_partitions: tuple[TP, ...] = ()

    @property
    def identical(self) -> bool:
        return all(t.identical for t in self.tables)

    @property
    def differences(self) -> int:
        return sum(t.differences for t in self.tables)

    @property
    def events_per_second(self) -> float:
        seconds = self.timings.get("read", 0.0)
        return self.read.events_read / seconds if seconds > 0 else 0.0

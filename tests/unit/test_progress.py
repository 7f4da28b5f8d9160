"""The progress tracker behind the worker's /readyz and /healthz: synthetic measurements,
injected time (no sleeping)."""

from __future__ import annotations

from collections import namedtuple

from aiokafka.structs import TopicPartition

from infra.progress import ProgressTracker

P0, P1 = TopicPartition("offer.valuated", 0), TopicPartition("offer.valuated", 3)
BOTH = {P0, P1}


def feed(
    tracker: ProgressTracker, now: float, p0: tuple[int, int], p1: tuple[int, int] = (0, 0), assigned=BOTH
) -> None:
    """One measurement: (committed, lag) per partition."""
    tracker.observe({P0: p0[0], P1: p1[0]}, {P0: p0[1], P1: p1[1]}, assigned, now)


def test_steady_progress_stays_ok() -> None:
    tracker = ProgressTracker(stall_after=120)
    for i in range(100):  # 25 minutes of a busy partition whose offset keeps moving
        feed(tracker, now=i * 15.0, p0=(i * 10, 42))
    assert tracker.verdict() == (True, "ok")


def test_lag_without_offset_change_stalls_after_stall_after() -> None:
    tracker = ProgressTracker(stall_after=120)
    feed(tracker, 1000, p0=(7, 42))  # the clock starts at the first sight of lag
    feed(tracker, 1119, p0=(7, 42))
    assert tracker.verdict() == (True, "ok")
    feed(tracker, 1130, p0=(7, 43))  # more arrived, nothing was committed
    assert tracker.verdict() == (False, "no progress on offer.valuated[0] for 130s with 43 waiting")
    # A longer threshold (the liveness one) asks the same tracker.
    assert tracker.verdict(600)[0] is True
    feed(tracker, 1600, p0=(7, 43))
    assert tracker.verdict(600) == (False, "no progress on offer.valuated[0] for 600s with 43 waiting")


def test_an_idle_partition_is_no_stall_when_work_arrives() -> None:
    tracker = ProgressTracker(stall_after=120)
    for t in range(0, 3600, 15):  # an hour at offset 7 without lag
        feed(tracker, t, p0=(7, 0))
    feed(tracker, 3600, p0=(7, 1))
    assert tracker.verdict() == (True, "ok"), "the clock starts when the lag appears, not at the last commit"
    feed(tracker, 3720, p0=(7, 1))
    assert tracker.verdict()[0] is False


def test_lag_back_to_zero_resets() -> None:
    tracker = ProgressTracker(stall_after=120)
    feed(tracker, 0, p0=(7, 5))
    feed(tracker, 130, p0=(7, 5))
    assert tracker.verdict()[0] is False
    feed(tracker, 145, p0=(7, 0))  # caught up (e.g. the backlog was deleted by retention)
    assert tracker.verdict() == (True, "ok")
    feed(tracker, 160, p0=(7, 3))
    feed(tracker, 270, p0=(7, 3))
    assert tracker.verdict() == (True, "ok"), "a fresh clock from 160"


def test_an_advancing_offset_resets_the_clock() -> None:
    tracker = ProgressTracker(stall_after=120)
    feed(tracker, 0, p0=(7, 5))
    feed(tracker, 100, p0=(8, 4))
    feed(tracker, 200, p0=(8, 4))
    assert tracker.verdict() == (True, "ok")
    feed(tracker, 220, p0=(8, 4))
    assert tracker.verdict() == (False, "no progress on offer.valuated[0] for 120s with 4 waiting")


def test_a_revoked_partition_stops_counting() -> None:
    tracker = ProgressTracker(stall_after=120)
    feed(tracker, 0, p0=(7, 5))
    feed(tracker, 130, p0=(7, 5))
    assert tracker.verdict()[0] is False
    feed(tracker, 145, p0=(7, 5), assigned={P1})  # another member owns it now: its business
    assert tracker.verdict() == (True, "ok")
    # Assigned back later: its clock starts again at that first observation.
    feed(tracker, 500, p0=(7, 5))
    feed(tracker, 610, p0=(7, 5))
    assert tracker.verdict() == (True, "ok")
    feed(tracker, 620, p0=(7, 5))
    assert tracker.verdict()[0] is False


def test_a_partition_never_assigned_here_is_never_judged() -> None:
    tracker = ProgressTracker(stall_after=120)
    for t in (0, 200, 400):
        feed(tracker, t, p0=(7, 5), assigned={P1})
    assert tracker.verdict() == (True, "ok")


def test_two_partitions_one_stalled() -> None:
    tracker = ProgressTracker(stall_after=120)
    for i in range(10):
        feed(tracker, i * 15.0, p0=(7, 42), p1=(100 + i, 3))
    assert [s.partition for s in tracker.stalls()] == [P0]
    assert tracker.verdict() == (False, "no progress on offer.valuated[0] for 135s with 42 waiting")


def test_several_stalls_name_the_longest_and_count_the_rest() -> None:
    tracker = ProgressTracker(stall_after=120)
    feed(tracker, 0, p0=(7, 5))
    feed(tracker, 30, p0=(7, 5), p1=(1, 2))
    feed(tracker, 200, p0=(7, 5), p1=(1, 2))
    assert tracker.verdict() == (
        False,
        "no progress on offer.valuated[0] for 200s with 5 waiting (and 1 more partition)",
    )


def test_transitions_are_reported_once_per_episode() -> None:
    tracker = ProgressTracker(stall_after=120)
    changes = [tracker.observe({P0: 7}, {P0: 5}, {P0}, t) for t in (0, 60, 120, 180, 240)]
    assert [len(c.stalled) for c in changes] == [0, 0, 1, 0, 0]
    assert changes[2].stalled[0].partition == P0 and changes[2].stalled[0].seconds == 120
    moved = tracker.observe({P0: 8}, {P0: 4}, {P0}, 300)
    assert moved.recovered == ((P0, "progressing"),) and not moved.stalled
    assert tracker.observe({P0: 8}, {P0: 4}, {P0}, 360).recovered == ()
    tracker.observe({P0: 8}, {P0: 4}, {P0}, 420)
    assert tracker.observe({P0: 8}, {P0: 0}, {P0}, 480).recovered == ((P0, "caught up"),)
    tracker.observe({P0: 8}, {P0: 4}, {P0}, 500)
    tracker.observe({P0: 8}, {P0: 4}, {P0}, 620)
    assert tracker.observe({P0: 8}, {P0: 4}, set(), 640).recovered == ((P0, "no longer assigned here"),)


def test_a_gap_in_measurements_restarts_the_clocks() -> None:
    """Nothing was measured for 15 minutes (the broker was away): that is no stall."""
    tracker = ProgressTracker(stall_after=120, max_gap=60)
    feed(tracker, 0, p0=(7, 5))
    feed(tracker, 15, p0=(7, 5))
    feed(tracker, 915, p0=(7, 5))
    assert tracker.verdict(600) == (True, "ok")
    for t in range(945, 1036, 30):  # measured all along since the gap: a stall again
        feed(tracker, t, p0=(7, 5))
    assert tracker.verdict() == (False, "no progress on offer.valuated[0] for 120s with 5 waiting")


def test_a_gap_ends_an_open_episode_with_its_reason() -> None:
    tracker = ProgressTracker(stall_after=120, max_gap=60)
    feed(tracker, 0, p0=(7, 5))
    feed(tracker, 40, p0=(7, 5))
    feed(tracker, 80, p0=(7, 5))
    feed(tracker, 120, p0=(7, 5))
    assert tracker.verdict()[0] is False
    changes = tracker.observe({P0: 7}, {P0: 5}, BOTH, 600)
    assert changes.recovered == ((P0, "unknown after a gap in measurements"),)


def test_zero_turns_the_check_off_and_never_committed_counts_as_an_offset() -> None:
    tracker = ProgressTracker(stall_after=0)
    feed(tracker, 0, p0=(-1, 5))
    feed(tracker, 10_000, p0=(-1, 5))
    assert tracker.verdict() == (True, "ok")
    assert tracker.verdict(600)[0] is False  # a group that never committed is stuck too


def test_faust_style_partition_tuples_are_accepted() -> None:
    tp = namedtuple("TP", ["topic", "partition"])  # what Faust's consumer.assignment() holds
    tracker = ProgressTracker(stall_after=120)
    tracker.observe({P0: 7}, {P0: 5}, {tp("offer.valuated", 0)}, 0)
    tracker.observe({P0: 7}, {P0: 5}, {tp("offer.valuated", 0)}, 120)
    assert tracker.verdict()[0] is False

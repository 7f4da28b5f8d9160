"""The worker's probes with the progress watchdog: /readyz fails once an owned partition has
made no progress for WORKER_STALL_READY_SECONDS, /healthz once for WORKER_STALL_LIVE_SECONDS,
and the log says so once per episode. Synthetic measurements; no Faust, no broker."""

from __future__ import annotations

import structlog
from aiokafka.structs import TopicPartition
from structlog.testing import capture_logs

from bootstrap.commands.worker import WorkerHealth
from infra.consumer_lag import LagMeasurement

TP = TopicPartition("offer.valuated", 3)


def running(ready: float = 120, live: float = 600) -> WorkerHealth:
    health = WorkerHealth(ready, live, lag_interval=15)
    health.beat()
    health.assigned_once = True
    return health


def measure(health: WorkerHealth, at: float, committed: int, lag: int, assigned: set | None = None) -> None:
    health.progress_measured(LagMeasurement({TP: committed}, {TP: lag}, at), {TP} if assigned is None else assigned)


def test_ready_and_live_fail_at_their_own_thresholds_and_recover() -> None:
    health = running()
    for t in range(0, 121, 15):
        measure(health, t, committed=7, lag=42)
        assert health.live() == (True, "ok")
        assert health.ready() == (
            (True, "ok") if t < 120 else (False, f"no progress on offer.valuated[3] for {t}s with 42 waiting")
        )
    for t in range(135, 601, 15):
        measure(health, t, committed=7, lag=42)
    assert health.live() == (False, "no progress on offer.valuated[3] for 600s with 42 waiting")
    assert health.ready() == health.live(), "ready reports the liveness failure first"
    measure(health, 615, committed=8, lag=41)
    assert health.ready() == (True, "ok") and health.live() == (True, "ok")


def test_the_broker_outage_is_reported_before_the_stall() -> None:
    health = running()
    for t in range(0, 121, 15):
        measure(health, t, committed=7, lag=1)
    health.broker_reachable = False
    assert health.ready() == (False, "no Kafka broker answers")


def test_zero_turns_the_watchdog_off() -> None:
    health = running(ready=0, live=0)
    for t in range(0, 3600, 15):
        measure(health, t, committed=7, lag=1)
    assert health.ready() == (True, "ok") and health.live() == (True, "ok")


def test_the_log_says_it_once_per_episode() -> None:
    structlog.reset_defaults()
    health = running(ready=30, live=60)
    with capture_logs() as logs:
        for t in range(0, 100, 5):  # probes read in between: they log nothing
            measure(health, t, committed=7, lag=4)
            health.ready()
            health.live()
        measure(health, 100, committed=11, lag=0)
        measure(health, 105, committed=11, lag=0)
    events = [(e["event"], e.get("reason")) for e in logs]
    assert events == [
        ("partition_stalled", "no progress on offer.valuated[3] for 30s with 4 waiting"),
        ("worker_wedged", "no progress on offer.valuated[3] for 60s with 4 waiting"),
        ("partition_progressing", "caught up"),
    ]
    stalled = logs[0]
    assert (stalled["topic"], stalled["partition"], stalled["lag"], stalled["seconds"]) == ("offer.valuated", 3, 4, 30)

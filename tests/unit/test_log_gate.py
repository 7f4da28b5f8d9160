"""The Kafka client's loggers say an outage once (plus a reminder a minute and one line when
it is over), not once per retry; other loggers are never touched."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from infra.log_gate import ClientOutageGate
from infra.logging import configure_logging


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def logs() -> Iterator[tuple[io.StringIO, ClientOutageGate, Clock]]:
    out, clock = io.StringIO(), Clock()
    configure_logging("INFO", out)
    handler = logging.getLogger().handlers[0]
    for f in list(handler.filters):
        handler.removeFilter(f)
    gate = ClientOutageGate(("aiokafka", "kafka"), "kafka_client", clock=clock, timers=False)
    handler.addFilter(gate)
    yield out, gate, clock
    configure_logging("INFO")


def lines(out: io.StringIO) -> list[dict]:
    return [json.loads(x) for x in out.getvalue().splitlines() if x.strip()]


def test_a_broker_outage_is_one_error_a_minute_and_one_recovery_line(logs) -> None:
    out, gate, clock = logs
    connect = logging.getLogger("aiokafka")
    fetcher = logging.getLogger("aiokafka.consumer.fetcher")
    for _second in range(150):  # 150 s down, the client retrying several times a second
        clock.now += 1
        for _ in range(4):
            connect.error("Unable connect to node with id %s: [Errno 111] Connect call failed", 1)
            fetcher.error("Failed fetch messages from 1: NodeNotReadyError")
        logging.getLogger("agents.payouts").warning("payout_resolver_failed")  # not the client's
    gate.recovered()
    seen = lines(out)
    client = [x for x in seen if x["logger"].startswith("aiokafka")]
    assert len(client) == 4  # the first of each kind, then a reminder at 60 s and at 120 s
    assert client[0]["event"] == "Unable connect to node with id 1: [Errno 111] Connect call failed"
    assert client[1]["event"] == "Failed fetch messages from 1: NodeNotReadyError"
    assert "still failing" in client[2]["event"] and "still failing" in client[3]["event"]
    assert sum(x["event"] == "payout_resolver_failed" for x in seen) == 150  # untouched
    [recovered] = [x for x in seen if x["event"] == "kafka_client_recovered"]
    assert recovered["suppressed_lines"] == 150 * 8 - 4
    assert recovered["errors_seconds"] == 149


def test_a_quiet_gap_ends_the_outage_and_the_next_error_passes_again(logs) -> None:
    out, gate, clock = logs
    client = logging.getLogger("aiokafka.consumer.group_coordinator")
    client.error("Group Coordinator Request failed")
    client.error("Group Coordinator Request failed")
    clock.now += gate.quiet_seconds + 1
    client.error("Group Coordinator Request failed")  # a new outage: said again
    events = [x["event"] for x in lines(out)]
    assert events == ["Group Coordinator Request failed", "kafka_client_recovered", "Group Coordinator Request failed"]
    assert gate.in_outage


def test_other_libraries_pass_untouched(logs) -> None:
    out, gate, _ = logs
    for _ in range(5):
        logging.getLogger("aiohttp.server").error("Error handling request")
        logging.getLogger("aiokafkaesque").error("not the client")  # a prefix, not a child
    assert len(lines(out)) == 10 and not gate.in_outage


def test_a_reachable_broker_ends_the_outage_only_once_the_client_is_quiet(logs) -> None:
    out, gate, clock = logs
    client = logging.getLogger("aiokafka.consumer.group_coordinator")
    client.error("Group Coordinator Request failed: GroupCoordinatorNotAvailableError")  # a fresh broker
    clock.now += 2
    gate.recovered(settle_seconds=5)  # a probe reached the broker, but the client just spoke
    assert gate.in_outage
    clock.now += 4
    gate.recovered(settle_seconds=5)
    assert not gate.in_outage
    clock.now += 3  # the broker is killed a few seconds later: its first error is shown
    logging.getLogger("aiokafka").error("Unable connect to node with id 1")
    events = [x["event"] for x in lines(out)]
    assert events[-2:] == ["kafka_client_recovered", "Unable connect to node with id 1"]

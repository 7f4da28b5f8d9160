"""Correlation ids in log lines (infra.logging) and `spacemusic trace` (issue 11, point 8)."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import structlog
from click.testing import CliRunner

from bootstrap.commands.trace import trace_command
from infra.logging import (
    bind_event_context,
    bind_request_context,
    configure_logging,
    correlation_id_from,
    event_log_context,
    get_logger,
    unbind_event_context,
)


@dataclass(frozen=True)
class FakeEvent:
    event_id: str
    offer_id: str
    correlation_id: str


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_request_correlation_id() -> None:
    assert correlation_id_from("abc-123", "req-1") == "abc-123"
    assert correlation_id_from(None, "req-1") == "req-1"
    assert correlation_id_from("x" * 129, "req-1") == "req-1"
    assert correlation_id_from("bad\nvalue", "req-1") == "req-1"


def test_every_log_line_while_handling_an_event_carries_its_ids() -> None:
    out = io.StringIO()
    configure_logging("INFO", out)
    structlog.contextvars.clear_contextvars()
    log = get_logger("test.correlation")
    event = FakeEvent("e-1", "o-1", "c-1")
    assert bind_event_context(event) == {"correlation_id": "c-1", "offer_id": "o-1", "event_id": "e-1"}
    log.info("handled")
    unbind_event_context()
    log.info("idle")
    with event_log_context({"correlation_id": "c-2", "offer_id": "o-2", "event_id": None}):
        log.info("in_block")
    log.info("after_block")
    bind_request_context("r-1", "c-3")
    log.info("request_line")
    structlog.contextvars.clear_contextvars()
    got = {line["event"]: line for line in lines(out)}
    assert got["handled"]["correlation_id"] == "c-1" and got["handled"]["offer_id"] == "o-1"
    assert "correlation_id" not in got["idle"]
    assert got["in_block"]["correlation_id"] == "c-2" and "event_id" not in got["in_block"]
    assert "correlation_id" not in got["after_block"]
    assert got["request_line"]["request_id"] == "r-1" and got["request_line"]["correlation_id"] == "c-3"


def test_trace_follows_one_deal_across_process_logs(tmp_path) -> None:
    offer = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
    web = tmp_path / "web.log"
    worker = tmp_path / "worker.log"
    web.write_text(
        "\n".join(
            json.dumps(r)
            for r in (
                {
                    "timestamp": "2026-12-03T07:00:00.000000Z",
                    "event": "offer_created",
                    "offer_id": offer,
                    "correlation_id": "c-9",
                },
                {
                    "timestamp": "2026-12-03T07:00:00.500000Z",
                    "event": "http_request",
                    "path": "/offers",
                    "correlation_id": "c-9",
                },
                {
                    "timestamp": "2026-12-03T07:00:01.000000Z",
                    "event": "http_request",
                    "path": "/deals",
                    "correlation_id": "other",
                },
            )
        )
    )
    worker.write_text(
        "not json\n"
        + "worker.1 | "
        + json.dumps(
            {"timestamp": "2026-12-03T07:00:02.000000Z", "event": "valued", "offer_id": offer, "correlation_id": "c-9"}
        )
        + "\n"
        + json.dumps({"timestamp": "2026-12-03T07:00:03.000000Z", "event": "paid", "correlation_id": "c-9"})
    )
    result = CliRunner().invoke(trace_command, [offer, str(web), str(worker), "--json"])
    assert result.exit_code == 0, result.output
    found = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["event"] for r in found] == ["offer_created", "http_request", "valued", "paid"]
    assert {r["source"] for r in found} == {"web.log", "worker.log"}
    missing = CliRunner().invoke(trace_command, ["00000000-0000-0000-0000-000000000000", str(web)])
    assert missing.exit_code != 0

"""Recovery without an operator: while a dependency is away `/readyz` says so, once it is
back the process is ready again by itself, and the logs say what happened once per outage,
not once per retry or probe. Private stack (it stops Postgres and Kafka)."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

from tests.faults.stack import PrivateStack
from tests.support.stack import Process, free_port

PROBE_EVERY = 1.2  # above the web app's 1 s readiness cache


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 (local test URL)
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def _until(url: str, want: int, timeout: float) -> float | None:
    """Seconds until /readyz answered ``want`` (probing every PROBE_EVERY), None if never."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if _status(url) == want:
            return time.monotonic() - started
        time.sleep(PROBE_EVERY)
    return None


@pytest.fixture(scope="module")
def web_outage(private_stack: PrivateStack) -> Iterator[dict[str, object]]:
    """A web process through a 10 s Postgres outage, probed like a load balancer would."""
    port = free_port()
    proc = Process("readiness-web", {**private_stack.env, "WEB_PORT": str(port)}, "web")
    url = f"http://127.0.0.1:{port}/readyz"
    result: dict[str, object] = {}
    try:
        proc.wait_for_log('"web_starting"', timeout=60)
        result["ready_before"] = _until(url, 200, 30)
        private_stack.stop_pg("fast")
        try:
            result["not_ready_after"] = _until(url, 503, 15)
            for _ in range(6):  # keep probing through the outage
                _status(url)
                time.sleep(PROBE_EVERY)
            logged = proc.output()
        finally:
            private_stack.start_pg()
        result["ready_again_after"] = _until(url, 200, 45)
        result["not_ready_lines"] = logged.count('"not_ready"')
        yield result
    finally:
        proc.stop()


def test_web_readyz_tells_the_truth_through_a_database_outage(web_outage: dict[str, object]) -> None:
    assert web_outage["ready_before"] is not None, web_outage
    assert web_outage["not_ready_after"] is not None, f"/readyz stayed 200 with Postgres down: {web_outage}"
    assert web_outage["ready_again_after"] is not None, f"/readyz never recovered: {web_outage}"


def test_web_logs_a_database_outage_once(web_outage: dict[str, object]) -> None:
    assert int(web_outage["not_ready_lines"]) <= 2, web_outage  # type: ignore[call-overload]


def test_worker_readyz_reports_a_broker_outage(private_stack: PrivateStack) -> None:
    port = free_port()
    env = {**private_stack.env, "METRICS_PORT": str(port), "CONSUMER_GROUP_PREFIX": f"rz{uuid.uuid4().hex[:6]}"}
    proc = Process("readiness-worker", env, "worker", "--role", "pipeline")
    url = f"http://127.0.0.1:{port}/readyz"
    try:
        assert _until(url, 200, 120) is not None, proc.output()[-2000:]
        private_stack.kill_kafka()
        try:
            went_not_ready = _until(url, 503, 10)
        finally:
            private_stack.start_kafka()
        assert went_not_ready is not None, "worker /readyz stayed 200 with the broker gone"
        assert _until(url, 200, 60) is not None, "worker /readyz never recovered"
    finally:
        proc.stop()

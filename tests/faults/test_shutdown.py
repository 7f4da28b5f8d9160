"""Clean shutdown: SIGTERM stops a worker or web process within 20 s (below a Kubernetes
grace period) even when the broker or the database is gone; a port already in use is one
clear error line, not a traceback. Runs on the private stack (it kills its services)."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import uuid

import pytest

from tests.faults.stack import PrivateStack
from tests.support.stack import SPACEMUSIC, Process, free_port, run_cli

GRACE_SECONDS = 20.0


def _sigterm_seconds(proc: Process) -> float:
    started = time.monotonic()
    proc.proc.send_signal(signal.SIGTERM)
    try:
        proc.proc.wait(GRACE_SECONDS + 10)
    except subprocess.TimeoutExpired:
        pass
    elapsed = time.monotonic() - started
    proc.stop(signal.SIGKILL)  # whatever is left (and closes the log)
    return elapsed


def _worker(env: dict[str, str], name: str) -> Process:
    proc = Process(name, {**env, "CONSUMER_GROUP_PREFIX": f"sd{uuid.uuid4().hex[:6]}"}, "worker", "--role", "pipeline")
    proc.wait_for_log('"partitions_assigned"', timeout=120)
    return proc


def test_worker_stops_on_sigterm_with_the_broker_and_database_gone(private_stack: PrivateStack) -> None:
    proc = _worker(private_stack.env, "shutdown-worker")
    private_stack.kill_kafka()
    private_stack.stop_pg("immediate")
    try:
        time.sleep(3)  # the worker notices both are gone and is retrying
        elapsed = _sigterm_seconds(proc)
    finally:
        private_stack.start_pg()
        private_stack.start_kafka()
    assert elapsed < GRACE_SECONDS, f"worker took {elapsed:.1f}s to stop after SIGTERM:\n{proc.output()[-2000:]}"


def test_web_stops_on_sigterm_with_the_broker_and_database_gone(private_stack: PrivateStack) -> None:
    port = free_port()
    proc = Process("shutdown-web", {**private_stack.env, "WEB_PORT": str(port)}, "web")
    proc.wait_for_log('"web_starting"', timeout=60)
    time.sleep(1)
    private_stack.kill_kafka()
    private_stack.stop_pg("immediate")
    try:
        time.sleep(2)
        elapsed = _sigterm_seconds(proc)
    finally:
        private_stack.start_pg()
        private_stack.start_kafka()
    assert elapsed < GRACE_SECONDS, f"web took {elapsed:.1f}s to stop after SIGTERM:\n{proc.output()[-2000:]}"


@pytest.mark.parametrize("command", ["worker", "web"])
def test_port_in_use_is_one_clear_line(private_stack: PrivateStack, command: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**private_stack.env, "METRICS_PORT": str(port), "WEB_PORT": str(port)}
        result = subprocess.run([SPACEMUSIC, command], env=env, capture_output=True, text=True, timeout=90)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and str(port) in errors[0] and "in use" in errors[0], result.stderr[-2000:]


def test_private_stack_still_serves(private_stack: PrivateStack) -> None:
    """After the shutdown tests brought everything back, the stack answers again."""
    run_cli(private_stack.env, "topics", "list")

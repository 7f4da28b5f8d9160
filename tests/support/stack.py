"""Helpers for tests that run against the real local stack (see tests/conftest.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
SPACEMUSIC = str(REPO / ".venv" / "bin" / "spacemusic")


def dev_env() -> dict[str, str]:
    """infra/local/dev.env, with anything already in the environment taking precedence."""
    values: dict[str, str] = {}
    for line in (REPO / "infra" / "local" / "dev.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key] = value
    return {**values, **{k: v for k, v in os.environ.items() if k in values}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(env: dict[str, str], *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run([SPACEMUSIC, *args], env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"spacemusic {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


class Process:
    """A `spacemusic` subprocess with its output in test-artifacts/<name>.log."""

    def __init__(self, name: str, env: dict[str, str], *args: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.name = name
        self.log_path = ARTIFACTS / f"{name}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [SPACEMUSIC, *args], env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, needle: str, timeout: float = 60, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.output().count(needle) >= count:
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}):\n{self.output()[-3000:]}")
            time.sleep(0.2)
        raise AssertionError(f"{self.name}: no {needle!r} within {timeout}s:\n{self.output()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()


async def eventually(check: Callable[[], object], timeout: float = 30, interval: float = 0.2, what: str = "") -> object:
    """Poll an (async or sync) check until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: object = None
    while asyncio.get_running_loop().time() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or check}; last={last!r}")


def admin_headers(settings: object) -> dict[str, str]:
    """A dev-IdP admin token: the test session acts as an operator unless it says otherwise."""
    from web.auth import ADMIN, mint_token

    return {"Authorization": f"Bearer {mint_token(settings, 'test|admin', [ADMIN])}"}  # type: ignore[arg-type]

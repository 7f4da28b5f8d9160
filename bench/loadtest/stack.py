"""Start SpaceMusic processes of our own on the running local stack, for benches.

A fresh database and topic namespace per run (``tests.conftest.prepare_stack_env``), web
and worker processes on free ports, logs in ``test-artifacts/``; everything is stopped and
dropped on exit. The local stack itself (``make stack-up``) is never touched.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.environments import drop_stack_env, prepare_stack_env  # noqa: E402
from tests.support.stack import Process, free_port  # noqa: E402


@dataclass
class Stack:
    name: str
    env: dict[str, str]
    base_url: str
    processes: list[Process]

    def token(self, permissions: Sequence[str] | None = None, subject: str = "bench|admin", ttl: int = 4 * 3600) -> str:
        from infra.settings import Settings
        from web.auth import ADMIN, mint_token

        return mint_token(Settings.from_env(self.env), subject, list(permissions or [ADMIN]), ttl=ttl)

    def headers(self, permissions: Sequence[str] | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(permissions)}"}


@contextmanager
def spacemusic_stack(
    prefix: str, roles: Sequence[str] = ("pipeline",), web: bool = True, **overrides: str
) -> Iterator[Stack]:
    name = f"{prefix}{uuid.uuid4().hex[:6]}"
    port = free_port()
    env = prepare_stack_env(name, WEB_PORT=str(port), **overrides)
    processes: list[Process] = []
    try:
        for role in roles:
            processes.append(Process(f"{name}-{role}", env, "worker", "--role", role))
        if web:
            processes.append(Process(f"{name}-web", env, "web"))
        for process in processes:
            if process.name.endswith("-web"):
                process.wait_for_log('"deal_feed_listening"', timeout=90)
            else:
                process.wait_for_log('"partitions_assigned"', timeout=120)
        yield Stack(name, env, f"http://127.0.0.1:{port}", processes)
    finally:
        for process in processes:
            process.stop()
        drop_stack_env(env)


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())

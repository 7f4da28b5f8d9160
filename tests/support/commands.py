"""Running `spacemusic` commands in their own process and reading what they print."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from tests.support.deals import _is, deal_status, offer_event
from tests.support.kafka import end_offsets, read_all
from tests.support.stack import REPO, eventually

PYTHON = str(REPO / ".venv" / "bin" / "python")


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str

    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


async def run_command(env: dict[str, str], command: str, *args: str, timeout: float = 120) -> Ran:
    """Run a click command of bootstrap.commands.<module> in its own process, as
    `spacemusic <command>` would (stdout and stderr kept apart)."""
    module, name = {
        "replay": ("replay", "replay"),
        "deadletters": ("deadletters", "deadletters"),
        "deal": ("deal", "deal"),
    }[command]
    code = f"from bootstrap.commands.{module} import {name}; {name}(prog_name='spacemusic {command}')"
    proc = await asyncio.create_subprocess_exec(
        PYTHON,
        "-c",
        code,
        *args,
        env=env,
        cwd=str(REPO),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())


def ok(ran: Ran) -> Ran:
    assert ran.returncode == 0, f"exit {ran.returncode}\nstdout:\n{ran.stdout[-3000:]}\nstderr:\n{ran.stderr[-3000:]}"
    return ran


async def contents(settings, topic: str) -> list:
    """Everything in a topic: every offset below the end offsets taken first (a single
    empty poll must not pass for an empty topic)."""
    expected = sum((await end_offsets(settings, topic)).values())
    for _ in range(10):
        records = await read_all(settings, topic)
        if len(records) >= expected:
            return records
    raise AssertionError(f"could not read the {expected} record(s) of {topic}")


async def start_offer(publisher) -> str:
    """An offer enters the pipeline the way the API puts it there: an offer.created event."""
    event = offer_event()
    await publisher.publish(event)
    return event.offer_id


async def termsheet_issued(engine, offer_id: str) -> None:
    await eventually(lambda: _is(deal_status(engine, offer_id), "termsheet_issued"), timeout=60, what="term sheet")

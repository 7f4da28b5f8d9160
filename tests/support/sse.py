"""A minimal SSE reader for tests (parses the text/event-stream wire format)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass
class SseEvent:
    event: str
    id: str | None
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


class SseStream:
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self._buffer: list[str] = []

    async def next(self, timeout: float = 30) -> SseEvent:
        """The next event (comments such as heartbeats are skipped)."""
        event, event_id, data = "message", None, []
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.response.content.readline()
                if not raw:
                    raise ConnectionError("stream closed")
                line = raw.decode().rstrip("\r\n")
                if line == "":
                    if data:
                        return SseEvent(event, event_id, "\n".join(data))
                    event, event_id, data = "message", None, []
                    continue
                if line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "event":
                    event = value
                elif name == "id":
                    event_id = value
                elif name == "data":
                    data.append(value)

    async def next_deal(self, predicate=lambda change: True, timeout: float = 30) -> dict[str, Any]:  # type: ignore[no-untyped-def]
        async with asyncio.timeout(timeout):
            while True:
                ev = await self.next(timeout)
                if ev.event == "deal":
                    change = ev.json()
                    assert ev.id == str(change["seq"])
                    if predicate(change):
                        return change

"""A TCP proxy that can cut and refuse connections (the admin page's reconnection tests)."""

from __future__ import annotations

import asyncio
import contextlib


class FlakyProxy:
    """Forwards the browser's TCP connections to the app. ``cut()`` aborts every open
    connection (the SSE stream included) and, while ``down``, new connections are answered
    with a bare 503, so the page sees a dropped network and then a failing server."""

    DOWN_RESPONSE = (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n"
        b"Connection: close\r\n\r\nproxy: down\n"
    )

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.down = False
        self.refused = 0
        self._server: asyncio.AbstractServer | None = None
        self._transports: set[asyncio.BaseTransport] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def cut(self) -> None:
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._tasks:
            # Aborted transports end every pipe; the handlers then return by themselves.
            await asyncio.wait(list(self._tasks), timeout=5)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            if self.down:
                self.refused += 1
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
                    writer.write(self.DOWN_RESPONSE)
                    await writer.drain()
                writer.close()
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                writer.close()
                return
            self._transports.update({writer.transport, up_writer.transport})
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
            self._transports.difference_update({writer.transport, up_writer.transport})
        finally:
            if task is not None:
                self._tasks.discard(task)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

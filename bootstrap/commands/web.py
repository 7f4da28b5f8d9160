"""`spacemusic web`: serve the HTTP API, the SSE deals stream and the admin page."""

from __future__ import annotations

import asyncio
import errno
import os
import socket

import click
from aiohttp import web

from bootstrap.commands.support import load_settings, run
from infra.gc_tuning import tune_gc
from infra.logging import get_logger
from infra.readiness import wait_for_dependencies
from web.app import create_app

log = get_logger(__name__)


def _port_error(variable: str, host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"{variable}: {host}:{port} is already in use (another process listens there); choose a free port"
    return f"{variable}: cannot listen on {host}:{port}: {exc.strerror or exc}"


@click.command("web")
@click.option("--host", default=None, help="Bind address (default WEB_HOST, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default WEB_PORT, 8080).")
def web_command(host: str | None, port: int | None) -> None:
    """Serve the HTTP API, the SSE deals stream and the admin page."""
    settings = load_settings()
    # Before waiting for the dependencies (which may take minutes): a port that is taken is
    # an operator's mistake to report at once.
    _check_port_free(host or settings.web_host, port or settings.web_port)
    run(wait_for_dependencies(settings))
    loop = _event_loop()
    log.info("web_starting", host=host or settings.web_host, port=port or settings.web_port, event_loop=loop)
    app = create_app(settings)
    tune_gc(settings.gc_gen0_threshold)
    try:
        web.run_app(
            app,
            host=host or settings.web_host,
            port=port or settings.web_port,
            access_log=None,
            print=None,
            shutdown_timeout=5,
        )
    except OSError as exc:  # the bind: one clear line instead of a traceback
        if exc.errno not in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
            raise
        raise click.ClickException(
            _port_error("WEB_PORT", host or settings.web_host, port or settings.web_port, exc)
        ) from None


def _check_port_free(host: str, port: int) -> None:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise click.ClickException(_port_error("WEB_PORT", host, port, exc)) from None


def _event_loop() -> str:
    """The standard asyncio loop unless ``WEB_EVENT_LOOP=uvloop``. Measured with
    bench/sse_fanout.py (docs/performance.md): uvloop made the SSE fan-out 2.7x more
    expensive (315 vs 118 ms of CPU per update to 2,000 streams: one timer per stream per
    event is slow under uvloop), and gained nothing measurable on the JSON routes here."""
    if os.environ.get("WEB_EVENT_LOOP", "asyncio") != "uvloop":
        return "asyncio"
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"

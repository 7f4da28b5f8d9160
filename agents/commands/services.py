"""Long-running processes: the Faust worker and the web server."""

from __future__ import annotations

import asyncio

import click
import faust
from aiohttp import web

from agents.app import create_app
from agents.commands.common import load_settings, run
from infra.avro import RegistryCodec, SchemaCatalog, new_registry_client
from infra.db import wait_for_postgres
from infra.kafka import all_logical_topics, wait_for_kafka
from infra.logging import get_logger
from infra.settings import Settings

log = get_logger(__name__)


async def wait_for_dependencies(settings: Settings) -> None:
    """Keep retrying Postgres, Kafka (with our topics) and the registry instead of dying."""
    timeout = settings.startup_retry_seconds
    await wait_for_postgres(settings, timeout)
    await wait_for_kafka(settings, timeout, topics=all_logical_topics())
    codec = RegistryCodec(
        new_registry_client(settings.schema_registry_url),
        SchemaCatalog.load(settings.schema_dir),
        settings.topic_namespace,
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            await codec.register_all()
            return
        except Exception as exc:  # noqa: BLE001 - registry not there yet
            if loop.time() >= deadline:
                raise
            log.warning("registry_not_ready", error=type(exc).__name__)
            await asyncio.sleep(2)


@click.command()
@click.option("--loglevel", default="info", show_default=True, help="Faust worker log level.")
def worker(loglevel: str) -> None:
    """Run the Faust stream processors (valuation, projector, ...).

    Waits for Postgres, Kafka (and the offer.* topics) and the schema registry first,
    retrying with backoff up to STARTUP_RETRY_SECONDS, so a worker started before its
    dependencies simply starts working once they are up.
    """
    settings = load_settings()
    log.info("worker_starting", **settings.safe_summary())
    run(wait_for_dependencies(settings))
    app = create_app(settings)
    asyncio.set_event_loop(asyncio.new_event_loop())
    faust.Worker(app, loglevel=loglevel, quiet=True, override_logging=False).execute_from_commandline()


@click.command("web")
@click.option("--host", default=None, help="Bind address (default WEB_HOST, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default WEB_PORT, 8080).")
def web_command(host: str | None, port: int | None) -> None:
    """Serve the HTTP API, the SSE deals stream and the admin page."""
    from web.app import create_app as create_web_app

    settings = load_settings()
    run(wait_for_dependencies(settings))
    log.info("web_starting", host=host or settings.web_host, port=port or settings.web_port)
    web.run_app(
        create_web_app(settings),
        host=host or settings.web_host,
        port=port or settings.web_port,
        access_log=None,
        print=None,
        shutdown_timeout=5,
    )


@click.command("faust", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def faust_cli(ctx: click.Context) -> None:
    """Faust's own CLI for this app (agents, tables, send, ...), e.g. `spacemusic faust agents`."""
    import sys

    settings = load_settings()
    app = create_app(settings)
    sys.argv = ["spacemusic faust", *ctx.args]
    app.main()

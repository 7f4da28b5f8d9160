"""The Faust worker process (and Faust's own CLI for this app)."""

from __future__ import annotations

import asyncio

import click
import faust
from prometheus_client import start_http_server

from agents.app import ROLES, create_app
from bootstrap.commands.support import load_settings, run
from infra.logging import get_logger
from infra.readiness import wait_for_dependencies

log = get_logger(__name__)


@click.command()
@click.option("--loglevel", default="info", show_default=True, help="Faust worker log level.")
@click.option(
    "--role",
    type=click.Choice(sorted(ROLES)),
    default="all",
    show_default=True,
    help="Which agents to run: pipeline (valuation, projector), payouts, documents, or all of them.",
)
def worker(loglevel: str, role: str) -> None:
    """Run the Faust stream processors (valuation, projector, ...).

    Waits for Postgres, Kafka (and the offer.* topics) and the schema registry first,
    retrying with backoff up to STARTUP_RETRY_SECONDS, so a worker started before its
    dependencies simply starts working once they are up.
    """
    settings = load_settings()
    log.info("worker_starting", role=role, **settings.safe_summary())
    run(wait_for_dependencies(settings))
    if settings.metrics_port:
        # The worker has no web server of its own; Prometheus scrapes this one.
        start_http_server(settings.metrics_port, addr=settings.metrics_host)
        log.info("metrics_listening", host=settings.metrics_host, port=settings.metrics_port)
    app = create_app(settings, role)
    asyncio.set_event_loop(asyncio.new_event_loop())
    faust.Worker(app, loglevel=loglevel, quiet=True, override_logging=False).execute_from_commandline()


@click.command("faust", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def faust_cli(ctx: click.Context) -> None:
    """Faust's own CLI for this app (agents, tables, send, ...), e.g. `spacemusic faust agents`."""
    import sys

    settings = load_settings()
    app = create_app(settings)
    sys.argv = ["spacemusic faust", *ctx.args]
    app.main()

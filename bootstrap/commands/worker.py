"""The Faust worker process (and Faust's own CLI for this app)."""

from __future__ import annotations

import asyncio
import errno
import os
import sys
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import click
import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import select

from agents.app import ROLES, SpaceMusicApp, create_app
from bootstrap.commands.support import load_settings, run
from infra.consumer_lag import ConsumerLagExporter, LagMeasurement
from infra.gc_tuning import tune_gc
from infra.log_gate import kafka_client_reachable
from infra.logging import get_logger
from infra.metrics import OFFER_TIME_TO_VALUED
from infra.progress import ProgressTracker
from infra.readiness import wait_for_dependencies
from projections.tables import offers
from state.payout_metrics import export as export_parked_payouts
from state.payout_metrics import parked_payouts

log = get_logger(__name__)


def _port_error(variable: str, host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"{variable}: {host}:{port} is already in use (another process listens there); choose a free port"
    return f"{variable}: cannot listen on {host}:{port}: {exc.strerror or exc}"


# The Faust event loop beats this often; /healthz fails once it has missed STALL_AFTER
# seconds of beats, so a wedged loop (a blocking call, a deadlock) gets the pod restarted.
HEARTBEAT_SECONDS = 5.0
STALL_AFTER_SECONDS = 60.0
PARKED_INTERVAL_SECONDS = 30.0
VALUED_INTERVAL_SECONDS = 10.0


# How often the worker asks a broker for metadata: /readyz turns 503 within about that long
# after the broker goes away (the consumer itself just keeps reconnecting, silently).
BROKER_PROBE_SECONDS = 2.0


def lag_measurement_gap(interval: float) -> float:
    """How far apart two lag measurements may be before the progress clocks restart: a few
    missed rounds (a collection retries for up to ~10 s), never less than a minute."""
    return max(4 * interval, 60.0)


class WorkerHealth:
    """What the probes read. Written from the Faust loop, read from the HTTP thread."""

    def __init__(
        self, stall_ready_seconds: float = 120.0, stall_live_seconds: float = 600.0, lag_interval: float = 15.0
    ) -> None:
        self.started = time.monotonic()
        self.last_beat: float | None = None  # None until the Faust app is running
        self.assigned_once = False
        self.broker_reachable = True  # until a probe says otherwise
        # Progress on the partitions this worker owns: fed on the Faust loop; the probe thread
        # reads only the two verdicts, each replaced whole (an atomic assignment, no lock).
        self.progress = ProgressTracker(stall_ready_seconds, max_gap=lag_measurement_gap(lag_interval))
        self.stall_live_seconds = stall_live_seconds
        self.progress_ready: tuple[bool, str] = (True, "ok")
        self.progress_live: tuple[bool, str] = (True, "ok")

    def beat(self) -> None:
        self.last_beat = time.monotonic()

    def live(self) -> tuple[bool, str]:
        # Before the app runs the process is waiting for its dependencies: alive (the
        # startup probe gives that STARTUP_RETRY_SECONDS), just not ready.
        if self.last_beat is None:
            return True, "starting"
        stalled = time.monotonic() - self.last_beat
        if stalled > STALL_AFTER_SECONDS:
            return False, f"event loop stalled for {stalled:.0f}s"
        # The loop beats but an agent is wedged: a restart redelivers what it holds.
        ok, why = self.progress_live
        if not ok:
            return False, why
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        live, why = self.live()
        if not live:
            return False, why
        if self.last_beat is None:
            return False, "waiting for dependencies"
        # A replica beyond the partition count gets an empty assignment and is still ready:
        # it is a warm standby the group hands partitions to when another member leaves.
        if not self.assigned_once:
            return False, "waiting for the consumer group assignment"
        if not self.broker_reachable:
            return False, "no Kafka broker answers"
        ok, why = self.progress_ready
        if not ok:
            return False, why
        return True, "ok"

    def progress_measured(self, measurement: LagMeasurement, assigned: Iterable[Any]) -> None:
        """Feed one lag measurement; the log says when a partition stalls and when it moves
        again, once per episode (the probes only read the verdicts computed here)."""
        changes = self.progress.observe(measurement.committed, measurement.lag, assigned, measurement.measured_at)
        for stall in changes.stalled:
            log.warning(
                "partition_stalled",
                topic=stall.partition.topic,
                partition=stall.partition.partition,
                lag=stall.lag,
                seconds=round(stall.seconds),
                reason=stall.describe(),
            )
        for tp, why in changes.recovered:
            log.info("partition_progressing", topic=tp.topic, partition=tp.partition, reason=why)
        self.progress_ready = self.progress.verdict()
        live = self.progress.verdict(self.stall_live_seconds)
        if self.progress_live[0] and not live[0]:  # once: the restart that follows ends the episode
            log.error("worker_wedged", reason=live[1], restart_after_seconds=self.stall_live_seconds)
        self.progress_live = live

    def broker_probed(self, reachable: bool) -> None:
        """Record a broker probe; the log says when reachability changes, once per outage."""
        if reachable != self.broker_reachable:
            (log.info if reachable else log.warning)("broker_reachable" if reachable else "broker_unreachable")
        if reachable:
            kafka_client_reachable()  # ends the Kafka client's log outage once it is quiet
        self.broker_reachable = reachable


def serve_probes(health: WorkerHealth, host: str, port: int) -> ThreadingHTTPServer:
    """/healthz, /readyz and /metrics on one port, in a daemon thread (the Faust loop owns
    the main thread and may be the thing that is stuck)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/readyz"):
                ok, why = (health.live if path == "/healthz" else health.ready)()
                self._send(200 if ok else 503, (why + "\n").encode(), "text/plain; charset=utf-8")
            else:
                self._send(404, b"not found\n", "text/plain; charset=utf-8")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: no access log
            return

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="probes", daemon=True).start()
    return server


def attach_health(app: SpaceMusicApp, health: WorkerHealth, role: str) -> None:
    """Heartbeat, assignment tracking and the periodic exporters, on the Faust loop."""

    @app.timer(interval=HEARTBEAT_SECONDS)
    async def _heartbeat() -> None:
        health.beat()

    @app.on_partitions_assigned.connect
    async def _assigned(sender: object, assigned: set[Any], **_: Any) -> None:
        health.beat()
        health.assigned_once = True

    @app.timer(interval=BROKER_PROBE_SECONDS)
    async def _broker_probe() -> None:
        try:
            publisher = app.resources.publisher
        except RuntimeError:  # resources are built when the app starts
            return
        health.broker_probed(await publisher.ping(timeout=BROKER_PROBE_SECONDS))

    topics = {t for agent in app.agents.values() for t in getattr(agent.channel, "topics", ())}
    interval = app.settings.worker_lag_interval_seconds
    lag = ConsumerLagExporter(app.settings.kafka_bootstrap_servers, app.conf.id, topics, interval)

    def _measured(measurement: LagMeasurement) -> None:
        health.progress_measured(measurement, _assignment(app))

    @app.task
    async def _consumer_lag() -> None:
        await lag.run(_measured)

    if "valuation" in ROLES[role]:

        @app.task
        async def _time_to_valued() -> None:
            since = datetime.now(UTC)  # from start: history was observed by earlier processes
            while True:
                try:
                    since = await observe_time_to_valued(app.resources.engine, since)
                except Exception as exc:
                    log.warning("time_to_valued_failed", error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(VALUED_INTERVAL_SECONDS)

    if "payouts" in ROLES[role]:

        @app.task
        async def _parked_payouts() -> None:
            # A task, not a timer: the first measurement is taken at start, not 30 s later.
            while True:
                try:
                    export_parked_payouts(await parked_payouts(app.resources.engine))
                except Exception as exc:  # the database may be briefly away; retried next round
                    log.warning("parked_payouts_failed", error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(PARKED_INTERVAL_SECONDS)


def _assignment(app: SpaceMusicApp) -> set[Any]:
    """The partitions this member owns now; none while the consumer is not running."""
    try:
        return set(app.consumer.assignment())
    except Exception:  # not started yet, or stopping: nothing is ours to judge
        return set()


async def observe_time_to_valued(engine: Any, since: datetime) -> datetime:
    """Observe created->valued for offers valued after ``since``; returns the new watermark.

    Measured from the projection (created_at is the POST's offer.created, valued_at the
    valuation's time) because that is what a creator sees. Every pipeline replica observes
    the same offers: quantiles are unaffected, rates are multiplied by the replica count.
    """
    query = (
        select(offers.c.created_at, offers.c.valued_at)
        .where(offers.c.valued_at > since, offers.c.created_at.is_not(None))
        .order_by(offers.c.valued_at)
        .limit(5000)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    for created_at, valued_at in rows:
        OFFER_TIME_TO_VALUED.observe(max(0.0, (valued_at - created_at).total_seconds()))
        since = valued_at
    return since


# SIGTERM must stop the process within a Kubernetes grace period (30 s by default) even when
# the broker or the database is gone: Faust's graceful stop (commit, leave the group, flush
# the producer) waits on the broker and can hang. Nothing is lost by cutting it short:
# whatever was not committed is redelivered and every handler is idempotent.
SHUTDOWN_GRACE_SECONDS = 15.0


def _start_shutdown_watchdog(seconds: float) -> None:
    def expire() -> None:
        time.sleep(seconds)
        log.error("shutdown_forced", reason=f"graceful stop not done after {seconds:.0f}s")
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001, S110 - exiting anyway
                pass
        os._exit(1)

    threading.Thread(target=expire, name="shutdown-watchdog", daemon=True).start()


class BoundedShutdownWorker(faust.Worker):
    """Faust's worker, with a watchdog started by the first SIGTERM/SIGINT."""

    _watchdog = False

    def _arm(self) -> None:
        if not self._watchdog:
            self._watchdog = True
            _start_shutdown_watchdog(SHUTDOWN_GRACE_SECONDS)

    def _on_sigterm(self) -> None:
        self._arm()
        super()._on_sigterm()

    def _on_sigint(self) -> None:
        self._arm()
        super()._on_sigint()


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
    dependencies simply starts working once they are up. With METRICS_PORT set, serves
    /healthz (alive), /readyz (consuming, and making progress on its partitions) and /metrics
    on that port from the start.
    """
    settings = load_settings()
    log.info("worker_starting", role=role, **settings.safe_summary())
    health = WorkerHealth(
        settings.worker_stall_ready_seconds, settings.worker_stall_live_seconds, settings.worker_lag_interval_seconds
    )
    if settings.metrics_port:
        # Listening before the dependency wait so the startup probe sees a live process.
        try:
            serve_probes(health, settings.metrics_host, settings.metrics_port)
        except OSError as exc:  # one clear line instead of a traceback (e.g. the port is taken)
            raise click.ClickException(
                _port_error("METRICS_PORT", settings.metrics_host, settings.metrics_port, exc)
            ) from None
        log.info("metrics_listening", host=settings.metrics_host, port=settings.metrics_port)
    run(wait_for_dependencies(settings))
    app = create_app(settings, role)
    attach_health(app, health, role)
    tune_gc(settings.gc_gen0_threshold)
    asyncio.set_event_loop(asyncio.new_event_loop())
    BoundedShutdownWorker(app, loglevel=loglevel, quiet=True, override_logging=False).execute_from_commandline()


@click.command("faust", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def faust_cli(ctx: click.Context) -> None:
    """Faust's own CLI for this app (agents, tables, send, ...), e.g. `spacemusic faust agents`."""
    import sys

    settings = load_settings()
    app = create_app(settings)
    sys.argv = ["spacemusic faust", *ctx.args]
    app.main()

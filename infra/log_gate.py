"""Once per outage for the Kafka client's own loggers (``aiokafka.*``, ``kafka.*``).

While a broker is down aiokafka logs an ERROR on every reconnect, metadata refresh, fetch
and coordinator lookup: hundreds of lines a minute per process, saying the same thing (the
fault soak counted ~2,000 in one 26 s outage in one worker). The same rule as
:mod:`infra.retry` applies here: the first error of an outage passes unchanged (and the
first of each other kind: a fetch failing is not a metadata refresh failing), repeats are
counted, not printed, with one reminder a minute while it lasts, and one
``kafka_client_recovered`` line when it is over: when the worker's broker probe reaches a
broker and the client has been quiet for a few seconds (:func:`kafka_client_reachable`) or,
in a process without that probe (web), after ``quiet_seconds`` without a new error.

A handler filter (installed by :func:`infra.logging.configure_logging`), not a logger
filter: a logger's filters only see records logged to that exact logger, and aiokafka logs
to a dozen children of ``aiokafka``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

import structlog

log = structlog.stdlib.get_logger(__name__)

QUIET_SECONDS = 30.0
REMIND_EVERY_SECONDS = 60.0


class ClientOutageGate(logging.Filter):
    """Lets the first WARNING+ record of a client library's outage through, then one a minute."""

    def __init__(
        self,
        prefixes: tuple[str, ...],
        what: str,
        *,
        quiet_seconds: float = QUIET_SECONDS,
        remind_every: float = REMIND_EVERY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        timers: bool = True,
    ) -> None:
        super().__init__()
        self.prefixes = prefixes
        self.what = what
        self.quiet_seconds = quiet_seconds
        self.remind_every = remind_every
        self._clock = clock
        self._timers = timers  # False in unit tests: they end the quiet period by hand
        self._lock = threading.Lock()
        self._started: float | None = None
        self._last: float = 0.0
        self._reminded: float = 0.0
        self._suppressed: Counter[str] = Counter()
        self._shown: set[tuple[str, str]] = set()
        self._timer: threading.Timer | None = None

    def _ours(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING and any(
            record.name == p or record.name.startswith(p + ".") for p in self.prefixes
        )

    @property
    def in_outage(self) -> bool:
        return self._started is not None

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._ours(record):
            return True
        now = self._clock()
        with self._lock:
            if self._started is not None and now - self._last > self.quiet_seconds:
                ended = self._end_locked(now)  # a quiet gap the timer did not see: a new outage
            else:
                ended = None
            kind = (record.name, str(record.msg))
            if self._started is None:
                self._started = self._last = self._reminded = now
                self._shown = {kind}
                self._arm_locked()
                passes, still = True, 0
            else:
                self._last = now
                if kind not in self._shown:  # a new kind of error in this outage: shown once
                    self._shown.add(kind)
                    passes, still = True, 0
                elif now - self._reminded >= self.remind_every:
                    self._reminded = now
                    passes, still = True, sum(self._suppressed.values())
                else:
                    self._suppressed[record.name] += 1
                    passes, still = False, 0
        if ended is not None:
            self._log_recovered(*ended)
        if passes and still:
            record.msg = f"{record.getMessage()} (still failing; {still} similar lines suppressed so far)"
            record.args = None
        return passes

    def recovered(self, settle_seconds: float = 0.0) -> None:
        """The dependency answers: close the outage (one summary line) once the client has
        been quiet for ``settle_seconds``, so the first error of the next outage is shown."""
        with self._lock:
            now = self._clock()
            quiet = self._started is not None and now - self._last >= settle_seconds
            ended = self._end_locked(now) if quiet else None
        if ended is not None:
            self._log_recovered(*ended)

    def _end_locked(self, now: float) -> tuple[float, Counter[str]]:
        assert self._started is not None
        duration, suppressed = self._last - self._started, self._suppressed
        self._started, self._suppressed = None, Counter()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return duration, suppressed

    def _arm_locked(self) -> None:
        if not self._timers:
            return
        timer = threading.Timer(self.quiet_seconds, self._on_quiet)
        timer.daemon = True
        self._timer = timer
        timer.start()

    def _on_quiet(self) -> None:
        with self._lock:
            if self._started is None:
                return
            if self._clock() - self._last > self.quiet_seconds:
                ended: tuple[float, Counter[str]] | None = self._end_locked(self._clock())
            else:
                ended = None
                self._timer = None
                self._arm_locked()
        if ended is not None:
            self._log_recovered(*ended)

    def _log_recovered(self, errors_seconds: float, suppressed: Counter[str]) -> None:
        log.info(
            f"{self.what}_recovered",
            errors_seconds=round(errors_seconds, 1),
            suppressed_lines=sum(suppressed.values()),
            suppressed_by_logger=dict(suppressed.most_common(5)),
        )


# The one gate for the Kafka client in this process (configure_logging installs it).
KAFKA_CLIENT_GATE = ClientOutageGate(("aiokafka", "kafka"), "kafka_client")
# A broker answers and the client has said nothing for this long: its outage is over.
SETTLE_SECONDS = 5.0


def kafka_client_reachable() -> None:
    """Called on every probe that reached a broker (the worker probes every 2 s)."""
    KAFKA_CLIENT_GATE.recovered(SETTLE_SECONDS)

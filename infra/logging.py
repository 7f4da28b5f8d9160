"""structlog JSON logging for every process, with context (request/correlation ids) bound
through contextvars. Standard-library loggers (aiohttp, faust, aiokafka) are routed through
the same JSON renderer so a process never mixes formats."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import TextIO

import structlog

from infra.log_gate import KAFKA_CLIENT_GATE

_SENSITIVE_KEYS = frozenset(
    {
        "authorization",
        "token",
        "password",
        "secret",
        "iban",
        "account_number",
        "holder_name",
        "wise_token",
        "stripe_api_key",
        "cookie",
        "routing_number",
        "details",
    }
)


def _scrub(_: object, __: str, event_dict: dict[str, object]) -> dict[str, object]:
    """Last line of defence: secrets and payout details never reach a log line."""
    for key in list(event_dict):
        if key.lower() in _SENSITIVE_KEYS:
            event_dict[key] = "[redacted]"
    return event_dict


def configure_logging(level: str = "INFO", stream: TextIO | None = None) -> None:
    """JSON logs to stdout, or to ``stream`` (commands whose stdout is data use stderr)."""
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _scrub,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    )
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(formatter)
    # The Kafka client logs every retry of an outage; the gate keeps one line per outage.
    handler.addFilter(KAFKA_CLIENT_GATE)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's own access log would duplicate our access-log middleware line.
    logging.getLogger("aiohttp.access").disabled = True
    for noisy in ("aiokafka", "kafka", "faust", "mode", "botocore", "aiobotocore", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)


# --- correlation: one deal followed across processes -----------------------------------------

MAX_CORRELATION_ID = 128
CORRELATION_HEADER = "X-Correlation-ID"


def correlation_id_from(header: str | None, request_id: str) -> str:
    """The correlation id of an HTTP request: the caller's ``X-Correlation-ID`` (printable,
    at most 128 characters), else the request id. The same value goes into the events the
    request publishes (their envelope and Kafka headers) and into every log line."""
    if header and header.isprintable() and len(header) <= MAX_CORRELATION_ID:
        return header
    return request_id


def bind_request_context(request_id: str, correlation_id: str) -> None:
    """Binds both ids for the rest of the request (every log line of web handlers)."""
    structlog.contextvars.bind_contextvars(request_id=request_id, correlation_id=correlation_id)


def _field(event: object, name: str) -> object:
    if isinstance(event, dict):
        return event.get(name)
    return getattr(event, name, None)


def _event_fields(event: object) -> dict[str, str]:
    return {
        key: str(value)
        for key in ("correlation_id", "offer_id", "event_id")
        if (value := _field(event, key)) not in (None, "")
    }


def bind_event_context(event: object) -> dict[str, str]:
    """Binds an event's ``correlation_id``, ``offer_id`` and ``event_id`` (an event object or a
    decoded dict) for every log line while a worker handles it; returns what was bound.

    Call it at the start of handling each message, after decoding (and ``unbind_event_context``
    or ``structlog.contextvars.clear_contextvars()`` after it), or use :func:`event_log_context`."""
    bound = _event_fields(event)
    structlog.contextvars.bind_contextvars(**bound)
    return bound


def unbind_event_context() -> None:
    structlog.contextvars.unbind_contextvars("correlation_id", "offer_id", "event_id")


@contextlib.contextmanager
def event_log_context(event: object) -> Iterator[dict[str, str]]:
    """``with event_log_context(event): ...``: bound for the block, restored after it."""
    bound = _event_fields(event)
    with structlog.contextvars.bound_contextvars(**bound):
        yield bound

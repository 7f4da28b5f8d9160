"""structlog JSON logging for every process, with context (request/correlation ids) bound
through contextvars. Standard-library loggers (aiohttp, faust, aiokafka) are routed through
the same JSON renderer so a process never mixes formats."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

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
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's own access log would duplicate our access-log middleware line.
    logging.getLogger("aiohttp.access").disabled = True
    for noisy in ("aiokafka", "kafka", "faust", "mode", "botocore", "aiobotocore", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)

"""JSON error bodies: every 4xx names the field and the problem.

One shape, ``{"error": code, "message": ..., "fields": [{"field", "problem"}]}``, and one
mapping from the errors the layers raise to it (:func:`error_answer`), used by the
``json_errors`` middleware and by the idempotent payout handler, which stores answers.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from infra.db import is_database_outage
from models.errors import Conflict, DomainError, NotFound, RuleViolation

Problem = dict[str, str]


def error_body(error: str, message: str, fields: list[Problem] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": error, "message": message}
    if fields:
        body["fields"] = fields
    return body


def json_error(status: int, error: str, message: str, fields: list[Problem] | None = None) -> web.Response:
    return web.json_response(error_body(error, message, fields), status=status)


def problem(field: str, text: str) -> Problem:
    return {"field": field, "problem": text}


class ValidationFailed(Exception):
    """Input that does not fit the request model: 422 ``validation_failed``."""

    def __init__(self, fields: list[Problem]) -> None:
        super().__init__("; ".join(f"{f['field']}: {f['problem']}" for f in fields))
        self.fields = fields


class Unavailable(Exception):
    """A dependency (broker, registry) could not record a command: 503, retry later."""


def error_answer(exc: Exception) -> tuple[int, dict[str, Any]] | None:
    """(status, body) for the errors that have a 4xx meaning; None for anything else."""
    if isinstance(exc, ValidationFailed):
        return 422, error_body("validation_failed", "the request has invalid fields", exc.fields)
    if isinstance(exc, Unavailable):
        return 503, error_body("unavailable", str(exc))
    if isinstance(exc, NotFound):
        return 404, error_body("not_found", str(exc))
    if isinstance(exc, Conflict):
        return 409, error_body(exc.code, str(exc))
    if isinstance(exc, RuleViolation):
        return 422, error_body("validation_failed", str(exc), [problem(exc.field, exc.problem)])
    if isinstance(exc, DomainError):
        return 422, error_body("validation_failed", str(exc))
    if is_database_outage(exc):
        # Postgres restarting or our connection killed: the request was fine, retry it.
        return 503, error_body("unavailable", "the database is unavailable right now; retry later")
    return None

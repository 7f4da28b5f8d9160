"""JSON error bodies: every 4xx names the field and the problem."""

from __future__ import annotations

from typing import Any

from aiohttp import web


def json_error(status: int, error: str, message: str, fields: list[dict[str, str]] | None = None) -> web.Response:
    body: dict[str, Any] = {"error": error, "message": message}
    if fields:
        body["fields"] = fields
    return web.json_response(body, status=status)


class ValidationFailed(Exception):
    def __init__(self, fields: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{f['field']}: {f['problem']}" for f in fields))
        self.fields = fields

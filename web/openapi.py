"""The OpenAPI 3.1 document of the API, generated from the routes table and its models.

Request bodies and query parameters are the JSON schemas of the very pydantic models the
handlers validate with (web/contract.py); permissions, rate limits and credentials come
from the route declarations (web/routes.py). Nothing here is written by hand but the
endpoints other modules register (/auth/*). Served at ``/openapi.json``; the committed copy
``docs/openapi.json`` is kept equal by a test (regenerate: ``python -m web.openapi``).
"""

from __future__ import annotations

import json
import re
import sys
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from web.contract import ErrorBody, QueryModel

if TYPE_CHECKING:
    from collections.abc import Iterable

    from web.routes import Route

TITLE = "SpaceMusic API"
VERSION = "1"
REF = "#/components/schemas/{model}"
_PARAM = re.compile(r"{(\w+)}")
_PATH_SCHEMAS: dict[str, dict[str, Any]] = {
    "offer_id": {"type": "string", "format": "uuid"},
    "creator_id": {"type": "string", "format": "uuid"},
    "kind": {"type": "string", "enum": ["termsheet", "receipt"]},
}
_HEADERS: dict[str, tuple[bool, str]] = {
    "Idempotency-Key": (True, "1 to 255 characters; a retry with the same key replays the first answer"),
    # A trailing "?" in a route's headers: the same header, optional on that route.
    "Idempotency-Key?": (
        False,
        "optional, 1 to 255 characters; a retry with the same key gets the first answer and creates nothing new",
    ),
    "X-Correlation-ID": (False, "carried by the events this request causes (at most 128 characters)"),
    "Last-Event-ID": (False, "resume after this change sequence"),
    "Stripe-Signature": (True, "t=<unix time>,v1=<HMAC-SHA256 of t.body under the endpoint secret>"),
    "X-Signature-SHA256": (True, "base64 RSA-SHA256 signature of the raw body under Wise's key"),
    "X-Delivery-Id": (False, "Wise's id of this delivery attempt (logged; not the dedup key)"),
}
_ERRORS = {
    400: "the body is missing or not JSON",
    401: "no valid credential",
    403: "the credential lacks the permission",
    404: "no such resource (or not visible to the caller)",
    409: "the command does not fit the resource's state",
    422: "invalid fields (`fields` names each one)",
    413: "the body is larger than the route accepts",
    429: "rate limited; see Retry-After",
    503: "a dependency is unavailable; retry later",
}
# Endpoints registered by web/auth (not the routes table): method, path, summary, cookie ok.
AUTH_ENDPOINTS: tuple[tuple[str, str, str, bool], ...] = (
    ("POST", "/auth/sse-ticket", "A 60 s single-use ticket for EventSource (?ticket=)", True),
    ("POST", "/auth/session", "Exchange a bearer token for the session cookie", False),
    ("POST", "/auth/logout", "Clear the session cookie", True),
)


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _error(status: int) -> dict[str, Any]:
    return {"description": _ERRORS[status], "content": _json({"$ref": REF.format(model="ErrorBody")})}


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional query parameter is absent, never ``null``."""
    options = [s for s in schema.get("anyOf", ()) if s != {"type": "null"}]
    if len(options) == 1:
        schema = {**options[0], **{k: v for k, v in schema.items() if k != "anyOf"}}
    return {k: v for k, v in schema.items() if k != "title" and not (k == "default" and v is None)}


def _query_parameters(model: type[QueryModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=REF)
    required = set(schema.get("required", ()))
    return [
        {"name": name, "in": "query", "required": name in required, "schema": _without_null(prop)}
        for name, prop in schema["properties"].items()
    ]


def _security(route: Route) -> list[dict[str, list[str]]]:
    if route.public:
        return []
    schemes: list[dict[str, list[str]]] = [{"bearer": []}, {"session": []}]
    return [*schemes, {"ticket": []}] if route.ticket else schemes


def _success(route: Route) -> dict[str, Any]:
    if route.content == "application/json":
        content = _json({"type": "object"})
    elif route.content == "application/pdf":
        content = {"application/pdf": {"schema": {"type": "string", "contentMediaType": "application/pdf"}}}
        content.update(_json({"type": "object", "description": "with ?as=url: url, expires_in, sha256"}))
    else:
        content = {route.content: {"schema": {"type": "string"}}}
    return {"description": route.summary, "content": content}


def _parameters(route: Route) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = [
        {"name": n, "in": "path", "required": True, "schema": _PATH_SCHEMAS.get(n, {"type": "string"})}
        for n in _PARAM.findall(route.path)
    ]
    if route.query is not None:
        parameters += _query_parameters(route.query)
    for header in route.headers:
        required, description = _HEADERS[header]
        schema = {"type": "string"}
        name = header.removesuffix("?")
        parameters.append(
            {"name": name, "in": "header", "required": required, "description": description, "schema": schema}
        )
    return parameters


def _error_statuses(route: Route) -> list[int]:
    names = _PARAM.findall(route.path)
    errors = set(route.errors)
    if not route.public:
        errors |= {401, 403}
    if route.body is not None:
        errors |= {400, 422}
    keyed = any(h.removesuffix("?") == "Idempotency-Key" for h in route.headers)
    if route.query is not None or any(n.endswith("_id") for n in names) or keyed:
        errors.add(422)
    if names:
        errors.add(404)
    if route.rate_limit is not None:
        errors.add(429)
    return sorted(errors)


def _operation(route: Route) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": route.name,
        "summary": route.summary,
        "security": _security(route),
        "responses": {str(route.ok): _success(route), **{str(s): _error(s) for s in _error_statuses(route)}},
    }
    if route.permissions:
        operation["x-permissions"] = list(route.permissions)
    if route.rate_limit is not None:
        operation["x-rate-limit"] = {"bucket": route.rate_limit.bucket, "per_minute": route.rate_limit.per_minute}
    parameters = _parameters(route)
    if parameters:
        operation["parameters"] = parameters
    if route.body is not None:
        ref = {"$ref": REF.format(model=route.body.__name__)}
        operation["requestBody"] = {"required": not route.body_optional, "content": _json(ref)}
    return operation


def _auth_operation(path: str, summary: str, cookie: bool) -> dict[str, Any]:
    name = path.strip("/").replace("/", "_").replace("-", "_")
    security = [{"bearer": []}, {"session": []}] if cookie else [{"bearer": []}]
    responses: dict[str, Any] = {"200": {"description": summary, "content": _json({"type": "object"})}}
    if path == "/auth/logout":
        security = []
        responses = {"204": {"description": summary + " (and revoke the server-side session)"}}
    if security:
        responses["401"] = _error(401)
    return {"operationId": name, "summary": summary, "security": security, "responses": responses}


def _schemas(routes: Iterable[Route]) -> dict[str, Any]:
    models: list[type[BaseModel]] = [ErrorBody]
    for route in routes:
        for model in (route.body, route.query):
            if model is not None and model not in models:
                models.append(model)
    _, defs = models_json_schema([(m, "validation") for m in models], ref_template=REF)
    schemas = dict(defs.get("$defs", {}))
    for route in routes:
        if route.query is not None:
            schemas.pop(route.query.__name__, None)  # documented as parameters
    return dict(sorted(schemas.items()))


def openapi_document(routes: Iterable[Route]) -> dict[str, Any]:
    routes = tuple(routes)
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    for method, path, summary, cookie in AUTH_ENDPOINTS:
        paths.setdefault(path, {})[method.lower()] = _auth_operation(path, summary, cookie)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": TITLE,
            "version": VERSION,
            "description": "Advances on music catalogs. Money is always an integer count of minor units.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": _schemas(routes),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "session": {"type": "apiKey", "in": "cookie", "name": "__Host-sm_session"},
                "ticket": {"type": "apiKey", "in": "query", "name": "ticket"},
            },
        },
    }


def rendered(routes: Iterable[Route]) -> str:
    """The document as committed: sorted keys, two-space indent, trailing newline."""
    return json.dumps(openapi_document(routes), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    from web.routes import ROUTES

    sys.stdout.write(rendered(ROUTES))

"""From an HTTP request to a request model (web/contract.py), or to the JSON error shape.

- :func:`read_body`: a missing, oversized or unparseable body is 400 (413); a body that is
  JSON but does not fit the model is 422 ``validation_failed`` naming each field.
- :func:`read_query`: the query string through a :class:`~web.contract.QueryModel`.
- :func:`path_uuid`: a ``{..._id}`` path segment as a canonical UUID (422 otherwise).
"""

from __future__ import annotations

from typing import Any, TypeVar

from aiohttp import web
from pydantic import ValidationError

from web.contract import Problem, QueryModel, RequestModel, _uuid
from web.errors import ValidationFailed, problem

MAX_BODY_BYTES = 256 * 1024
EMPTY_BODY = "request body is empty: send a JSON object"

M = TypeVar("M", bound=RequestModel)
Q = TypeVar("Q", bound=QueryModel)

# Problem text by pydantic error type, for the errors our own validators do not word.
_BY_TYPE = {
    "missing": "is required",
    "extra_forbidden": "is not a known field",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "dict_type": "must be an object",
}
_INTEGER = {"int_type", "int_from_float", "int_parsing", "float_type"}


def field_name(loc: tuple[int | str, ...]) -> str:
    """``("royalty_history", 0, "period")`` -> ``royalty_history[0].period``."""
    name = ""
    for part in loc:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "body"


def _problem_text(error: Any, model: type[RequestModel]) -> str:
    kind, ctx, loc = error["type"], error.get("ctx") or {}, error["loc"]
    last = next((p for p in reversed(loc) if isinstance(p, str)), "")
    if loc and loc[0] in model.FIELD_PROBLEMS:
        return model.FIELD_PROBLEMS[str(loc[0])]
    if not loc and kind in _BY_TYPE:
        return "must be a JSON object"
    if kind.startswith("spacemusic_"):
        return str(error["msg"])
    if kind in _INTEGER:
        if last.endswith("_minor"):
            return "must be an integer number of minor units (no floats or strings)"
        return "must be an integer"
    if kind == "greater_than_equal":
        return "must not be negative" if ctx.get("ge") == 0 else f"must be at least {ctx.get('ge')}"
    if kind == "less_than_equal":
        return f"must be at most {ctx.get('le')}"
    if kind == "too_long":
        return f"must have at most {ctx.get('max_length')} entries"
    if kind in ("enum", "literal_error"):
        return f"must be one of {ctx.get('expected')}"
    return _BY_TYPE.get(kind) or str(error["msg"]).lower()


def problems_of(exc: ValidationError, model: type[RequestModel]) -> list[Problem]:
    found: list[Problem] = []
    for error in exc.errors(include_url=False):
        entry = problem(field_name(tuple(error["loc"])), _problem_text(error, model))
        if entry not in found:
            found.append(entry)
    return found


def _validated(model: type[M], parse: Any) -> M:
    try:
        parsed = parse()
    except ValidationError as exc:
        syntax = [e["msg"] for e in exc.errors(include_url=False) if e["type"] == "json_invalid"]
        if syntax:
            raise web.HTTPBadRequest(text=f"body is not valid JSON: {syntax[0]}") from None
        raise ValidationFailed(problems_of(exc, model)) from None
    late = parsed.problems()
    if late:
        raise ValidationFailed(late)
    return parsed


async def read_body(request: web.Request, model: type[M]) -> M:
    """The body as ``model``: 400 when missing or not JSON, 413 when too large, else 422."""
    if not request.body_exists:
        raise web.HTTPBadRequest(text=EMPTY_BODY)
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY_BYTES, actual_size=request.content_length)
    raw = await request.read()
    if not raw.strip():
        raise web.HTTPBadRequest(text=EMPTY_BODY)
    return _validated(model, lambda: model.model_validate_json(raw))


async def read_optional_body(request: web.Request, model: type[M]) -> M:
    """Like :func:`read_body`, but no body (or an empty one) is the model's defaults."""
    if not request.body_exists:
        return model()
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY_BYTES, actual_size=request.content_length)
    raw = await request.read()
    if not raw.strip():
        return model()
    return _validated(model, lambda: model.model_validate_json(raw))


def read_query(request: web.Request, model: type[Q]) -> Q:
    """The query string as ``model`` (a repeated parameter counts once, the first)."""
    values = {name: request.query.get(name) for name in request.query}
    return _validated(model, lambda: model.model_validate(values))


def path_uuid(request: web.Request, name: str) -> str:
    """A UUID path parameter, canonicalised (upper case and braces accepted)."""
    try:
        return _uuid(request.match_info[name])
    except ValueError:
        raise ValidationFailed([problem(name, "must be a UUID")]) from None

"""The committed OpenAPI document is exactly what the routes table and its models generate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from web.openapi import openapi_document, rendered
from web.routes import ROUTES

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def test_the_committed_document_equals_the_generated_one() -> None:
    assert COMMITTED.read_text() == rendered(ROUTES), "regenerate: python -m web.openapi > docs/openapi.json"


def test_the_document_is_valid_openapi_3_1() -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    document = json.loads(COMMITTED.read_text())
    assert document["openapi"] == "3.1.0"
    validator.validate(document)


def test_every_route_of_the_table_is_documented_with_its_models() -> None:
    paths = openapi_document(ROUTES)["paths"]
    for route in ROUTES:
        operation = paths[route.path][route.method.lower()]
        assert operation["operationId"] == route.name
        assert (operation["security"] == []) is route.public
        if route.body is not None:
            ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            assert ref.endswith(f"/{route.body.__name__}")
        if route.rate_limit is not None:
            assert "429" in operation["responses"]


def test_request_schemas_are_strict() -> None:
    schemas = openapi_document(ROUTES)["components"]["schemas"]
    assert schemas["OfferIn"]["additionalProperties"] is False
    amount = schemas["RoyaltyPeriodIn"]["properties"]["amount_minor"]
    assert amount["type"] == "integer" and amount["minimum"] == 0
    recipient = schemas["PayoutIn"]["properties"]["recipient_id"]
    assert (recipient["type"], recipient["format"]) == ("string", "uuid")

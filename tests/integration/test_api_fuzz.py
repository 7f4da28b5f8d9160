"""Schemathesis against the live web app with the committed OpenAPI document (issue 11,
point 6): every operation fuzzed as an admin and as a creator, and the stateful mode
(sequences of calls following the document's links and Location headers). No 5xx, and every
answer conforms to the document (status code, content type, body schema).

A real `spacemusic web` process on the test session's stack. Bounded and reproducible: a fixed
seed (``FUZZ_SEED``, printed) and ``API_FUZZ_EXAMPLES`` examples per operation (default 15).
The SSE stream never ends by design, so it is left to tests/integration/test_sse.py and the
parser fuzzing (tests/unit/test_parser_fuzz.py).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, seed  # noqa: E402
from hypothesis import settings as fuzz_settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from infra.settings import REPO_ROOT  # noqa: E402
from tests.support.stack import Process, free_port  # noqa: E402
from web.auth import ADMIN, CREATORS_WRITE, DEALS_READ, OFFERS_WRITE, mint_token  # noqa: E402

SEED = int(os.environ.get("FUZZ_SEED", "20261203"))
EXAMPLES = int(os.environ.get("API_FUZZ_EXAMPLES", "15"))
DOCUMENT = REPO_ROOT / "docs" / "openapi.json"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
FUZZ = fuzz_settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
CREATOR = str(uuid.uuid4())

print(f"\nAPI fuzzing: FUZZ_SEED={SEED} API_FUZZ_EXAMPLES={EXAMPLES} document={DOCUMENT.name}")


@pytest.fixture(scope="module")
def live_web(stack_env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    proc = Process("web-fuzz", {**stack_env, "WEB_PORT": str(port)}, "web")
    try:
        proc.wait_for_log('"deal_feed_listening"', timeout=90)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


def _schema(base_url: str):  # type: ignore[no-untyped-def]
    return schemathesis.openapi.from_path(str(DOCUMENT)).exclude(path="/offers/events/deals")


def _headers(settings_obj, role: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    if role == "admin":
        token = mint_token(settings_obj, "fuzz|admin", [ADMIN])
    else:
        token = mint_token(
            settings_obj, f"fuzz|creator-{CREATOR[:8]}", [DEALS_READ, OFFERS_WRITE, CREATORS_WRITE], CREATOR
        )
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("role", ["admin", "creator"])
def test_every_operation_answers_as_documented_and_never_5xx(live_web: str, settings, role: str) -> None:  # type: ignore[no-untyped-def]
    schema = _schema(live_web)
    headers = _headers(settings, role)
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10, [op.label for op in operations]

    for operation in operations:

        @seed(SEED)
        @FUZZ
        @given(case=operation.as_strategy())
        def run(case) -> None:  # type: ignore[no-untyped-def]
            case.call_and_validate(base_url=live_web, headers=headers, checks=CHECKS)

        try:
            run()
        except Exception as exc:  # collect every operation's first failure, then report all
            failures.append(f"{operation.label}: {exc}"[:1500])
    assert not failures, f"FUZZ_SEED={SEED}\n" + "\n\n".join(failures)


def test_stateful_sequences_never_5xx(live_web: str, settings) -> None:  # type: ignore[no-untyped-def]
    schema = _schema(live_web)
    headers = _headers(settings, "admin")
    machine = schema.as_state_machine()

    class Calls(machine):  # type: ignore[misc, valid-type]
        def get_call_kwargs(self, case):  # type: ignore[no-untyped-def]
            return {"base_url": live_web, "headers": headers}

        def validate_response(self, response, case, **kwargs):  # type: ignore[no-untyped-def]
            case.validate_response(response, checks=CHECKS)

    Calls.TestCase.settings = fuzz_settings(
        max_examples=max(5, EXAMPLES // 2),
        stateful_step_count=6,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    seed(SEED)(Calls.TestCase.runTest)
    Calls.TestCase().runTest()


def test_the_fuzzed_document_is_the_committed_one() -> None:
    assert Path(DOCUMENT).is_file()

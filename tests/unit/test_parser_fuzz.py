"""Hypothesis fuzzing of the parsers that face the network (issue 11, point 6): the session
cookie and the SSE ticket (one signed-blob codec), access tokens, ``Last-Event-ID`` and the
``/deals`` cursor. Whatever the input, each answers with its own refusal (AuthError, a 400 or
a 422), never another exception, which the app would turn into a 500.

Bounded and reproducible: a fixed seed per run (``FUZZ_SEED``, default below), printed, and
at most ``FUZZ_EXAMPLES`` examples per property (default 300).
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from tests.support.stack import ARTIFACTS
from web.auth.jwks import JwksCache
from web.auth.sessions import SignedPrincipalCodec
from web.auth.tokens import AuthError, Principal, TokenVerifier
from web.contract import MAX_SEQ, DealsQuery, StreamQuery
from web.errors import ValidationFailed
from web.stream import _start_seq
from web.validation import read_query

SEED = int(os.environ.get("FUZZ_SEED", "20261203"))
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
SECRET = "fuzz-session-secret-0123456789abcdef-xyz"
CODEC = SignedPrincipalCodec(SECRET, "session", 3600, kind="session")
VALID = CODEC.issue(Principal("auth0|fuzz", frozenset({"deals:read"}), "3f2504e0-4f89-11d3-9a0c-0305e82c3301"))


@pytest.fixture(scope="module", autouse=True)
def announce_seed() -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "fuzz-seed.txt").write_text(f"FUZZ_SEED={SEED} FUZZ_EXAMPLES={EXAMPLES}\n")
    print(f"\nparser fuzzing: FUZZ_SEED={SEED} FUZZ_EXAMPLES={EXAMPLES}")


texts = st.one_of(
    st.text(max_size=300),
    st.text(alphabet="v1.-_=AZaz09+/%", max_size=300),
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
)


def mutations() -> st.SearchStrategy[str]:
    """Valid blobs with one edit: a flipped, dropped or inserted character, or a cut."""
    index = st.integers(min_value=0, max_value=len(VALID) - 1)
    char = st.characters(codec="utf-8")
    return st.one_of(
        st.tuples(index, char).map(lambda t: VALID[: t[0]] + t[1] + VALID[t[0] + 1 :]),
        index.map(lambda i: VALID[:i] + VALID[i + 1 :]),
        st.tuples(index, char).map(lambda t: VALID[: t[0]] + t[1] + VALID[t[0] :]),
        index.map(lambda i: VALID[:i]),
    )


@seed(SEED)
@FUZZ
@given(st.one_of(texts, mutations()))
def test_session_cookie_and_ticket_codec_only_ever_refuse(value: str) -> None:
    for codec in (CODEC, SignedPrincipalCodec(SECRET, "sse-ticket", 60, kind="ticket")):
        try:
            grant = codec.load(value)
        except AuthError as exc:
            assert exc.status == 401 and exc.code.endswith(("_session", "_ticket", "_expired"))
        else:
            assert value == VALID and codec is CODEC, "a changed blob must never verify"
            assert grant.principal.subject == "auth0|fuzz"


def _verifier() -> TokenVerifier:
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "k1", "alg": "RS256", "use": "sig"}
    return TokenVerifier(JwksCache.from_static({"keys": [jwk]}), "https://issuer.test/", "aud", ["RS256"])


VERIFIER = _verifier()
B64 = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=60)


@seed(SEED)
@FUZZ
@given(st.one_of(texts, st.lists(B64, min_size=1, max_size=6).map(".".join)))
def test_access_token_parser_only_ever_refuses(token: str) -> None:
    async def verify() -> None:
        await VERIFIER.verify(token)

    with pytest.raises(AuthError) as caught:
        asyncio.run(verify())
    assert caught.value.status in (401, 503)


def request_with(headers: dict[str, str] | None = None, query: str = "") -> web.Request:
    return make_mocked_request("GET", f"/x{query}", headers=CIMultiDict(headers or {}))


sequence_texts = st.one_of(
    texts,
    st.integers().map(str),
    st.integers(min_value=MAX_SEQ - 2, max_value=MAX_SEQ + 2).map(str),
    st.sampled_from(["", " 1", "1_000", "+5", "-0", "٣", "1e3", "0x10", "9" * 5000]),
)


@seed(SEED)
@FUZZ
@given(sequence_texts)
def test_last_event_id_is_a_bigint_sequence_or_a_400(raw: str) -> None:
    for request in (request_with({"Last-Event-ID": raw}) if raw.isprintable() else None,):
        if request is None:
            return
        try:
            value = _start_seq(request, head=7)
        except web.HTTPBadRequest:
            continue
        assert 0 <= value <= MAX_SEQ


@seed(SEED)
@FUZZ
@given(sequence_texts, st.one_of(st.none(), texts))
def test_deals_cursor_and_stream_query_parse_or_422(cursor: str, limit: str | None) -> None:
    from urllib.parse import urlencode

    params = {"cursor": cursor}
    if limit is not None:
        params["limit"] = limit
    request = request_with(query="?" + urlencode(params, errors="replace"))
    try:
        query = read_query(request, DealsQuery)
    except (ValidationFailed, web.HTTPBadRequest):
        pass
    else:
        assert query.cursor is None or 0 <= query.cursor <= MAX_SEQ
        assert 1 <= query.limit <= 200
    stream = request_with(query="?" + urlencode({"last_event_id": cursor, "ticket": limit or ""}, errors="replace"))
    try:
        parsed = read_query(stream, StreamQuery)
    except (ValidationFailed, web.HTTPBadRequest):
        return
    assert parsed.last_event_id is None or 0 <= parsed.last_event_id <= MAX_SEQ


def test_the_seed_is_fixed_unless_asked() -> None:
    assert SEED == int(os.environ.get("FUZZ_SEED", "20261203"))
    assert time.time() > 0

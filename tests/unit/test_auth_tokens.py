"""Access-token verification against hostile input, JWKS caching/rotation, and the signed
ticket/session codec. No network: the JWKS endpoint is mocked with respx."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import RSAAlgorithm

from tests.support.tokens import (
    _DROP,
    AUDIENCE,
    ISSUER,
    JWKS_URL,
    FakeClock,
    _b64,
    _b64json,
    base_claims,
    build_hostile_tokens,
    forge,
    public_jwk,
    sign,
)
from web.auth.jwks import JwksCache, parse_jwks
from web.auth.permissions import (
    ADMIN,
    DEALS_READ,
    DEALS_READ_ALL,
    OFFERS_WRITE,
    Requirement,
    creator_scope_for,
    requires,
)
from web.auth.sessions import NonceStore, SignedPrincipalCodec
from web.auth.tokens import (
    CREATOR_CLAIM,
    DEFAULT_ROLES_CLAIM,
    AuthError,
    Principal,
    TokenVerifier,
    parse_scope_permissions,
)

SECRET = "unit-test-session-secret-0123456789abcdef"


@pytest.fixture(scope="module")
def keys() -> dict[str, rsa.RSAPrivateKey]:
    return {name: rsa.generate_private_key(public_exponent=65537, key_size=2048) for name in ("a", "b", "evil", "new")}


@pytest.fixture(scope="module")
def jwks(keys: dict[str, rsa.RSAPrivateKey]) -> dict[str, Any]:
    return {"keys": [public_jwk(keys["a"], "key-a"), public_jwk(keys["b"], "key-b")]}


@pytest.fixture
def verifier(jwks: dict[str, Any]) -> TokenVerifier:
    return TokenVerifier(JwksCache.from_static(jwks), ISSUER, AUDIENCE, ["RS256"])


def _hostile_params() -> Iterator[str]:
    # Names only: the tokens are built inside the test so their times are fresh.
    probe = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for hostile in build_hostile_tokens(probe, "k", ISSUER, AUDIENCE, probe, "k2"):
        yield hostile.name


HOSTILE_NAMES = list(_hostile_params())


@pytest.mark.parametrize("name", HOSTILE_NAMES)
async def test_hostile_token_is_rejected_with_its_code(
    name: str, verifier: TokenVerifier, keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    hostile = {h.name: h for h in build_hostile_tokens(keys["a"], "key-a", ISSUER, AUDIENCE, keys["evil"], "key-b")}[
        name
    ]
    with pytest.raises(AuthError) as caught:
        await verifier.verify(hostile.token)
    assert caught.value.code == hostile.code, caught.value.message
    assert caught.value.status == 401


def test_there_are_at_least_twenty_hostile_tokens() -> None:
    assert len(HOSTILE_NAMES) >= 20


async def test_valid_token_gives_permissions_from_the_permissions_claim(
    verifier: TokenVerifier, keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    token = sign(base_claims(permissions=[DEALS_READ, OFFERS_WRITE]), keys["a"], "key-a")
    principal = await verifier.verify(token)
    assert principal.subject == "auth0|alice"
    assert principal.permissions == {DEALS_READ, OFFERS_WRITE}
    assert principal.creator_id is None
    assert principal.raw_claims["iss"] == ISSUER


async def test_scopes_grant_nothing_unless_a_setting_maps_them(
    verifier: TokenVerifier, jwks: dict[str, Any], keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    token = sign(base_claims(permissions=_DROP, scope="openid admin deals:read offers:write"), keys["a"], "key-a")
    assert (await verifier.verify(token)).permissions == frozenset()
    token = sign(base_claims(permissions=[DEALS_READ], scope="admin"), keys["a"], "key-a")
    assert (await verifier.verify(token)).permissions == {DEALS_READ}
    mapping = parse_scope_permissions("read:deals=deals:read, ops=deals:read offers:write")
    mapped = TokenVerifier(JwksCache.from_static(jwks), ISSUER, AUDIENCE, ["RS256"], scope_permissions=mapping)
    token = sign(base_claims(permissions=_DROP, scope="openid read:deals admin"), keys["a"], "key-a")
    assert (await mapped.verify(token)).permissions == {DEALS_READ}
    token = sign(base_claims(permissions=[ADMIN], scope="ops"), keys["a"], "key-a")
    assert (await mapped.verify(token)).permissions == {ADMIN, DEALS_READ, OFFERS_WRITE}


@pytest.mark.parametrize("text", ["x=admin", "novalue", "=deals:read", "x="])
def test_a_scope_mapping_to_admin_or_malformed_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_scope_permissions(text)


async def test_a_creator_role_without_a_creator_id_is_forbidden(
    verifier: TokenVerifier, jwks: dict[str, Any], keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    creator = str(uuid.uuid4())
    token = sign(base_claims(**{DEFAULT_ROLES_CLAIM: ["creator"]}), keys["a"], "key-a")
    with pytest.raises(AuthError) as caught:
        await verifier.verify(token)
    assert (caught.value.code, caught.value.status) == ("creator_without_id", 403)
    scoped = sign(base_claims(**{DEFAULT_ROLES_CLAIM: ["creator"], CREATOR_CLAIM: creator}), keys["a"], "key-a")
    assert creator_scope_for(await verifier.verify(scoped)) == creator
    # Keycloak-style nested roles, by setting
    keycloak = TokenVerifier(JwksCache.from_static(jwks), ISSUER, AUDIENCE, ["RS256"], roles_claim="realm_access.roles")
    token = sign(base_claims(realm_access={"roles": ["offline_access", "creator"]}), keys["a"], "key-a")
    with pytest.raises(AuthError, match="creator id"):
        await keycloak.verify(token)
    token = sign(base_claims(**{DEFAULT_ROLES_CLAIM: "creator"}), keys["a"], "key-a")
    with pytest.raises(AuthError):
        await verifier.verify(token)
    token = sign(base_claims(**{DEFAULT_ROLES_CLAIM: [1]}), keys["a"], "key-a")
    with pytest.raises(AuthError, match="roles claim"):
        await verifier.verify(token)
    staff = sign(base_claims(**{DEFAULT_ROLES_CLAIM: ["ops"]}), keys["a"], "key-a")
    assert creator_scope_for(await verifier.verify(staff)) is None


async def test_creator_claim_is_normalized(verifier: TokenVerifier, keys: dict[str, rsa.RSAPrivateKey]) -> None:
    creator = uuid.uuid4()
    token = sign(base_claims(**{CREATOR_CLAIM: str(creator).upper()}), keys["a"], "key-a")
    principal = await verifier.verify(token)
    assert principal.creator_id == str(creator)
    assert creator_scope_for(principal) == str(creator)


async def test_audience_list_containing_ours_and_small_clock_skew_are_accepted(
    verifier: TokenVerifier, keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    now = int(time.time())
    token = sign(base_claims(aud=[AUDIENCE, f"{ISSUER}userinfo"], iat=now - 60, exp=now - 10), keys["a"], "key-a")
    assert (await verifier.verify(token)).subject == "auth0|alice"


async def test_second_published_key_verifies_its_own_tokens(
    verifier: TokenVerifier, keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    assert (await verifier.verify(sign(base_claims(), keys["b"], "key-b"))).subject == "auth0|alice"


async def test_algorithm_must_match_the_key(keys: dict[str, rsa.RSAPrivateKey]) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    cache = JwksCache.from_static({"keys": [public_jwk(keys["a"], "rsa-pinned"), public_jwk(ec_key, "ec", alg=None)]})
    verifier = TokenVerifier(cache, ISSUER, AUDIENCE, ["RS256", "PS256", "ES256"])
    assert (await verifier.verify(sign(base_claims(), ec_key, "ec", alg="ES256"))).subject
    # PS256 is configured, but this JWK pins RS256.
    with pytest.raises(AuthError) as caught:
        await verifier.verify(sign(base_claims(), keys["a"], "rsa-pinned", alg="PS256"))
    assert caught.value.code == "bad_algorithm"
    # An ES256 header naming an RSA key.
    with pytest.raises(AuthError) as caught:
        await verifier.verify(sign(base_claims(), ec_key, "rsa-pinned", alg="ES256"))
    assert caught.value.code == "bad_algorithm"


async def test_configured_algorithms_bind_even_when_the_jwk_pins_none(keys: dict[str, rsa.RSAPrivateKey]) -> None:
    # Without a JWK "alg" any RSA algorithm would fit the key: only the allowlist refuses.
    verifier = TokenVerifier(
        JwksCache.from_static({"keys": [public_jwk(keys["a"], "unpinned", alg=None)]}), ISSUER, AUDIENCE, ["RS256"]
    )
    assert (await verifier.verify(sign(base_claims(), keys["a"], "unpinned"))).subject
    for alg in ("RS512", "PS256"):
        with pytest.raises(AuthError) as caught:
            await verifier.verify(sign(base_claims(), keys["a"], "unpinned", alg=alg))
        assert caught.value.code == "bad_algorithm", alg
    public_pem = (
        keys["a"].public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    confused = forge(
        {"alg": "HS256", "kid": "unpinned"}, base_claims(), lambda d: hmac.new(public_pem, d, hashlib.sha256).digest()
    )
    with pytest.raises(AuthError) as caught:
        await verifier.verify(confused)
    assert caught.value.code == "bad_algorithm"


@pytest.mark.parametrize("algorithms", [["HS256"], ["RS256", "none"], ["RS256", "HS512"], []])
def test_symmetric_or_none_algorithms_cannot_be_configured(algorithms: list[str], jwks: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        TokenVerifier(JwksCache.from_static(jwks), ISSUER, AUDIENCE, algorithms)


def test_parse_jwks_keeps_only_asymmetric_public_signing_keys(keys: dict[str, rsa.RSAPrivateKey]) -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    private_jwk = RSAAlgorithm.to_jwk(keys["b"], as_dict=True) | {"kid": "private"}
    document = {
        "keys": [
            public_jwk(keys["a"], "good"),
            {"kty": "oct", "kid": "shared", "k": _b64(b"secret")},
            public_jwk(keys["b"], "encryption") | {"use": "enc"},
            private_jwk,
            public_jwk(small, "too-small"),
            {"kid": "no-kty"},
            "not-a-key",
        ]
    }
    assert set(parse_jwks(document)) == {"good"}
    with pytest.raises(ValueError):
        parse_jwks({"no": "keys"})


# --- JWKS fetching --------------------------------------------------------------------------


async def _expect(verifier: TokenVerifier, token: str, code: str) -> None:
    with pytest.raises(AuthError) as caught:
        await verifier.verify(token)
    assert caught.value.code == code


@respx.mock(assert_all_called=False)
async def test_unknown_kid_refetches_at_most_once_per_interval(
    respx_mock: respx.MockRouter, jwks: dict[str, Any], keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    route = respx_mock.get(JWKS_URL).mock(return_value=httpx.Response(200, json=jwks))
    attacker = respx_mock.get("https://evil.example/jwks.json").mock(return_value=httpx.Response(200, json=jwks))
    clock = FakeClock()
    async with httpx.AsyncClient() as http:
        verifier = TokenVerifier(
            JwksCache(JWKS_URL, http, min_refetch_interval=30, clock=clock), ISSUER, AUDIENCE, ["RS256"]
        )
        assert (await verifier.verify(sign(base_claims(), keys["a"], "key-a"))).subject
        assert route.call_count == 1
        unknown = sign(base_claims(), keys["evil"], "unknown-kid", jku="https://evil.example/jwks.json")
        for _ in range(10):
            await _expect(verifier, unknown, "unknown_key")
        assert route.call_count == 1  # the first fetch was < 30 s ago
        clock.advance(31)
        for _ in range(10):
            await _expect(verifier, unknown, "unknown_key")
        assert route.call_count == 2  # one refetch for the new interval, not ten
        assert attacker.call_count == 0  # the token's jku header is never followed


@respx.mock
async def test_concurrent_unknown_kids_share_one_fetch(
    respx_mock: respx.MockRouter, jwks: dict[str, Any], keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    async def slow_idp(_: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.05)  # every caller arrives while the first fetch is in flight
        return httpx.Response(200, json=jwks)

    route = respx_mock.get(JWKS_URL).mock(side_effect=slow_idp)
    async with httpx.AsyncClient() as http:
        verifier = TokenVerifier(JwksCache(JWKS_URL, http), ISSUER, AUDIENCE, ["RS256"])
        tokens = [sign(base_claims(), keys["evil"], f"kid-{i}") for i in range(20)]
        results = await asyncio.gather(*(verifier.verify(t) for t in tokens), return_exceptions=True)
    assert all(isinstance(r, AuthError) and r.code == "unknown_key" for r in results)
    assert route.call_count == 1


@respx.mock
async def test_key_rotation_picks_up_the_new_kid(
    respx_mock: respx.MockRouter, keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    old = {"keys": [public_jwk(keys["a"], "old")]}
    new = {"keys": [public_jwk(keys["new"], "new")]}
    route = respx_mock.get(JWKS_URL).mock(side_effect=[httpx.Response(200, json=old), httpx.Response(200, json=new)])
    clock = FakeClock()
    async with httpx.AsyncClient() as http:
        verifier = TokenVerifier(JwksCache(JWKS_URL, http, clock=clock), ISSUER, AUDIENCE, ["RS256"])
        old_token = sign(base_claims(), keys["a"], "old")
        new_token = sign(base_claims(), keys["new"], "new")
        assert (await verifier.verify(old_token)).subject
        clock.advance(5)
        await _expect(verifier, new_token, "unknown_key")  # rotated moments after our fetch
        clock.advance(30)
        assert (await verifier.verify(new_token)).subject
        assert route.call_count == 2
        await _expect(verifier, old_token, "unknown_key")  # the retired key is gone


@respx.mock
async def test_ttl_refresh_and_stale_keys_survive_an_idp_outage(
    respx_mock: respx.MockRouter, jwks: dict[str, Any], keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    route = respx_mock.get(JWKS_URL).mock(
        side_effect=[httpx.Response(200, json=jwks), httpx.Response(503), httpx.Response(200, json=jwks)]
    )
    clock = FakeClock()
    async with httpx.AsyncClient() as http:
        verifier = TokenVerifier(JwksCache(JWKS_URL, http, ttl=600, clock=clock), ISSUER, AUDIENCE, ["RS256"])
        token = sign(base_claims(), keys["a"], "key-a")
        await verifier.verify(token)
        clock.advance(100)
        await verifier.verify(token)
        assert route.call_count == 1  # fresh: served from cache
        clock.advance(600)
        await verifier.verify(token)  # stale -> refetch fails -> cached key still used
        assert route.call_count == 2
        await verifier.verify(token)
        assert route.call_count == 2  # the failed attempt is rate limited too
        clock.advance(31)
        await verifier.verify(token)
        assert route.call_count == 3


@respx.mock
async def test_no_keys_at_all_is_a_503(respx_mock: respx.MockRouter, keys: dict[str, rsa.RSAPrivateKey]) -> None:
    respx_mock.get(JWKS_URL).mock(return_value=httpx.Response(500))
    async with httpx.AsyncClient() as http:
        verifier = TokenVerifier(JwksCache(JWKS_URL, http), ISSUER, AUDIENCE, ["RS256"])
        with pytest.raises(AuthError) as caught:
            await verifier.verify(sign(base_claims(), keys["a"], "key-a"))
    assert (caught.value.status, caught.value.code) == (503, "jwks_unavailable")


# --- signed tickets / sessions, permissions, rate limits ---------------------------------------


def test_ticket_round_trip_and_rejections() -> None:
    tickets = SignedPrincipalCodec(SECRET, "sse-ticket", 60, kind="ticket")
    principal = Principal("auth0|alice", frozenset({DEALS_READ}), str(uuid.uuid4()))
    ticket = tickets.issue(principal)
    grant = tickets.load(ticket)
    assert (grant.principal.subject, grant.principal.permissions, grant.principal.creator_id) == (
        principal.subject,
        principal.permissions,
        principal.creator_id,
    )
    version, body, sig = ticket.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=="))
    forged = f"{version}.{_b64json(payload | {'prm': [ADMIN]})}.{sig}"
    sessions = SignedPrincipalCodec(SECRET, "session", 3600, kind="session")
    other_secret = SignedPrincipalCodec(SECRET + "x", "sse-ticket", 60, kind="ticket")
    for bad in (forged, sessions.issue(principal), other_secret.issue(principal), "", "v1..", ticket + "x"):
        with pytest.raises(AuthError) as caught:
            tickets.load(bad)
        assert caught.value.code == "invalid_ticket"
    with pytest.raises(AuthError) as caught:
        tickets.load(tickets.issue(principal, now=time.time() - 61))
    assert caught.value.code == "ticket_expired"
    with pytest.raises(ValueError):
        SignedPrincipalCodec("short", "sse-ticket", 60, kind="ticket")


def test_nonce_store_allows_each_nonce_once() -> None:
    store = NonceStore()
    assert store.consume("n1", time.time() + 60)
    assert not store.consume("n1", time.time() + 60)
    assert store.consume("n2", time.time() + 60)


def test_requirements_and_creator_scope() -> None:
    creator = str(uuid.uuid4())

    @requires(DEALS_READ, OFFERS_WRITE)
    async def handler() -> None: ...

    requirement: Requirement = handler.__spacemusic_requirement__  # type: ignore[attr-defined]
    assert requirement.satisfied_by(Principal("a", frozenset({DEALS_READ, OFFERS_WRITE})))
    assert not requirement.satisfied_by(Principal("b", frozenset({DEALS_READ})))
    assert requirement.satisfied_by(Principal("c", frozenset({ADMIN})))
    assert "ticket" not in requirement.credentials
    assert creator_scope_for(Principal("d", frozenset({DEALS_READ}), creator)) == creator
    assert creator_scope_for(Principal("e", frozenset({DEALS_READ, DEALS_READ_ALL}), creator)) is None
    assert creator_scope_for(Principal("f", frozenset({ADMIN}), creator)) is None
    assert creator_scope_for(Principal("g", frozenset({DEALS_READ}))) is None
    with pytest.raises(ValueError):
        requires()

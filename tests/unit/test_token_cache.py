"""The verified-token cache of TokenVerifier: a token verified once is answered from memory
until it expires, and never after its key leaves the JWKS or the JWKS is due a refetch."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
import respx
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.tokens import AUDIENCE, ISSUER, JWKS_URL, FakeClock, base_claims, public_jwk, sign
from web.auth import tokens as tokens_module
from web.auth.jwks import JwksCache
from web.auth.tokens import AuthError, TokenVerifier


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def static_verifier(key: rsa.RSAPrivateKey, clock: Any = time.time) -> TokenVerifier:
    jwks = JwksCache.from_static({"keys": [public_jwk(key, "k")]})
    return TokenVerifier(jwks, ISSUER, AUDIENCE, ["RS256"], clock=clock)


async def test_a_verified_token_is_answered_without_verifying_again(
    key: rsa.RSAPrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    verifier = static_verifier(key)
    token = sign(base_claims(), key, "k")
    first = await verifier.verify(token)
    calls = 0
    real = TokenVerifier._decode

    def counting(self: TokenVerifier, *args: Any) -> Any:
        nonlocal calls
        calls += 1
        return real(self, *args)

    monkeypatch.setattr(TokenVerifier, "_decode", counting)
    assert await verifier.verify(token) is first
    assert calls == 0


async def test_a_cached_token_is_not_trusted_past_its_exp(
    key: rsa.RSAPrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [time.time()]
    verifier = static_verifier(key, clock=lambda: now[0])
    claims = base_claims()
    token = sign(claims, key, "k")
    await verifier.verify(token)
    decoded = 0
    real = TokenVerifier._decode

    def counting(self: TokenVerifier, *args: Any) -> Any:
        nonlocal decoded
        decoded += 1
        return real(self, *args)

    monkeypatch.setattr(TokenVerifier, "_decode", counting)
    now[0] = claims["exp"] - 1
    await verifier.verify(token)
    assert decoded == 0  # still valid: from the cache
    now[0] = claims["exp"]
    await verifier.verify(token)  # at exp the cache steps aside and PyJWT decides again
    assert decoded == 1


async def test_failures_are_not_cached(key: rsa.RSAPrivateKey) -> None:
    verifier = static_verifier(key)
    forged = sign(base_claims(), rsa.generate_private_key(public_exponent=65537, key_size=2048), "k")
    for _ in range(2):
        with pytest.raises(AuthError) as err:
            await verifier.verify(forged)
        assert err.value.code == "invalid_signature"
    assert verifier._verified == {}


@respx.mock
async def test_a_rotated_out_key_ends_its_cached_tokens(respx_mock: respx.MockRouter, key: rsa.RSAPrivateKey) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    route = respx_mock.get(JWKS_URL).mock(
        side_effect=[
            httpx.Response(200, json={"keys": [public_jwk(key, "old")]}),
            httpx.Response(200, json={"keys": [public_jwk(other, "new")]}),
        ]
    )
    clock = FakeClock()
    async with httpx.AsyncClient() as http:
        verifier = TokenVerifier(JwksCache(JWKS_URL, http, ttl=600, clock=clock), ISSUER, AUDIENCE, ["RS256"])
        token = sign(base_claims(), key, "old")
        assert (await verifier.verify(token)).subject
        assert (await verifier.verify(token)).subject  # from the cache
        assert route.call_count == 1
        clock.advance(601)  # the JWKS is due a refetch: the cache is not trusted, the IdP is asked
        with pytest.raises(AuthError) as err:
            await verifier.verify(token)
        assert err.value.code == "unknown_key"
        assert route.call_count == 2


async def test_the_cache_is_bounded(key: rsa.RSAPrivateKey, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens_module, "VERIFIED_CACHE_SIZE", 3)
    verifier = static_verifier(key)
    tokens = [sign(base_claims(sub=f"auth0|{i}"), key, "k") for i in range(5)]
    for token in tokens:
        await verifier.verify(token)
    assert list(verifier._verified) == tokens[2:]

"""Access tokens for the tests: signing keys, claims, and the hostile tokens every verifier must refuse."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from web.auth.permissions import (
    ADMIN,
    DEALS_READ,
)
from web.auth.tokens import (
    CREATOR_CLAIM,
)

ISSUER = "https://tenant.example.auth0.com/"


AUDIENCE = "https://api.spacemusic.test"


JWKS_URL = "https://tenant.example.auth0.com/.well-known/jwks.json"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64json(value: Any) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode())


def public_jwk(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str, alg: str | None = "RS256"
) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update(kid=kid, use="sig")
    if alg:
        jwk["alg"] = alg
    return jwk


_DROP = object()  # an override value that removes the claim


def base_claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "auth0|alice",
        "iat": now,
        "exp": now + 300,
        "permissions": [DEALS_READ],
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not _DROP}


def sign(claims: dict[str, Any], key: Any, kid: str | None, alg: str = "RS256", **headers: Any) -> str:
    header_extra = dict(headers)
    if kid is not None:
        header_extra["kid"] = kid
    return jwt.encode(claims, key, algorithm=alg, headers=header_extra)


def forge(header: dict[str, Any], claims: dict[str, Any], signer: Callable[[bytes], bytes]) -> str:
    """A token built by hand, for what PyJWT refuses to produce (alg confusion, none)."""
    signing_input = f"{_b64json(header)}.{_b64json(claims)}"
    return f"{signing_input}.{_b64(signer(signing_input.encode()))}"


@dataclass(frozen=True)
class Hostile:
    name: str
    token: str
    code: str


def build_hostile_tokens(
    key: rsa.RSAPrivateKey, kid: str, issuer: str, audience: str, other: rsa.RSAPrivateKey, second_kid: str | None
) -> list[Hostile]:
    """Tokens a verifier trusting ``key``/``kid`` for ``issuer``/``audience`` must reject,
    with the error code it must give (also used by the HTTP tests)."""
    now = int(time.time())

    def claims(**overrides: Any) -> dict[str, Any]:
        return base_claims(**{"iss": issuer, "aud": audience, **overrides})

    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    good = sign(claims(), key, kid)
    head, payload, signature = good.split(".")
    tampered_payload = _b64json(claims(permissions=[DEALS_READ, ADMIN], sub="auth0|mallory"))
    evil_header = {"alg": "RS256", "typ": "JWT", "kid": kid, "jwk": public_jwk(other, kid)}
    tokens = [
        Hostile("alg_none", forge({"alg": "none", "typ": "JWT", "kid": kid}, claims(), lambda _: b""), "bad_algorithm"),
        Hostile(
            "alg_None_with_sig", forge({"alg": "None", "kid": kid}, claims(), lambda _: b"x" * 32), "bad_algorithm"
        ),
        Hostile(
            "hs256_with_rsa_public_pem",
            forge(
                {"alg": "HS256", "typ": "JWT", "kid": kid},
                claims(),
                lambda data: hmac.new(public_pem, data, hashlib.sha256).digest(),
            ),
            "bad_algorithm",
        ),
        Hostile("hs256_random_secret", sign(claims(), "s3cret-" * 8, kid, alg="HS256"), "bad_algorithm"),
        Hostile("rs512_not_allowed", sign(claims(), key, kid, alg="RS512"), "bad_algorithm"),
        Hostile("wrong_issuer", sign(claims(iss="https://evil.example/"), key, kid), "bad_issuer"),
        Hostile("issuer_without_trailing_slash", sign(claims(iss=issuer.rstrip("/")), key, kid), "bad_issuer"),
        Hostile("wrong_audience", sign(claims(aud="https://other-api.example"), key, kid), "bad_audience"),
        Hostile(
            "audience_list_without_ours",
            sign(claims(aud=["https://a.example", "https://b.example"]), key, kid),
            "bad_audience",
        ),
        Hostile("missing_aud", sign(claims(aud=_DROP), key, kid), "missing_claim"),
        Hostile("expired", sign(claims(iat=now - 3600, exp=now - 120), key, kid), "token_expired"),
        Hostile("nbf_in_future", sign(claims(nbf=now + 600), key, kid), "token_not_yet_valid"),
        Hostile("iat_far_in_future", sign(claims(iat=now + 3600, exp=now + 7200), key, kid), "token_not_yet_valid"),
        Hostile("iat_after_exp", sign(claims(iat=now + 20, exp=now + 10), key, kid), "invalid_token"),
        Hostile("exp_as_string", sign(claims(exp=str(now + 300)), key, kid), "invalid_token"),
        Hostile("missing_sub", sign(claims(sub=_DROP), key, kid), "missing_claim"),
        Hostile("empty_sub", sign(claims(sub=""), key, kid), "missing_claim"),
        Hostile("missing_exp", sign(claims(exp=_DROP), key, kid), "missing_claim"),
        Hostile("missing_iat", sign(claims(iat=_DROP), key, kid), "missing_claim"),
        Hostile("missing_iss", sign(claims(iss=_DROP), key, kid), "missing_claim"),
        Hostile("unknown_kid", sign(claims(), key, "no-such-kid"), "unknown_key"),
        Hostile("no_kid", sign(claims(), key, None), "invalid_token"),
        Hostile(
            "jku_pointing_at_attacker",
            sign(claims(), other, "attacker-kid", jku="https://evil.example/jwks.json"),
            "unknown_key",
        ),
        Hostile("tampered_payload", f"{head}.{tampered_payload}.{signature}", "invalid_signature"),
        Hostile("other_rsa_key_same_kid", sign(claims(), other, kid), "invalid_signature"),
        Hostile(
            "embedded_jwk_header",
            forge(
                evil_header,
                claims(),
                lambda data: other.sign(data, padding.PKCS1v15(), hashes.SHA256()),
            ),
            "invalid_signature",
        ),
        Hostile("bad_permissions_claim", sign(claims(permissions="admin"), key, kid), "invalid_token"),
        Hostile("creator_claim_not_uuid", sign(claims(**{CREATOR_CLAIM: "../../etc"}), key, kid), "invalid_token"),
        Hostile("empty_string", "", "invalid_token"),
        Hostile("garbage", "this-is-not-a-token", "invalid_token"),
        Hostile("three_dots", "...", "invalid_token"),
        Hostile("two_dots_only", "..", "invalid_token"),
        Hostile("header_not_json", f"{_b64(b'{not json')}.{payload}.{signature}", "invalid_token"),
        Hostile("jwe_five_parts", f"{_b64json({'alg': 'RSA-OAEP', 'enc': 'A256GCM'})}.a.b.c.d", "invalid_token"),
        Hostile("very_long", sign(claims(padding="A" * 20_000), key, kid), "invalid_token"),
    ]
    if second_kid is not None:
        # Valid signature by `key`, but the header now names another published key.
        swapped = _b64json({**json.loads(base64.urlsafe_b64decode(head + "==")), "kid": second_kid})
        tokens.append(Hostile("tampered_header_kid", f"{swapped}.{payload}.{signature}", "invalid_signature"))
    return tokens


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

"""Verifying OIDC access tokens (Auth0-style RS256 JWTs) into a :class:`Principal`.

The algorithm is never taken from the token: the header's ``alg`` must be one of the
configured asymmetric algorithms AND match the key its ``kid`` names, and PyJWT is then told
to accept exactly that one algorithm. That closes ``alg: none`` and the RS256 -> HS256
confusion attack (HMAC "signed" with the public key) before PyJWT sees the token.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import jwt
from jwt import exceptions as jwt_errors

from web.auth.jwks import JwksCache, JwksUnavailable, VerificationKey

CREATOR_CLAIM = "https://spacemusic.app/creator_id"
REQUIRED_CLAIMS = ("sub", "exp", "iat", "iss", "aud")
DEFAULT_LEEWAY_SECONDS = 30
# Auth0 access tokens are ~1 KiB; anything much larger is not one of ours.
MAX_TOKEN_CHARS = 8192
# Verified tokens remembered per process (each ~1 KiB): a client sends the same token on
# every request until it expires, and re-verifying it (header and claims parsing, an RSA
# signature check) is the same answer every time.
VERIFIED_CACHE_SIZE = 10_000

_FAMILIES: dict[str, frozenset[str]] = {
    "RSA": frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}),
    "EC": frozenset({"ES256", "ES384", "ES512"}),
    "OKP": frozenset({"EdDSA"}),
}
ASYMMETRIC_ALGORITHMS = frozenset().union(*_FAMILIES.values())


def check_algorithms(algorithms: Iterable[str]) -> frozenset[str]:
    """The configured algorithms, refused unless all asymmetric: a symmetric one would make
    the public JWKS a signing secret, and "none" signs nothing."""
    allowed = frozenset(algorithms)
    unsafe = allowed - ASYMMETRIC_ALGORITHMS
    if not allowed or unsafe:
        raise ValueError(f"only asymmetric JWT algorithms may be configured, got {sorted(unsafe) or 'none'}")
    return allowed


class AuthError(Exception):
    """Authentication failed; ``code`` is machine-readable and goes into the JSON body."""

    def __init__(self, code: str, message: str, *, status: int = 401) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Principal:
    subject: str
    permissions: frozenset[str]
    creator_id: str | None = None
    raw_claims: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


def normalize_creator_id(value: object) -> str:
    """Creator ids are UUIDs; the canonical form is what the projections store."""
    if not isinstance(value, str) or not value:
        raise ValueError("creator id must be a UUID string")
    return str(uuid.UUID(value))


ADMIN_PERMISSION = "admin"
DEFAULT_ROLES_CLAIM = "https://spacemusic.app/roles"
DEFAULT_CREATOR_ROLE = "creator"


def parse_scope_permissions(text: str) -> dict[str, frozenset[str]]:
    """``OIDC_SCOPE_PERMISSIONS``: ``"read:deals=deals:read,ops=deals:read offers:write"``.

    A scope is only a client's request; it grants what this mapping says and nothing else.
    Mapping a scope to ``admin`` is refused: admin comes from RBAC permissions only."""
    mapping: dict[str, frozenset[str]] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        scope, sep, granted = item.partition("=")
        permissions = frozenset(granted.split())
        if not sep or not scope.strip() or not permissions:
            raise ValueError(f"OIDC_SCOPE_PERMISSIONS entries are scope=permission[ permission], got {item!r}")
        if ADMIN_PERMISSION in permissions:
            raise ValueError("OIDC_SCOPE_PERMISSIONS may not map a scope to admin")
        mapping[scope.strip()] = permissions
    return mapping


def permissions_from_claims(
    claims: Mapping[str, Any], scope_permissions: Mapping[str, frozenset[str]] | None = None
) -> frozenset[str]:
    """Auth0 RBAC puts a ``permissions`` list in the token. OAuth scopes (a string) grant only
    what ``scope_permissions`` maps them to: without a mapping, ``scope: "admin"`` is nothing."""
    found: set[str] = set()
    permissions = claims.get("permissions")
    if permissions is not None:
        if not isinstance(permissions, list) or not all(isinstance(p, str) for p in permissions):
            raise AuthError("invalid_token", "the permissions claim must be a list of strings")
        found.update(permissions)
    scope = claims.get("scope")
    if scope is not None:
        if not isinstance(scope, str):
            raise AuthError("invalid_token", "the scope claim must be a space-separated string")
        for name in scope.split():
            found.update((scope_permissions or {}).get(name, ()))
    return frozenset(p for p in found if p)


def roles_from_claims(claims: Mapping[str, Any], roles_claim: str) -> frozenset[str]:
    """The roles at ``roles_claim``: a claim name, or a dotted path (``realm_access.roles``)."""
    value: Any = claims.get(roles_claim)
    if value is None and "." in roles_claim and not roles_claim.startswith(("http://", "https://")):
        value = claims
        for part in roles_claim.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
    if value is None:
        return frozenset()
    if isinstance(value, str):
        return frozenset(value.split())
    if not isinstance(value, list) or not all(isinstance(r, str) for r in value):
        raise AuthError("invalid_token", "the roles claim must be a list of strings")
    return frozenset(value)


class TokenVerifier:
    def __init__(
        self,
        jwks: JwksCache,
        issuer: str,
        audience: str,
        algorithms: Iterable[str],
        *,
        leeway: int = DEFAULT_LEEWAY_SECONDS,
        scope_permissions: Mapping[str, frozenset[str]] | None = None,
        roles_claim: str = DEFAULT_ROLES_CLAIM,
        creator_role: str = DEFAULT_CREATOR_ROLE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        allowed = check_algorithms(algorithms)
        if not issuer or not audience:
            raise ValueError("an issuer and an audience are required to verify tokens")
        self._jwks = jwks
        self._issuer = issuer
        self._audience = audience
        self._algorithms = allowed
        self._leeway = leeway
        self._scope_permissions = dict(scope_permissions or {})
        self._roles_claim = roles_claim
        self._creator_role = creator_role
        self._clock = clock
        # token -> (principal, the key that verified it, exp). Only successes are kept.
        self._verified: dict[str, tuple[Principal, VerificationKey, float]] = {}

    async def verify(self, token: str) -> Principal:
        cached = self._verified.get(token) if isinstance(token, str) else None
        if cached is not None:
            principal, key, exp = cached
            # The same bytes verify the same way; what can change is time (exp) and the
            # key set (a rotated-out key, or a JWKS due for a refetch: then the full path).
            if self._clock() < exp and self._jwks.fresh_key(key.kid) is key:
                return principal
            self._verified.pop(token, None)
        principal, key = await self._verify(token)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.pop(next(iter(self._verified)))
        self._verified[token] = (principal, key, float(principal.raw_claims["exp"]))
        return principal

    async def _verify(self, token: str) -> tuple[Principal, VerificationKey]:
        header = self._header(token)
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in self._algorithms:
            raise AuthError("bad_algorithm", f"tokens must be signed with {', '.join(sorted(self._algorithms))}")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthError("invalid_token", "the token header has no key id (kid)")
        try:
            key = await self._jwks.get_key(kid)
        except JwksUnavailable as exc:
            raise AuthError(
                "jwks_unavailable", "the identity provider's signing keys are unavailable", status=503
            ) from exc
        if key is None:
            raise AuthError("unknown_key", "the token is signed with an unknown key")
        if not _algorithm_fits_key(algorithm, key):
            raise AuthError("bad_algorithm", "the token's algorithm does not match its signing key")
        claims = self._decode(token, key.key, algorithm)
        return self._principal(claims), key

    def _header(self, token: str) -> dict[str, Any]:
        if not isinstance(token, str) or not token:
            raise AuthError("invalid_token", "the token is empty")
        if len(token) > MAX_TOKEN_CHARS:
            raise AuthError("invalid_token", "the token is too long")
        parts = token.split(".")
        if len(parts) == 5:
            raise AuthError("invalid_token", "encrypted tokens (JWE) are not accepted")
        # An empty signature is left to the algorithm check: "alg: none" tokens end in "."
        # and deserve the precise bad_algorithm code.
        if len(parts) != 3 or not parts[0] or not parts[1]:
            raise AuthError("invalid_token", "the token is not a signed JWT")
        try:
            header = jwt.get_unverified_header(token)
        except jwt_errors.PyJWTError as exc:
            raise AuthError("invalid_token", "the token header cannot be decoded") from exc
        return header

    def _decode(self, token: str, key: Any, algorithm: str) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": list(REQUIRED_CLAIMS), "verify_signature": True},
            )
        except jwt_errors.ExpiredSignatureError as exc:
            raise AuthError("token_expired", "the token has expired") from exc
        except jwt_errors.ImmatureSignatureError as exc:
            raise AuthError("token_not_yet_valid", "the token is not valid yet (nbf/iat in the future)") from exc
        except jwt_errors.MissingRequiredClaimError as exc:
            raise AuthError("missing_claim", f"the token has no {exc.claim!r} claim") from exc
        except jwt_errors.InvalidAudienceError as exc:
            raise AuthError("bad_audience", "the token is not meant for this API") from exc
        except jwt_errors.InvalidIssuerError as exc:
            raise AuthError("bad_issuer", "the token was not issued by the trusted issuer") from exc
        except jwt_errors.InvalidSignatureError as exc:
            raise AuthError("invalid_signature", "the token signature does not verify") from exc
        except jwt_errors.InvalidAlgorithmError as exc:
            raise AuthError("bad_algorithm", "the token algorithm is not allowed") from exc
        except jwt_errors.PyJWTError as exc:
            raise AuthError("invalid_token", "the token is malformed") from exc

    def _principal(self, claims: dict[str, Any]) -> Principal:
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject.strip():
            raise AuthError("missing_claim", "the token has an empty 'sub' claim")
        iat, exp = claims["iat"], claims["exp"]
        # PyJWT coerces with int(), so "123" would pass it; JWT times are JSON numbers.
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (iat, exp)):
            raise AuthError("invalid_token", "the iat and exp claims must be numbers")
        if iat > exp:
            raise AuthError("invalid_token", "the token was issued after it expires")
        creator_id: str | None = None
        if CREATOR_CLAIM in claims:
            try:
                creator_id = normalize_creator_id(claims[CREATOR_CLAIM])
            except ValueError as exc:
                raise AuthError("invalid_token", "the creator_id claim must be a UUID") from exc
        if creator_id is None and self._creator_role in roles_from_claims(claims, self._roles_claim):
            # Fail closed: an unscoped creator would see every creator's deals.
            raise AuthError("creator_without_id", "a creator token must carry the creator id claim", status=403)
        return Principal(
            subject=subject,
            permissions=permissions_from_claims(claims, self._scope_permissions),
            creator_id=creator_id,
            raw_claims=MappingProxyType(claims),
        )


def _algorithm_fits_key(algorithm: str, key: VerificationKey) -> bool:
    if key.declares_alg or key.kty == "EC":
        # A JWK that pins its alg (or an EC key, whose curve fixes it) accepts nothing else.
        return algorithm == key.algorithm
    return algorithm in _FAMILIES.get(key.kty, frozenset())

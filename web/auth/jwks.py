"""The identity provider's signing keys (JWKS), fetched with httpx and cached by ``kid``.

Never PyJWT's ``PyJWKClient``: it fetches with blocking urllib inside the event loop. A token
with an unknown ``kid`` is attacker-controlled input, so it may trigger at most one refetch
per ``min_refetch_interval``; concurrent callers queue on one lock and the first one's fetch
serves them all. When the IdP is down, keys already cached keep working (a JWKS does not go
bad with age; rotation is the only way a key leaves it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt import PyJWK
from jwt.exceptions import PyJWTError

from infra.logging import get_logger

log = get_logger(__name__)

# Asymmetric key types only: an "oct" (shared secret) key in a JWKS would turn public
# verification material into an HMAC secret anyone can read.
SUPPORTED_KTY = frozenset({"RSA", "EC", "OKP"})
MIN_RSA_BITS = 2048
MAX_JWKS_BYTES = 256 * 1024
FETCH_TIMEOUT_SECONDS = 5.0


class JwksUnavailable(Exception):
    """No keys at all: the JWKS has never been fetched successfully."""


@dataclass(frozen=True)
class VerificationKey:
    kid: str
    kty: str
    # The algorithm the JWK pins (its "alg"), else the one PyJWT infers from kty/crv.
    algorithm: str
    declares_alg: bool
    key: Any  # a cryptography public key object


def parse_jwks(document: Any) -> dict[str, VerificationKey]:
    """The usable signing keys of a JWKS document, by kid; unusable entries are skipped."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ValueError("a JWKS must be an object with a 'keys' list")
    keys: dict[str, VerificationKey] = {}
    for jwk in document["keys"]:
        parsed = _parse_key(jwk)
        if parsed is not None and parsed.kid not in keys:
            keys[parsed.kid] = parsed
    return keys


def _parse_key(jwk: Any) -> VerificationKey | None:
    if not isinstance(jwk, Mapping):
        return None
    kid, kty = jwk.get("kid"), jwk.get("kty")
    if not isinstance(kid, str) or not kid or kty not in SUPPORTED_KTY:
        return None
    if jwk.get("use", "sig") != "sig" or "d" in jwk:
        # Encryption keys and (mistakenly published) private keys never verify tokens.
        return None
    try:
        parsed = PyJWK(dict(jwk))
    except (PyJWTError, ValueError, TypeError) as exc:
        log.warning("jwks_key_skipped", kid=kid, error=type(exc).__name__)
        return None
    if isinstance(parsed.key, rsa.RSAPublicKey) and parsed.key.key_size < MIN_RSA_BITS:
        log.warning("jwks_key_skipped", kid=kid, error="rsa_key_too_small")
        return None
    return VerificationKey(
        kid=kid,
        kty=str(kty),
        algorithm=parsed.algorithm_name,
        declares_alg=isinstance(jwk.get("alg"), str),
        key=parsed.key,
    )


class JwksCache:
    """Keys by kid from ``url``; or, via :meth:`from_static`, a fixed set (the dev IdP)."""

    def __init__(
        self,
        url: str,
        http: httpx.AsyncClient | None,
        *,
        min_refetch_interval: float = 30.0,
        ttl: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``http=None`` is for :meth:`from_static` only: a cache that can never fetch."""
        self._url = url
        self._http = http
        self._min_refetch_interval = min_refetch_interval
        self._ttl = ttl
        self._clock = clock
        self._keys: dict[str, VerificationKey] = {}
        self._fetched_at: float | None = None
        self._last_attempt: float | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_static(cls, jwks: Mapping[str, Any]) -> JwksCache:
        """A cache that never fetches: the keys given are all there is."""
        keys = parse_jwks(jwks)
        if not keys:
            raise ValueError("a static JWKS needs at least one usable signing key")
        cache = cls("", None, min_refetch_interval=float("inf"), ttl=float("inf"))
        cache._keys = keys
        return cache

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def fresh_key(self, kid: str) -> VerificationKey | None:
        """The key for ``kid`` if it is cached and not due for a refetch; never fetches.
        (A token verifier re-checks a cached verification against this.)"""
        if self._http is not None and self._is_stale():
            return None
        return self._keys.get(kid)

    async def get_key(self, kid: str) -> VerificationKey | None:
        """The key for ``kid``; None if the IdP does not (or no longer) publish it."""
        key = self._keys.get(kid)
        if self._http is None or (key is not None and not self._is_stale()):
            return key
        await self._refetch_if_allowed()
        if not self._keys:
            raise JwksUnavailable(f"no signing keys could be fetched from {self._url}")
        return self._keys.get(kid)

    async def refresh(self) -> bool:
        """Warm-up at start-up (still rate limited); False if the fetch failed."""
        if self._http is None:
            return True
        await self._refetch_if_allowed()
        return bool(self._keys)

    def _is_stale(self) -> bool:
        return self._fetched_at is None or self._clock() - self._fetched_at >= self._ttl

    async def _refetch_if_allowed(self) -> None:
        async with self._lock:
            # Re-checked under the lock: callers that queued behind a fetch find it just done
            # and reuse its result instead of fetching again.
            if self._last_attempt is not None and self._clock() - self._last_attempt < self._min_refetch_interval:
                return
            try:
                keys = await self._fetch()
            except (httpx.HTTPError, ValueError) as exc:
                # Recorded outside ``finally``: a cancelled caller must not use up the slot.
                self._last_attempt = self._clock()
                log.warning("jwks_fetch_failed", url=self._url, error=type(exc).__name__, cached_keys=len(self._keys))
                return
            self._last_attempt = self._fetched_at = self._clock()
            rotated = set(keys) != set(self._keys)
            self._keys = keys
            if rotated:
                log.info("jwks_keys_loaded", url=self._url, kids=sorted(keys))

    async def _fetch(self) -> dict[str, VerificationKey]:
        if self._http is None:
            raise ValueError("a static JWKS cannot be fetched")
        response = await self._http.get(
            self._url, timeout=FETCH_TIMEOUT_SECONDS, headers={"Accept": "application/json"}, follow_redirects=False
        )
        response.raise_for_status()
        if len(response.content) > MAX_JWKS_BYTES:
            raise ValueError("JWKS document too large")
        keys = parse_jwks(response.json())
        if not keys:
            raise ValueError("JWKS has no usable signing keys")
        return keys

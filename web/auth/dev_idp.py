"""A stand-in identity provider for local development ONLY (SPACEMUSIC_ENV=dev).

It signs Auth0-shaped RS256 access tokens with a key generated once at
``settings.dev_idp_key_path`` and publishes the matching JWKS and discovery document under
``/dev-idp``; `spacemusic dev-token` (the :func:`dev_token` command) mints from the shell.
Nothing here is registered, or will mint, when the environment is not dev.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import json
import os
import secrets
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from infra.settings import Settings
from web.auth.permissions import ALL_PERMISSIONS, DEALS_READ
from web.auth.sessions import AUTH, SESSION_TTL_SECONDS, open_session, set_session_cookie
from web.auth.tokens import (
    CREATOR_CLAIM,
    DEFAULT_CREATOR_ROLE,
    DEFAULT_ROLES_CLAIM,
    AuthError,
    normalize_creator_id,
)

PREFIX = "/dev-idp"
# What the login page's two identities get. A creator reads its own deals only.
ADMIN_PERMISSIONS = tuple(sorted(ALL_PERMISSIONS))
CREATOR_PERMISSIONS = (DEALS_READ,)
MAX_TTL_SECONDS = 7 * 24 * 3600


class DevIdpDisabled(RuntimeError):
    """Refused: the dev IdP exists only when SPACEMUSIC_ENV=dev."""


def dev_issuer(settings: Settings) -> str:
    """The issuer the dev IdP signs as (and the verifier expects), OIDC_ISSUER if set."""
    return settings.oidc_issuer or f"http://{settings.web_host}:{settings.web_port}{PREFIX}/"


def load_or_create_signing_key(path: Path) -> rsa.RSAPrivateKey:
    """The dev signing key, generated on first use; owner-only permissions (0600)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(pem)
            # link() never overwrites: when the web process and `dev-token` race, the first
            # key wins and both end up reading the same file.
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < 2048:
        raise ValueError(f"{path} is not an RSA private key of at least 2048 bits")
    return key


def _b64uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class DevIdp:
    def __init__(self, private_key: rsa.RSAPrivateKey, issuer: str, audience: str) -> None:
        self._key = private_key
        self.issuer = issuer
        self.audience = audience
        numbers = private_key.public_key().public_numbers()
        self._public_jwk = {"e": _b64uint(numbers.e), "kty": "RSA", "n": _b64uint(numbers.n)}
        # RFC 7638 thumbprint: a stable kid that changes exactly when the key does.
        canonical = json.dumps(self._public_jwk, separators=(",", ":"), sort_keys=True).encode()
        self.kid = base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode("ascii")

    @classmethod
    def from_settings(cls, settings: Settings) -> DevIdp:
        if not settings.is_dev:
            raise DevIdpDisabled("the dev IdP only exists when SPACEMUSIC_ENV=dev")
        return cls(load_or_create_signing_key(settings.dev_idp_key_path), dev_issuer(settings), settings.oidc_audience)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [{**self._public_jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def mint(
        self,
        subject: str,
        permissions: Iterable[str],
        creator_id: str | None = None,
        ttl: int = 3600,
        *,
        now: int | None = None,
    ) -> str:
        if not subject:
            raise ValueError("a subject is required")
        if not 0 < ttl <= MAX_TTL_SECONDS:
            raise ValueError(f"ttl must be between 1 and {MAX_TTL_SECONDS} seconds")
        issued = int(time.time()) if now is None else now
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.audience,
            "iat": issued,
            "exp": issued + ttl,
            "azp": "spacemusic-dev-idp",
            "permissions": sorted(set(permissions)),
        }
        if creator_id is not None:
            claims[CREATOR_CLAIM] = normalize_creator_id(creator_id)
            claims[DEFAULT_ROLES_CLAIM] = [DEFAULT_CREATOR_ROLE]
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid, "typ": "JWT"})


def mint_token(
    settings: Settings,
    subject: str,
    permissions: Iterable[str],
    creator_id: str | None = None,
    ttl: int = 3600,
) -> str:
    """An RS256 access token from the dev IdP; raises :class:`DevIdpDisabled` outside dev."""
    return DevIdp.from_settings(settings).mint(subject, permissions, creator_id, ttl)


DEV_IDP = web.AppKey("dev_idp", DevIdp)
LOGIN_REDIRECT = web.AppKey("dev_idp_login_redirect", str)

_LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>SpaceMusic dev login</title>
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto}}
fieldset{{margin-bottom:1rem}}input[type=text]{{width:22rem}}</style></head>
<body><h1>SpaceMusic &mdash; dev login</h1>
<p>Local development identity provider. Not available in production.</p>
{error}
<form method="post" action="{action}">
<fieldset><legend>Sign in as</legend>
<label><input type="radio" name="identity" value="admin" checked> admin (all permissions)</label><br>
<label><input type="radio" name="identity" value="creator"> creator
<input type="text" name="creator_id" value="{creator_id}" aria-label="creator id"></label>
</fieldset>
<button type="submit">Sign in</button>
</form></body></html>
"""


def _login_page(error: str | None = None, status: int = 200) -> web.Response:
    body = _LOGIN_PAGE.format(
        action=f"{PREFIX}/login",
        creator_id=uuid.uuid4(),
        error=f'<p role="alert">{html.escape(error)}</p>' if error else "",
    )
    return web.Response(text=body, content_type="text/html", status=status, headers={"Cache-Control": "no-store"})


async def jwks_document(request: web.Request) -> web.Response:
    return web.json_response(request.app[DEV_IDP].jwks(), headers={"Cache-Control": "public, max-age=300"})


async def openid_configuration(request: web.Request) -> web.Response:
    idp = request.app[DEV_IDP]
    base = idp.issuer.rstrip("/")
    return web.json_response(
        {
            "issuer": idp.issuer,
            "jwks_uri": f"{base}/.well-known/jwks.json",
            "authorization_endpoint": f"{base}/login",
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["none"],
        }
    )


async def login_form(_: web.Request) -> web.Response:
    return _login_page()


async def login(request: web.Request) -> web.Response:
    form = await request.post()
    identity = form.get("identity")
    if identity == "admin":
        subject, permissions, creator_id = "dev|admin", ADMIN_PERMISSIONS, None
    elif identity == "creator":
        try:
            creator_id = normalize_creator_id(form.get("creator_id"))
        except ValueError:
            return _login_page("creator id must be a UUID", status=422)
        subject, permissions = f"dev|creator|{creator_id}", CREATOR_PERMISSIONS
    else:
        return _login_page("choose admin or creator", status=422)
    state = request.config_dict[AUTH]
    token = request.app[DEV_IDP].mint(subject, permissions, creator_id, ttl=min(SESSION_TTL_SECONDS, MAX_TTL_SECONDS))
    if state.verifier is None:
        raise web.HTTPServiceUnavailable(text="authentication is not ready yet")
    try:
        # Round-trips through the real verifier so the session is exactly what a token gives.
        principal = await state.verifier.verify(token)
    except AuthError as exc:
        return _login_page(f"the dev IdP and the verifier disagree: {exc.code}", status=500)
    try:
        value, lifetime = await open_session(state, principal)
    except AuthError as exc:
        return _login_page(f"cannot sign in now: {exc.code}", status=exc.status)
    response = web.Response(status=303, headers={"Location": request.app[LOGIN_REDIRECT], "Cache-Control": "no-store"})
    set_session_cookie(response, state, value, lifetime)
    return response


def add_dev_idp_routes(app: web.Application, idp: DevIdp, *, login_redirect: str = "/admin") -> None:
    if not login_redirect.startswith("/") or login_redirect.startswith("//"):
        # A local path only: the redirect must not become an open redirect.
        raise ValueError("login_redirect must be a path on this site")
    app[DEV_IDP] = idp
    app[LOGIN_REDIRECT] = login_redirect
    app.router.add_get(f"{PREFIX}/.well-known/jwks.json", jwks_document)
    app.router.add_get(f"{PREFIX}/.well-known/openid-configuration", openid_configuration)
    app.router.add_get(f"{PREFIX}/login", login_form)
    app.router.add_post(f"{PREFIX}/login", login)

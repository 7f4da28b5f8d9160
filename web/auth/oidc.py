"""OIDC sign-in for the admin page: the authorization-code flow with PKCE (S256), through
Authlib's OAuth 2 client, against any OpenID Connect provider named by settings (Auth0 in
production, the local stack's oidc-provider in dev and in the browser test).

- ``GET /auth/oidc/login``: makes ``state``, ``nonce`` and a PKCE verifier, keeps them in a
  short-lived HMAC-signed cookie (``HttpOnly``, ``SameSite=Lax`` so it comes back on the
  provider's top-level redirect, ``Path=/auth/oidc``), and redirects to the provider's
  authorization endpoint (from its discovery document).
- ``GET /auth/oidc/callback``: refuses a missing or different ``state`` (and a reused one:
  the cookie is cleared on first use), exchanges the code with the PKCE verifier, verifies the
  ID token (signature by the provider's JWKS, ``iss``, ``aud`` = our client id, ``nonce``),
  then verifies the **access token** exactly as every API call does and opens a server-side
  session bound to that token's ``exp`` (``web/auth/sessions.py``). Redirects to ``/admin``.

Settings: ``OIDC_ISSUER`` (the provider, also the access tokens' ``iss``), ``OIDC_CLIENT_ID``,
``OIDC_CLIENT_SECRET`` (empty for a public client: PKCE alone), ``OIDC_REDIRECT_URL`` (default:
this host's ``/auth/oidc/callback``), ``OIDC_SCOPES``, ``OIDC_AUDIENCE`` (sent as ``audience``,
which Auth0 needs to issue a JWT for our API; other providers ignore it).
"""

from __future__ import annotations

import hmac
import secrets
import warnings
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import authlib.deprecate  # noqa: E402, F401 - installs Authlib's "always" filter first, so ours wins
import httpx
import jwt
from aiohttp import web
from jwt import exceptions as jwt_errors

from infra.logging import get_logger
from infra.settings import Settings
from web.auth.jwks import JwksCache
from web.auth.sessions import AUTH, SignedPrincipalCodec, open_session, set_session_cookie
from web.auth.tokens import AuthError, Principal

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Authlib announces its httpx module's future rename
    from authlib.integrations.httpx_client import AsyncOAuth2Client

log = get_logger(__name__)

PREFIX = "/auth/oidc"
FLOW_COOKIE = "sm_oidc_flow"
FLOW_TTL_SECONDS = 600
AFTER_LOGIN = "/admin"


@dataclass
class OidcClient:
    """The provider's endpoints (discovered once, at start-up) and our client registration."""

    settings: Settings
    http: httpx.AsyncClient
    flows: SignedPrincipalCodec
    discovery: dict[str, Any] | None = None
    jwks: JwksCache | None = None

    @property
    def client_id(self) -> str:
        return self.settings.oidc_client_id

    async def discover(self) -> dict[str, Any]:
        if self.discovery is None:
            url = f"{self.settings.oidc_issuer.rstrip('/')}/.well-known/openid-configuration"
            response = await self.http.get(url, timeout=10)
            response.raise_for_status()
            document = response.json()
            if document.get("issuer") != self.settings.oidc_issuer:
                raise RuntimeError(f"the provider's issuer {document.get('issuer')!r} is not OIDC_ISSUER")
            self.discovery = document
            self.jwks = JwksCache(document["jwks_uri"], self.http)
        return self.discovery

    def oauth(self, redirect_uri: str) -> AsyncOAuth2Client:
        secret = self.settings.oidc_client_secret.get_secret_value()
        return AsyncOAuth2Client(
            client_id=self.client_id,
            client_secret=secret or None,
            token_endpoint_auth_method="client_secret_basic" if secret else "none",
            scope=self.settings.oidc_scopes,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
        )

    def verify_id_token(self, id_token: str, key: Any, nonce: str) -> dict[str, Any]:
        try:
            claims = jwt.decode(
                id_token,
                key,
                algorithms=list(self.settings.oidc_algorithms),
                audience=self.client_id,
                issuer=self.settings.oidc_issuer,
                leeway=30,
                options={"require": ["iss", "aud", "exp", "iat", "sub", "nonce"]},
            )
        except jwt_errors.PyJWTError as exc:
            raise AuthError("invalid_id_token", f"the ID token does not verify: {type(exc).__name__}") from exc
        if not hmac.compare_digest(str(claims.get("nonce", "")), nonce):
            raise AuthError("invalid_nonce", "the ID token's nonce is not this sign-in's")
        return claims


OIDC = web.AppKey("oidc_client", OidcClient)


def oidc_configured(settings: Settings) -> bool:
    return bool(settings.oidc_client_id and settings.oidc_issuer)


def _redirect_uri(request: web.Request) -> str:
    configured = request.config_dict[OIDC].settings.oidc_redirect_url
    if configured:
        return configured
    return f"{request.scheme}://{request.host}{PREFIX}/callback"


def _flow_cookie(response: web.StreamResponse, value: str, *, secure: bool, max_age: int) -> None:
    response.set_cookie(FLOW_COOKIE, value, max_age=max_age, path=PREFIX, httponly=True, secure=secure, samesite="Lax")


async def login(request: web.Request) -> web.Response:
    client = request.config_dict[OIDC]
    try:
        discovery = await client.discover()
    except (httpx.HTTPError, ValueError, KeyError, RuntimeError) as exc:
        log.warning("oidc_discovery_failed", error=str(exc))
        raise web.HTTPServiceUnavailable(text="the identity provider is unavailable") from exc
    state, nonce, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(24), secrets.token_urlsafe(48)
    extra: dict[str, str] = {"nonce": nonce}
    if client.settings.oidc_audience:
        extra["audience"] = client.settings.oidc_audience
    async with client.oauth(_redirect_uri(request)) as oauth:
        url, _ = oauth.create_authorization_url(
            discovery["authorization_endpoint"], state=state, code_verifier=verifier, **extra
        )
    # The flow's secrets ride in a signed cookie (no server state before sign-in).
    flow = client.flows.issue(
        Principal(subject=f"{state} {nonce} {verifier}", permissions=frozenset()),
        nonce=state,
    )
    response = web.Response(status=303, headers={"Location": url, "Cache-Control": "no-store"})
    _flow_cookie(response, flow, secure=request.config_dict[AUTH].cookie_secure, max_age=FLOW_TTL_SECONDS)
    return response


def _fail(request: web.Request, code: str, message: str, status: int = 400) -> web.Response:
    log.info("oidc_login_refused", code=code)
    response = web.json_response({"error": code, "message": message}, status=status)
    response.headers["Cache-Control"] = "no-store"
    _flow_cookie(response, "", secure=request.config_dict[AUTH].cookie_secure, max_age=0)
    return response


async def callback(request: web.Request) -> web.Response:
    client = request.config_dict[OIDC]
    state = request.config_dict[AUTH]
    if "error" in request.query:
        return _fail(request, "login_refused", f"the identity provider said: {request.query['error'][:100]}", 401)
    cookie = request.cookies.get(FLOW_COOKIE)
    if not cookie:
        return _fail(request, "invalid_state", "no sign-in in progress (start again at /admin)")
    try:
        flow = client.flows.load(cookie)
        expected_state, nonce, verifier = flow.principal.subject.split(" ")
    except (AuthError, ValueError):
        return _fail(request, "invalid_state", "the sign-in expired or was tampered with")
    got_state = request.query.get("state", "")
    if not hmac.compare_digest(got_state.encode(), expected_state.encode()):
        return _fail(request, "invalid_state", "the state does not match this sign-in")
    code = request.query.get("code")
    if not code:
        return _fail(request, "invalid_request", "no authorization code")
    try:
        discovery = await client.discover()
        async with client.oauth(_redirect_uri(request)) as oauth:
            token = await oauth.fetch_token(
                discovery["token_endpoint"], grant_type="authorization_code", code=code, code_verifier=verifier
            )
    except Exception as exc:  # Authlib raises its own OAuthError family, httpx its own
        log.warning("oidc_token_exchange_failed", error=type(exc).__name__, detail=str(exc)[:200])
        return _fail(request, "token_exchange_failed", "the identity provider refused the code", 401)
    id_token, access_token = token.get("id_token"), token.get("access_token")
    if not isinstance(id_token, str) or not isinstance(access_token, str):
        return _fail(request, "token_exchange_failed", "the provider returned no ID token or access token", 401)
    try:
        header = jwt.get_unverified_header(id_token)
        assert client.jwks is not None
        key = await client.jwks.get_key(str(header.get("kid", "")))
        if key is None:
            raise AuthError("unknown_key", "the ID token is signed with an unknown key")
        client.verify_id_token(id_token, key.key, nonce)
        if state.verifier is None:
            raise AuthError("auth_unavailable", "authentication is not ready yet", status=503)
        principal = await state.verifier.verify(access_token)
        value, lifetime = await open_session(state, principal, correlation_id=request.headers.get("X-Correlation-ID"))
    except AuthError as exc:
        return _fail(request, exc.code, exc.message, exc.status if exc.status in (403, 503) else 401)
    except jwt_errors.PyJWTError:
        return _fail(request, "invalid_id_token", "the ID token cannot be read", 401)
    log.info("oidc_signed_in", subject=principal.subject, expires_in=lifetime)
    response = web.Response(status=303, headers={"Location": AFTER_LOGIN, "Cache-Control": "no-store"})
    set_session_cookie(response, state, value, lifetime)
    _flow_cookie(response, "", secure=state.cookie_secure, max_age=0)
    return response


def add_oidc_routes(app: web.Application, settings: Settings) -> None:
    """Registers the sign-in routes (public: they are how a browser gets a credential)."""
    issuer = urlsplit(settings.oidc_issuer)
    if issuer.scheme != "https" and not settings.is_dev:
        raise RuntimeError("OIDC_ISSUER must be https outside dev")
    secret = settings.session_secret.get_secret_value()

    async def client_ctx(app: web.Application) -> Any:
        async with httpx.AsyncClient(headers={"User-Agent": "spacemusic-web"}) as http:
            app[OIDC] = OidcClient(
                settings, http, SignedPrincipalCodec(secret, "oidc-flow", FLOW_TTL_SECONDS, kind="flow")
            )
            try:
                await app[OIDC].discover()
            except (httpx.HTTPError, ValueError, KeyError, RuntimeError) as exc:
                log.warning("oidc_discovery_failed", error=str(exc))  # retried on the first sign-in
            yield

    app.cleanup_ctx.append(client_ctx)
    app.router.add_get(f"{PREFIX}/login", login)
    app.router.add_get(f"{PREFIX}/callback", callback)
    log.info("oidc_sign_in_configured", issuer=settings.oidc_issuer, client_id=settings.oidc_client_id)

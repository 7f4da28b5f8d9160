"""The admin deals page: a static shell (HTML, ES module, CSS) that calls the API itself.

``setup_admin(app)`` registers:

- ``GET /admin``: the page, for a browser holding a valid session cookie. Without one it
  redirects to the dev login (dev) or to ``/admin/login`` (elsewhere). The page is on the
  public allowlist (``web/auth/permissions.py``) because the middleware would answer a
  missing credential with a JSON 401; this handler checks the cookie itself, exactly as the
  middleware would (same codec, same cookie name).
- ``GET /admin/`` redirects to ``/admin``.
- ``GET /admin/login``: the sign-in page (public). In dev it sends the browser to the dev
  IdP's login form.
- ``GET /admin/static/...``: the page's assets, every file under ``static/`` (public;
  aiohttp's static route: no directory listing, nothing outside the folder, symlinks
  included). The page's HTML (``index.html``) lives beside this module, not in ``static/``.
- ``GET /admin/me``: who the session belongs to, the deal statuses (value and label, in
  lifecycle order, from ``DealStatus``) and the currency exponents (``@authenticated()``).

The data itself (``/deals``, ``/offers/...``, the SSE stream) goes through the normal,
permission-checked API routes, authenticated by the same cookie.
"""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from models.deal import DealStatus
from models.money import CURRENCY_EXPONENTS
from web.auth import AUTH, DEALS_READ, PRINCIPAL, Principal, authenticated, session_principal
from web.auth.dev_idp import DEV_IDP
from web.auth.dev_idp import PREFIX as DEV_IDP_PREFIX
from web.auth.oidc import OIDC
from web.auth.oidc import PREFIX as OIDC_PREFIX
from web.auth.permissions import ADMIN, creator_scope_for

HERE = Path(__file__).resolve().parent
PAGE = HERE / "index.html"
STATIC_DIR = HERE / "static"
STATIC_PREFIX = "/admin/static"
# Content types by suffix where Python's own table differs from what browsers expect
# (Python 3.11 says application/javascript); text assets are UTF-8.
ASSET_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
ASSET_HEADERS = {
    # FileResponse answers conditional requests (ETag / Last-Modified); no-cache makes the
    # browser revalidate, so a deploy is picked up on the next load.
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
}
# Labels where the value's words are not the label (a new status still gets one).
_STATUS_LABELS = {DealStatus.TERMSHEET_ISSUED: "Term sheet issued"}


def status_label(status: DealStatus) -> str:
    return _STATUS_LABELS.get(status) or status.value.replace("_", " ").capitalize()


# Every deal status, in lifecycle order (the enum's order), as the page shows it.
STATUSES = [{"value": status.value, "label": status_label(status)} for status in DealStatus]
DEV_LOGIN = f"{DEV_IDP_PREFIX}/login"
SIGN_IN = "/admin/login"
OIDC_LOGIN = f"{OIDC_PREFIX}/login"

# The page loads only its own script and stylesheet and talks only to this origin.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


async def _session_principal(request: web.Request) -> Principal | None:
    """The principal of an active session (signed cookie and live server-side row), or None
    (absent, forged, expired, signed out or revoked)."""
    state = request.config_dict[AUTH]
    cookie = request.cookies.get(state.cookie_name)
    if not cookie or state.store is None:
        return None
    return await session_principal(state, cookie)


def _page(body: str, *, status: int = 200) -> web.Response:
    return web.Response(
        text=body,
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers={"Cache-Control": "no-store", **SECURITY_HEADERS},
    )


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


def _sign_in_location(request: web.Request) -> str:
    """Where a browser without a session goes: the dev IdP's form when it runs, else ours."""
    if request.config_dict.get(OIDC) is not None:
        return OIDC_LOGIN  # the authorization-code flow at the configured provider
    return DEV_LOGIN if request.config_dict.get(DEV_IDP) is not None else SIGN_IN


async def admin_page(request: web.Request) -> web.Response:
    principal = await _session_principal(request)
    if principal is None:
        return _redirect(_sign_in_location(request))
    if DEALS_READ not in principal.permissions and ADMIN not in principal.permissions:
        return _page(
            _message_page(
                "Not allowed",
                f"You are signed in as {principal.subject}, which may not read deals.",
                sign_out=True,
            ),
            status=403,
        )
    return _page(PAGE.read_text(encoding="utf-8"))


async def admin_slash(_: web.Request) -> web.Response:
    return _redirect("/admin")


async def sign_in_page(request: web.Request) -> web.Response:
    if await _session_principal(request) is not None:
        return _redirect("/admin")
    if (location := _sign_in_location(request)) in (DEV_LOGIN, OIDC_LOGIN):
        return _redirect(location)
    return _page(_SIGN_IN_PAGE)


def _asset_headers(assets: web.AbstractResource) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """An ``on_response_prepare`` hook: the asset headers on every answer of the static route."""

    async def asset_headers(request: web.Request, response: web.StreamResponse) -> None:
        if request.match_info.route.resource is not assets:
            return
        response.headers.update(ASSET_HEADERS)
        content_type = ASSET_TYPES.get(Path(request.path).suffix)
        if isinstance(response, web.FileResponse) and response.status < 300 and content_type is not None:
            response.headers["Content-Type"] = content_type

    return asset_headers


@authenticated()
async def whoami(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    return web.json_response(
        {
            "subject": principal.subject,
            "permissions": sorted(principal.permissions),
            "creator_scope": creator_scope_for(principal),
            "expires_at": principal.raw_claims.get("exp"),
            "statuses": STATUSES,
            # The server's minor-unit exponents, so the page scales amounts exactly as the
            # API stores them (Intl only formats the result).
            "currency_exponents": CURRENCY_EXPONENTS,
        },
        headers={"Cache-Control": "no-store"},
    )


def _message_page(title: str, message: str, *, sign_out: bool = False) -> str:
    action = (
        '<button type="button" class="btn" data-action="sign-out">Sign out</button>'
        if sign_out
        else '<a class="btn btn-primary" href="/admin">Back to the deals page</a>'
    )
    return _SHELL.format(
        view="message",
        title=html.escape(title),
        body=f'<h1>{html.escape(title)}</h1><p class="muted">{html.escape(message)}</p>{action}',
    )


_SHELL = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · SpaceMusic admin</title>
<link rel="stylesheet" href="/admin/static/app.css">
<script type="module" src="/admin/static/js/main.js"></script>
</head><body data-view="{view}"><main class="card-page"><div class="card">
<div class="brand"><span class="brand-mark" aria-hidden="true"></span>SpaceMusic <span class="muted">admin</span></div>
{body}
</div></main></body></html>
"""

_SIGN_IN_PAGE = _SHELL.format(
    view="signin",
    title="Sign in",
    body="""<h1>Sign in</h1>
<p class="muted">The deals page needs a session. Sign in through the SpaceMusic identity provider
(Auth0) and paste the access token it issued for the SpaceMusic API; it is exchanged for an
HttpOnly session cookie (8 h) and is not stored by this page.</p>
<form id="signin-form" class="stack" novalidate>
<label for="signin-token">Access token</label>
<textarea id="signin-token" name="token" rows="4" required autocomplete="off" spellcheck="false"></textarea>
<p id="signin-error" class="form-error" role="alert" hidden></p>
<button type="submit" class="btn btn-primary">Sign in</button>
</form>""",
)


def setup_admin(app: web.Application) -> None:
    """Registers the admin page, its sign-in page and its assets (see the module docstring)."""
    router = app.router
    router.add_get("/admin", admin_page)
    router.add_get("/admin/", admin_slash)
    router.add_get(SIGN_IN, sign_in_page)
    router.add_get("/admin/me", whoami)
    # No directory listing (a folder is a 403), nothing outside STATIC_DIR: a symlink that
    # leads out of it, or a path that climbs out, is a 404. Its canonical path is
    # STATIC_PREFIX, on the public allowlist as "/admin/static/*".
    assets = router.add_static(STATIC_PREFIX, STATIC_DIR, show_index=False, follow_symlinks=False)
    app.on_response_prepare.append(_asset_headers(assets))

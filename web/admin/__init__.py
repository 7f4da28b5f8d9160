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
- ``GET /admin/static/{name}``: the page's assets (public, a fixed list of files).
- ``GET /admin/me``: who the session belongs to (declared ``@authenticated()``).

The data itself (``/deals``, ``/offers/...``, the SSE stream) goes through the normal,
permission-checked API routes, authenticated by the same cookie.
"""

from __future__ import annotations

import html
from pathlib import Path

from aiohttp import web

from models.money import CURRENCY_EXPONENTS
from web.auth import AUTH, DEALS_READ, PRINCIPAL, AuthError, Principal, authenticated
from web.auth.dev_idp import DEV_IDP
from web.auth.dev_idp import PREFIX as DEV_IDP_PREFIX
from web.auth.permissions import ADMIN, creator_scope_for

STATIC_DIR = Path(__file__).resolve().parent / "static"
# Only these files are served; nothing else under static/ (or outside it) is reachable.
ASSETS = {
    "app.js": "text/javascript",
    "app.css": "text/css",
}
DEV_LOGIN = f"{DEV_IDP_PREFIX}/login"
SIGN_IN = "/admin/login"

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


def _session_principal(request: web.Request) -> Principal | None:
    """The principal of a valid session cookie, or None (absent, forged or expired)."""
    state = request.config_dict[AUTH]
    cookie = request.cookies.get(state.cookie_name)
    if not cookie:
        return None
    try:
        return state.load_session(cookie)
    except AuthError:
        return None


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
    return DEV_LOGIN if request.config_dict.get(DEV_IDP) is not None else SIGN_IN


async def admin_page(request: web.Request) -> web.Response:
    principal = _session_principal(request)
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
    return _page((STATIC_DIR / "index.html").read_text(encoding="utf-8"))


async def admin_slash(_: web.Request) -> web.Response:
    return _redirect("/admin")


async def sign_in_page(request: web.Request) -> web.Response:
    if _session_principal(request) is not None:
        return _redirect("/admin")
    if _sign_in_location(request) == DEV_LOGIN:
        return _redirect(DEV_LOGIN)
    return _page(_SIGN_IN_PAGE)


async def static_asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    content_type = ASSETS.get(name)
    if content_type is None:
        raise web.HTTPNotFound(text="no such asset")
    # FileResponse answers conditional requests (ETag / Last-Modified); no-cache makes the
    # browser revalidate, so a deploy is picked up on the next load.
    response = web.FileResponse(
        STATIC_DIR / name,
        headers={
            "Content-Type": content_type + "; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
        },
    )
    return response


@authenticated()
async def whoami(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    return web.json_response(
        {
            "subject": principal.subject,
            "permissions": sorted(principal.permissions),
            "creator_scope": creator_scope_for(principal),
            "expires_at": principal.raw_claims.get("exp"),
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
<script type="module" src="/admin/static/app.js"></script>
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
    router.add_get("/admin/static/{name}", static_asset)
    router.add_get("/admin/me", whoami)

"""`spacemusic dev-token`: mint a dev-IdP access token from the shell (dev only)."""

from __future__ import annotations

import os

import click

from bootstrap.commands.support import load_settings
from web.auth.dev_idp import MAX_TTL_SECONDS, DevIdpDisabled, mint_token
from web.auth.permissions import ALL_PERMISSIONS
from web.auth.tokens import normalize_creator_id


def _creator_option(_: click.Context, __: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return normalize_creator_id(value)
    except ValueError as exc:
        raise click.BadParameter("must be a UUID") from exc


@click.command("dev-token")
@click.option(
    "--sub", "subject", default="dev|operator", show_default=True, help="Token subject, e.g. alice or auth0|alice."
)
@click.option(
    "--permission",
    "permissions",
    multiple=True,
    help="A permission to grant (repeatable): --permission deals:read --permission offers:write.",
)
@click.option("--creator-id", default=None, callback=_creator_option, help="Scope the token to this creator (UUID).")
@click.option("--ttl", type=click.IntRange(1, MAX_TTL_SECONDS), default=3600, show_default=True, help="Seconds.")
def dev_token(subject: str, permissions: tuple[str, ...], creator_id: str | None, ttl: int) -> None:
    """Print an RS256 access token signed by the dev IdP (SPACEMUSIC_ENV=dev only).

    curl -H "Authorization: Bearer $(spacemusic dev-token --sub me --permission deals:read)" ...
    """
    # Checked before reading settings: outside dev this command does nothing at all.
    if os.environ.get("SPACEMUSIC_ENV") != "dev":
        raise click.ClickException("dev-token only works with SPACEMUSIC_ENV=dev (load infra/local/dev.env)")
    settings = load_settings()
    unknown = sorted(set(permissions) - ALL_PERMISSIONS)
    if unknown:
        click.echo(f"warning: not a SpaceMusic permission: {', '.join(unknown)}", err=True)
    try:
        token = mint_token(settings, subject, permissions, creator_id=creator_id, ttl=ttl)
    except DevIdpDisabled as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(token)

"""`spacemusic sessions`: list and revoke the admin page's server-side sessions.

A revoked session authenticates nothing from its next request on, on every web process, and
an SSE stream opened with it is closed within SESSION_CHECK_SECONDS (default 5 s).
"""

from __future__ import annotations

import click
from rich.console import Console

from bootstrap.commands.support import load_settings, run
from infra.db import create_engine
from state.sessions import PostgresAuthStore, SessionRow

console = Console(stderr=True)


async def _with_store(coro_factory):  # type: ignore[no-untyped-def]
    engine = create_engine(load_settings(logs_to_stderr=True), pool_size=1)
    try:
        return await coro_factory(PostgresAuthStore(engine))
    finally:
        await engine.dispose()


@click.group()
def sessions() -> None:
    """Server-side browser sessions (auth_sessions in Postgres)."""


@sessions.command("list")
@click.option("--subject", help="Only this subject's sessions.")
@click.option("--all", "include_inactive", is_flag=True, help="Include revoked and expired sessions.")
def sessions_list(subject: str | None, include_inactive: bool) -> None:
    """Print the sessions as tab-separated lines (id: the first 16 hex digits of the stored hash)."""
    rows: list[SessionRow] = run(
        _with_store(lambda store: store.list_sessions(subject=subject, include_inactive=include_inactive))
    )
    click.echo("\t".join(("id", "subject", "creator", "permissions", "created", "expires", "state")))
    for row in rows:
        state = "active" if row.active else (f"revoked ({row.revoked_reason})" if row.revoked_at else "expired")
        fields = (
            row.session_hash[:16],
            row.subject,
            row.creator_id or "-",
            ",".join(sorted(row.permissions)) or "-",
            row.created_at.isoformat(timespec="seconds"),
            row.expires_at.isoformat(timespec="seconds"),
            state,
        )
        click.echo("\t".join(fields))


@sessions.command("purge")
@click.option("--older-than-hours", default=24.0, show_default=True, help="Keep ended sessions this long.")
def sessions_purge(older_than_hours: float) -> None:
    """Delete sessions that ended long ago, and expired ticket nonces (housekeeping)."""
    count = run(_with_store(lambda store: store.purge(older_than_hours * 3600)))
    console.print(f"purged {count} session(s)")


@sessions.command("revoke")
@click.option("--subject", help="Revoke every session of this subject (e.g. auth0|abc).")
@click.option("--id", "session_id", help="Revoke one session: the id shown by `sessions list` (a prefix).")
@click.option("--everyone", is_flag=True, help="Revoke every active session.")
@click.option("--reason", default="revoked by an operator", show_default=True)
def sessions_revoke(subject: str | None, session_id: str | None, everyone: bool, reason: str) -> None:
    """Revoke sessions: by subject, by id, or everyone. Prints how many were revoked."""
    if sum(x is not None and x is not False for x in (subject, session_id, everyone or None)) != 1:
        raise click.UsageError("give exactly one of --subject, --id, --everyone")

    async def go(store: PostgresAuthStore) -> int:
        if session_id is not None:
            matches = [r for r in await store.list_sessions() if r.session_hash.startswith(session_id.lower())]
            if len(matches) != 1:
                raise click.ClickException(f"{len(matches)} active sessions match id {session_id!r}")
            return await store.revoke(session_hash=matches[0].session_hash, reason=reason)
        if everyone:
            return await store.revoke(everyone=True, reason=reason)
        return await store.revoke(subject=subject, reason=reason)

    count = run(_with_store(go))
    console.print(f"revoked {count} session(s)")
    click.echo(count)

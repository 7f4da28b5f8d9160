"""Setup commands: database migrations, schema registration/checks, topic creation."""

from __future__ import annotations

import sys

import click
from rich.console import Console
from rich.table import Table

from bootstrap.commands.support import load_settings, run
from infra.avro import RegistryCodec, codec_from_settings
from infra.kafka import all_logical_topics, ensure_topics, list_topics
from infra.settings import REPO_ROOT, Settings

console = Console(stderr=True)


def _alembic_config(settings: Settings):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(REPO_ROOT / "migrations"))
    config.set_main_option("sqlalchemy.url", settings.sqlalchemy_url.replace("%", "%%"))
    return config


@click.command()
@click.option(
    "--revision",
    default="heads",
    show_default=True,
    help="Target revision (heads: every branch; revisions of concurrent work may branch from one parent).",
)
@click.option("--downgrade", is_flag=True, help="Downgrade to --revision instead of upgrading.")
def migrate(revision: str, downgrade: bool) -> None:
    """Apply the Alembic migrations (the Procfile's release step)."""
    from alembic import command

    settings = load_settings()
    config = _alembic_config(settings)
    if downgrade:
        command.downgrade(config, revision)
    else:
        command.upgrade(config, revision)
    console.print(f"[green]database at {revision}[/green]")


def _codec(settings: Settings) -> RegistryCodec:
    return codec_from_settings(settings)


@click.group()
def schemas() -> None:
    """Avro schemas in schema/ and the registry (subjects <topic>-value)."""


@schemas.command("register")
def schemas_register() -> None:
    """Set BACKWARD compatibility and register every schema (refused if incompatible)."""
    settings = load_settings()

    async def go() -> dict[str, int]:
        codec = _codec(settings)
        for topic in codec.catalog.topics:
            await codec._client.update_compatibility("BACKWARD", codec.subject(topic))
        return await codec.register_all()

    ids = run(go())
    table = Table("subject", "schema id")
    for topic, schema_id in ids.items():
        table.add_row(f"{settings.topic(topic)}-value", str(schema_id))
    console.print(table)


@schemas.command("check")
def schemas_check() -> None:
    """Fail (exit 1) if a local schema is not BACKWARD compatible with the registry's."""
    settings = load_settings()

    async def go() -> list[tuple[str, bool, str]]:
        codec = _codec(settings)
        return [(topic, *await codec.check_compatibility(topic)) for topic in codec.catalog.topics]

    results = run(go())
    table = Table("subject", "compatible", "detail")
    for topic, ok, detail in results:
        table.add_row(f"{settings.topic(topic)}-value", "[green]yes[/green]" if ok else "[red]NO[/red]", detail[:200])
    console.print(table)
    if not all(ok for _, ok, _ in results):
        console.print("[red]incompatible schema change: make it BACKWARD compatible (add defaults)[/red]")
        sys.exit(1)


@click.group()
def topics() -> None:
    """Kafka topics of the offer lifecycle."""


@topics.command("create")
def topics_create() -> None:
    """Create every offer.* topic and the dead-letter topic (idempotent)."""
    settings = load_settings()
    created = run(ensure_topics(settings))
    for name in all_logical_topics():
        physical = settings.topic(name)
        state = "created" if physical in created else "exists"
        console.print(f"{physical}: {state} ({settings.topic_partitions} partitions)")


@topics.command("list")
def topics_list() -> None:
    """List the topics on the broker."""
    settings = load_settings()
    for name in run(list_topics(settings)):
        click.echo(name)

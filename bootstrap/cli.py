"""`spacemusic`: one console script for every process and operator task.

This is the composition root, the only place that sees both the Faust side (``agents``)
and the web side (``web``). Faust's own umbrella CLI is reachable as `spacemusic faust
...`; `spacemusic worker` runs the Faust worker for this app. Settings are read from the
environment by each command when it runs (never at import), so `--help` works anywhere.
"""

from __future__ import annotations

import click

from bootstrap.commands.backup import backup, restore
from bootstrap.commands.deadletters import deadletters
from bootstrap.commands.deal import deal
from bootstrap.commands.devtoken import dev_token
from bootstrap.commands.ledger import ledger
from bootstrap.commands.offers import offers
from bootstrap.commands.payouts import payouts
from bootstrap.commands.rebuild import rebuild_projections
from bootstrap.commands.recipients import recipients
from bootstrap.commands.reconcile import reconcile_command
from bootstrap.commands.replay import replay
from bootstrap.commands.sessions import sessions
from bootstrap.commands.setup import migrate, schemas, topics
from bootstrap.commands.simulate import simulate
from bootstrap.commands.trace import trace_command
from bootstrap.commands.web import web_command
from bootstrap.commands.worker import faust_cli, worker


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """SpaceMusic: catalog advances as an event-sourced pipeline (Faust, Kafka, Postgres).

    Configuration comes from the environment (see infra/local/dev.env for the local stack).
    """


for command in (
    worker,
    web_command,
    faust_cli,
    migrate,
    schemas,
    topics,
    simulate,
    ledger,
    dev_token,
    replay,
    deadletters,
    deal,
    rebuild_projections,
    payouts,
    offers,
    reconcile_command,
    backup,
    restore,
    sessions,
    recipients,
    trace_command,
):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="spacemusic")

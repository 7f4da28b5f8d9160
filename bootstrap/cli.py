"""`spacemusic`: one console script for every process and operator task.

This is the composition root, the only place that sees both the Faust side (``agents``)
and the web side (``web``). Faust's own umbrella CLI is reachable as `spacemusic faust
...`; `spacemusic worker` runs the Faust worker for this app. Settings are read from the
environment by each command when it runs (never at import), so `--help` works anywhere.
"""

from __future__ import annotations

import click

from agents.commands.admin import migrate, schemas, topics
from agents.commands.deadletters import deadletters
from agents.commands.deal import deal
from agents.commands.ledger import ledger
from agents.commands.rebuild import rebuild_projections
from agents.commands.replay import replay
from agents.commands.services import faust_cli, worker
from bootstrap.simulate import simulate
from web.auth.dev_idp import dev_token
from web.command import web_command


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
):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="spacemusic")

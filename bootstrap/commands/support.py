"""What every command shares: settings (read once, here, at the entry point) and logging."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

import click

from infra.logging import configure_logging
from infra.settings import Settings, SettingsError

T = TypeVar("T")


def load_settings(*, logs_to_stderr: bool = False) -> Settings:
    """Settings from the environment (a missing one is a clean CLI error), logging set up."""
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc
    configure_logging(settings.log_level, sys.stderr if logs_to_stderr else None)
    return settings


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)

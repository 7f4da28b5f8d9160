"""Kept for the agents' commands: the shared helpers live in ``infra.cli``."""

from infra.cli import load_settings, run

__all__ = ["load_settings", "run"]

"""Subcommands of the `spacemusic` command line, one module per concern."""

"""The `spacemusic` subcommands, one module per command group; shared options in ``support``."""

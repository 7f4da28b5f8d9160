"""Faust stream processors and the `spacemusic` command line."""

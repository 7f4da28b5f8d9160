"""Composition root: wires the agents' and the web app's commands into one CLI."""

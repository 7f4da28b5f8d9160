"""Fixtures for the fault tests: one private stack per session (see tests/faults/stack.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults.stack import PrivateStack


@pytest.fixture(scope="session")
def private_stack() -> Iterator[PrivateStack]:
    stack = PrivateStack()
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()

"""Feature flags without any network: the SDK's file source on temp flag files, and the
LaunchDarkly path pointed at a closed local port (never at LaunchDarkly itself)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from infra.flags import (
    FlagContext,
    FlagsUnavailable,
    SdkFlags,
    StaticFlags,
    file_config,
    flags_from_settings,
    launchdarkly_config,
    ld_context,
)
from infra.settings import REPO_ROOT
from tests.support.flags import CREATOR, FLAG, OTHER_CREATOR, boolean_flag, local_settings, write_flags

TESTER = "auth0|tester"
CLOSED_PORT = "http://127.0.0.1:1"


@pytest.fixture
async def file_flags(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Starts an SdkFlags on a flag file; everything started is closed afterwards."""
    started: list[SdkFlags] = []

    async def start(*flags: dict[str, Any], poll_interval: float = 1.0) -> SdkFlags:
        path = write_flags(tmp_path / "flags.json", *flags)
        source = SdkFlags(file_config(path, poll_interval=poll_interval), source="file", start_wait=5, flag_file=path)
        await source.start()
        started.append(source)
        return source

    yield start
    for source in started:
        await source.close()


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every outgoing socket connection fails the test (and is recorded)."""
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise AssertionError(f"network connection attempted to {address!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


# --- the local file source -------------------------------------------------------------------


async def test_fallthrough_is_what_everyone_gets(file_flags: Callable[..., Any]) -> None:
    flags = await file_flags(boolean_flag(fallthrough=False, creators=[CREATOR]))
    for context in (FlagContext(), FlagContext(user_id=TESTER), FlagContext(creator_id=OTHER_CREATOR)):
        # The flag decides, not the caller's default.
        assert await flags.variation(FLAG, context, True) is False
    flags_on = await file_flags(boolean_flag("everyone-on", fallthrough=True))
    assert await flags_on.variation("everyone-on", FlagContext(), False) is True


async def test_targets_a_creator(file_flags: Callable[..., Any]) -> None:
    flags = await file_flags(boolean_flag(creators=[CREATOR]))
    assert await flags.variation(FLAG, FlagContext(creator_id=CREATOR), False) is True
    assert await flags.variation(FLAG, FlagContext(user_id=TESTER, creator_id=CREATOR), False) is True
    assert await flags.variation(FLAG, FlagContext(creator_id=OTHER_CREATOR), False) is False
    # A user whose key happens to be the creator id is a different context kind.
    assert await flags.variation(FLAG, FlagContext(user_id=CREATOR), False) is False


async def test_targets_a_user_and_a_role(file_flags: Callable[..., Any]) -> None:
    flags = await file_flags(boolean_flag(users=[TESTER], creators=[CREATOR], roles=["calculator:v2-preview"]))
    assert await flags.variation(FLAG, FlagContext(user_id=TESTER), False) is True
    assert await flags.variation(FLAG, FlagContext(user_id=TESTER, creator_id=OTHER_CREATOR), False) is True
    assert await flags.variation(FLAG, FlagContext(user_id="auth0|someone-else"), False) is False
    by_role = FlagContext(user_id="auth0|someone-else", roles=("deals:read", "calculator:v2-preview"))
    assert await flags.variation(FLAG, by_role, False) is True


async def test_absent_flag_gives_the_default(file_flags: Callable[..., Any]) -> None:
    flags = await file_flags(boolean_flag(fallthrough=True))
    assert await flags.variation("no-such-flag", FlagContext(user_id=TESTER), True) is True
    assert await flags.variation("no-such-flag", FlagContext(user_id=TESTER), False) is False


async def test_flag_switched_off_serves_off_variation(file_flags: Callable[..., Any]) -> None:
    flags = await file_flags(boolean_flag(on=False, fallthrough=True, creators=[CREATOR]))
    assert await flags.variation(FLAG, FlagContext(creator_id=CREATOR), True) is False


async def test_non_boolean_flag_gives_the_default(file_flags: Callable[..., Any]) -> None:
    flag = {**boolean_flag("multi", fallthrough=True), "variations": ["a", "b"]}
    flags = await file_flags(flag)
    assert await flags.variation("multi", FlagContext(), True) is True
    assert await flags.variation("multi", FlagContext(), False) is False


async def test_file_changes_are_picked_up(file_flags: Callable[..., Any], tmp_path: Path) -> None:
    flags = await file_flags(boolean_flag(fallthrough=False), poll_interval=0.1)
    assert await flags.variation(FLAG, FlagContext(), False) is False

    path = write_flags(tmp_path / "flags.json", boolean_flag(fallthrough=True))
    bump_mtime(path)
    assert await eventually(lambda: flags.variation(FLAG, FlagContext(), False), True)

    # A broken edit is ignored: the last good flags stay in force.
    path.write_text("{ not json")
    bump_mtime(path)
    await asyncio.sleep(0.4)
    assert await flags.variation(FLAG, FlagContext(), False) is True


async def test_missing_or_malformed_file_fails_at_start(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    with pytest.raises(FlagsUnavailable, match="does not exist"):
        await SdkFlags(file_config(missing), source="file", start_wait=1, flag_file=missing).start()
    broken = tmp_path / "broken.json"
    broken.write_text('{"flags": ')
    with pytest.raises(FlagsUnavailable, match="not readable JSON"):
        await SdkFlags(file_config(broken), source="file", start_wait=1, flag_file=broken).start()
    wrong_key = tmp_path / "wrong-key.json"
    wrong_key.write_text(json.dumps({"flags": {"a": boolean_flag("b")}}))
    with pytest.raises(FlagsUnavailable, match="flags.a"):
        await SdkFlags(file_config(wrong_key), source="file", start_wait=1, flag_file=wrong_key).start()


async def test_file_source_never_touches_the_network(file_flags: Callable[..., Any], no_network: list[object]) -> None:
    flags = await file_flags(boolean_flag(creators=[CREATOR]))
    assert await flags.variation(FLAG, FlagContext(user_id=TESTER, creator_id=CREATOR), False) is True
    await flags.close()
    assert no_network == []


async def test_the_dev_flag_file_targets_the_documented_creator(tmp_path: Path) -> None:
    flags = flags_from_settings(local_settings(REPO_ROOT / "infra" / "local" / "flags.json"))
    await flags.start()
    try:
        assert await flags.variation(FLAG, FlagContext(creator_id=CREATOR), False) is True
        assert await flags.variation(FLAG, FlagContext(user_id="dev|calculator-v2-tester"), False) is True
        assert await flags.variation(FLAG, FlagContext(user_id="dev|admin", creator_id=OTHER_CREATOR), True) is False
        assert await flags.variation(FLAG, FlagContext(), True) is False
    finally:
        await flags.close()


# --- the LaunchDarkly path, pointed at a closed local port ---------------------------------------


async def test_unreachable_launchdarkly_neither_blocks_nor_fails() -> None:
    config = launchdarkly_config(
        "sdk-00000000-0000-0000-0000-000000000000",
        base_uri=CLOSED_PORT,
        stream_uri=CLOSED_PORT,
        events_uri=CLOSED_PORT,
    )
    flags = SdkFlags(config, source="launchdarkly", start_wait=0.5)
    gaps: list[float] = []
    done = asyncio.Event()

    async def heartbeat() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    beat = asyncio.create_task(heartbeat())
    started = time.perf_counter()
    await flags.start()
    elapsed = time.perf_counter() - started
    try:
        assert 0.4 <= elapsed < 3, "start waits start_wait for the first payload, no longer"
        # Defaults, both ways, while LaunchDarkly cannot be reached.
        assert await flags.variation(FLAG, FlagContext(user_id=TESTER, creator_id=CREATOR), True) is True
        assert await flags.variation(FLAG, FlagContext(user_id=TESTER, creator_id=CREATOR), False) is False
    finally:
        await flags.close()
        done.set()
        await beat
    assert len(gaps) > 20 and max(gaps) < 0.25, f"event loop stalled for {max(gaps):.3f}s during start"


def test_launchdarkly_config_keeps_diagnostics_off_and_needs_a_key() -> None:
    config = launchdarkly_config("sdk-key")
    assert config.diagnostic_opt_out is True and config.send_events is True and config.offline is False
    with pytest.raises(ValueError):
        launchdarkly_config("")


def test_file_config_is_not_offline_and_sends_nothing(tmp_path: Path) -> None:
    config = file_config(tmp_path / "flags.json")
    # offline=True would disable the file data source too.
    assert config.offline is False
    assert config.send_events is False and config.diagnostic_opt_out is True
    assert config.update_processor_class is not None
    assert all(uri.startswith("http://127.0.0.1") for uri in (config.base_uri, config.stream_uri, config.events_uri))


# --- factory, contexts, fallbacks ----------------------------------------------------------------


def test_factory_picks_the_source_from_settings(tmp_path: Path, no_network: list[object]) -> None:
    local = flags_from_settings(local_settings(tmp_path / "flags.json"))
    remote = flags_from_settings(local_settings(tmp_path / "flags.json", sdk_key="sdk-key"))
    assert isinstance(local, SdkFlags) and local.source.startswith("file:")
    assert isinstance(remote, SdkFlags) and remote.source == "launchdarkly"
    assert no_network == [], "building a flag source does no I/O; start() does"


async def test_evaluating_before_start_gives_the_default(tmp_path: Path) -> None:
    flags = flags_from_settings(local_settings(write_flags(tmp_path / "f.json", boolean_flag(fallthrough=True))))
    assert await flags.variation(FLAG, FlagContext(), False) is False
    await flags.close()  # closing an unstarted source is harmless


def test_contexts_are_multi_kind() -> None:
    both = ld_context(FlagContext(user_id=TESTER, creator_id=CREATOR, roles=("offers:write", "admin")))
    assert both.multiple and both.valid
    user = both.get_individual_context("user")
    creator = both.get_individual_context("creator")
    assert user is not None and user.key == TESTER and user.get("roles") == ["admin", "offers:write"]
    assert creator is not None and creator.key == CREATOR
    only_creator = ld_context(FlagContext(creator_id=CREATOR))
    assert only_creator.kind == "creator" and only_creator.valid
    nobody = ld_context(FlagContext())
    assert nobody.kind == "user" and nobody.anonymous and nobody.valid


async def test_static_flags() -> None:
    flags = StaticFlags({FLAG: True})
    await flags.start()
    assert await flags.variation(FLAG, FlagContext(), False) is True
    assert await flags.variation("other", FlagContext(), True) is True
    await flags.close()


# --- helpers -------------------------------------------------------------------------------------


def bump_mtime(path: Path) -> None:
    # The SDK's poller compares modification times; make the change visible even on file
    # systems with coarse timestamps.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))


async def eventually(read: Callable[[], Any], expected: object, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await read() == expected:
            return True
        await asyncio.sleep(0.05)
    return False

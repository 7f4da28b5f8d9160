"""Feature flags behind one small interface: LaunchDarkly in production, a local file otherwise.

Both sources are the official LaunchDarkly SDK client; only its data source differs. With an
SDK key it streams flags from LaunchDarkly. Without one it reads LaunchDarkly's own flag JSON
from ``settings.flags_file`` through the SDK's file data source, so targeting rules written
locally (per user, per creator, by role) evaluate exactly as they would in production. The
file format and how to flip a flag are in docs/flags-and-calculator.md.

Nothing here blocks the event loop: the client is built (and, for LaunchDarkly, waits for
its first payload) in a worker thread; evaluation reads an in-memory store.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ldclient import Context
from ldclient.client import LDClient
from ldclient.config import Config
from ldclient.integrations import Files

from infra.logging import get_logger
from infra.settings import Settings

log = get_logger(__name__)

USER_KIND = "user"
CREATOR_KIND = "creator"
ANONYMOUS_USER_KEY = "anonymous"
# The file source never talks to LaunchDarkly; these make sure that, should some SDK code path
# try anyway, it hits a closed local port instead of the internet.
_NOWHERE = "http://127.0.0.1:9"
_LOCAL_SDK_KEY = "local-flag-file"


class FlagsUnavailable(RuntimeError):
    """The flag source cannot start (e.g. the local flag file is missing or malformed)."""


@dataclass(frozen=True, slots=True)
class FlagContext:
    """Who a flag is evaluated for. Every field is optional: an anonymous call still gets the
    flag's fallthrough value, it just cannot be targeted."""

    user_id: str | None = None
    creator_id: str | None = None
    roles: tuple[str, ...] = ()


class FeatureFlags(Protocol):
    async def start(self) -> None:
        """Connects / loads; call once before serving. Safe to evaluate before: defaults."""

    async def variation(self, flag_key: str, context: FlagContext, default: bool) -> bool:
        """The flag's boolean value for ``context``; ``default`` whenever it cannot be decided."""

    async def close(self) -> None: ...


def ld_context(context: FlagContext) -> Context:
    """A multi-context of kind "user" (key = auth subject, attribute ``roles``) and kind
    "creator" (key = creator UUID), so flags can target either or both."""
    parts: list[Context] = []
    if context.user_id:
        user = Context.builder(context.user_id).kind(USER_KIND)
        if context.roles:
            user.set("roles", sorted(context.roles))
        parts.append(user.build())
    if context.creator_id:
        parts.append(Context.create(context.creator_id, CREATOR_KIND))
    if not parts:
        # LaunchDarkly refuses an evaluation without any context; a shared anonymous key keeps
        # unauthenticated calls to one context instead of one per request.
        parts.append(Context.builder(ANONYMOUS_USER_KEY).kind(USER_KIND).anonymous(True).build())
    return parts[0] if len(parts) == 1 else Context.create_multi(*parts)


class SdkFlags:
    """The LaunchDarkly SDK client, configured for either source."""

    def __init__(
        self,
        config: Config,
        *,
        source: str,
        start_wait: float,
        flag_file: Path | None = None,
    ) -> None:
        self._config = config
        self._start_wait = start_wait
        self._flag_file = flag_file
        self.source = source
        self._client: LDClient | None = None

    async def start(self) -> None:
        self._client = await asyncio.to_thread(self._start_client)
        if self._client.is_initialized():
            log.info("flags_ready", source=self.source)
        else:
            # The SDK keeps retrying in its own thread; until then every flag is its default.
            log.warning("flags_not_ready", source=self.source, start_wait_seconds=self._start_wait)

    def _start_client(self) -> LDClient:
        if self._flag_file is not None:
            check_flag_file(self._flag_file)
        client = LDClient(self._config, start_wait=self._start_wait)
        if self._flag_file is not None and not client.is_initialized():
            client.close()
            raise FlagsUnavailable(f"flag file {self._flag_file} could not be loaded (see the ldclient log)")
        return client

    async def variation(self, flag_key: str, context: FlagContext, default: bool) -> bool:
        client = self._client
        # Checked here rather than left to the SDK, which logs a warning on every such call.
        if client is None or not client.is_initialized():
            return default
        # Called inline, not via to_thread: evaluation reads the SDK's in-memory store and
        # queues the analytics event without blocking (queue.put(block=False)), microseconds
        # of work that a thread hop would only slow down.
        try:
            value = client.variation(flag_key, ld_context(context), default)
        except Exception:  # noqa: BLE001 - a flag must never fail the request it guards
            log.exception("flag_evaluation_failed", flag=flag_key)
            return default
        return value if isinstance(value, bool) else default

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            # Flushes pending analytics events over HTTP (LaunchDarkly only): off the loop.
            await asyncio.to_thread(client.close)


class StaticFlags:
    """Fixed values, no SDK: for tests and tools that must not depend on any flag source."""

    def __init__(self, values: Mapping[str, bool] | None = None) -> None:
        self._values = dict(values or {})

    async def start(self) -> None:
        return None

    async def variation(self, flag_key: str, context: FlagContext, default: bool) -> bool:
        return self._values.get(flag_key, default)

    async def close(self) -> None:
        return None


def launchdarkly_config(
    sdk_key: str,
    *,
    base_uri: str | None = None,
    stream_uri: str | None = None,
    events_uri: str | None = None,
) -> Config:
    """Production: stream flags from LaunchDarkly (or a Relay Proxy given its URIs)."""
    if not sdk_key:
        raise ValueError("a LaunchDarkly SDK key is required")
    uris = {"base_uri": base_uri, "stream_uri": stream_uri, "events_uri": events_uri}
    # Diagnostics describe this host and SDK config to LaunchDarkly; we gain nothing from them.
    return Config(sdk_key, diagnostic_opt_out=True, **{k: v for k, v in uris.items() if v is not None})


def file_config(path: Path, *, poll_interval: float = 1.0) -> Config:
    """Local: LaunchDarkly flag JSON from ``path``, re-read when the file changes.

    Not ``offline=True``: offline mode switches off every data source, the file one included.
    ``send_events=False`` removes the only other network user (analytics and diagnostics).
    """
    source = Files.new_data_source(paths=[str(path)], auto_update=True, poll_interval=poll_interval)
    return Config(
        _LOCAL_SDK_KEY,
        update_processor_class=source,
        send_events=False,
        diagnostic_opt_out=True,
        base_uri=_NOWHERE,
        stream_uri=_NOWHERE,
        events_uri=_NOWHERE,
    )


def check_flag_file(path: Path) -> None:
    """Fails with the file and the reason; the SDK would only log a traceback and serve defaults."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise FlagsUnavailable(f"flag file {path} does not exist (set FLAGS_FILE or LAUNCHDARKLY_SDK_KEY)") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FlagsUnavailable(f"flag file {path} is not readable JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise FlagsUnavailable(f"flag file {path} must hold a JSON object with 'flags' and/or 'flagValues'")
    for section in ("flags", "flagValues", "segments"):
        if not isinstance(data.get(section, {}), dict):
            raise FlagsUnavailable(f"flag file {path}: '{section}' must be an object keyed by flag/segment key")
    for key, flag in data.get("flags", {}).items():
        if not isinstance(flag, dict) or flag.get("key") != key:
            raise FlagsUnavailable(f"flag file {path}: flags.{key} must be an object whose 'key' is {key!r}")


def flags_from_settings(settings: Settings, *, start_wait: float = 5.0, poll_interval: float = 1.0) -> FeatureFlags:
    """LaunchDarkly when an SDK key is configured, the local flag file otherwise. Does no I/O:
    ``await flags.start()`` does, off the event loop."""
    if settings.launchdarkly_sdk_key:
        return SdkFlags(
            launchdarkly_config(settings.launchdarkly_sdk_key.get_secret_value()),
            source="launchdarkly",
            start_wait=start_wait,
        )
    path = settings.flags_file
    return SdkFlags(
        file_config(path, poll_interval=poll_interval), source=f"file:{path}", start_wait=start_wait, flag_file=path
    )

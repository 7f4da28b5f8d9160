"""The one way this project retries: tenacity, with named policies.

- ``STARTUP``: a dependency that is not there yet (broker, database, registry) when a
  process starts; exponential 0.5 s .. 5 s, bounded by the caller's deadline
  (``STARTUP_RETRY_SECONDS``).
- ``TRANSIENT_IO``: an outage while running (broker, database or registry gone for a
  while); exponential 0.25 s .. 10 s, forever unless the caller bounds it: nothing is
  acknowledged while its effects are not durable, so waiting is the correct answer.
- ``PROVIDER_AMBIGUITY``: a payment provider whose answer did not say whether money moved;
  exponential 1 s .. 60 s, asking again (same idempotency key) and looking the transfer up.
- ``QUICK``: a handful of short retries for a call that usually succeeds the second time
  (a registry blink while replaying), then the error goes to the caller.

Logging is per outage, not per attempt: the first failure is a warning, then one line at
attempts 2, 4, 8, 16..., and one ``*_recovered`` line with the attempt count and the
time it took once the call succeeds again.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    stop_any,
    stop_never,
    wait_exponential,
)
from tenacity.wait import wait_base

from infra.logging import get_logger

T = TypeVar("T")
log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    name: str
    initial_seconds: float
    max_seconds: float
    max_attempts: int | None = None  # None: until the deadline (or forever)
    # The log event is "<what>_<symptom>", e.g. "kafka_not_ready" while a process starts.
    symptom: str = "unavailable"

    def wait_seconds(self, attempt: int) -> float:
        """The pause after failed attempt number ``attempt`` (1-based)."""
        return min(self.max_seconds, self.initial_seconds * 2 ** (attempt - 1))


STARTUP = RetryPolicy("startup", 0.5, 5.0, symptom="not_ready")
TRANSIENT_IO = RetryPolicy("transient_io", 0.25, 10.0)
PROVIDER_AMBIGUITY = RetryPolicy("provider_ambiguity", 1.0, 60.0)
QUICK = RetryPolicy("quick", 0.5, 4.0, max_attempts=5)


class _Wait(wait_base):
    def __init__(self, policy: RetryPolicy, hint: Callable[[BaseException], float | None] | None) -> None:
        self._backoff = wait_exponential(multiplier=policy.initial_seconds, max=policy.max_seconds)
        self._hint = hint
        self._max = policy.max_seconds

    def __call__(self, retry_state: RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome is not None else None
        asked = self._hint(exc) if self._hint is not None and exc is not None else None
        if asked is not None:
            return min(max(asked, 0.0), self._max)
        return self._backoff(retry_state)


class _OutageLog:
    """One warning when an outage starts, sparse reminders, one line when it ends."""

    def __init__(self, what: str, policy: RetryPolicy, fields: dict[str, Any]) -> None:
        self.what = what
        self.policy = policy
        self.fields = fields
        self.started: float | None = None

    def before_sleep(self, state: RetryCallState) -> None:
        attempt = state.attempt_number
        exc = state.outcome.exception() if state.outcome is not None else None
        if self.started is None:
            self.started = time.monotonic()
        if attempt & (attempt - 1) == 0:  # attempts 1, 2, 4, 8, ...: sparse, never silent
            log.warning(
                f"{self.what}_{self.policy.symptom}",
                policy=self.policy.name,
                attempt=attempt,
                error=type(exc).__name__ if exc else None,
                detail=str(exc)[:200] if exc else None,
                retry_in=round(state.upcoming_sleep, 2),
                **self.fields,
            )

    def recovered(self, attempts: int) -> None:
        if self.started is not None:
            log.info(
                f"{self.what}_recovered",
                policy=self.policy.name,
                attempts=attempts,
                outage_seconds=round(time.monotonic() - self.started, 2),
                **self.fields,
            )


def _matcher(
    retry_on: tuple[type[BaseException], ...] | Callable[[BaseException], bool],
) -> Callable[[BaseException], bool]:
    if isinstance(retry_on, tuple):
        kinds = retry_on
        return lambda exc: isinstance(exc, kinds)
    return retry_on


def retrying(
    policy: RetryPolicy,
    *,
    what: str,
    retry_on: tuple[type[BaseException], ...] | Callable[[BaseException], bool],
    deadline_seconds: float | None = None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    wait_hint: Callable[[BaseException], float | None] | None = None,
    **fields: Any,
) -> AsyncRetrying:
    """A tenacity ``AsyncRetrying`` for ``policy``; the last error is re-raised when it stops.

    ``wait_hint(error)`` may name the pause the other side asked for (a Retry-After);
    it is capped at the policy's maximum, and the policy's own backoff applies otherwise."""
    stops = []
    if policy.max_attempts is not None:
        stops.append(stop_after_attempt(policy.max_attempts))
    if deadline_seconds is not None:
        stops.append(stop_after_delay(deadline_seconds))
    outage = _OutageLog(what, policy, fields)
    options: dict[str, Any] = {}
    if sleep is not None:
        options["sleep"] = sleep
    retrying_ = AsyncRetrying(
        retry=retry_if_exception(_matcher(retry_on)),
        wait=_Wait(policy, wait_hint),
        stop=stop_any(*stops) if stops else stop_never,
        before_sleep=outage.before_sleep,
        reraise=True,
        **options,
    )
    retrying_.outage = outage  # type: ignore[attr-defined]
    return retrying_


async def retry(
    policy: RetryPolicy,
    call: Callable[[], Awaitable[T]],
    *,
    what: str,
    retry_on: tuple[type[BaseException], ...] | Callable[[BaseException], bool],
    deadline_seconds: float | None = None,
    wait_hint: Callable[[BaseException], float | None] | None = None,
    **fields: Any,
) -> T:
    """Await ``call()`` until it succeeds under ``policy`` (the last error when it gives up).

    The first attempt runs without any retry machinery (it is on the hot path of every
    decode and publish); only a retryable failure hands over to tenacity, which counts that
    failure as its first attempt."""
    try:
        return await call()
    except Exception as exc:
        if not _matcher(retry_on)(exc):
            raise
        first_failure: Exception | None = exc
    controller = retrying(
        policy, what=what, retry_on=retry_on, deadline_seconds=deadline_seconds, wait_hint=wait_hint, **fields
    )

    async def attempt() -> T:
        # A coroutine function, so tenacity awaits it (it calls a plain lambda synchronously).
        nonlocal first_failure
        if first_failure is not None:
            failure, first_failure = first_failure, None
            raise failure
        return await call()

    result: T = await controller(attempt)
    controller.outage.recovered(controller.statistics.get("attempt_number", 1))  # type: ignore[attr-defined]
    return result

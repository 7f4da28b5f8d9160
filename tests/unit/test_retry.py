"""The one retry helper: backoff schedule, bounds, Retry-After hints, and outage logging."""

from __future__ import annotations

import structlog
from structlog.testing import capture_logs

from infra.retry import STARTUP, TRANSIENT_IO, RetryPolicy, retry

FAST = RetryPolicy("test", 0.0, 0.0, max_attempts=4)


class Flaky:
    def __init__(self, failures: int, exc: type[Exception] = ConnectionError) -> None:
        self.failures = failures
        self.calls = 0
        self.exc = exc

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc(f"failure {self.calls}")
        return "ok"


def test_policies_back_off_exponentially_up_to_their_cap() -> None:
    assert [STARTUP.wait_seconds(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 5.0]
    assert TRANSIENT_IO.wait_seconds(20) == 10.0


async def test_retries_until_success_and_logs_the_outage_once_then_its_end() -> None:
    structlog.reset_defaults()
    call = Flaky(failures=3)
    with capture_logs() as logs:
        assert await retry(FAST, call, what="thing", retry_on=(ConnectionError,)) == "ok"
    assert call.calls == 4
    events = [entry["event"] for entry in logs]
    # attempts 1 and 2 are reported, 3 is not (sparse), then the recovery line.
    assert events == ["thing_unavailable", "thing_unavailable", "thing_recovered"]
    assert logs[-1]["attempts"] == 4


async def test_gives_up_after_max_attempts_with_the_last_error() -> None:
    call = Flaky(failures=10)
    try:
        await retry(FAST, call, what="thing", retry_on=(ConnectionError,))
    except ConnectionError as exc:
        assert str(exc) == "failure 4"
    else:  # pragma: no cover - the assertion below explains
        raise AssertionError("retry did not give up")
    assert call.calls == 4


async def test_errors_outside_retry_on_are_not_retried() -> None:
    call = Flaky(failures=1, exc=ValueError)
    try:
        await retry(FAST, call, what="thing", retry_on=(ConnectionError,))
    except ValueError:
        pass
    assert call.calls == 1


async def test_a_deadline_bounds_an_unbounded_policy() -> None:
    policy = RetryPolicy("slow", 0.05, 0.05)
    call = Flaky(failures=1000)
    try:
        await retry(policy, call, what="thing", retry_on=(ConnectionError,), deadline_seconds=0.3)
    except ConnectionError:
        pass
    assert 2 <= call.calls <= 10


async def test_a_wait_hint_is_honoured_but_capped() -> None:
    waits: list[float] = []
    policy = RetryPolicy("hinted", 0.0, 0.01, max_attempts=3)
    call = Flaky(failures=2)

    def hint(exc: BaseException) -> float:
        waits.append(99.0)
        return 99.0

    assert await retry(policy, call, what="thing", retry_on=(ConnectionError,), wait_hint=hint) == "ok"
    assert waits == [99.0, 99.0]  # asked for twice; the cap (10 ms) kept the test fast

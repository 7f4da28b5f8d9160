"""The load test's SLO gate on synthetic locust results (no locust run, no stack)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.loadtest.gate import EndpointStats, Threshold, evaluate, main, parse_stats, parse_thresholds

HEADER = (
    "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,Min Response Time,"
    "Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%"
)


def row(kind: str, name: str, requests: int, failures: int, p50: str, p95: str, p99: str, rps: str = "100.0") -> str:
    return f"{kind},{name},{requests},{failures},{p50},10,1,900,200,{rps},0.0,{p50},1,1,1,1,{p95},1,{p99},1,1,1"


def stats_csv(*rows: str) -> str:
    return "\n".join([HEADER, *rows]) + "\n"


GOOD = stats_csv(
    row("POST", "/offers", 6000, 3, "12", "40", "70"),
    row("GET", "/deals?limit=20", 6000, 0, "8", "30", "45"),
    row("GET", "/offers/{id}", 3000, 0, "6", "20", "30"),
    row("", "Aggregated", 15000, 3, "9", "35", "60"),
)
DEFAULT = Threshold(p95_ms=50, max_error_rate=0.01)


def test_parses_locust_rows_with_method_and_name() -> None:
    stats = parse_stats(GOOD)
    assert [s.name for s in stats] == ["POST /offers", "GET /deals?limit=20", "GET /offers/{id}", "Aggregated"]
    assert stats[0] == EndpointStats("POST /offers", 6000, 3, 12.0, 40.0, 70.0, 100.0)
    assert stats[0].error_rate == pytest.approx(0.0005)


def test_all_within_thresholds_passes() -> None:
    verdicts = evaluate(parse_stats(GOOD), DEFAULT)
    assert [v.ok for v in verdicts] == [True, True, True]  # the Aggregated row is not judged


def test_p95_breach_fails_only_that_endpoint() -> None:
    text = stats_csv(
        row("POST", "/offers", 100, 0, "30", "51", "90"), row("GET", "/deals?limit=20", 100, 0, "5", "50", "60")
    )
    verdicts = evaluate(parse_stats(text), DEFAULT)
    assert [(v.endpoint, v.ok) for v in verdicts] == [("POST /offers", False), ("GET /deals?limit=20", True)]
    assert "p95 51.0 ms > 50 ms" in verdicts[0].reasons


def test_error_rate_breach_fails() -> None:
    verdicts = evaluate(parse_stats(stats_csv(row("GET", "/deals?limit=20", 1000, 11, "5", "10", "20"))), DEFAULT)
    assert not verdicts[0].ok and "error rate 1.10% > 1.00%" in verdicts[0].reasons


def test_an_endpoint_without_requests_or_missing_fails() -> None:
    text = stats_csv(row("GET", "/offers/{id}", 0, 0, "N/A", "N/A", "N/A", "0.0"))
    verdicts = evaluate(parse_stats(text), DEFAULT, required=["GET /offers/{id}", "POST /offers"])
    assert [(v.endpoint, v.ok, v.reasons) for v in verdicts] == [
        ("GET /offers/{id}", False, ("no requests",)),
        ("POST /offers", False, ("no requests",)),
    ]


def test_per_endpoint_thresholds_override_the_default() -> None:
    overrides = parse_thresholds(["POST /offers=30"], DEFAULT)
    verdicts = evaluate(parse_stats(GOOD), DEFAULT, overrides)
    assert [v.ok for v in verdicts] == [False, True, True]
    with pytest.raises(ValueError):
        parse_thresholds(["no-equals-sign"], DEFAULT)


def test_main_exits_non_zero_on_breach(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = tmp_path / "good_stats.csv", tmp_path / "bad_stats.csv"
    good.write_text(GOOD)
    bad.write_text(stats_csv(row("POST", "/offers", 100, 50, "4000", "6000", "7000")))
    assert main([str(good)]) == 0
    assert "SLO gate: PASS" in capsys.readouterr().out
    assert main([str(bad)]) == 1
    out = capsys.readouterr().out
    assert "BREACH" in out and "SLO gate: FAIL" in out
    assert main([str(good), "--p95-ms", "25"]) == 1

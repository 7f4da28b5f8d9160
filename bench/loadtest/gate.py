"""SLO gate on a locust run: p95 and error rate per endpoint; exit non-zero on a breach.

Reads locust's ``<prefix>_stats.csv`` (``locust --csv <prefix>``). Each endpoint row (not
the ``Aggregated`` one) is checked against its threshold: the endpoint's own if one is
given (``--threshold "POST /offers=50"``), else the default (``--p95-ms``); and its failure
ratio against ``--max-error-rate``. An endpoint that made no requests at all breaches too:
a gate that passes because nothing ran would hide a broken load test.

Usage: ``python -m bench.loadtest.gate STATS_CSV [--p95-ms 5000] [--max-error-rate 0.01]
[--threshold NAME=MS ...]``
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

AGGREGATED = "Aggregated"


@dataclass(frozen=True)
class EndpointStats:
    name: str  # "POST /offers": locust's method and name
    requests: int
    failures: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    rps: float

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class Threshold:
    p95_ms: float
    max_error_rate: float


@dataclass(frozen=True)
class Verdict:
    endpoint: str
    ok: bool
    reasons: tuple[str, ...]


def _number(text: str | None) -> float | None:
    if text is None or text.strip() in ("", "N/A"):
        return None
    return float(text)


def parse_stats(text: str) -> list[EndpointStats]:
    """The rows of a locust stats CSV, the aggregate row included (name ``Aggregated``)."""
    rows = []
    for row in csv.DictReader(io.StringIO(text)):
        kind, name = (row.get("Type") or "").strip(), (row.get("Name") or "").strip()
        label = name if name == AGGREGATED else f"{kind} {name}".strip()
        rows.append(
            EndpointStats(
                name=label,
                requests=int(row["Request Count"]),
                failures=int(row["Failure Count"]),
                p50_ms=_number(row.get("50%")),
                p95_ms=_number(row.get("95%")),
                p99_ms=_number(row.get("99%")),
                rps=_number(row.get("Requests/s")) or 0.0,
            )
        )
    return rows


def evaluate(
    stats: Iterable[EndpointStats],
    default: Threshold,
    per_endpoint: Mapping[str, Threshold] | None = None,
    required: Iterable[str] = (),
) -> list[Verdict]:
    """One verdict per endpoint (and per required endpoint that never appeared)."""
    per_endpoint = per_endpoint or {}
    verdicts: list[Verdict] = []
    seen: set[str] = set()
    for row in stats:
        if row.name == AGGREGATED:
            continue
        seen.add(row.name)
        limit = per_endpoint.get(row.name, default)
        reasons = []
        if row.requests == 0:
            reasons.append("no requests")
        else:
            if row.p95_ms is None or row.p95_ms > limit.p95_ms:
                reasons.append(f"p95 {row.p95_ms} ms > {limit.p95_ms:g} ms")
            if row.error_rate > limit.max_error_rate:
                reasons.append(f"error rate {row.error_rate:.2%} > {limit.max_error_rate:.2%}")
        verdicts.append(Verdict(row.name, not reasons, tuple(reasons)))
    for name in required:
        if name not in seen:
            verdicts.append(Verdict(name, False, ("no requests",)))
    return verdicts


def parse_thresholds(items: Sequence[str], default: Threshold) -> dict[str, Threshold]:
    """``NAME=P95_MS`` (``"POST /offers=50"``); the error-rate limit stays the default's."""
    out: dict[str, Threshold] = {}
    for item in items:
        name, sep, value = item.rpartition("=")
        if not sep or not name.strip():
            raise ValueError(f"a threshold is NAME=P95_MS, got {item!r}")
        out[name.strip()] = Threshold(float(value), default.max_error_rate)
    return out


def report(stats: Sequence[EndpointStats], verdicts: Sequence[Verdict]) -> str:
    by_name = {v.endpoint: v for v in verdicts}
    lines = [f"{'endpoint':<24} {'requests':>9} {'req/s':>8} {'errors':>7} {'p50':>6} {'p95':>6} {'p99':>6}  verdict"]

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:g}"

    for row in stats:
        verdict = by_name.get(row.name)
        mark = "" if verdict is None else ("ok" if verdict.ok else "BREACH: " + "; ".join(verdict.reasons))
        lines.append(
            f"{row.name:<24} {row.requests:>9} {row.rps:>8.1f} {row.error_rate:>7.2%} "
            f"{ms(row.p50_ms):>6} {ms(row.p95_ms):>6} {ms(row.p99_ms):>6}  {mark}"
        )
    for verdict in verdicts:
        if not any(row.name == verdict.endpoint for row in stats):
            lines.append(f"{verdict.endpoint:<24} {'0':>9}  BREACH: " + "; ".join(verdict.reasons))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stats_csv", type=Path)
    parser.add_argument("--p95-ms", type=float, default=5000.0, help="default p95 limit (the seed's SLO: 5 s)")
    parser.add_argument("--max-error-rate", type=float, default=0.01)
    parser.add_argument("--threshold", action="append", default=[], metavar="NAME=MS")
    parser.add_argument("--require", action="append", default=[], metavar="NAME", help="an endpoint that must appear")
    args = parser.parse_args(argv)
    default = Threshold(args.p95_ms, args.max_error_rate)
    stats = parse_stats(args.stats_csv.read_text())
    verdicts = evaluate(stats, default, parse_thresholds(args.threshold, default), args.require)
    print(report(stats, verdicts))
    breaches = [v for v in verdicts if not v.ok]
    print(f"SLO gate: {'PASS' if not breaches else f'FAIL ({len(breaches)} endpoint(s) in breach)'}")
    return 1 if breaches else 0


if __name__ == "__main__":
    sys.exit(main())

"""`spacemusic trace <offer_id> [LOG ...]`: one deal's log lines from every process, in order.

Reads JSON log lines (files, or stdin; honcho's ``web.1 | {...}`` prefixes are fine), finds
the correlation ids of the lines that name the offer, and prints every line that carries one
of them or the offer id, sorted by timestamp, each with the file it came from. Web lines
carry ``correlation_id`` from the request that started the flow (``X-Correlation-ID`` or the
request id); worker lines carry it with ``offer_id`` and ``event_id`` while they handle the
deal's events (``infra.logging.bind_event_context``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import click


def parse_lines(source: str, lines: Iterable[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    for line in lines:
        start = line.find("{")
        if start < 0:
            continue
        try:
            record = json.loads(line[start:])
        except ValueError:
            continue
        if isinstance(record, dict):
            yield source, record


def trace(offer_id: str, records: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    offer_id = offer_id.lower()
    correlations = {
        str(r["correlation_id"])
        for _, r in records
        if str(r.get("offer_id", "")).lower() == offer_id and r.get("correlation_id")
    }
    # request lines of the web process that name the offer only in the path
    correlations |= {
        str(r["correlation_id"]) for _, r in records if offer_id in str(r.get("path", "")) and r.get("correlation_id")
    }
    found = [
        (source, r)
        for source, r in records
        if str(r.get("offer_id", "")).lower() == offer_id or str(r.get("correlation_id", "")) in correlations
    ]
    return sorted(found, key=lambda item: str(item[1].get("timestamp", "")))


@click.command("trace")
@click.argument("offer_id")
@click.argument("logs", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the matching records as JSON lines.")
def trace_command(offer_id: str, logs: tuple[Path, ...], as_json: bool) -> None:
    """Follow one deal across the web and worker logs (files, or stdin)."""
    records: list[tuple[str, dict[str, Any]]] = []
    if logs:
        for path in logs:
            with path.open(errors="replace") as handle:
                records.extend(parse_lines(path.name, handle))
    else:
        records.extend(parse_lines("stdin", sys.stdin))
    found = trace(offer_id, records)
    if not found:
        raise click.ClickException(f"no log line names offer {offer_id} or its correlation ids")
    for source, record in found:
        if as_json:
            click.echo(json.dumps({"source": source, **record}, sort_keys=True))
        else:
            extras = " ".join(
                f"{k}={record[k]}" for k in ("correlation_id", "event_id", "status", "path") if k in record
            )
            click.echo(f"{record.get('timestamp', '')} {source:>14} {record.get('event', '')} {extras}")

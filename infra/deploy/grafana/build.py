"""Grafana dashboards from code: `python infra/deploy/grafana/build.py` rewrites dashboards/.

Plain dicts in Grafana's dashboard JSON model (schemaVersion 39) rather than a dependency:
the panels are few and uniform. tests/deploy/test_observability.py checks the committed
JSON equals this output, that uids are unique, every panel is titled, every query parses
as PromQL (promtool) and names only metrics the project exports or documents.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("dashboards")
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def panel(title: str, exprs: dict[str, str], unit: str = "short", kind: str = "timeseries", **extra: Any) -> dict:
    return {
        "type": kind,
        "title": title,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend, "datasource": DATASOURCE}
            for i, (legend, expr) in enumerate(exprs.items())
        ],
        **extra,
    }


def dashboard(uid: str, title: str, description: str, panels: list[dict]) -> dict:
    laid_out = []
    for i, p in enumerate(panels):
        laid_out.append({**p, "id": i + 1, "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)}})
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["spacemusic"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "1m",
        "time": {"from": "now-24h", "to": "now"},
        "templating": {
            "list": [{"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}]
        },
        "panels": laid_out,
    }


def dashboards() -> dict[str, dict]:
    return {
        "cost_per_offer.json": dashboard(
            "spacemusic-cost-per-offer",
            "SpaceMusic / Cost per offer",
            "Cloud cost in EUR per offer created (rules/cost.yml); inputs documented in docs/deploy.md.",
            [
                panel(
                    "Cost per offer (EUR, trailing day)",
                    {"EUR/offer": "spacemusic:cost_per_offer_eur:1d"},
                    "currencyEUR",
                ),
                panel("Cloud cost (EUR, trailing day)", {"EUR": "spacemusic:cloud_cost_eur:increase1d"}, "currencyEUR"),
                panel("Offers created (trailing day)", {"offers": "spacemusic:offers_created:increase1d"}),
                panel(
                    "Cloud cost by service (USD/h)",
                    {"{{service}}": 'sum by (service) (rate(cloud_cost_usd_total{project="spacemusic"}[1h])) * 3600'},
                    "currencyUSD",
                ),
                panel("USD to EUR", {"rate": 'exchange_rate{base="USD",quote="EUR"}'}, "none"),
            ],
        ),
        "pipeline.json": dashboard(
            "spacemusic-pipeline",
            "SpaceMusic / Pipeline",
            "Throughput, consumer lag and dead letters of the event pipeline.",
            [
                panel(
                    "Events published /s",
                    {"{{topic}}": "sum by (topic) (rate(spacemusic_events_published_total[$__rate_interval]))"},
                    "ops",
                ),
                panel(
                    "Events consumed /s",
                    {
                        "{{agent}} {{topic}}": "sum by (agent, topic) (rate(spacemusic_events_consumed_total[$__rate_interval]))"
                    },
                    "ops",
                ),
                panel(
                    "Consumer lag by group and topic",
                    {"{{group}} {{topic}}": "spacemusic:consumer_lag:max_by_group_topic"},
                ),
                panel(
                    "Consumer lag by partition",
                    {"{{group}} {{topic}}/{{partition}}": "max by (group, topic, partition) (spacemusic_consumer_lag)"},
                ),
                panel(
                    "Dead letters (per 15m)",
                    {"{{topic}} {{reason}}": "sum by (topic, reason) (increase(spacemusic_dead_letters_total[15m]))"},
                ),
                panel(
                    "Redeliveries skipped /s",
                    {"{{consumer}}": "sum by (consumer) (rate(spacemusic_events_skipped_total[$__rate_interval]))"},
                    "ops",
                ),
                panel(
                    "Valuations by outcome /s",
                    {"{{outcome}}": "sum by (outcome) (rate(spacemusic_valuations_total[$__rate_interval]))"},
                    "ops",
                ),
                panel("Lag exporter errors", {"errors": "sum(increase(spacemusic_consumer_lag_errors_total[15m]))"}),
            ],
        ),
        "slo.json": dashboard(
            "spacemusic-slo",
            "SpaceMusic / SLOs",
            "API availability (99.5%), API p95 latency (500 ms) and POST->valued p95 (30 s).",
            [
                panel(
                    "API 5xx ratio (5m, 1h, 6h)",
                    {
                        "5m": "spacemusic:http_errors:ratio_rate5m",
                        "1h": "spacemusic:http_errors:ratio_rate1h",
                        "6h": "spacemusic:http_errors:ratio_rate6h",
                    },
                    "percentunit",
                ),
                panel("API p95 latency", {"p95": "spacemusic:http_latency_seconds:p95_5m"}, "s"),
                panel("Requests /s by route", {"{{route}}": "spacemusic:http_requests:rate5m"}, "reqps"),
                panel(
                    "5xx /s by route and status",
                    {
                        "{{route}} {{status}}": 'sum by (route, status) (rate(spacemusic_http_requests_total{status=~"5.."}[$__rate_interval]))'
                    },
                    "reqps",
                ),
                panel("POST -> valued p95", {"p95": "spacemusic:offer_time_to_valued_seconds:p95_10m"}, "s"),
                panel(
                    "Error budget left (30d)",
                    {
                        "left": '1 - (sum(increase(spacemusic_http_requests_total{status=~"5.."}[30d])) / clamp_min(sum(increase(spacemusic_http_requests_total[30d])), 1)) / 0.005'
                    },
                    "percentunit",
                    kind="stat",
                ),
                panel("SSE clients", {"clients": "sum(spacemusic_sse_clients)"}),
            ],
        ),
        "money.json": dashboard(
            "spacemusic-money",
            "SpaceMusic / Money",
            "Payouts by outcome and provider, parked payouts, failure rate.",
            [
                panel(
                    "Payouts completed by outcome (per hour)",
                    {"{{outcome}}": "sum by (outcome) (increase(spacemusic_payout_duration_seconds_count[1h]))"},
                ),
                panel(
                    "Provider calls by outcome (per hour)",
                    {
                        "stripe {{outcome}}": "sum by (outcome) (increase(spacemusic_stripe_transfers_total[1h]))",
                        "wise {{outcome}}": "sum by (outcome) (increase(spacemusic_wise_transfers_total[1h]))",
                    },
                ),
                panel("Parked payouts by phase", {"{{phase}}": "max by (phase) (spacemusic_payouts_parked)"}),
                panel(
                    "Oldest parked payout",
                    {"age": "max(spacemusic_payouts_parked_oldest_age_seconds)"},
                    "s",
                    kind="stat",
                ),
                panel("Payout failure ratio (1h)", {"failed": "spacemusic:payout_failure:ratio_rate1h"}, "percentunit"),
                panel(
                    "Payout duration p95 by outcome",
                    {
                        "{{outcome}}": "histogram_quantile(0.95, sum by (le, outcome) (rate(spacemusic_payout_duration_seconds_bucket[1h])))"
                    },
                    "s",
                ),
            ],
        ),
    }


def render() -> dict[str, str]:
    return {name: json.dumps(d, indent=2, sort_keys=True) + "\n" for name, d in dashboards().items()}


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text)
        print(OUT / name)
    sys.exit(0)

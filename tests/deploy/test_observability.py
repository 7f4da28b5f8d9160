"""Prometheus rules, their promtool tests, Alertmanager routing and the Grafana dashboards."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import yaml

from tests.deploy.support import (
    EXTERNAL_METRICS,
    GRAFANA,
    PROMETHEUS,
    analysis_queries,
    dashboard_queries,
    for_promtool,
    kubeconform,
    metric_names_in,
    rule_groups,
    run,
    tool,
)

_spec = importlib.util.spec_from_file_location("grafana_build", GRAFANA / "build.py")
assert _spec and _spec.loader
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)


def test_rules_pass_promtool_lint() -> None:
    rule_files = sorted(str(p) for p in (PROMETHEUS / "rules").glob("*.yml"))
    out = run(tool("promtool"), "check", "rules", "--lint=all", "--lint-fatal", *rule_files)
    assert out.stdout.count("SUCCESS") == len(rule_files)


def test_rule_unit_tests_pass() -> None:
    tests = sorted(str(p) for p in (PROMETHEUS / "tests").glob("*_test.yml"))
    out = run(tool("promtool"), "test", "rules", *tests, cwd=PROMETHEUS / "tests")
    assert out.stdout.count("SUCCESS") == len(tests), out.stdout


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    alerts = {r["alert"] for g in rule_groups() for r in g["rules"] if "alert" in r}
    fired: set[str] = set()
    quiet: set[str] = set()
    for path in (PROMETHEUS / "tests").glob("*_test.yml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert alerts - fired == set(), "alerts no test sees fire"
    # CostInputsMissing's quiet case is the healthy cost test; every alert has one.
    assert alerts - quiet == set(), "alerts no test sees stay quiet"
    assert len(alerts) >= 17  # the rule files as written; catches a file silently dropped


def test_every_recording_rule_is_used() -> None:
    recorded = {r["record"] for g in rule_groups() for r in g["rules"] if "record" in r}
    used = set()
    for g in rule_groups():
        for r in g["rules"]:
            used |= metric_names_in(r["expr"])
    for queries in dashboard_queries().values():
        for q in queries:
            used |= metric_names_in(q)
    assert recorded - used == set(), "recording rules nothing reads"


def test_alertmanager_config_is_valid_and_keeps_the_webhook_secret() -> None:
    config_path = PROMETHEUS / "alertmanager.yml"
    out = run(tool("amtool"), "check-config", str(config_path))
    assert "SUCCESS" in out.stdout
    config = yaml.safe_load(config_path.read_text())
    assert "slack_api_url" not in config["global"], "the webhook URL is a secret: use slack_api_url_file"
    assert config["global"]["slack_api_url_file"].startswith("/etc/alertmanager/secrets/")
    for receiver in config["receivers"]:
        for slack in receiver.get("slack_configs", []):
            assert "api_url" not in slack, receiver["name"]
    # Every severity the rules use is routed somewhere deliberate.
    severities = {r["labels"]["severity"] for g in rule_groups() for r in g["rules"] if "alert" in r}
    assert severities == {"page", "ticket"}
    assert any('severity="page"' in m for route in config["route"]["routes"] for m in route["matchers"])


def test_dashboards_are_the_generated_ones() -> None:
    committed = {p.name: p.read_text() for p in (GRAFANA / "dashboards").glob("*.json")}
    assert committed == build.render(), "run: python infra/deploy/grafana/build.py"
    assert set(committed) == {"cost_per_offer.json", "pipeline.json", "slo.json", "money.json"}


def test_dashboards_have_unique_uids_and_titled_panels() -> None:
    uids = []
    for path in sorted((GRAFANA / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        uids.append(board["uid"])
        assert board["title"], path.name
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), path.name
        for p in board["panels"]:
            assert p["title"].strip(), (path.name, p["id"])
            assert p["targets"], (path.name, p["title"])
    assert len(uids) == len(set(uids))


def test_every_query_parses_as_promql(tmp_path: Path) -> None:
    """Dashboard and rollout-analysis queries, loaded by promtool as recording rules (the
    way to make Prometheus' own parser read an expression offline)."""
    queries = [q for qs in dashboard_queries().values() for q in qs] + analysis_queries()
    rules = [{"record": f"check:query_{i}", "expr": for_promtool(q)} for i, q in enumerate(queries)]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": rules}]}))
    out = run(tool("promtool"), "check", "rules", str(path))
    assert f"SUCCESS: {len(rules)} rules found" in out.stdout
    assert len(queries) >= 30


def test_metric_name_lexer() -> None:
    """The lexer the exported-metrics check relies on, on the awkward cases."""
    expr = (
        'sum by (le, outcome) (rate(spacemusic_x_bucket{status=~"5..", a="b"}[5m])) '
        "/ on (group) clamp_min(sum(spacemusic:rec:rate5m offset 5m), 1e-9) or vector(0) and time() - kube_y"
    )
    assert metric_names_in(expr) == {"spacemusic_x_bucket", "spacemusic:rec:rate5m", "kube_y"}


def test_external_metrics_are_documented() -> None:
    deploy_doc = (PROMETHEUS.parents[2] / "docs" / "deploy.md").read_text()
    for name in EXTERNAL_METRICS:
        assert f"`{name}`" in deploy_doc, name


def test_rules_as_prometheusrule_resources_validate(tmp_path: Path) -> None:
    out = run(sys.executable, str(PROMETHEUS / "to_prometheusrule.py"))
    manifest = tmp_path / "prometheusrules.yaml"
    manifest.write_text(out.stdout)
    results = kubeconform([manifest])
    assert [r["kind"] for r in results] == ["PrometheusRule"] * len(list((PROMETHEUS / "rules").glob("*.yml")))

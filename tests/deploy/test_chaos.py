"""Litmus chaos as code: schema-valid, aimed at pods the chart really labels, and each
experiment carries the SLO probe (a PromQL query that parses and watches alerts that exist)."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.deploy.support import DEPLOY, env_values, kubeconform, render, rule_groups, run, tool

CHAOS = DEPLOY / "chaos"


def manifests() -> list[dict]:
    return [yaml.safe_load(p.read_text()) for p in sorted(CHAOS.glob("*.yaml"))]


def engine_specs() -> list[dict]:
    return [m["spec"] if m["kind"] == "ChaosEngine" else m["spec"]["engineTemplateSpec"] for m in manifests()]


def test_manifests_validate_against_the_litmus_schemas() -> None:
    results = kubeconform(sorted(CHAOS.glob("*.yaml")))
    assert sorted(r["kind"] for r in results) == ["ChaosEngine"] * 3 + ["ChaosSchedule"]


def test_the_three_faults() -> None:
    faults = {(s["appinfo"]["applabel"], e["name"]) for s in engine_specs() for e in s["experiments"]}
    assert {
        ("app.kubernetes.io/component=worker-pipeline", "pod-delete"),
        ("app.kubernetes.io/component=web", "pod-delete"),
        ("app.kubernetes.io/component=worker-payouts", "pod-network-latency"),
    } <= faults
    schedule = next(m for m in manifests() if m["kind"] == "ChaosSchedule")
    repeat = schedule["spec"]["schedule"]["repeat"]
    # The field literally named `properties` (which kubeconform's own converter mangles).
    assert repeat["properties"]["minChaosInterval"]["hour"]["everyNthHour"] == 2


def test_targets_are_pods_the_chart_labels() -> None:
    docs = render([env_values("prod")])
    components = {
        d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
        for d in docs
        if d["kind"] == "Deployment"
    }
    for spec in engine_specs():
        key, value = spec["appinfo"]["applabel"].split("=")
        assert key == "app.kubernetes.io/component" and value in components, spec["appinfo"]
        assert spec["appinfo"]["appns"] == "spacemusic"


def test_every_experiment_has_the_slo_probe(tmp_path: Path) -> None:
    slo_alerts = {r["alert"] for g in rule_groups() for r in g["rules"] if "slo" in r.get("labels", {})}
    assert len(slo_alerts) >= 4  # the probe's `slo!=""` selects these
    queries = []
    for spec in engine_specs():
        for experiment in spec["experiments"]:
            (probe,) = [p for p in experiment["spec"]["probe"] if p["type"] == "promProbe"]
            inputs = probe["promProbe/inputs"]
            assert 'slo!=""' in inputs["query"] and "ALERTS" in inputs["query"]
            assert inputs["comparator"]["criteria"] == "==" and inputs["comparator"]["value"] == "0"
            queries.append(inputs["query"])
    path = tmp_path / "probes.yml"
    rules = [{"record": f"probe:q{i}", "expr": q} for i, q in enumerate(queries)]
    path.write_text(yaml.safe_dump({"groups": [{"name": "probes", "rules": rules}]}))
    run(tool("promtool"), "check", "rules", str(path))

"""Print the rule files as prometheus-operator PrometheusRule resources, one per file:

    python infra/deploy/prometheus/to_prometheusrule.py [NAMESPACE] | kubectl apply -f -

The rule files stay plain Prometheus YAML so promtool can lint and unit-test them; this is
how they reach a cluster whose Prometheus is run by the operator (its ruleSelector picks
the `release: kube-prometheus-stack` label, the default of that chart).
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

RULES = Path(__file__).with_name("rules")


def resources(namespace: str = "monitoring") -> list[dict]:
    return [
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PrometheusRule",
            "metadata": {
                "name": f"spacemusic-{path.stem}",
                "namespace": namespace,
                "labels": {"app.kubernetes.io/part-of": "spacemusic", "release": "kube-prometheus-stack"},
            },
            "spec": yaml.safe_load(path.read_text()),
        }
        for path in sorted(RULES.glob("*.yml"))
    ]


if __name__ == "__main__":
    print(yaml.safe_dump_all(resources(*sys.argv[1:2]), sort_keys=False), end="")

"""Shared by the deployment tests: where the tools are, rendering the chart, kubeconform.

The tools come from infra/deploy/tools.sh (`make deploy-tools`). Without them these tests
skip, so `make test` on a machine that never built them still passes; `make deploy-check`
sets SPACEMUSIC_DEPLOY_CHECK=1, which turns a missing tool into a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "infra" / "deploy"
CHART = DEPLOY / "helm" / "spacemusic"
LOCAL_BIN = REPO / ".local" / "bin"
DEPLOY_VENV = REPO / ".local" / "deploy-venv"
ENVIRONMENTS = ("staging", "prod")
KUBERNETES_VERSION = "1.37.0"


def tool(name: str) -> str:
    """Path of a validation tool, or skip (fail under SPACEMUSIC_DEPLOY_CHECK=1)."""
    for candidate in (LOCAL_BIN / name, DEPLOY_VENV / "bin" / name):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    message = f"{name} is not installed (make deploy-tools)"
    if os.environ.get("SPACEMUSIC_DEPLOY_CHECK") == "1":
        pytest.fail(message)
    pytest.skip(message)


def run(*args: str, cwd: Path = REPO, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=300, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def render(values: list[Path | str] | None = None, sets: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """`helm template` of the chart; the documents, hooks included."""
    args = [tool("helm"), "template", "sm", str(CHART), "--namespace", "spacemusic"]
    for v in values or []:
        args += ["-f", str(v)]
    for key, value in (sets or {}).items():
        args += ["--set-string", f"{key}={value}"]
    out = run(*args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def env_values(env: str) -> Path:
    return CHART / f"values-{env}.yaml"


def kubernetes_schemas() -> Path:
    """kubernetes-validate's strict schemas with `$ref`s kubeconform can resolve.

    The package's refs are absolute paths (``/api/_definitions.json#...``) meant for its own
    resolver; kubeconform cannot compile them (and then reports "could not find schema"),
    so a copy under .local/ has them rewritten to file:// URLs of the copy's definitions.
    """
    python = tool("python") if (DEPLOY_VENV / "bin" / "python").exists() else tool("kubernetes-validate")
    found = run(
        python, "-c", "import kubernetes_validate, pathlib; print(pathlib.Path(kubernetes_validate.__file__).parent)"
    )
    source = Path(found.stdout.strip()) / "kubernetes-json-schema" / f"v{KUBERNETES_VERSION}-local-strict"
    target = REPO / ".local" / "deploy-schemas" / f"kubernetes-v{KUBERNETES_VERSION}-strict-v2"
    stamp = target / ".complete"
    if stamp.exists():
        return target
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for path in source.glob("*.json"):
        text = re.sub(
            r'"\$ref": "/api/_definitions\.json#',
            f'"$ref": "{(target / "_definitions.json").as_uri()}#',
            path.read_text(),
        )
        (target / path.name).write_text(text)
    stamp.touch()
    return target


def kubeconform(paths: list[Path]) -> list[dict[str, Any]]:
    """kubeconform -strict over files, local schemas only; every resource's result.

    No -ignore-missing-schemas: a resource without a schema is an error, never a skip.
    """
    k8s = kubernetes_schemas()
    out = run(
        tool("kubeconform"),
        "-strict",
        "-summary",
        "-verbose",  # list valid resources too, so the caller can count them
        "-output",
        "json",
        "-kubernetes-version",
        KUBERNETES_VERSION,
        "-schema-location",
        str(k8s) + "/{{.ResourceKind}}{{.KindSuffix}}.json",
        "-schema-location",
        str(DEPLOY / "schemas" / "crds") + "/{{.Group}}/{{.ResourceKind}}_{{.ResourceAPIVersion}}.json",
        *map(str, paths),
        check=False,
    )
    report = json.loads(out.stdout)
    bad = [r for r in report["resources"] if r["status"] != "statusValid"]
    assert out.returncode == 0 and not bad, f"kubeconform:\n{json.dumps(bad, indent=1)}\n{out.stderr}"
    return report["resources"]


def pod_specs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every pod template in the rendered chart, keyed by "Kind/name"."""
    found = {}
    for d in docs:
        kind, name = d["kind"], d["metadata"]["name"]
        if kind in ("Deployment", "Job"):
            found[f"{kind}/{name}"] = d["spec"]["template"]
        elif kind == "CronJob":
            found[f"{kind}/{name}"] = d["spec"]["jobTemplate"]["spec"]["template"]
    return found


PROMETHEUS = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"
# Series that the project does not export itself, and where each comes from in production
# (docs/deploy.md). The rule tests feed them as synthetic series.
EXTERNAL_METRICS = {
    "cloud_cost_usd_total": "cost exporter (AWS Cost and Usage Report), docs/deploy.md",
    "exchange_rate": "ECB reference-rate exporter, docs/deploy.md",
    "kube_job_status_failed": "kube-state-metrics",
    "kube_cronjob_status_last_successful_time": "kube-state-metrics",
}
_PROMQL_WORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
}


def rule_groups() -> list[dict[str, Any]]:
    groups = []
    for path in sorted((PROMETHEUS / "rules").glob("*.yml")):
        groups += yaml.safe_load(path.read_text())["groups"]
    return groups


def dashboard_queries() -> dict[str, list[str]]:
    """Dashboard file -> the PromQL of every panel target."""
    found = {}
    for path in sorted((GRAFANA / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        found[path.name] = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    return found


def analysis_queries() -> list[str]:
    """The Rollout's AnalysisTemplate queries, with Argo's {{args.x}} filled in."""
    docs = render([env_values("prod")])
    return [
        re.sub(r"\{\{\s*args\.[\w-]+\s*\}\}", "abc123", m["provider"]["prometheus"]["query"])
        for d in docs
        if d["kind"] == "AnalysisTemplate"
        for m in d["spec"]["metrics"]
    ]


def for_promtool(expr: str) -> str:
    """Grafana's $__rate_interval is not PromQL; give it a concrete range."""
    return expr.replace("$__rate_interval", "5m")


def metric_names_in(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (a small lexer, not a full parser):
    strings, label matchers, ranges and grouping clauses are removed, then every
    identifier that is not a function call or keyword is a metric name."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', for_promtool(expr))
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)\b(\s*\()?", e):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in _PROMQL_WORDS:
            continue
        names.add(word)
    return names

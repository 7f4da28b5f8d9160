"""The Helm chart: lint, render per environment, schema-validate, and the policy every
pod template must follow (Linkerd, probes, resources, security context, no secrets)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.deploy.support import CHART, ENVIRONMENTS, env_values, kubeconform, pod_specs, render, run, tool

SECRET_ENV = {
    "DATABASE_URL",
    "STRIPE_API_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "WISE_TOKEN",
    "LAUNCHDARKLY_SDK_KEY",
    "RECIPIENT_ENCRYPTION_KEY",
    "RECIPIENT_ENCRYPTION_KEYS",
    "SESSION_SECRET",
}
ROLES = ("pipeline", "payouts", "documents")


@pytest.fixture(scope="module", params=ENVIRONMENTS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict]]:
    return request.param, render([env_values(request.param)])


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_lint_strict(env: str) -> None:
    out = run(tool("helm"), "lint", "--strict", str(CHART), "-f", str(env_values(env)))
    assert "0 chart(s) failed" in out.stdout


def test_every_resource_validates_against_a_local_schema(rendered: tuple[str, list[dict]], tmp_path: Path) -> None:
    env, docs = rendered
    manifest = tmp_path / f"{env}.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    results = kubeconform([manifest])
    # Counted, so a resource kubeconform silently passed over would show up here.
    assert len(results) == len(docs), f"kubeconform saw {len(results)} of {len(docs)} resources"
    kinds = {r["kind"] for r in results}
    assert {"Deployment", "Job", "CronJob", "Rollout", "AnalysisTemplate", "ScaledObject", "ServiceMonitor"} <= kinds


def test_kubeconform_rejects_a_wrong_field(tmp_path: Path) -> None:
    """The negative control: the local schemas are really applied, strictly."""
    docs = render([env_values("prod")])
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["pathh"] = "/typo"
    scaled = next(d for d in docs if d["kind"] == "ScaledObject")
    scaled["spec"]["maxReplicaCount"] = "twelve"
    manifest = tmp_path / "broken.yaml"
    manifest.write_text(yaml.safe_dump_all([deployment, scaled]))
    with pytest.raises(AssertionError) as failure:
        kubeconform([manifest])
    assert "pathh" in str(failure.value) and "maxReplicaCount" in str(failure.value)


def test_workloads_per_role(rendered: tuple[str, list[dict]]) -> None:
    env, docs = rendered
    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    deployments = {d["metadata"]["name"]: d for d in by_kind["Deployment"]}
    assert set(deployments) == {"sm-spacemusic-web", *(f"sm-spacemusic-worker-{r}" for r in ROLES)}
    for role in ROLES:
        args = deployments[f"sm-spacemusic-worker-{role}"]["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args == ["worker", "--role", role]
    # The migration Job is the Procfile's release step, run as a pre-install/upgrade hook.
    (job,) = by_kind["Job"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    procfile = dict(line.split(": ", 1) for line in (CHART.parents[3] / "Procfile").read_text().splitlines() if line)
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == [procfile["release"]]
    # Lag autoscaling for pipeline and documents, capped at the partition count; payouts
    # stays a single driver replaced with Recreate.
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    values.update(yaml.safe_load(env_values(env).read_text()))
    partitions = int(
        {**yaml.safe_load((CHART / "values.yaml").read_text())["config"], **values["config"]}["TOPIC_PARTITIONS"]
    )
    scaled = {d["spec"]["scaleTargetRef"]["name"]: d for d in by_kind["ScaledObject"]}
    assert set(scaled) == {"sm-spacemusic-worker-pipeline", "sm-spacemusic-worker-documents"}
    for name, so in scaled.items():
        assert so["spec"]["maxReplicaCount"] == partitions
        (trigger,) = so["spec"]["triggers"]
        assert trigger["type"] == "kafka"
        assert trigger["metadata"]["consumerGroup"] == "spacemusic.workers-" + name.rsplit("-", 1)[1]
        assert "replicas" not in deployments[name]["spec"], "KEDA owns the replica count"
    payouts = deployments["sm-spacemusic-worker-payouts"]["spec"]
    assert payouts["replicas"] == 1 and payouts["strategy"]["type"] == "Recreate"
    # Blue-green: the Rollout runs the web Deployment's template, which itself stays at 0.
    (rollout,) = by_kind["Rollout"]
    assert rollout["spec"]["workloadRef"]["name"] == "sm-spacemusic-web"
    assert deployments["sm-spacemusic-web"]["spec"]["replicas"] == 0
    bg = rollout["spec"]["strategy"]["blueGreen"]
    services = {d["metadata"]["name"] for d in by_kind["Service"]}
    assert {bg["activeService"], bg["previewService"]} <= services
    templates = {d["metadata"]["name"] for d in by_kind["AnalysisTemplate"]}
    assert bg["prePromotionAnalysis"]["templates"][0]["templateName"] in templates
    assert {"PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor", "ServiceAccount", "ConfigMap"} <= set(by_kind)


def test_pod_policy(rendered: tuple[str, list[dict]]) -> None:
    """Linkerd, probes, resources and the security context on every pod template."""
    env, docs = rendered
    pods = pod_specs(docs)
    assert len(pods) == 6  # web, 3 workers, the migration Job, the ledger-check CronJob
    for name, template in pods.items():
        assert template["metadata"]["annotations"]["linkerd.io/inject"] == "enabled", name
        spec = template["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert set(c["resources"]["requests"]) == {"cpu", "memory"}, name
            assert set(c["resources"]["limits"]) == {"cpu", "memory"}, name
            # A read-only root needs a writable /tmp (Faust's datadir, WeasyPrint).
            assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"], name
            if name.startswith("Deployment/"):
                for probe, path in (
                    ("startupProbe", "/healthz"),
                    ("livenessProbe", "/healthz"),
                    ("readinessProbe", "/readyz"),
                ):
                    assert c[probe]["httpGet"]["path"] == path, (name, probe)
                    port = c[probe]["httpGet"]["port"]
                    assert port in {p["name"] for p in c["ports"]}, (name, probe, port)
        if not name.startswith("Deployment/"):
            # Jobs: the proxy must end with the job, or the Job never completes.
            assert template["metadata"]["annotations"]["config.alpha.linkerd.io/proxy-enable-native-sidecar"] == "true"


def test_no_secret_values_in_the_chart(rendered: tuple[str, list[dict]]) -> None:
    env, docs = rendered
    assert not [d for d in docs if d["kind"] == "Secret"], "the chart references Secrets, it never creates them"
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    assert not SECRET_ENV & set(config), "a secret setting is in the ConfigMap"
    for name, template in pod_specs(docs).items():
        for c in template["spec"]["containers"]:
            env_vars = {e["name"]: e for e in c.get("env", [])}
            for var in SECRET_ENV:
                assert set(env_vars[var]) == {"name", "valueFrom"}, (name, var)
                assert "secretKeyRef" in env_vars[var]["valueFrom"], (name, var)
    for path in CHART.glob("values*.yaml"):
        values = yaml.safe_load(path.read_text())
        assert not SECRET_ENV & set(values.get("config", {})), path


def test_checkov_kubernetes(rendered: tuple[str, list[dict]], tmp_path: Path) -> None:
    """checkov's Kubernetes policies over the rendered chart; skips are listed and justified
    in infra/deploy/checkov-k8s.yaml."""
    env, docs = rendered
    (tmp_path / "chart.yaml").write_text(yaml.safe_dump_all(docs))
    out = run(
        tool("checkov"),
        "--quiet",
        "--compact",
        "--skip-download",  # offline: no policy or guideline download
        "--framework",
        "kubernetes",
        "--config-file",
        str(CHART.parents[1] / "checkov-k8s.yaml"),
        "-d",
        str(tmp_path),
        check=False,
    )
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]

"""The chart, exercised for real: every Deployment's and Job's container, as rendered with
the local stack's values, is started here and must answer its probes.

For each pod template the test takes the container's command, args and environment (the
ConfigMap it names, literal env, and secretKeyRefs resolved from stand-in Secrets filled
from the local stack's settings), runs that process on this machine, and polls the probe
paths on the ports the chart declares. The migration Job runs first against an empty
database and fresh topic namespace, and the Deployments then run on what it set up, so a
Job that did not really migrate fails too. A wrong command, path, port or missing setting
in the chart fails here.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from tests.deploy.support import (
    CHART,
    EXTERNAL_METRICS,
    REPO,
    analysis_queries,
    dashboard_queries,
    metric_names_in,
    pod_specs,
    render,
    rule_groups,
)
from tests.support.stack import ARTIFACTS, free_port

VENV_BIN = REPO / ".venv" / "bin"
# Settings the test passes through from its stack environment into the chart's config.
PASSED_CONFIG = (
    "KAFKA_BOOTSTRAP_SERVERS",
    "SCHEMA_REGISTRY_URL",
    "S3_ENDPOINT_URL",
    "STRIPE_API_BASE",
    "OIDC_ISSUER",
    "OIDC_JWKS_URL",
    "AWS_DEFAULT_REGION",
)
# What the cluster provides outside the chart: IRSA credentials stand in for AWS keys.
PLATFORM_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")

# What each process's /metrics declared, filled by the probe tests and checked last.
SCRAPED: dict[str, set[str]] = {}


async def _admin(dsn: str, statement: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def fresh(stack_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """An empty database and an unused topic namespace: nothing migrated, nothing created."""
    name = uuid.uuid4().hex[:8]
    base = stack_env["DATABASE_URL"].rsplit("/", 1)[0]
    database = f"sm_test_deploy_{name}"
    asyncio.run(_admin(base + "/spacemusic", f'CREATE DATABASE "{database}"'))
    env = {
        **stack_env,
        "DATABASE_URL": f"{base}/{database}",
        "TOPIC_NAMESPACE": f"tdeploy{name}.",
        "CONSUMER_GROUP_PREFIX": f"deploy{name}",
        "S3_BUCKET": f"sm-deploy-{name}",
    }
    yield env
    asyncio.run(_admin(base + "/spacemusic", f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def chart(fresh: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The chart rendered for the local stack, with free ports for web and metrics."""
    values = {
        "web": {"port": free_port()},
        "metricsPort": free_port(),
        "config": {
            **{k: fresh[k] for k in PASSED_CONFIG if fresh.get(k)},
            "TOPIC_NAMESPACE": fresh["TOPIC_NAMESPACE"],
            "CONSUMER_GROUP_PREFIX": fresh["CONSUMER_GROUP_PREFIX"],
            "S3_BUCKET": fresh["S3_BUCKET"],
        },
    }
    overrides = tmp_path_factory.mktemp("chart") / "values-test.yaml"
    overrides.write_text(yaml.safe_dump(values))
    docs = render([Path(__file__).with_name("values-local.yaml"), overrides])
    chart_values = yaml.safe_load((CHART / "values.yaml").read_text())
    # Stand-in Secrets: the names and keys the chart references, holding the stack's values.
    secrets: dict[tuple[str, str], str] = {}
    for var, ref in chart_values["secrets"].items():
        if fresh.get(var):
            secrets[(ref["name"], ref["key"])] = fresh[var]
    return {"docs": docs, "pods": pod_specs(docs), "secrets": secrets, "env": fresh}


def container_env(chart: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
    """The environment Kubernetes would give this container, plus PATH and platform env."""
    config_maps = {d["metadata"]["name"]: d.get("data", {}) for d in chart["docs"] if d["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        assert name in config_maps, f"envFrom names ConfigMap {name!r}, which the chart does not render"
        env.update(config_maps[name])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        ref = item["valueFrom"]["secretKeyRef"]
        key = (ref["name"], ref["key"])
        if key in chart["secrets"]:
            env[item["name"]] = chart["secrets"][key]
        else:
            # Kubernetes refuses to start a pod whose non-optional Secret key is missing.
            assert ref.get("optional"), f"{item['name']}: Secret {key} does not exist and is not optional"
    for var in PLATFORM_ENV:
        env[var] = chart["env"][var]
    env["PATH"] = f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin"
    env["HOME"] = os.environ.get("HOME", "/tmp")
    if "PYTHONPATH" in os.environ:  # the image's code is this test run's code
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def command_line(container: dict[str, Any]) -> list[str]:
    """The container's command + args; the image's `spacemusic` is this checkout's."""
    argv = [*container.get("command", []), *container.get("args", [])]
    assert argv, "container has no command"
    if argv[0] == "spacemusic":
        argv[0] = str(VENV_BIN / "spacemusic")
    return argv


def probe_url(container: dict[str, Any], probe: str) -> str:
    get = container[probe]["httpGet"]
    port = get["port"]
    if isinstance(port, str):
        (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return f"http://127.0.0.1:{port}{get['path']}"


def metrics_token(env: dict[str, str]) -> dict[str, str]:
    """A dev-IdP token with metrics:read, minted from the same settings the process has."""
    from infra.settings import Settings
    from web.auth import mint_token

    return {"Authorization": f"Bearer {mint_token(Settings.from_env(env), 'deploy-test', ['metrics:read'])}"}


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError as exc:
        return 0, str(exc)


def wait_ok(url: str, timeout: float, proc: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + timeout
    status, body = 0, ""
    while time.monotonic() < deadline:
        status, body = http_get(url)
        if status == 200:
            return body
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode} before {url} answered:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    raise AssertionError(f"{url}: last answer {status} {body[:200]!r} after {timeout}s:\n{log.read_text()[-3000:]}")


def start(name: str, argv: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[bytes], Path]:
    ARTIFACTS.mkdir(exist_ok=True)
    log = ARTIFACTS / f"deploy-{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, log


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(5)


def metric_names(exposition: str) -> set[str]:
    return set(re.findall(r"^# TYPE (\S+) ", exposition, flags=re.M))


def test_migration_job_migrates_an_empty_database(chart: dict[str, Any]) -> None:
    ((name, template),) = [(n, t) for n, t in chart["pods"].items() if n.startswith("Job/")]
    (container,) = template["spec"]["containers"]
    proc, log = start("migrate", command_line(container), container_env(chart, container))
    assert proc.wait(300) == 0, f"{name} failed:\n{log.read_text()[-4000:]}"

    async def check() -> tuple[str | None, int]:
        conn = await asyncpg.connect(chart["env"]["DATABASE_URL"])
        try:
            version = await conn.fetchval("SELECT version_num FROM alembic_version")
            tables = await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            return version, tables
        finally:
            await conn.close()

    version, tables = asyncio.run(check())
    heads = subprocess.run(
        [str(VENV_BIN / "alembic"), "heads"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert version and version in heads, (version, heads)
    assert tables > 5
    assert f"{chart['env']['TOPIC_NAMESPACE']}offer.created: created" in log.read_text()


@pytest.mark.parametrize("component", ["web", "worker-pipeline", "worker-payouts", "worker-documents"])
def test_deployment_answers_its_probes(chart: dict[str, Any], component: str) -> None:
    # Ordered after the Job (pytest runs tests in file order): the Job has migrated.
    template = chart["pods"][f"Deployment/sm-spacemusic-{component}"]
    (container,) = template["spec"]["containers"]
    env = container_env(chart, container)
    proc, log = start(component, command_line(container), env)
    try:
        startup = container["startupProbe"]
        budget = min(180, startup["periodSeconds"] * startup["failureThreshold"])
        wait_ok(probe_url(container, "startupProbe"), budget, proc, log)
        wait_ok(probe_url(container, "readinessProbe"), 120, proc, log)
        assert http_get(probe_url(container, "livenessProbe"))[0] == 200
        # Prometheus scrapes a port named "metrics" where the container has one; the web's
        # API port serves /metrics only with a metrics:read token.
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        port = ports.get("metrics") or ports["http"]
        headers = {} if "metrics" in ports else metrics_token(env)
        # The gauges this issue added carry samples (not just a declaration) in the
        # processes that compute them; they are measured at start, then periodically.
        needle = {"worker-pipeline": "spacemusic_consumer_lag{", "worker-payouts": "spacemusic_payouts_parked{"}
        deadline = time.monotonic() + 30
        while True:
            status, exposition = http_get(f"http://127.0.0.1:{port}/metrics", headers)
            assert status == 200
            if needle.get(component, "") in exposition or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert needle.get(component, "") in exposition, f"no {needle[component]} sample:\n{exposition[-2000:]}"
        SCRAPED[component] = metric_names(exposition)
    finally:
        stop(proc)


def test_ledger_check_cronjob_passes_on_the_migrated_database(chart: dict[str, Any]) -> None:
    ((name, template),) = [(n, t) for n, t in chart["pods"].items() if n.startswith("CronJob/")]
    (container,) = template["spec"]["containers"]
    proc, log = start("ledger-check", command_line(container), container_env(chart, container))
    assert proc.wait(120) == 0, f"{name} failed:\n{log.read_text()[-3000:]}"


def test_a_wrong_probe_fails(chart: dict[str, Any]) -> None:
    """The negative control: the same web container with a probe path it does not serve."""
    (container,) = chart["pods"]["Deployment/sm-spacemusic-web"]["spec"]["containers"]
    proc, log = start("web-wrong-probe", command_line(container), container_env(chart, container))
    try:
        wait_ok(probe_url(container, "livenessProbe"), 60, proc, log)  # it is up
        broken = {**container, "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}}}
        with pytest.raises(AssertionError, match="last answer 404"):
            wait_ok(probe_url(broken, "readinessProbe"), 3, proc, log)
    finally:
        stop(proc)


def test_every_metric_named_is_exported(chart: dict[str, Any]) -> None:  # needs helm, as the probe tests do
    """Every metric a rule, dashboard panel or rollout analysis selects is declared on a
    live /metrics of web or a worker (or is a documented external series)."""
    components = {"web", "worker-pipeline", "worker-payouts", "worker-documents"}
    assert set(SCRAPED) == components, "the probe tests above did not all scrape"
    exported: set[str] = set()
    for names in SCRAPED.values():
        for name in names:  # a histogram declares NAME; its series are NAME_bucket/_sum/_count
            exported |= {name, f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    named: dict[str, str] = {}
    for group in rule_groups():
        for rule in group["rules"]:
            for name in metric_names_in(rule["expr"]):
                named.setdefault(name, f"rule {rule.get('alert') or rule.get('record')}")
    for board, queries in dashboard_queries().items():
        for q in queries:
            for name in metric_names_in(q):
                named.setdefault(name, f"dashboard {board}")
    for q in analysis_queries():
        for name in metric_names_in(q):
            named.setdefault(name, "AnalysisTemplate")
    recorded = {r["record"] for g in rule_groups() for r in g["rules"] if "record" in r}
    missing = {
        name: where
        for name, where in named.items()
        if name not in exported and name not in recorded and name not in EXTERNAL_METRICS
    }
    assert not missing, f"named but not exported: {missing}"
    assert len([n for n in named if n.startswith("spacemusic_")]) >= 15

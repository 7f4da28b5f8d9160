"""infra/deploy/rollout/rollback.sh against a stub kubectl that records its calls."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.deploy.support import DEPLOY, run, tool

SCRIPT = DEPLOY / "rollout" / "rollback.sh"

STUB = """#!/usr/bin/env bash
# A kubectl that records each call and answers like the Argo Rollouts plugin.
printf '%s\\n' "$*" >> "$KUBECTL_LOG"
case "$*" in
  "argo rollouts version") [[ -n ${NO_PLUGIN:-} ]] && { echo 'unknown command "argo"' >&2; exit 1; }; echo "kubectl-argo-rollouts: v1.8.3" ;;
  *" status "*) [[ -n ${STATUS_FAILS:-} ]] && { echo "Degraded"; exit 1; }; echo "Healthy" ;;
  *" get rollout "*) echo "Status: ✔ Healthy" ;;
esac
"""


@pytest.fixture
def kubectl(tmp_path: Path) -> dict[str, str]:
    stub = tmp_path / "bin" / "kubectl"
    stub.parent.mkdir()
    stub.write_text(STUB)
    stub.chmod(0o755)
    log = tmp_path / "calls.log"
    return {"PATH": f"{stub.parent}:/usr/bin:/bin", "KUBECTL_LOG": str(log)}


def calls(env: dict[str, str]) -> list[str]:
    return Path(env["KUBECTL_LOG"]).read_text().splitlines()


def rollback(env: dict[str, str], *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], env={**env, **extra}, capture_output=True, text=True, timeout=30
    )


@pytest.mark.parametrize("script", [SCRIPT, DEPLOY / "tools.sh"], ids=lambda p: p.name)
def test_shellcheck(script: Path) -> None:
    run(tool("shellcheck"), "-x", str(script))


def test_abort_undo_promote_wait_status(kubectl: dict[str, str]) -> None:
    result = rollback(kubectl, "-n", "prod", "-r", "sm")
    assert result.returncode == 0, result.stderr
    ar = "argo rollouts --namespace prod"
    assert calls(kubectl) == [
        "argo rollouts version",
        f"{ar} abort sm-spacemusic-web",
        f"{ar} undo sm-spacemusic-web",
        f"{ar} promote sm-spacemusic-web",
        f"{ar} status sm-spacemusic-web --timeout 10m",
        f"{ar} get rollout sm-spacemusic-web --no-color",
    ]


def test_revision_skip_analysis_and_timeout(kubectl: dict[str, str]) -> None:
    result = rollback(kubectl, "--to-revision", "7", "--skip-analysis", "--timeout", "3m")
    assert result.returncode == 0, result.stderr
    log = calls(kubectl)
    assert "argo rollouts --namespace spacemusic undo sm-spacemusic-web --to-revision 7" in log
    assert "argo rollouts --namespace spacemusic promote sm-spacemusic-web --full" in log
    assert "argo rollouts --namespace spacemusic status sm-spacemusic-web --timeout 3m" in log


def test_not_healthy_in_time_fails_and_shows_state(kubectl: dict[str, str]) -> None:
    result = rollback(kubectl, STATUS_FAILS="1")
    assert result.returncode == 1
    assert "is not Healthy after 10m" in result.stderr
    assert calls(kubectl)[-1] == "argo rollouts --namespace spacemusic get rollout sm-spacemusic-web --no-color"


def test_without_the_plugin_it_stops_before_touching_anything(kubectl: dict[str, str]) -> None:
    result = rollback(kubectl, NO_PLUGIN="1")
    assert result.returncode == 3
    assert calls(kubectl) == ["argo rollouts version"]


def test_unknown_argument_is_refused(kubectl: dict[str, str]) -> None:
    result = rollback(kubectl, "--namespce", "x")
    assert result.returncode == 2
    assert not os.path.exists(kubectl["KUBECTL_LOG"])

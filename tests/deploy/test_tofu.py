"""OpenTofu: formatting, `tofu test` of the provider-free module, tflint, checkov, and the
wiring check (variables, module outputs and inputs, env tfvars). `tofu validate`/`plan` of
the AWS modules need the AWS provider, which cannot be downloaded here (docs/deploy.md)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.deploy.support import DEPLOY, DEPLOY_VENV, run, tool

TOFU = DEPLOY / "tofu"
CHECK_WIRING = TOFU / "check_wiring.py"


@pytest.fixture
def tofu_env(tmp_path: Path) -> dict[str, str]:
    # No user CLI config, and .terraform/ data outside the source tree.
    return {
        **os.environ,
        "TF_CLI_CONFIG_FILE": "/dev/null",
        "TF_DATA_DIR": str(tmp_path / "tfdata"),
        "TF_IN_AUTOMATION": "1",
    }


def test_fmt(tofu_env: dict[str, str]) -> None:
    run(tool("tofu"), "fmt", "-check", "-recursive", "-diff", str(TOFU), env=tofu_env)


def test_network_plan_module_tests(tofu_env: dict[str, str]) -> None:
    module = TOFU / "modules" / "network_plan"
    run(tool("tofu"), "init", "-backend=false", "-input=false", cwd=module, env=tofu_env)
    out = run(tool("tofu"), "test", "-no-color", cwd=module, env=tofu_env)
    assert "4 passed, 0 failed" in out.stdout, out.stdout


def test_tflint(tofu_env: dict[str, str]) -> None:
    out = run(
        tool("tflint"), "--recursive", "--config", str(TOFU / ".tflint.hcl"), "--no-color", cwd=TOFU, env=tofu_env
    )
    assert out.stdout.strip() == "", out.stdout


def test_checkov_aws_policies(tmp_path: Path) -> None:
    out = run(
        tool("checkov"),
        "--quiet",
        "--compact",
        "--skip-download",
        "--framework",
        "terraform",
        "--config-file",
        str(DEPLOY / "checkov-tofu.yaml"),
        "-d",
        str(TOFU),
        check=False,
    )
    assert out.returncode == 0, out.stdout[-6000:]
    assert "Passed checks:" in out.stdout


def _wiring(directory: Path) -> tuple[int, str]:
    tool("checkov")  # the parser comes with it
    out = run(str(DEPLOY_VENV / "bin" / "python"), str(CHECK_WIRING), str(directory), check=False)
    return out.returncode, out.stdout


def test_wiring_is_complete() -> None:
    code, out = _wiring(TOFU)
    assert code == 0, out
    assert "checked 7 module directories, 2 envs: 0 problem(s)" in out


def test_wiring_check_catches_each_kind_of_break(tmp_path: Path) -> None:
    broken = tmp_path / "tofu"
    shutil.copytree(TOFU, broken, ignore=shutil.ignore_patterns(".terraform"))
    stack = broken / "stack" / "main.tf"
    text = stack.read_text()
    text = text.replace("module.vpc.private_subnet_cidrs", "module.vpc.private_cidrs", 1)
    text = text.replace("  instance_class        = var.db_instance_class\n", "")
    text = text.replace("  name               = local.name\n", "  name               = local.nmae\n", 1)
    text = text.replace("  bucket_name       =", "  bucket_names      = var.bucket\n  bucket_name       =")
    stack.write_text(text)
    prod = broken / "envs" / "prod.tfvars"
    prod.write_text(prod.read_text().replace('region                     = "eu-west-1"\n', ""))
    code, out = _wiring(broken)
    assert code == 1
    for expected in (
        "module.vpc.private_cidrs is not an output of ../modules/vpc",
        "module database does not pass required input instance_class",
        "local.nmae is not defined",
        "var.bucket is not declared",
        "module storage passes bucket_names, which its source does not declare",
        "prod.tfvars: required stack variable region is not set",
        "envs set different variables",
    ):
        assert expected in out, (expected, out)

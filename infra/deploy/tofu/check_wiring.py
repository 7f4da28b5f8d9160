"""Wiring checks that neither `tofu fmt` nor tflint make, offline (no provider needed):

- every ``var.X`` a module uses is declared in it; every ``local.X`` is defined;
- every ``module.M.O`` names a module block M whose source declares output O;
- every module block passes each required input of its source and no undeclared one;
- every env's tfvars sets only declared stack variables, all required ones, and the same
  keys as the other envs (envs differ only by values).

    python infra/deploy/tofu/check_wiring.py [TOFU_DIR]   # exit 1 and a list on problems

Runs with the deploy virtualenv's python: the HCL parser is checkov's (bc-python-hcl2).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import hcl2


def _strip(s: str) -> str:
    """HCL2 parser keeps quotes on some keys."""
    return s.strip('"')


def load(directory: Path) -> dict[str, Any]:
    """Declarations and raw text of one module directory (its *.tf files)."""
    found: dict[str, Any] = {"variables": {}, "outputs": set(), "locals": set(), "modules": {}, "text": ""}
    for path in sorted(directory.glob("*.tf")):
        text = path.read_text()
        found["text"] += re.sub(r"(?m)^\s*#.*$", "", text) + "\n"
        doc = hcl2.loads(text)
        for block in doc.get("variable", []):
            for name, body in block.items():
                found["variables"][_strip(name)] = "default" in body
        for block in doc.get("output", []):
            found["outputs"] |= {_strip(n) for n in block}
        for block in doc.get("locals", []):
            found["locals"] |= {_strip(n) for n in block}
        for block in doc.get("module", []):
            for name, body in block.items():
                # checkov's parser wraps values in lists and adds line markers.
                body = {k: v[0] if isinstance(v, list) and len(v) == 1 else v for k, v in body.items()}
                found["modules"][_strip(name)] = {k: v for k, v in body.items() if not k.startswith("__")}
    return found


def check_module(directory: Path, problems: list[str]) -> None:
    mod = load(directory)
    where = directory.as_posix()
    for name in sorted(set(re.findall(r"\bvar\.([A-Za-z_][\w-]*)", mod["text"])) - set(mod["variables"])):
        problems.append(f"{where}: var.{name} is not declared")
    for name in sorted(set(re.findall(r"\blocal\.([A-Za-z_][\w-]*)", mod["text"])) - mod["locals"]):
        problems.append(f"{where}: local.{name} is not defined")
    sources: dict[str, dict[str, Any]] = {}
    for name, body in mod["modules"].items():
        source = (directory / body["source"]).resolve()
        if not source.is_dir():
            problems.append(f"{where}: module {name}: source {body['source']} does not exist")
            continue
        sources[name] = load(source)
        declared = sources[name]["variables"]
        passed = set(body) - {"source", "version", "count", "for_each", "providers", "depends_on"}
        for missing in sorted(n for n, has_default in declared.items() if not has_default and n not in passed):
            problems.append(f"{where}: module {name} does not pass required input {missing}")
        for unknown in sorted(passed - set(declared)):
            problems.append(f"{where}: module {name} passes {unknown}, which its source does not declare")
    for name, output in sorted(set(re.findall(r"\bmodule\.([A-Za-z_][\w-]*)\.([A-Za-z_][\w-]*)", mod["text"]))):
        if name not in mod["modules"]:
            problems.append(f"{where}: module.{name} is not a module block here")
        elif name in sources and output not in sources[name]["outputs"]:
            problems.append(f"{where}: module.{name}.{output} is not an output of {mod['modules'][name]['source']}")


def check_envs(tofu: Path, problems: list[str]) -> None:
    stack = load(tofu / "stack")["variables"]
    keys: dict[str, set[str]] = {}
    for path in sorted((tofu / "envs").glob("*.tfvars")):
        values = {k for k in hcl2.loads(path.read_text()) if not k.startswith("__")}
        keys[path.name] = values
        for unknown in sorted(values - set(stack)):
            problems.append(f"{path.name}: {unknown} is not a stack variable")
        for missing in sorted(n for n, has_default in stack.items() if not has_default and n not in values):
            problems.append(f"{path.name}: required stack variable {missing} is not set")
    if len({frozenset(v) for v in keys.values()}) > 1:
        problems.append(f"envs set different variables: {sorted(keys)}")
    if not keys:
        problems.append("no envs/*.tfvars")


def main(argv: list[str]) -> int:
    tofu = Path(argv[1]) if len(argv) > 1 else Path(__file__).parent
    problems: list[str] = []
    dirs = sorted({p.parent for p in tofu.rglob("*.tf") if ".terraform" not in p.parts})
    for directory in dirs:
        check_module(directory, problems)
    check_envs(tofu, problems)
    for p in problems:
        print(p)
    print(
        f"checked {len(dirs)} module directories, {len(list((tofu / 'envs').glob('*.tfvars')))} envs: "
        f"{len(problems)} problem(s)"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

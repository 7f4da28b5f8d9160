"""The schema gate (infra/schema_gate.py) can fail: Avro BACKWARD rules, and a breaking change
committed in a temporary clone fails `make schema-gate` (a `make lint` step)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from infra.schema_gate import REPO_ROOT, check, problems, release


def record(*fields: dict, name: str = "E") -> dict:
    return {"type": "record", "name": name, "namespace": "t", "fields": list(fields)}


def rules(reader: dict, writer: dict) -> list[str]:
    from fastavro.schema import expand_schema, parse_schema

    return list(problems(expand_schema(parse_schema(reader)), expand_schema(parse_schema(writer))))


BASE = record({"name": "a", "type": "string"}, {"name": "n", "type": "int"})


@pytest.mark.parametrize(
    "reader",
    [
        BASE,
        record({"name": "a", "type": "string"}, {"name": "n", "type": "long"}),  # promotion
        record({"name": "a", "type": "string"}, {"name": "n", "type": "double"}),
        record({"name": "a", "type": "bytes"}, {"name": "n", "type": "int"}),
        record({"name": "a", "type": "string"}),  # dropping a field: the reader skips it
        record(
            {"name": "a", "type": "string"},
            {"name": "n", "type": "int"},
            {"name": "x", "type": ["null", "string"], "default": None},
        ),
        record({"name": "a", "type": ["null", "string"]}, {"name": "n", "type": "int"}),  # widened to a union
        record({"name": "b", "type": "string", "aliases": ["a"]}, {"name": "n", "type": "int"}),  # renamed + alias
    ],
)
def test_backward_compatible_changes_pass(reader: dict) -> None:
    assert rules(reader, BASE) == []


@pytest.mark.parametrize(
    ("reader", "expected"),
    [
        (
            record({"name": "a", "type": "string"}, {"name": "n", "type": "int"}, {"name": "x", "type": "string"}),
            "without a default",
        ),
        (record({"name": "a", "type": "string"}, {"name": "n", "type": "string"}), "type changed"),
        (record({"name": "a", "type": "string"}, {"name": "n", "type": "float"}, name="Other"), "type changed"),
        (record({"name": "b", "type": "string"}, {"name": "n", "type": "int"}), "without a default"),
        (record({"name": "a", "type": ["null", "long"]}, {"name": "n", "type": "int"}), "no branch"),
    ],
)
def test_breaking_changes_fail(reader: dict, expected: str) -> None:
    found = rules(reader, BASE)
    assert found and expected in found[0]


def test_enums_unions_and_collections() -> None:
    enum = {"type": "enum", "name": "S", "symbols": ["A", "B"]}
    fewer = {"type": "enum", "name": "S", "symbols": ["A"]}
    assert rules(record({"name": "s", "type": fewer}), record({"name": "s", "type": enum}))
    assert not rules(record({"name": "s", "type": {**fewer, "default": "A"}}), record({"name": "s", "type": enum}))
    assert not rules(
        record({"name": "s", "type": {**enum, "symbols": ["A", "B", "C"]}}), record({"name": "s", "type": enum})
    )
    # a writer union with a branch the reader cannot take
    assert rules(record({"name": "u", "type": "string"}), record({"name": "u", "type": ["null", "string"]}))
    assert rules(
        record({"name": "l", "type": {"type": "array", "items": "string"}}),
        record({"name": "l", "type": {"type": "array", "items": "long"}}),
    )
    assert not rules(
        record({"name": "m", "type": {"type": "map", "values": "long"}}),
        record({"name": "m", "type": {"type": "map", "values": "int"}}),
    )


def test_the_committed_schemas_pass_and_a_deleted_one_fails(tmp_path: Path) -> None:
    assert check() == []
    shutil.copytree(REPO_ROOT / "schema", tmp_path / "schema")
    (tmp_path / "schema" / "offer.accepted.avsc").unlink()
    found = check(tmp_path / "schema")
    assert [p.subject for p in found] == ["offer.accepted"] and "deleted" in found[0].message


def test_release_records_the_working_tree(tmp_path: Path) -> None:
    schema = tmp_path / "schema"
    schema.mkdir()
    (schema / "x.avsc").write_text(json.dumps(BASE))
    assert check(schema)[0].message == "no released schemas to check against"
    assert release(schema) == ["x.avsc"]
    assert check(schema) == []


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=gate-test", "-c", "user.email=gate@test.invalid", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def test_a_committed_breaking_change_fails_the_gate(tmp_path: Path) -> None:
    if shutil.which("git") is None or shutil.which("make") is None:
        pytest.skip("needs git and make")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--no-local", str(REPO_ROOT), str(clone)], check=True)
    # The gate as it is in this working tree (it may not be committed yet).
    for relative in ("Makefile", "infra/schema_gate.py"):
        shutil.copyfile(REPO_ROOT / relative, clone / relative)
    shutil.rmtree(clone / "schema" / "released", ignore_errors=True)
    shutil.copytree(REPO_ROOT / "schema" / "released", clone / "schema" / "released")
    _git(clone, "add", "Makefile", "infra/schema_gate.py", "schema/released")
    _git(clone, "commit", "-q", "--allow-empty", "-m", "gate baseline")
    bin_dir = str(Path(sys.executable).parent)

    def gate() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["make", "-s", "schema-gate", f"BIN={bin_dir}"], cwd=clone, capture_output=True, text=True
        )

    baseline = gate()
    assert baseline.returncode == 0, baseline.stderr

    path = clone / "schema" / "offer.accepted.avsc"
    schema = json.loads(path.read_text())
    schema["fields"].append({"name": "accepted_by_ip", "type": "string", "doc": "breaking: no default"})
    path.write_text(json.dumps(schema, indent=2) + "\n")
    _git(clone, "commit", "-q", "-am", "a deliberately breaking schema change")
    assert "accepted_by_ip" in _git(clone, "show", "--stat", "-p", "HEAD")

    broken = gate()
    print(broken.stderr)
    assert broken.returncode != 0
    assert "offer.accepted: accepted_by_ip: new field without a default" in broken.stderr

    # The compatible version of the same change passes again.
    schema["fields"][-1]["type"] = ["null", "string"]
    schema["fields"][-1]["default"] = None
    path.write_text(json.dumps(schema, indent=2) + "\n")
    _git(clone, "commit", "-q", "-am", "the compatible version")
    assert gate().returncode == 0

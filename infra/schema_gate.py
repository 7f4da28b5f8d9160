"""The schema compatibility gate: every working-tree schema must be BACKWARD compatible with
its released version in ``schema/released/``.

BACKWARD means a consumer on the new schema (the *reader*) can decode everything written
with the released one (the *writer*), by the Avro specification's schema-resolution rules:

- primitives match, or the writer's type promotes to the reader's (int -> long, float,
  double; long -> float, double; float -> double; string <-> bytes);
- records, enums and fixed types match by full name (or a reader alias); a reader field
  missing from the writer needs a default; writer fields the reader dropped are skipped;
- a writer enum symbol the reader lacks needs a reader enum default; fixed sizes are equal;
- arrays and maps resolve item-wise; every branch of a writer union must resolve against
  the reader (a union or a single type); a plain writer type must match some reader branch.

Logical types do not take part (Avro resolves on the underlying type), as in the registry.
A released schema whose working-tree file is gone fails too (a topic cannot lose its schema);
a schema with no released version is new and passes.

``python -m infra.schema_gate`` checks (``make lint`` runs it, no stack needed);
``python -m infra.schema_gate --release`` copies the working tree into ``schema/released/``
once a deploy has registered them. Standard library + fastavro only.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastavro.schema import expand_schema, parse_schema

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_DIR = REPO_ROOT / "schema"
RELEASED_DIR = SCHEMA_DIR / "released"

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_PROMOTIONS: dict[str, frozenset[str]] = {
    "int": frozenset({"long", "float", "double"}),
    "long": frozenset({"float", "double"}),
    "float": frozenset({"double"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}
_NAMED = frozenset({"record", "error", "enum", "fixed"})


@dataclass(frozen=True)
class Problem:
    subject: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.path or '<root>'}: {self.message}"


def load_schema(path: Path) -> Any:
    """Parsed (validated by fastavro) and with named references expanded in place."""
    return expand_schema(parse_schema(json.loads(path.read_text()), _write_hint=False))


def _type_name(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, dict):
        return str(schema["type"])
    return str(schema)


def _full_name(schema: dict[str, Any]) -> str:
    return str(schema.get("name", ""))


def _names_match(reader: dict[str, Any], writer: dict[str, Any]) -> bool:
    # fastavro's parse_schema qualifies names and aliases with the namespace.
    return _full_name(reader) == _full_name(writer) or _full_name(writer) in reader.get("aliases", ())


def _matches(reader: Any, writer: Any) -> bool:
    """Whether a reader branch is the one the writer's (non-union) type resolves to."""
    r, w = _type_name(reader), _type_name(writer)
    if r in _NAMED or w in _NAMED:
        return r == w and _names_match(reader, writer)
    return r == w or r in _PROMOTIONS.get(w, frozenset())


def problems(reader: Any, writer: Any, path: str = "") -> Iterator[str]:
    """Why data written with ``writer`` cannot be read with ``reader`` (empty: it can)."""
    r, w = _type_name(reader), _type_name(writer)
    if w == "union":
        for index, branch in enumerate(writer):
            yield from problems(reader, branch, f"{path}[writer branch {index}: {_type_name(branch)}]")
        return
    if r == "union":
        branch = next((b for b in reader if _matches(b, writer)), None)
        if branch is None:
            yield f"{path}: the new union has no branch for the released type {w!r}"
        else:
            yield from problems(branch, writer, path)
        return
    if not _matches(reader, writer):
        what = f"{w} {_full_name(writer)}".strip() if w in _NAMED else w
        yield f"{path}: type changed from {what!r} to {r!r} (no Avro promotion)"
        return
    if r in ("record", "error"):
        written = {field["name"]: field for field in writer["fields"]}
        for field in reader["fields"]:
            name = field["name"]
            source = written.get(name) or next(
                (written[a] for a in field.get("aliases", ()) if a in written),
                None,
            )
            where = f"{path}.{name}" if path else name
            if source is None:
                if "default" not in field:
                    yield f"{where}: new field without a default (released data has none)"
                continue
            yield from problems(field["type"], source["type"], where)
    elif r == "enum":
        missing = [s for s in writer["symbols"] if s not in reader["symbols"]]
        if missing and "default" not in reader:
            yield f"{path}: enum symbol(s) {missing} removed without an enum default"
    elif r == "fixed":
        if reader["size"] != writer["size"]:
            yield f"{path}: fixed size changed from {writer['size']} to {reader['size']}"
    elif r == "array":
        yield from problems(reader["items"], writer["items"], f"{path}[]")
    elif r == "map":
        yield from problems(reader["values"], writer["values"], f"{path}{{}}")


def check(schema_dir: Path = SCHEMA_DIR, released_dir: Path | None = None) -> list[Problem]:
    released_dir = released_dir or schema_dir / "released"
    found: list[Problem] = []
    if not released_dir.is_dir():
        return [Problem(str(released_dir), "", "no released schemas to check against")]
    current = {p.name: p for p in sorted(schema_dir.glob("*.avsc"))}
    for released in sorted(released_dir.glob("*.avsc")):
        subject = released.name.removesuffix(".avsc")
        new = current.get(released.name)
        if new is None:
            found.append(Problem(subject, "", "released schema deleted from the working tree"))
            continue
        try:
            reader, writer = load_schema(new), load_schema(released)
        except Exception as exc:  # a schema fastavro refuses is a gate failure, not a crash
            found.append(Problem(subject, "", f"cannot be parsed: {exc}"))
            continue
        found.extend(Problem(subject, *_split(message)) for message in problems(reader, writer))
    return found


def _split(message: str) -> tuple[str, str]:
    path, _, text = message.partition(": ")
    return path, text


def release(schema_dir: Path = SCHEMA_DIR, released_dir: Path | None = None) -> list[str]:
    """Records the working tree as released (after the deploy registered it)."""
    released_dir = released_dir or schema_dir / "released"
    released_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for path in sorted(schema_dir.glob("*.avsc")):
        load_schema(path)
        shutil.copyfile(path, released_dir / path.name)
        names.append(path.name)
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.schema_gate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--schema-dir", type=Path, default=SCHEMA_DIR)
    parser.add_argument("--release", action="store_true", help="copy the working tree into schema/released/")
    args = parser.parse_args(argv)
    if args.release:
        for name in release(args.schema_dir):
            print(f"released {name}")
        return 0
    found = check(args.schema_dir)
    if found:
        print("schema gate: NOT backward compatible with schema/released/:", file=sys.stderr)
        for problem in found:
            print(f"  {problem}", file=sys.stderr)
        print("make the change BACKWARD compatible (e.g. give new fields a default)", file=sys.stderr)
        return 1
    count = len(list((args.schema_dir / "released").glob("*.avsc")))
    print(f"schema gate: {count} released schema(s), all BACKWARD compatible")
    return 0


if __name__ == "__main__":
    sys.exit(main())

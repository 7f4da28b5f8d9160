"""Convert CustomResourceDefinition YAML to the strict JSON schemas kubeconform reads.

    python infra/deploy/schemas/convert_crds.py OUT_DIR CRD.yaml...

Writes OUT_DIR/<group>/<kind>_<version>.json (lower case), matching the schema location
template in tests/deploy (``{{.Group}}/{{.ResourceKind}}_{{.ResourceAPIVersion}}.json``).
Strict like kubeconform's openapi2jsonschema: an object with ``properties`` and no
``additionalProperties`` or ``x-kubernetes-preserve-unknown-fields`` rejects unknown
fields, so a typo in a CR is an error, not silently ignored.

Written here instead of using kubeconform's converter because that one treats a *field*
literally named ``properties`` (Litmus ChaosSchedule/ChaosEngine probes) as the JSON
schema keyword; this walks the schema structurally, so it cannot confuse the two.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml


def strict(schema: Any) -> Any:
    if not isinstance(schema, dict):
        return schema
    out = {k: v for k, v in schema.items() if k not in ("properties", "items", "additionalProperties")}
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if schema.get("nullable") and isinstance(schema.get("type"), str):
        out["type"] = [schema["type"], "null"]
    if "properties" in schema:
        # The *names* under properties are field names, each mapping to a sub-schema.
        out["properties"] = {name: strict(sub) for name, sub in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if "additionalProperties" in schema:
        ap = schema["additionalProperties"]
        out["additionalProperties"] = strict(ap) if isinstance(ap, dict) else ap
    if "items" in schema:
        items = schema["items"]
        out["items"] = [strict(i) for i in items] if isinstance(items, list) else strict(items)
    for key in ("allOf", "anyOf", "oneOf"):
        if key in schema:
            out[key] = [strict(s) for s in schema[key]]
    if "not" in schema:
        out["not"] = strict(schema["not"])
    return out


def convert(crd: dict[str, Any], out_dir: Path) -> list[Path]:
    spec = crd["spec"]
    group, kind = spec["group"], spec["names"]["kind"]
    written = []
    for version in spec["versions"]:
        schema = version.get("schema", {}).get("openAPIV3Schema")
        if schema is None:
            continue
        body = strict(schema)
        # apiVersion/kind/metadata are checked by kubeconform itself, but a CRD schema may
        # omit them: allow them explicitly so strictness does not reject every resource.
        props = body.setdefault("properties", {})
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        props.setdefault("metadata", {"type": "object"})
        body["$schema"] = "http://json-schema.org/draft-07/schema#"
        path = out_dir / group.lower() / f"{kind.lower()}_{version['name'].lower()}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(body, indent=1, sort_keys=True) + "\n")
        written.append(path)
    return written


def main(argv: list[str]) -> int:
    out_dir = Path(argv[1])
    for source in argv[2:]:
        for doc in yaml.safe_load_all(Path(source).read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                for path in convert(doc, out_dir):
                    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

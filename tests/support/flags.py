"""Flag files and settings for the feature-flag and calculator tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from infra.settings import Settings

FLAG = "calculator-v2-range"


CREATOR = "c2c2c2c2-0000-4000-8000-000000000002"


OTHER_CREATOR = "11111111-2222-4333-8444-555555555555"


def boolean_flag(
    key: str = FLAG,
    *,
    on: bool = True,
    fallthrough: bool = False,
    users: list[str] | None = None,
    creators: list[str] | None = None,
    roles: list[str] | None = None,
) -> dict[str, Any]:
    """LaunchDarkly's flag JSON for a boolean flag: variation 0 is true, 1 is false."""
    flag: dict[str, Any] = {
        "key": key,
        "version": 1,
        "on": on,
        "variations": [True, False],
        "offVariation": 1,
        "fallthrough": {"variation": 0 if fallthrough else 1},
        "salt": key,
    }
    context_targets: list[dict[str, Any]] = []
    if users:
        flag["targets"] = [{"variation": 0, "values": users}]
        # With contextTargets present, user keys stay in "targets" and this entry says where
        # they rank; it is how LaunchDarkly itself exports such a flag.
        context_targets.append({"contextKind": "user", "variation": 0, "values": []})
    if creators:
        context_targets.append({"contextKind": "creator", "variation": 0, "values": creators})
    if context_targets:
        flag["contextTargets"] = context_targets
    if roles:
        flag["rules"] = [
            {
                "id": "by-role",
                "variation": 0,
                "clauses": [{"contextKind": "user", "attribute": "roles", "op": "in", "values": roles}],
            }
        ]
    return flag


def write_flags(path: Path, *flags: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"flags": {flag["key"]: flag for flag in flags}}))
    return path


def local_settings(flags_file: Path, sdk_key: str = "") -> Settings:
    return Settings(
        kafka_bootstrap_servers="unused:9092",
        schema_registry_url="http://unused",
        database_url="postgresql://unused/unused",
        flags_file=flags_file,
        launchdarkly_sdk_key=sdk_key,
    )

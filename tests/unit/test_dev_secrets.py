"""Outside dev, start-up refuses the committed dev secrets and the dev IdP (issue 11, point 9)."""

from __future__ import annotations

import hashlib

import pytest

from infra.settings import _DEV_SECRET_SHA256, REPO_ROOT, Settings, SettingsError

BASE = {
    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
    "SCHEMA_REGISTRY_URL": "http://127.0.0.1:8081",
    "DATABASE_URL": "postgresql://u:p@127.0.0.1/db",
}
PROD_OK = {
    **BASE,
    "SPACEMUSIC_ENV": "prod",
    "SESSION_SECRET": "a-real-secret-from-the-kubernetes-secret-0123456789",
    "RECIPIENT_ENCRYPTION_KEY": "cHJvZC1zcGFjZW11c2ljLXJlY2lwaWVudC1rZXktMDE=",
    "OIDC_ISSUER": "https://spacemusic.eu.auth0.com/",
}


def dev_env() -> dict[str, str]:
    values = {}
    text = (REPO_ROOT / "infra" / "local" / "dev.env").read_text()
    text += "\n" + (REPO_ROOT / "infra" / "local" / "oidc" / "oidc.env").read_text()
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def test_the_fingerprints_match_the_committed_dev_env() -> None:
    committed = dev_env()
    for field, digests in _DEV_SECRET_SHA256.items():
        value = committed[Settings.env_var(field)]
        assert hashlib.sha256(value.encode()).hexdigest() in digests, field


def test_dev_accepts_its_own_secrets() -> None:
    settings = Settings.from_env({**BASE, **dev_env()})
    assert settings.is_dev


def test_a_real_production_configuration_starts() -> None:
    assert Settings.from_env(PROD_OK).env == "prod"


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"SESSION_SECRET": dev_env()["SESSION_SECRET"]}, "SESSION_SECRET"),
        ({"RECIPIENT_ENCRYPTION_KEY": dev_env()["RECIPIENT_ENCRYPTION_KEY"]}, "RECIPIENT_ENCRYPTION_KEY"),
        ({"OIDC_ISSUER": "http://127.0.0.1:8080/dev-idp/"}, "OIDC_ISSUER"),
        ({"OIDC_JWKS_URL": "http://127.0.0.1:8080/dev-idp/.well-known/jwks.json"}, "OIDC_JWKS_URL"),
        ({"OIDC_CLIENT_SECRET": dev_env()["OIDC_CLIENT_SECRET"]}, "OIDC_CLIENT_SECRET"),
    ],
)
def test_outside_dev_each_dev_secret_is_refused_by_name(override: dict[str, str], named: str) -> None:
    for env in ("prod", "staging"):
        with pytest.raises(SettingsError) as err:
            Settings.from_env({**PROD_OK, **override, "SPACEMUSIC_ENV": env})
        message = str(err.value)
        assert named in message and f"SPACEMUSIC_ENV={env}" in message
        assert override[named] not in message  # the message never prints the secret


def test_dev_env_copied_to_production_is_refused_naming_everything() -> None:
    committed = {k: v for k, v in dev_env().items() if k not in ("OIDC_ISSUER", "OIDC_JWKS_URL")}
    with pytest.raises(SettingsError) as err:
        Settings.from_env(
            {
                **BASE,
                **committed,
                "OIDC_ISSUER": "http://127.0.0.1:8080/dev-idp/",
                "OIDC_JWKS_URL": "http://127.0.0.1:8080/dev-idp/.well-known/jwks.json",
                "SPACEMUSIC_ENV": "prod",
            }
        )
    for name in ("SESSION_SECRET", "RECIPIENT_ENCRYPTION_KEY", "OIDC_CLIENT_SECRET", "OIDC_ISSUER", "OIDC_JWKS_URL"):
        assert name in str(err.value)

"""Outside dev, start-up refuses the committed dev secrets and the dev IdP (issue 11, point 9)."""

from __future__ import annotations

import base64
import hashlib

import pytest

from infra.settings import (
    _DEV_RECIPIENT_KEY_SHA256,
    _DEV_SECRET_SHA256,
    REPO_ROOT,
    Settings,
    SettingsError,
    parse_keyring,
)

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
    "RECIPIENT_ENCRYPTION_KEYS": "prod2:cHJvZC1zcGFjZW11c2ljLXJlY2lwaWVudC1rZXktMDI=",
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


def test_the_dev_keyring_and_legacy_key_bytes_are_fingerprinted() -> None:
    committed = dev_env()
    keys = [key for _, key in parse_keyring(committed["RECIPIENT_ENCRYPTION_KEYS"])]
    keys.append(base64.urlsafe_b64decode(committed["RECIPIENT_ENCRYPTION_KEY"]))
    assert {hashlib.sha256(key).hexdigest() for key in keys} == _DEV_RECIPIENT_KEY_SHA256


def dev_key_under_another_id() -> str:
    """The committed dev keyring key, renamed and behind a real one: still refused."""
    _, dev_key = parse_keyring(dev_env()["RECIPIENT_ENCRYPTION_KEYS"])[0]
    return f"{PROD_OK['RECIPIENT_ENCRYPTION_KEYS']},renamed:{base64.b64encode(dev_key).decode()}"


def legacy_dev_key_in_the_keyring() -> str:
    return f"prod9:{dev_env()['RECIPIENT_ENCRYPTION_KEY']}"


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
        ({"RECIPIENT_ENCRYPTION_KEYS": dev_env()["RECIPIENT_ENCRYPTION_KEYS"]}, "RECIPIENT_ENCRYPTION_KEYS"),
        ({"RECIPIENT_ENCRYPTION_KEYS": dev_key_under_another_id()}, "RECIPIENT_ENCRYPTION_KEYS"),
        ({"RECIPIENT_ENCRYPTION_KEYS": legacy_dev_key_in_the_keyring()}, "RECIPIENT_ENCRYPTION_KEYS"),
        ({"OIDC_ISSUER": "http://127.0.0.1:8080/dev-idp/"}, "OIDC_ISSUER"),
        ({"OIDC_JWKS_URL": "http://127.0.0.1:8080/dev-idp/.well-known/jwks.json"}, "OIDC_JWKS_URL"),
        ({"OIDC_CLIENT_SECRET": dev_env()["OIDC_CLIENT_SECRET"]}, "OIDC_CLIENT_SECRET"),
        ({"STRIPE_WEBHOOK_SECRET": dev_env()["STRIPE_WEBHOOK_SECRET"]}, "STRIPE_WEBHOOK_SECRET"),
    ],
)
def test_outside_dev_each_dev_secret_is_refused_by_name(override: dict[str, str], named: str) -> None:
    for env in ("prod", "staging"):
        with pytest.raises(SettingsError) as err:
            Settings.from_env({**PROD_OK, **override, "SPACEMUSIC_ENV": env})
        message = str(err.value)
        assert named in message and f"SPACEMUSIC_ENV={env}" in message
        assert override[named] not in message  # the message never prints the secret
        for secret in dev_env()["RECIPIENT_ENCRYPTION_KEYS"].split(":")[1:]:
            assert secret not in message


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
    for name in (
        "SESSION_SECRET",
        "RECIPIENT_ENCRYPTION_KEY ",
        "RECIPIENT_ENCRYPTION_KEYS entry dev2",
        "OIDC_CLIENT_SECRET",
        "OIDC_ISSUER",
        "OIDC_JWKS_URL",
    ):
        assert name in str(err.value)

"""Recipient details are bound to their row and sealed under a versioned keyring (issue 9, point 8)."""

from __future__ import annotations

import base64
import os
import uuid

import pytest
from cryptography.fernet import Fernet

from infra.crypto import RecipientDetailsUnreadable, RecipientVault, key_id_of
from infra.settings import Settings, SettingsError, parse_keyring

DETAILS = {"bank_account": {"holder_name": "Ada Lovelace", "iban": "DE89370400440532013000", "bic": None}}
K1, K2 = os.urandom(32), os.urandom(32)
LEGACY = Fernet.generate_key().decode()
BASE = {
    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
    "SCHEMA_REGISTRY_URL": "http://127.0.0.1:8081",
    "DATABASE_URL": "postgresql://u:p@127.0.0.1/db",
    "SPACEMUSIC_ENV": "test",
}


def ids() -> tuple[str, str]:
    return str(uuid.uuid4()), str(uuid.uuid4())


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def test_round_trip_under_the_current_key_and_the_envelope_names_it() -> None:
    vault = RecipientVault((("k2", K2), ("k1", K1)))
    recipient_id, creator_id = ids()
    sealed = vault.seal(DETAILS, recipient_id=recipient_id, creator_id=creator_id)
    assert sealed.startswith(b"v2:k2:") and key_id_of(sealed) == "k2"
    assert b"DE89" not in sealed and b"Lovelace" not in sealed
    assert vault.open(sealed, recipient_id=recipient_id, creator_id=creator_id) == DETAILS
    # A random nonce per seal: the same details never give the same bytes twice.
    assert sealed != vault.seal(DETAILS, recipient_id=recipient_id, creator_id=creator_id)
    # Ids are compared canonically (Postgres returns lower case).
    assert vault.open(sealed, recipient_id=recipient_id.upper(), creator_id=creator_id) == DETAILS


def test_an_older_key_of_the_keyring_still_opens() -> None:
    recipient_id, creator_id = ids()
    old = RecipientVault((("k1", K1),)).seal(DETAILS, recipient_id=recipient_id, creator_id=creator_id)
    assert RecipientVault((("k2", K2), ("k1", K1))).open(old, recipient_id=recipient_id, creator_id=creator_id)


@pytest.mark.parametrize("moved", ["recipient", "creator", "both"])
def test_details_copied_to_another_row_are_refused_without_leaking_them(moved: str) -> None:
    vault = RecipientVault((("k1", K1),))
    recipient_id, creator_id = ids()
    attacker = vault.seal(DETAILS, recipient_id=recipient_id, creator_id=creator_id)
    victim_recipient, victim_creator = ids()
    target = {
        "recipient": (victim_recipient, creator_id),
        "creator": (recipient_id, victim_creator),
        "both": (victim_recipient, victim_creator),
    }[moved]
    with pytest.raises(RecipientDetailsUnreadable) as err:
        vault.open(attacker, recipient_id=target[0], creator_id=target[1])
    message = str(err.value)
    assert "copied from another row" in message and target[0] in message
    assert "DE89" not in message and "Lovelace" not in message


def test_a_relabelled_key_id_or_flipped_byte_is_refused() -> None:
    vault = RecipientVault((("k2", K1), ("k1", K1)))  # the same key under two ids: the id is authenticated too
    recipient_id, creator_id = ids()
    sealed = vault.seal(DETAILS, recipient_id=recipient_id, creator_id=creator_id)
    with pytest.raises(RecipientDetailsUnreadable):
        vault.open(sealed.replace(b"v2:k2:", b"v2:k1:", 1), recipient_id=recipient_id, creator_id=creator_id)
    flipped = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(RecipientDetailsUnreadable):
        vault.open(flipped, recipient_id=recipient_id, creator_id=creator_id)


def test_an_unknown_key_id_is_a_clear_error() -> None:
    recipient_id, creator_id = ids()
    sealed = RecipientVault((("k1", K1),)).seal(DETAILS, recipient_id=recipient_id, creator_id=creator_id)
    with pytest.raises(RecipientDetailsUnreadable) as err:
        RecipientVault((("k3", K2), ("k2", K1))).open(sealed, recipient_id=recipient_id, creator_id=creator_id)
    assert "'k1'" in str(err.value) and "does not hold" in str(err.value) and "k3, k2" in str(err.value)


def test_legacy_fernet_rows_stay_readable_and_new_rows_never_use_fernet() -> None:
    recipient_id, creator_id = ids()
    legacy = Fernet(LEGACY.encode()).encrypt(b'{"stripe_account_id": "acct_1"}')
    vault = RecipientVault((("k1", K1),), LEGACY)
    assert key_id_of(legacy) is None and not vault.is_current(legacy)
    assert vault.open(legacy, recipient_id=recipient_id, creator_id=creator_id) == {"stripe_account_id": "acct_1"}
    assert vault.seal(DETAILS, recipient_id=recipient_id, creator_id=creator_id).startswith(b"v2:k1:")
    with pytest.raises(RecipientDetailsUnreadable, match="RECIPIENT_ENCRYPTION_KEY is not set"):
        RecipientVault((("k1", K1),)).open(legacy, recipient_id=recipient_id, creator_id=creator_id)
    with pytest.raises(RecipientDetailsUnreadable, match="cannot be decrypted"):
        RecipientVault((("k1", K1),), Fernet.generate_key().decode()).open(
            legacy, recipient_id=recipient_id, creator_id=creator_id
        )


def test_the_vault_needs_a_keyring() -> None:
    with pytest.raises(SettingsError, match="RECIPIENT_ENCRYPTION_KEYS is required"):
        RecipientVault((), LEGACY)
    with pytest.raises(SettingsError, match="Fernet key"):
        RecipientVault((("k1", K1),), "not-a-fernet-key")


def test_settings_parse_the_keyring_current_key_first() -> None:
    settings = Settings.from_env(
        {**BASE, "RECIPIENT_ENCRYPTION_KEYS": f" k2:{b64(K2)} , k1:{base64.urlsafe_b64encode(K1).decode()}"}
    )
    assert settings.recipient_keyring == (("k2", K2), ("k1", K1))
    assert K2.hex() not in repr(settings) and b64(K2) not in repr(settings)
    assert RecipientVault.from_settings(settings).current_key_id == "k2"
    assert Settings.from_env(BASE).recipient_keyring == ()


@pytest.mark.parametrize(
    ("keyring", "says"),
    [
        (f"{b64(K1)}", "entry 1: expected <key id>:<key>"),
        (f"k1:{b64(K1)},bad id!:{b64(K2)}", "entry 2: expected <key id>:<key>"),
        (f"k1:{b64(os.urandom(16))}", "entry 1 (k1): the key is not base64 of exactly 32 bytes"),
        ("k1:not*base64", "entry 1 (k1): the key is not base64"),
        (f"k1:{b64(K1)},k1:{b64(K2)}", "key id k1 appears more than once"),
        (f"k1:{b64(K1)},", "entry 2: expected"),
    ],
)
def test_a_malformed_keyring_fails_fast_naming_the_entry_not_the_key(keyring: str, says: str) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env({**BASE, "RECIPIENT_ENCRYPTION_KEYS": keyring})
    message = str(err.value)
    assert "RECIPIENT_ENCRYPTION_KEYS" in message and says in message
    assert b64(K1) not in message and b64(K2) not in message


def test_parse_keyring_accepts_what_openssl_rand_prints() -> None:
    assert parse_keyring(f"prod-2026-12:{b64(K1)}") == (("prod-2026-12", K1),)

"""Encryption at rest for payout recipient details: AES-256-GCM bound to the row, under a
versioned keyring (RECIPIENT_ENCRYPTION_KEYS), with the legacy Fernet key read-only.

Envelope (``details_ciphertext``)::

    b"v2:" + key_id (ASCII, [A-Za-z0-9_-]{1,32}) + b":" + nonce (12 random bytes) + AES-GCM(ciphertext || 16-byte tag)

The associated data (authenticated, not stored) binds the envelope to its row::

    b"spacemusic/payout-recipient/v2\\n" + recipient_id + b"\\n" + creator_id + b"\\n" + key_id

with both ids as canonical lower-case UUIDs. Copying one row's envelope into another
recipient's or creator's row therefore fails authentication instead of quietly paying the
copier, and so does relabelling the key id. Anything not starting with ``v2:`` is a legacy
Fernet token (they start with ``gAAAAA``): readable with RECIPIENT_ENCRYPTION_KEY, never
written, and not bound to a row until `spacemusic recipients rotate-key` re-seals it.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from infra.settings import KEY_ID_PATTERN, Settings, SettingsError

MAGIC = b"v2:"
NONCE_BYTES = 12  # 96 bits, random per seal: 2^32 seals per key stay far inside GCM's bound
AAD_PREFIX = b"spacemusic/payout-recipient/v2"
LEGACY = None  # the key id of a legacy Fernet row (``payout_recipients.key_id`` is NULL)


class RecipientDetailsUnreadable(ValueError):
    """The details cannot be opened; the message names the recipient and key id, never the details."""


def _canonical_id(value: str, what: str) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError as exc:
        raise ValueError(f"{what} must be a UUID") from exc


def associated_data(recipient_id: str, creator_id: str, key_id: str) -> bytes:
    return b"\n".join(
        (
            AAD_PREFIX,
            _canonical_id(recipient_id, "recipient_id").encode(),
            _canonical_id(creator_id, "creator_id").encode(),
            key_id.encode("ascii"),
        )
    )


def key_id_of(ciphertext: bytes) -> str | None:
    """The key id an envelope names; None for a legacy Fernet token."""
    if not ciphertext.startswith(MAGIC):
        return LEGACY
    end = ciphertext.find(b":", len(MAGIC))
    key_id = ciphertext[len(MAGIC) : end].decode("ascii", "replace") if end > 0 else ""
    if not KEY_ID_PATTERN.fullmatch(key_id):
        raise RecipientDetailsUnreadable("recipient details: malformed envelope (no key id)")
    return key_id


class RecipientVault:
    def __init__(self, keyring: tuple[tuple[str, bytes], ...], legacy_key: str = "") -> None:
        if not keyring:
            raise SettingsError(
                "RECIPIENT_ENCRYPTION_KEYS is required to store or read payout details "
                "(RECIPIENT_ENCRYPTION_KEY, the legacy Fernet key, only opens rows sealed before it)"
            )
        self._keys = {key_id: AESGCM(key) for key_id, key in keyring}
        self.current_key_id = keyring[0][0]
        self.key_ids = tuple(key_id for key_id, _ in keyring)
        self._fernet: Fernet | None = None
        if legacy_key:
            try:
                self._fernet = Fernet(legacy_key.encode())
            except (ValueError, TypeError) as exc:
                raise SettingsError("RECIPIENT_ENCRYPTION_KEY must be a urlsafe-base64 32-byte Fernet key") from exc

    @classmethod
    def from_settings(cls, settings: Settings) -> RecipientVault:
        return cls(settings.recipient_keyring, settings.recipient_encryption_key.get_secret_value())

    def seal(self, details: dict[str, Any], *, recipient_id: str, creator_id: str) -> bytes:
        """The envelope of ``details`` under the current key, bound to this recipient and creator."""
        key_id = self.current_key_id
        nonce = os.urandom(NONCE_BYTES)
        plaintext = json.dumps(details, sort_keys=True).encode()
        sealed = self._keys[key_id].encrypt(nonce, plaintext, associated_data(recipient_id, creator_id, key_id))
        return MAGIC + key_id.encode("ascii") + b":" + nonce + sealed

    def open(self, ciphertext: bytes, *, recipient_id: str, creator_id: str) -> dict[str, Any]:
        """The details of this recipient's row; raises RecipientDetailsUnreadable when the
        envelope belongs to another row, was altered, or its key is not configured."""
        ciphertext = bytes(ciphertext)
        key_id = key_id_of(ciphertext)
        if key_id is LEGACY:
            return self._open_legacy(ciphertext, recipient_id)
        key = self._keys.get(key_id)
        if key is None:
            raise RecipientDetailsUnreadable(
                f"recipient {recipient_id}: sealed under key id {key_id!r}, which RECIPIENT_ENCRYPTION_KEYS "
                f"does not hold (configured: {', '.join(self.key_ids)})"
            )
        body = ciphertext[len(MAGIC) + len(key_id) + 1 :]
        nonce, sealed = body[:NONCE_BYTES], body[NONCE_BYTES:]
        try:
            plaintext = key.decrypt(nonce, sealed, associated_data(recipient_id, creator_id, key_id))
        except (InvalidTag, ValueError) as exc:
            raise RecipientDetailsUnreadable(
                f"recipient {recipient_id}: the details do not authenticate under key {key_id!r} for this "
                "recipient and creator (copied from another row, or altered)"
            ) from exc
        return json.loads(plaintext)

    def _open_legacy(self, ciphertext: bytes, recipient_id: str) -> dict[str, Any]:
        if self._fernet is None:
            raise RecipientDetailsUnreadable(
                f"recipient {recipient_id}: sealed with the legacy Fernet key, and RECIPIENT_ENCRYPTION_KEY is not set"
            )
        try:
            return json.loads(self._fernet.decrypt(ciphertext))
        except InvalidToken as exc:
            raise RecipientDetailsUnreadable(
                f"recipient {recipient_id}: the legacy details cannot be decrypted with RECIPIENT_ENCRYPTION_KEY"
            ) from exc

    def is_current(self, ciphertext: bytes) -> bool:
        """Whether the row is already sealed under the current key (rotation skips it)."""
        try:
            return key_id_of(bytes(ciphertext)) == self.current_key_id
        except RecipientDetailsUnreadable:
            return False

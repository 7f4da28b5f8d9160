"""Encryption at rest for payout recipient details (Fernet from `cryptography`)."""

from __future__ import annotations

import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from infra.settings import Settings, SettingsError


class RecipientVault:
    def __init__(self, key: str) -> None:
        if not key:
            raise SettingsError("RECIPIENT_ENCRYPTION_KEY is required to store or read payout details")
        try:
            self._fernet = Fernet(key.encode())
        except (ValueError, TypeError) as exc:
            raise SettingsError("RECIPIENT_ENCRYPTION_KEY must be a urlsafe-base64 32-byte Fernet key") from exc

    @classmethod
    def from_settings(cls, settings: Settings) -> RecipientVault:
        return cls(settings.recipient_encryption_key.get_secret_value())

    def seal(self, details: dict[str, Any]) -> bytes:
        return self._fernet.encrypt(json.dumps(details, sort_keys=True).encode())

    def open(self, ciphertext: bytes) -> dict[str, Any]:
        try:
            return json.loads(self._fernet.decrypt(ciphertext))
        except InvalidToken as exc:
            raise ValueError("recipient details cannot be decrypted with the configured key") from exc

"""IBAN validation (ISO 13616 mod-97) and masking, so bad bank details are refused at the
edge and full numbers never leave the encrypted store."""

from __future__ import annotations

import re

_SHAPE = re.compile(r"^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$")


def normalize_iban(raw: str) -> str:
    return re.sub(r"\s+", "", raw).upper()


def is_valid_iban(raw: str) -> bool:
    iban = normalize_iban(raw)
    if not _SHAPE.match(iban):
        return False
    rearranged = iban[4:] + iban[:4]
    digits = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(digits) % 97 == 1


def mask_iban(raw: str) -> str:
    iban = normalize_iban(raw)
    return f"{iban[:2]}•• •••• {iban[-4:]}"


def mask_name(name: str) -> str:
    return " ".join(part[0] + "•••" for part in name.split() if part)


def mask_account(account_id: str) -> str:
    return f"{account_id[:5]}…{account_id[-4:]}" if len(account_id) > 9 else "acct_…"

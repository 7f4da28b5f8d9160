"""How long an offer stands, and the deterministic ids of the events that close one.

The term sheet prints ``valid_until`` (agents/documents.py renders it from
:func:`valid_until_for`) and acceptance refuses after it (models/rules.py): both read the one
:data:`OFFER_VALIDITY`, so the document never promises what the API would refuse.
Changing the constant changes what new term sheets say (and so their content-addressed keys);
the documents already issued keep theirs.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

OFFER_VALIDITY = timedelta(days=30)
# A decline or withdrawal reason is a short note for the other side, not a document.
MAX_REASON_CHARS = 500

# One decline, one withdrawal and one lapse per offer: a retried command or a second sweep
# publishes the same event id, which the projector applies once.
_DECLINE_NS = uuid.UUID("5b0e7f61-2c4a-5d3e-9f1a-3c6d8e2b4a71")
_WITHDRAW_NS = uuid.UUID("8c2d4e6f-1a3b-5c5d-8e7f-9a0b1c2d3e4f")
_LAPSE_NS = uuid.UUID("2f4a6c8e-0b1d-5f3a-8c5e-7a9b0c1d2e3f")


def valid_until_for(issued_at: datetime) -> datetime:
    """The last instant an offer issued at ``issued_at`` (the term sheet's date) can be accepted."""
    return issued_at + OFFER_VALIDITY


def has_lapsed(valid_until: datetime | None, now: datetime) -> bool:
    """Past ``valid_until`` (the instant itself is still within the offer)."""
    return valid_until is not None and now > valid_until


def decline_event_id(offer_id: str) -> str:
    return str(uuid.uuid5(_DECLINE_NS, offer_id))


def withdraw_event_id(offer_id: str) -> str:
    return str(uuid.uuid5(_WITHDRAW_NS, offer_id))


def lapse_event_id(offer_id: str) -> str:
    return str(uuid.uuid5(_LAPSE_NS, offer_id))

"""Owned state, which the event log cannot rebuild: creators, encrypted payout recipients, the payout
state machine with its provider attempts, API idempotency records and the event outbox."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

from infra.sql import TS, metadata

ID = UUID(as_uuid=False)

creators = Table(
    "creators",
    metadata,
    Column("creator_id", ID, primary_key=True),
    Column("display_name", Text, nullable=False),
    Column("country", String(2)),
    Column("created_at", TS, nullable=False, server_default=func.now()),
)

payout_recipients = Table(
    "payout_recipients",
    metadata,
    Column("recipient_id", ID, primary_key=True),
    Column("creator_id", ID, ForeignKey("creators.creator_id"), nullable=False, index=True),
    Column("currency", String(3), nullable=False),
    # The sealed JSON details: an AES-256-GCM envelope bound to this row's recipient and
    # creator ids (infra/crypto.py), or a legacy Fernet token until it is rotated.
    Column("details_ciphertext", LargeBinary, nullable=False),
    Column("masked", JSONB, nullable=False),
    # Never read or written: superseded by key_id, kept so processes still running the previous
    # release (which select it) survive a rolling deploy; a later migration may drop it.
    Column("key_version", Integer, nullable=False, server_default="1"),
    # The keyring entry that sealed it; NULL = the legacy Fernet key (migration 0009).
    Column("key_id", String(32), index=True),
    Column("created_at", TS, nullable=False, server_default=func.now()),
)

payouts = Table(
    "payouts",
    metadata,
    Column("payout_id", ID, primary_key=True),
    Column("offer_id", ID, nullable=False),
    Column("creator_id", ID, nullable=False),
    Column("recipient_id", ID, nullable=False),
    Column("retry_of", ID),  # the failed payout an operator retried with this one
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("phase", String(20), nullable=False),
    Column("provider", String(10)),
    Column("provider_reference", Text),
    Column("failure_reason", Text),
    Column("requested_event_id", ID, nullable=False),
    Column("correlation_id", Text, nullable=False),
    Column("created_at", TS, nullable=False, server_default=func.now()),
    Column("updated_at", TS, nullable=False, server_default=func.now()),
    Column("completed_at", TS),
    # Parked: an unknown outcome handed to the background resolver (see models.payout).
    Column("parked_from", String(10)),  # STRIPE | WISE: whose answer is awaited
    Column("parked_at", TS),
    Column("next_check_at", TS),
    Column("checks", Integer, nullable=False, server_default="0"),
    # The Stripe idempotency key's suffix, bumped (and committed) only once a settle window
    # proved the old key's request never executed (see models.payout.after_not_found).
    Column("stripe_key_attempt", Integer, nullable=False, server_default="0"),
    Column("ambiguous_since", TS),
    Column("outcome_published_at", TS),
    Column("driver", Text),  # the worker that last changed the phase (for people, not locking)
    CheckConstraint("amount_minor >= 0", name="amount_not_negative"),
    CheckConstraint(
        "phase IN ('intent','stripe_pending','stripe_unknown','stripe_failed','wise_pending','wise_unknown',"
        "'succeeded','failed','parked')",
        name="phase_known",
    ),
    CheckConstraint("phase <> 'parked' OR parked_from IN ('STRIPE','WISE')", name="parked_has_provider"),
    Index("ix_payouts_phase", "phase"),
    Index("ix_payouts_offer_id", "offer_id"),
    # At most one payout per offer that is not a failure: retries only ever follow a failure.
    Index("uq_payouts_one_live_per_offer", "offer_id", unique=True, postgresql_where=text("phase <> 'failed'")),
    Index("ix_payouts_next_check_at", "next_check_at", postgresql_where=text("phase = 'parked'")),
)

payout_attempts = Table(
    "payout_attempts",
    metadata,
    Column("attempt_id", BigInteger, primary_key=True, autoincrement=True),
    Column("payout_id", ID, ForeignKey("payouts.payout_id"), nullable=False),
    Column("provider", String(10), nullable=False),
    Column("operation", String(10), nullable=False),
    Column("status", String(20), nullable=False),
    Column("reference", Text),
    Column("failure_reason", Text),
    Column("idempotency_key", Text),  # Stripe's Idempotency-Key / Wise's customerTransactionId
    Column("started_at", TS, nullable=False, server_default=func.now()),
    Column("finished_at", TS),
    # At most one provider transfer can ever succeed for a payout: the database says so.
    Index("uq_payout_attempts_one_success", "payout_id", unique=True, postgresql_where=text("status = 'succeeded'")),
    Index("ix_payout_attempts_payout_id", "payout_id"),
)

# Objects created at a provider once and reused (Wise recipients per recipient and currency,
# quotes and transfers per payout), so a lookup never has to create anything.
provider_objects = Table(
    "provider_objects",
    metadata,
    Column("provider", String(10), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("object_key", Text, nullable=False),
    Column("object_id", Text, nullable=False),
    Column("expires_at", TS),
    Column("created_at", TS, nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("provider", "kind", "object_key"),
)

api_idempotency = Table(
    "api_idempotency",
    metadata,
    # "<operation>:<subject>": subjects can be long (SAML-style ~90 characters), so unbounded.
    Column("scope", Text, nullable=False),
    Column("idempotency_key", String(255), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("response_status", Integer, nullable=False),
    Column("response_body", JSONB, nullable=False),
    Column("created_at", TS, nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("scope", "idempotency_key"),
)

# Events the web app committed together with their command's answer (migration 0010): the
# Confluent-framed Avro bytes exactly as they go to the broker, sent after the commit and
# marked; the relay (web/relay.py) sends what a killed process left unsent.
event_outbox = Table(
    "event_outbox",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=True),
    Column("event_id", ID, nullable=False, unique=True),
    Column("topic", Text, nullable=False),  # logical topic (without the namespace)
    Column("message_key", LargeBinary),
    Column("value", LargeBinary, nullable=False),
    Column("headers", JSONB, nullable=False),  # [[name, value], ...], values as text
    Column("created_at", TS, nullable=False, server_default=func.now()),
    Column("sent_at", TS),
    Index("ix_event_outbox_unsent", "seq", postgresql_where=text("sent_at IS NULL")),
)

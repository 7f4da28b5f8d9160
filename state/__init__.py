"""State the event log cannot rebuild: creators, encrypted payout recipients, the payout
state machine, the ledger and API idempotency records. Back these tables up (docs/architecture.md)."""

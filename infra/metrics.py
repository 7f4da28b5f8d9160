"""Every Prometheus metric the project exports, defined once (prefix ``spacemusic_``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "spacemusic_http_requests_total", "HTTP requests by route and status.", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "spacemusic_http_request_duration_seconds", "HTTP request latency by route.", ["method", "route"]
)
EVENTS_PUBLISHED = Counter("spacemusic_events_published_total", "Events published to Kafka by topic.", ["topic"])
EVENTS_CONSUMED = Counter(
    "spacemusic_events_consumed_total", "Events processed by agent and topic.", ["agent", "topic"]
)
EVENTS_SKIPPED = Counter(
    "spacemusic_events_skipped_total",
    "Redelivered events skipped by the tracking table, by consumer.",
    ["consumer"],
)
DEAD_LETTERS = Counter(
    "spacemusic_dead_letters_total", "Messages parked in the dead-letter topic.", ["topic", "reason"]
)
VALUATIONS = Counter("spacemusic_valuations_total", "Valuations by outcome.", ["outcome"])
APP_ERRORS = Counter(
    "spacemusic_app_errors_total", "Handled application errors by component and reason.", ["component", "reason"]
)
STRIPE_TRANSFERS = Counter("spacemusic_stripe_transfers_total", "Stripe transfers by outcome.", ["outcome"])
WISE_TRANSFERS = Counter("spacemusic_wise_transfers_total", "Wise transfers by outcome.", ["outcome"])
PAYOUT_DURATION = Histogram(
    "spacemusic_payout_duration_seconds", "Time from payout intent to final outcome.", ["outcome"]
)
DECODE_MEMO_LOOKUPS = Gauge(
    "spacemusic_decode_memo_lookups",
    "Decodes answered from this worker's memo of recent events (hit) or decoded (miss), since start.",
    ["result"],
)
SSE_CLIENTS = Gauge("spacemusic_sse_clients", "Open SSE deal-stream connections in this process.")
SSE_EVENTS_SENT = Counter("spacemusic_sse_events_sent_total", "Deal changes pushed to SSE clients.")
PROJECTION_LAG = Gauge("spacemusic_projection_last_change_seq", "Highest change sequence this process has seen.")
# Deployment signals (infra/deploy/): KEDA scales workers on lag, alerts page on stuck money.
CONSUMER_LAG = Gauge(
    "spacemusic_consumer_lag",
    "Messages behind the log end, by consumer group, topic and partition.",
    ["group", "topic", "partition"],
)
CONSUMER_LAG_SCRAPE_ERRORS = Counter(
    "spacemusic_consumer_lag_errors_total", "Failed consumer-lag collections (the gauge then keeps its last value)."
)
PAYOUTS_PARKED = Gauge(
    "spacemusic_payouts_parked",
    "Payouts parked in an unknown/parked phase awaiting reconciliation, by phase.",
    ["phase"],
)
PAYOUTS_PARKED_OLDEST_AGE = Gauge(
    "spacemusic_payouts_parked_oldest_age_seconds", "Age of the oldest parked payout (0 when none are parked)."
)
OFFER_TIME_TO_VALUED = Histogram(
    "spacemusic_offer_time_to_valued_seconds",
    "From the offer's POST (offer.created) to its valuation in the projection (the POST->valued SLO).",
    buckets=(0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900),
)
RECONCILE_DRIFT = Gauge(
    "spacemusic_reconcile_drift",
    "Drift found by the last reconciliation with the payment providers, by kind (0 = clean).",
    ["kind"],
)

"""Offers lapse, are declined or withdrawn: the validity rule, the fold's closing facts and
the command checks (pure; the HTTP and Kafka side is tests/integration/test_offer_lapse.py)."""

from __future__ import annotations

import dataclasses
import io
import itertools
import types
from datetime import timedelta

import fastavro
import pytest
from click.testing import CliRunner

from agents import lapse
from agents.app import ROLES
from agents.documents import termsheet_data
from bootstrap.commands.offers import offers
from infra.avro import SchemaCatalog, event_to_record, record_to_event
from infra.settings import REPO_ROOT
from models import rules
from models.deal import DealStatus, apply_event, fold
from models.errors import OfferClosed, OfferLapsed, OfferNotAcceptable
from models.events import OfferDeclined, OfferWithdrawn
from models.events import OfferLapsed as OfferLapsedEvent
from models.offers import (
    OFFER_VALIDITY,
    decline_event_id,
    has_lapsed,
    lapse_event_id,
    valid_until_for,
    withdraw_event_id,
)
from projections.rows import deal_json, deal_to_row
from tests.support.events import OFFER, T0, env, lifecycle

CATALOG = SchemaCatalog.load(REPO_ROOT / "schema")
VALUED_AT = T0 + timedelta(minutes=2)  # env(2): the valuation the term sheet prints as issued
VALID_UNTIL = VALUED_AT + OFFER_VALIDITY


def declined(n: int, by: str = "creator|1", reason: str | None = "too low") -> OfferDeclined:
    return OfferDeclined(**env(n), declined_by=by, reason=reason)


def withdrawn(n: int, by: str = "operator|1") -> OfferWithdrawn:
    return OfferWithdrawn(**env(n), withdrawn_by=by, reason="pricing error")


def lapsed(n: int) -> OfferLapsedEvent:
    return OfferLapsedEvent(**env(n), valid_until=VALID_UNTIL)


def row(events: list) -> dict:
    return deal_json(deal_to_row(fold(events)))


def test_the_term_sheet_and_the_rule_share_one_validity() -> None:
    valued = dataclasses.replace(lifecycle()[1], months_considered=1)
    data = termsheet_data(valued)
    assert data.valid_until == valid_until_for(valued.occurred_at) == valued.occurred_at + timedelta(days=30)
    assert fold(lifecycle()[:3]).valid_until == data.valid_until


def test_valid_until_needs_a_term_sheet() -> None:
    assert fold(lifecycle()[:2]).valid_until is None
    assert fold(lifecycle()[:3]).valid_until == VALID_UNTIL


def test_the_instant_itself_is_still_within_the_offer() -> None:
    assert not has_lapsed(VALID_UNTIL, VALID_UNTIL)
    assert has_lapsed(VALID_UNTIL, VALID_UNTIL + timedelta(microseconds=1))
    assert not has_lapsed(None, VALID_UNTIL + timedelta(days=999))


def test_closing_statuses() -> None:
    issued = lifecycle()[:3]
    assert fold([*issued, declined(10)]).status is DealStatus.DECLINED
    assert fold([*issued, withdrawn(10)]).status is DealStatus.WITHDRAWN
    assert fold([*issued, lapsed(10)]).status is DealStatus.LAPSED
    deal = fold([*issued, declined(10, reason=None)])
    assert (deal.declined_by, deal.decline_reason, deal.declined_at) == ("creator|1", None, T0 + timedelta(minutes=10))


def test_the_first_decision_stands_and_money_outranks_every_one() -> None:
    created, valued, sheet, accepted, requested, paid, receipt = lifecycle()
    # A decline that raced an earlier acceptance lost; one before it wins.
    assert fold([created, valued, sheet, accepted, declined(9)]).status is DealStatus.ACCEPTED
    early = OfferDeclined(**{**env(9), "occurred_at": accepted.occurred_at - timedelta(seconds=1)}, declined_by="c")
    assert fold([created, valued, sheet, accepted, early]).status is DealStatus.DECLINED
    # A payout already requested or paid wins over a late decline or withdrawal.
    assert fold([created, valued, sheet, accepted, requested, declined(9)]).status is DealStatus.PAYOUT_REQUESTED
    assert fold([*lifecycle(), withdrawn(9)]).status is DealStatus.PAID
    # A decision recorded beside a lapse happened in time: the lapse does not overrule it.
    assert fold([created, valued, sheet, accepted, lapsed(9)]).status is DealStatus.ACCEPTED
    assert fold([created, valued, sheet, declined(8), lapsed(9)]).status is DealStatus.DECLINED


def test_the_earliest_of_two_declines_is_kept() -> None:
    issued = lifecycle()[:3]
    first, second = declined(10, by="a"), declined(11, by="b")
    assert fold([*issued, second, first]).declined_by == "a"
    assert fold([*issued, first, second]).declined_by == "a"


def test_any_arrival_order_gives_the_same_closed_deal() -> None:
    # The property the fold keeps: facts, then a derived status, whatever the interleaving.
    for extra in ([declined(8), lapsed(9)], [withdrawn(8), declined(9)], [declined(4), lapsed(9), withdrawn(10)]):
        events = [*lifecycle()[:4], *extra]
        reference = None
        for order in itertools.islice(itertools.permutations(events), 0, None, 37):
            deal = None
            for event in order:
                deal = apply_event(deal, event)
            reference = reference or deal
            assert deal == reference
        assert reference == fold(events)


def test_accept_is_refused_after_valid_until_with_its_own_error() -> None:
    deal = row(lifecycle()[:3])
    rules.can_accept(deal, VALID_UNTIL)
    with pytest.raises(OfferLapsed) as caught:
        rules.can_accept(deal, VALID_UNTIL + timedelta(seconds=1))
    assert caught.value.code == "offer_lapsed"
    with pytest.raises(OfferLapsed):
        rules.can_accept(row([*lifecycle()[:3], lapsed(9)]), VALUED_AT)
    for closed in (declined(9), withdrawn(9)):
        with pytest.raises(OfferNotAcceptable):
            rules.can_accept(row([*lifecycle()[:3], closed]), VALUED_AT)


def test_decline_and_withdraw_only_while_open() -> None:
    now = VALUED_AT + timedelta(days=1)
    for check in (rules.can_decline, rules.can_withdraw):
        check(row(lifecycle()[:3]), now)
        check(row(lifecycle()[:2]), now)  # valued, term sheet still rendering
        with pytest.raises(OfferClosed) as caught:
            check(row(lifecycle()[:4]), now)
        assert caught.value.code == "conflict"
        with pytest.raises(OfferLapsed):
            check(row(lifecycle()[:3]), VALID_UNTIL + timedelta(seconds=1))
    assert rules.already_declined(row([*lifecycle()[:3], declined(9)]))
    assert rules.already_withdrawn(row([*lifecycle()[:3], withdrawn(9)]))


def test_an_acceptance_that_lost_is_not_already_accepted() -> None:
    created, valued, sheet, accepted = lifecycle()[:4]
    early = OfferDeclined(**{**env(9), "occurred_at": accepted.occurred_at - timedelta(seconds=1)}, declined_by="c")
    assert not rules.already_accepted(row([created, valued, sheet, accepted, early]))
    assert rules.already_accepted(row([created, valued, sheet, accepted]))


def test_closing_event_ids_are_one_per_offer_and_kind() -> None:
    ids = {decline_event_id(OFFER), withdraw_event_id(OFFER), lapse_event_id(OFFER)}
    assert len(ids) == 3
    assert decline_event_id(OFFER) == decline_event_id(OFFER)
    assert lapse_event_id(OFFER) != lapse_event_id("00000000-0000-4000-8000-0000000000ff")


@pytest.mark.parametrize("event", [declined(9), declined(9, reason=None), withdrawn(9), lapsed(9)], ids=repr)
def test_closing_events_roundtrip_through_their_schemas(event) -> None:
    schema = CATALOG.parsed(event.TOPIC)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, event_to_record(event))
    buf.seek(0)
    assert record_to_event(type(event), fastavro.schemaless_reader(buf, schema, schema)) == event


def test_the_cli_publishes_only_as_of_now() -> None:
    helped = CliRunner().invoke(offers, ["lapse", "--help"])
    assert helped.exit_code == 0 and "--dry-run" in helped.output and "--now" in helped.output
    # Lapsing "as of next week" would end offers their term sheets still promise.
    refused = CliRunner().invoke(offers, ["lapse", "--now", "2030-01-01T00:00:00Z"])
    assert refused.exit_code == 2 and "--now is only for --dry-run" in refused.output


class _TimerApp:
    """Just what agents.lapse.register touches: settings, a timer decorator, resources."""

    def __init__(self, interval: float, resources: object = None) -> None:
        self.settings = types.SimpleNamespace(offer_lapse_interval_seconds=interval)
        self.timers: list[tuple[float, object]] = []
        self._resources = resources

    def timer(self, interval: float):  # noqa: ANN201 - faust's decorator shape
        return lambda fn: self.timers.append((interval, fn)) or fn

    @property
    def resources(self) -> object:
        if self._resources is None:
            raise RuntimeError("resources are built when the app starts")
        return self._resources


async def test_the_pipeline_worker_sweeps_on_its_interval_and_survives_an_outage(monkeypatch) -> None:
    assert "lapse" in ROLES["pipeline"] and "lapse" in ROLES["all"]
    off = _TimerApp(0)
    lapse.register(off)
    assert off.timers == []
    calls: list[object] = []

    async def failing_sweep(engine, publisher, now, **_: object) -> None:
        calls.append((engine, publisher))
        raise ConnectionError("postgres is down")

    monkeypatch.setattr(lapse, "sweep", failing_sweep)
    starting = _TimerApp(60)
    lapse.register(starting)
    [(interval, tick)] = starting.timers
    assert interval == 60
    await tick()  # before the app started: nothing to sweep with, no error
    assert calls == []
    running = _TimerApp(60, types.SimpleNamespace(engine="engine", publisher="publisher"))
    lapse.register(running)
    await running.timers[0][1]()  # the outage is logged; the next tick sweeps again
    assert calls == [("engine", "publisher")]


async def test_a_broker_outage_on_a_decision_is_503_not_500() -> None:
    """Accept, decline and withdraw publish through one helper: a broker or registry that
    refuses the event is a retryable 503 (the retry publishes the same event id)."""
    from models.events import OfferAccepted
    from tests.support.events import T0
    from web.commands import _publish_decision
    from web.errors import Unavailable

    class BrokerDown:
        async def publish(self, event: object) -> None:
            raise ConnectionError("broker gone")

    event = OfferAccepted(
        event_id="00000000-0000-4000-8000-000000000001",
        offer_id="00000000-0000-4000-8000-000000000002",
        creator_id="00000000-0000-4000-8000-000000000003",
        occurred_at=T0,
        correlation_id="00000000-0000-4000-8000-000000000004",
        advance_minor=100,
        currency="EUR",
        termsheet_sha256="0" * 64,
        accepted_by="someone",
    )
    with pytest.raises(Unavailable):
        await _publish_decision(BrokerDown(), event)  # type: ignore[arg-type]

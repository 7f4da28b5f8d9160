// Operators' payout actions: when the drawer offers them, whom a retry can pay, how the stuck
// panel reads, and what the API calls send (Idempotency-Key, body).
import assert from "node:assert/strict";
import { test } from "node:test";

import { createApi } from "../../web/admin/static/js/api.js";
import { eventLabel, eventSummary, eventTone } from "../../web/admin/static/js/drawer.js";
import { createFormat } from "../../web/admin/static/js/format.js";
import {
  answerText,
  CANCELLABLE,
  formatAge,
  payoutActions,
  recipientChoices,
  sortStuck,
  stuckFor,
} from "../../web/admin/static/js/payouts.js";

const format = createFormat({ locale: "en-US", exponents: { EUR: 2 } });

test("retry is offered for a failed payout, cancel for a parked or unknown one only", () => {
  const failed = { offer_id: "o", status: "payout_failed" };
  const requested = { offer_id: "o", status: "payout_requested" };
  assert.deepEqual(payoutActions(failed, null), { retry: true, cancel: false });
  assert.deepEqual(payoutActions(requested, null), { retry: false, cancel: false });
  assert.deepEqual(payoutActions(requested, { phase: "parked" }), { retry: false, cancel: true });
  assert.deepEqual(payoutActions(requested, { phase: "stripe_unknown" }), { retry: false, cancel: true });
  assert.deepEqual(payoutActions(requested, { phase: "intent" }), { retry: false, cancel: false });
  assert.deepEqual(payoutActions({ offer_id: "o", status: "paid" }, { phase: "succeeded" }), { retry: false, cancel: false });
  assert.deepEqual(payoutActions(null, { phase: "parked" }), { retry: false, cancel: false });
  for (const phase of ["succeeded", "failed", "intent", "stripe_failed"]) assert.ok(!CANCELLABLE.has(phase), phase);
});

test("the deal's stuck payout is found among all of them", () => {
  const rows = [
    { offer_id: "a", payout_id: "1", phase: "parked" },
    { offer_id: "b", payout_id: "2", phase: "wise_pending" },
  ];
  assert.equal(stuckFor("b", rows).payout_id, "2");
  assert.equal(stuckFor("c", rows), null);
  assert.equal(stuckFor("a", undefined), null);
});

test("a retry can pay the creator's recipients in the deal's currency, the last one first", () => {
  const creator = {
    recipients: [
      { recipient_id: "r1", currency: "EUR", masked: { iban: "DE89 •••• 3000" } },
      { recipient_id: "r2", currency: "USD", masked: { stripe_account: "acct_•••42" } },
      { recipient_id: "r3", currency: "EUR", masked: { stripe_account: "acct_•••77", iban: "FR76 •••• 0189" } },
    ],
  };
  const choices = recipientChoices(creator, { currency: "EUR", recipient_id: "r3" });
  assert.deepEqual(
    choices.map((c) => c.id),
    ["r3", "r1"],
  );
  assert.equal(choices[0].label, "Stripe acct_•••77 · IBAN FR76 •••• 0189 · EUR (last used)");
  assert.equal(choices[1].label, "IBAN DE89 •••• 3000 · EUR");
  assert.deepEqual(recipientChoices(null, { currency: "EUR" }), []);
});

test("ages read as an operator says them", () => {
  assert.equal(formatAge(0), "0 s");
  assert.equal(formatAge(59.9), "59 s");
  assert.equal(formatAge(125), "2 min");
  assert.equal(formatAge(3 * 3600 + 5 * 60), "3 h 5 min");
  assert.equal(formatAge(7200), "2 h");
  assert.equal(formatAge(2 * 86400 + 4 * 3600), "2 d 4 h");
  assert.equal(formatAge(null), "—");
  assert.equal(formatAge(-3), "0 s");
});

test("stuck payouts: parked first, the oldest first within each", () => {
  const sorted = sortStuck([
    { payout_id: "young-parked", phase: "parked", age_seconds: 5 },
    { payout_id: "old-pending", phase: "stripe_pending", age_seconds: 900 },
    { payout_id: "old-parked", phase: "parked", age_seconds: 600 },
  ]);
  assert.deepEqual(
    sorted.map((p) => p.payout_id),
    ["old-parked", "young-parked", "old-pending"],
  );
  assert.deepEqual(sortStuck(undefined), []);
});

test("the answers and the history name who acted", () => {
  assert.equal(
    answerText("retry", { payout_id: "abcdef0123", retry_of: "99998888aaaa", requested_by: "auth0|ops" }),
    "Retry requested: payout abcdef01 (retries 99998888) by auth0|ops.",
  );
  assert.match(answerText("cancel", { requested_by: "auth0|ops" }), /^Cancel requested by auth0\|ops/);
  const asked = { event_type: "offer.payout.cancel.requested", payload: { payout_id: "12345678abcd", requested_by: "auth0|ops" } };
  const refused = { event_type: "offer.payout.cancel.refused", payload: { requested_by: "auth0|ops", reason: "STRIPE answers SUCCEEDED (tr_1)" } };
  assert.equal(eventLabel(asked.event_type), "Payout cancel requested");
  assert.equal(eventSummary(asked, {}, format), "Cancel of payout 12345678 asked by auth0|ops");
  assert.equal(eventSummary(refused, {}, format), "Not cancelled (asked by auth0|ops): STRIPE answers SUCCEEDED (tr_1)");
  assert.equal(eventTone(refused), "bad");
  const retried = { event_type: "offer.payout.requested", payload: { amount_minor: 100, currency: "EUR", requested_by: "auth0|ops", retry_of: "aaaabbbbcccc" } };
  assert.equal(eventSummary(retried, {}, format), "€1.00 requested by auth0|ops (retry of aaaabbbb)");
});

test("retry and cancel send JSON with the Idempotency-Key; stuck payouts are asked for", async () => {
  const calls = [];
  const fetch = async (path, init) => {
    calls.push({ path, init });
    return { status: 202, ok: true, json: async () => ({ status: "ok" }) };
  };
  const api = createApi({ fetch });
  await api.retryPayout("o/1", "r-2", "key-1");
  await api.retryPayout("o1", null, "key-2");
  await api.cancelPayout("p1", "key-3");
  await api.stuckPayouts();
  await api.creator("c 1");
  assert.deepEqual(
    calls.map((c) => [c.path, c.init.method]),
    [
      ["/offers/o%2F1/payout/retry", "POST"],
      ["/offers/o1/payout/retry", "POST"],
      ["/payouts/p1/cancel", "POST"],
      ["/payouts?stuck=true", "GET"],
      ["/creators/c%201", "GET"],
    ],
  );
  assert.equal(calls[0].init.headers["Idempotency-Key"], "key-1");
  assert.equal(calls[0].init.headers["Content-Type"], "application/json");
  assert.deepEqual(JSON.parse(calls[0].init.body), { recipient_id: "r-2" });
  assert.deepEqual(JSON.parse(calls[1].init.body), {});
  assert.equal(calls[2].init.headers["Idempotency-Key"], "key-3");
  assert.equal(calls[2].init.body, undefined);
  assert.equal(calls[3].init.body, undefined);
  assert.equal(calls[3].init.headers.Accept, "application/json");
});

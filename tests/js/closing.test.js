// Closing an offer from the drawer: when Decline / Withdraw are offered (status, valid_until,
// permissions), how the window and the answers read, what the API call sends.
import assert from "node:assert/strict";
import { test } from "node:test";

import { createApi } from "../../web/admin/static/js/api.js";
import {
  closedBy,
  closingActions,
  closingAnswerText,
  MAX_REASON_CHARS,
  pastValidUntil,
  reasonBody,
  validityText,
} from "../../web/admin/static/js/closing.js";
import { eventLabel, eventSummary } from "../../web/admin/static/js/drawer.js";
import { createFormat } from "../../web/admin/static/js/format.js";

const NOW = Date.parse("2026-03-01T12:00:00Z");
const open = { offer_id: "o", status: "termsheet_issued", valid_until: "2026-03-10T12:00:00+00:00" };
const format = createFormat({ locale: "en-US", exponents: { EUR: 2 } });

test("decline needs offers:write or admin, withdraw admin, both an open offer within valid_until", () => {
  assert.deepEqual(closingActions(open, ["admin"], NOW), { decline: true, withdraw: true });
  assert.deepEqual(closingActions(open, ["offers:write", "deals:read"], NOW), { decline: true, withdraw: false });
  assert.deepEqual(closingActions(open, ["deals:read"], NOW), { decline: false, withdraw: false });
  for (const status of ["accepted", "payout_requested", "paid", "declined", "withdrawn", "lapsed"]) {
    assert.deepEqual(closingActions({ ...open, status }, ["admin"], NOW), { decline: false, withdraw: false }, status);
  }
  const late = Date.parse("2026-03-10T12:00:01Z");
  assert.equal(pastValidUntil(open, Date.parse("2026-03-10T12:00:00Z")), false); // the instant itself still stands
  assert.equal(pastValidUntil(open, late), true);
  assert.deepEqual(closingActions(open, ["admin"], late), { decline: false, withdraw: false });
  assert.deepEqual(closingActions({ ...open, status: "valued", valid_until: null }, ["admin"], late), {
    decline: true,
    withdraw: true,
  });
  assert.deepEqual(closingActions(null, ["admin"], NOW), { decline: false, withdraw: false });
});

test("the offer window reads in days, hours or minutes, and lapsed once it has", () => {
  assert.equal(validityText(open, NOW), "Lapses in 9 d 0 h");
  assert.equal(validityText(open, Date.parse("2026-03-09T12:30:00Z")), "Lapses in 23 h");
  assert.equal(validityText(open, Date.parse("2026-03-10T11:58:30Z")), "Lapses in 1 min");
  assert.equal(validityText(open, Date.parse("2026-03-11T00:00:00Z")), "Past valid until (lapsing)");
  assert.equal(validityText({ ...open, status: "lapsed" }, NOW), "Lapsed");
  assert.equal(validityText({ ...open, status: "accepted" }, NOW), null);
});

test("a reason is trimmed and bounded; an empty one sends no body", () => {
  assert.equal(reasonBody("  "), undefined);
  assert.equal(reasonBody(undefined), undefined);
  assert.deepEqual(reasonBody(" too low "), { reason: "too low" });
  assert.equal(reasonBody("x".repeat(900)).reason.length, MAX_REASON_CHARS);
});

test("answers, closing facts and history lines", () => {
  assert.match(closingAnswerText("decline", { status: "declined" }), /Offer declined/);
  assert.equal(closingAnswerText("withdraw", { already: true }), "The offer was already withdrawn.");
  assert.deepEqual(closedBy({ declined_at: "t", declined_by: "auth0|a", decline_reason: "r" }), {
    kind: "Declined",
    at: "t",
    by: "auth0|a",
    reason: "r",
  });
  assert.equal(closedBy({ lapsed_at: "t" }).kind, "Lapsed");
  assert.equal(closedBy({ status: "termsheet_issued" }), null);
  assert.equal(eventLabel("offer.lapsed"), "Offer lapsed");
  const declined = { event_type: "offer.declined", payload: { declined_by: "staff", reason: "too low" } };
  assert.equal(eventSummary(declined, open, format), "Declined by staff: too low");
  const withdrawn = { event_type: "offer.withdrawn", payload: { withdrawn_by: "test|ops", reason: null } };
  assert.equal(eventSummary(withdrawn, open, format), "Withdrawn by test|ops");
  assert.match(eventSummary({ event_type: "offer.lapsed", payload: { valid_until: "2026-03-10T12:00:00Z" } }, open, format), /^Not accepted by /);
});

test("closeOffer posts to /decline or /withdraw, with the reason as JSON or no body", async () => {
  const calls = [];
  const fetch = async (path, init) => {
    calls.push({ path, init });
    return new Response(JSON.stringify({ offer_id: "o", status: "declined" }), {
      status: 202,
      headers: { "Content-Type": "application/json" },
    });
  };
  const api = createApi({ fetch });
  assert.equal((await api.closeOffer("o 1", "decline", { reason: "low" })).status, "declined");
  await api.closeOffer("o", "withdraw", undefined);
  assert.equal(calls[0].path, "/offers/o%201/decline");
  assert.equal(calls[0].init.method, "POST");
  assert.equal(calls[0].init.body, JSON.stringify({ reason: "low" }));
  assert.equal(calls[1].path, "/offers/o/withdraw");
  assert.equal(calls[1].init.body, undefined);
});

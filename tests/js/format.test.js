// node --test tests/js/: the page's pure modules, imported as the browser imports them.
import assert from "node:assert/strict";
import { test } from "node:test";

import { createFormat, dash, minorToDecimal, payoutState, shortId, titleCase } from "../../web/admin/static/js/format.js";

const format = createFormat({ locale: "en-US", exponents: { EUR: 2, JPY: 0, KWD: 3, KRW: 0 } });

test("minor units become an exact decimal string", () => {
  assert.equal(minorToDecimal(123456, 2), "1234.56");
  assert.equal(minorToDecimal(5, 2), "0.05");
  assert.equal(minorToDecimal(-5, 2), "-0.05");
  assert.equal(minorToDecimal(1234, 0), "1234");
  assert.equal(minorToDecimal(1, 3), "0.001");
  // The largest exact integer: dividing it by 100 as a double would round the cents.
  assert.equal(minorToDecimal(Number.MAX_SAFE_INTEGER, 2), "90071992547409.91");
});

test("money uses the server's exponents, formatted by Intl", () => {
  assert.equal(format.money(123456, "EUR"), "€1,234.56");
  assert.equal(format.money(1234, "JPY"), "¥1,234");
  assert.equal(format.money(1234567, "KRW"), "₩1,234,567");
  assert.match(format.money(1500, "KWD"), /^KWD\s1\.500$/u);
  assert.equal(format.money(Number.MAX_SAFE_INTEGER, "EUR"), "€90,071,992,547,409.91");
  assert.equal(format.money(-250, "EUR"), "-€2.50");
});

test("money falls back to Intl's digits, then to minor units", () => {
  assert.equal(createFormat({ locale: "en-US" }).money(1234, "USD"), "$12.34");
  assert.equal(format.money(null, "EUR"), "—");
  assert.equal(format.money(undefined, "EUR"), "—");
  assert.equal(format.money(42, null), "42 (minor units)");
  assert.equal(format.money(42, "NOT-A-CURRENCY"), "42 NOT-A-CURRENCY (minor units)");
});

test("the server's exponent wins over Intl's", () => {
  // Intl gives ISK no decimals in some versions and two in others; the server says 0.
  assert.equal(createFormat({ locale: "en-US", exponents: { USD: 0 } }).money(1234, "USD"), "$1,234");
});

test("dates and relative times", () => {
  const now = Date.parse("2026-01-10T12:00:00Z");
  assert.equal(format.relative("2026-01-10T11:59:30Z", now), "just now");
  assert.equal(format.relative("2026-01-10T11:57:00Z", now), "3 minutes ago");
  assert.equal(format.relative("2026-01-10T10:00:00Z", now), "2 hours ago");
  assert.equal(format.relative("2026-01-09T12:00:00Z", now), "yesterday");
  assert.equal(format.relative("2025-12-27T12:00:00Z", now), "2 weeks ago");
  assert.equal(format.relative("not a date", now), "—");
  assert.equal(format.date(null), "—");
  assert.equal(format.date("garbage"), "garbage");
  assert.match(format.date("2026-01-10T12:00:00Z"), /Jan 10, 2026/);
});

test("small text helpers", () => {
  assert.equal(dash(null), "—");
  assert.equal(dash(""), "—");
  assert.equal(dash(0), "0");
  assert.equal(shortId("0123456789abcdef"), "01234567");
  assert.equal(shortId(null), "—");
  assert.equal(titleCase("STRIPE"), "Stripe");
  assert.equal(titleCase(""), "—");
});

test("the payout's state reads from its status, else from the request", () => {
  assert.deepEqual(payoutState({ payout_status: "SUCCEEDED" }), { kind: "ok", text: "succeeded" });
  assert.deepEqual(payoutState({ payout_status: "FAILED" }), { kind: "bad", text: "failed" });
  assert.deepEqual(payoutState({ payout_status: "PENDING" }), { kind: "neutral", text: "pending" });
  assert.deepEqual(payoutState({ payout_requested_at: "2026-01-01T00:00:00Z" }), {
    kind: "pending",
    text: "requested",
  });
  assert.equal(payoutState({}), null);
  // A reversal outranks the success it undid.
  assert.deepEqual(payoutState({ payout_status: "SUCCEEDED", payout_reversed_at: "2026-01-02T00:00:00Z" }), {
    kind: "bad",
    text: "reversed",
  });
});

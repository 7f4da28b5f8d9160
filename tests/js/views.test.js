// The pure parts of the views (table, drawer, session): what they show for a given state.
import assert from "node:assert/strict";
import { test } from "node:test";

import { eventLabel, eventSummary, eventTone } from "../../web/admin/static/js/drawer.js";
import { createFormat } from "../../web/admin/static/js/format.js";
import {
  bannerText,
  connectionText,
  connectionTitle,
  secondsUntil,
  whoamiTitle,
} from "../../web/admin/static/js/session.js";
import { DealStore } from "../../web/admin/static/js/store.js";
import { footView, summaryText, tableState, valuationView } from "../../web/admin/static/js/table.js";

const format = createFormat({ locale: "en-US", exponents: { EUR: 2, JPY: 0 } });

function storeWith(deals, fields = {}) {
  const store = new DealStore();
  store.setStatuses([
    { value: "paid", label: "Paid" },
    { value: "created", label: "Created" },
  ]);
  for (const offer_id of deals) store.merge({ offer_id, status: "created" });
  return Object.assign(store, { loaded: true }, fields);
}

test("table states: loading, error, empty, no match, ready", () => {
  assert.equal(tableState(storeWith([], { loading: true, loaded: false }), 0).state, "loading");
  const error = tableState(storeWith([], { loadError: new Error("502 Bad Gateway") }), 0);
  assert.deepEqual(error, {
    state: "error",
    card: { kind: "error", title: "Couldn't load deals", message: "502 Bad Gateway", action: "retry" },
  });
  const empty = tableState(storeWith([]), 0);
  assert.equal(empty.card.title, "No deals yet");
  assert.equal(empty.card.action, null);
  const noStatus = tableState(storeWith([], { status: "paid" }), 0);
  assert.equal(noStatus.card.message, "No deal has the status Paid.");
  assert.equal(noStatus.card.action, "clear");
  const noMatch = tableState(storeWith(["a"], { search: " zz ", status: "paid" }), 0);
  assert.equal(noMatch.card.message, "Nothing loaded matches “zz” with status Paid.");
  assert.deepEqual(tableState(storeWith(["a"]), 1), { state: "ready", card: null });
});

test("the summary line", () => {
  assert.equal(summaryText(storeWith([], { loading: true, loaded: false }), 0), "Loading deals…");
  assert.equal(summaryText(storeWith([], { loadError: new Error("x") }), 0), "Deals could not be loaded");
  assert.equal(summaryText(storeWith(["a"]), 1), "1 deal loaded");
  assert.equal(summaryText(storeWith(["a", "b", "c"], { status: "paid" }), 1), "3 deals loaded · 1 shown · status: Paid");
});

test("the foot: load more while there is a cursor, and the note", () => {
  const more = footView(storeWith(["a"], { nextCursor: 7 }));
  assert.deepEqual(more, { loadMore: { hidden: false, disabled: false, text: "Load more" }, note: "", hidden: false });
  const loadingMore = footView(storeWith(["a"], { nextCursor: 7, loading: true }));
  assert.deepEqual(loadingMore.loadMore, { hidden: false, disabled: true, text: "Loading…" });
  const all = footView(storeWith(["a"]));
  assert.equal(all.loadMore.hidden, true);
  assert.equal(all.note, "All deals loaded. Newest first; live updates appear automatically.");
  const failed = footView(storeWith(["a"], { nextCursor: 7, loadError: new Error("timeout") }));
  assert.equal(failed.note, "Loading more failed: timeout");
  assert.equal(footView(storeWith([])).hidden, true);
});

test("the valuation cell", () => {
  assert.deepEqual(valuationView({ valuation_median_minor: 123456, currency: "EUR" }, format), {
    text: "€1,234.56",
    muted: false,
    title: null,
  });
  assert.deepEqual(valuationView({ valuation_outcome: "FAILED", valuation_failure_reason: "too short" }, format), {
    text: "failed",
    muted: true,
    title: "too short",
  });
  assert.equal(valuationView({ currency: "EUR" }, format).text, "—");
});

test("history entries: a label, a one-line summary and a tone per event", () => {
  const deal = { currency: "EUR" };
  const ev = (event_type, payload) => ({ event_type, payload });
  assert.equal(eventLabel("offer.termsheet.generated"), "Term sheet issued");
  assert.equal(eventLabel("offer.unknown"), "offer.unknown");
  assert.equal(
    eventSummary(ev("offer.created", { royalty_history: [1, 2, 3], currency: "EUR" }), deal, format),
    "3 months of royalty history in EUR",
  );
  assert.equal(
    eventSummary(
      ev("offer.valuated", { outcome: "OK", median_minor: 200, low_minor: 100, high_minor: 300, model_version: "v2" }),
      deal,
      format,
    ),
    "Median €2.00 (€1.00 – €3.00), model v2",
  );
  assert.equal(
    eventSummary(ev("offer.valuated", { outcome: "FAILED", failure_reason: "history too short" }), deal, format),
    "Valuation failed: history too short",
  );
  assert.equal(eventSummary(ev("offer.termsheet.generated", { advance_minor: 5000, currency: "JPY" }), deal, format), "Advance ¥5,000");
  assert.equal(
    eventSummary(ev("offer.payout.completed", { status: "SUCCEEDED", provider: "STRIPE", amount_minor: 999, provider_reference: "tr_1" }), deal, format),
    "Succeeded via Stripe, €9.99, ref tr_1",
  );
  assert.equal(
    eventSummary(ev("offer.payout.completed", { status: "FAILED", provider: "wise", failure_reason: "closed" }), deal, format),
    "Failed via Wise: closed",
  );
  assert.equal(eventSummary(ev("offer.receipt.generated", {}), deal, format), "Receipt PDF stored");
  assert.equal(eventSummary(ev("offer.other", {}), deal, format), "");
  assert.equal(eventTone(ev("offer.valuated", { outcome: "failed" })), "bad");
  assert.equal(eventTone(ev("offer.payout.completed", { status: "FAILED" })), "bad");
  assert.equal(eventTone(ev("offer.payout.completed", { status: "SUCCEEDED" })), "ok");
  assert.equal(eventTone(ev("offer.receipt.generated", null)), "ok");
  assert.equal(eventTone(ev("offer.accepted", {})), "neutral");
});

test("connection words and the banner", () => {
  assert.equal(connectionText("live"), "Live");
  assert.equal(connectionText("signed-out"), "Signed out");
  assert.equal(connectionTitle("live", 42), "Live updates (change #42)");
  assert.equal(connectionTitle("live", null), "Live");
  assert.equal(connectionTitle("reconnecting", 42), "Reconnecting…");
  assert.equal(bannerText("reconnecting", 4), "Live updates interrupted. Reconnecting in 4 s — nothing will be missed.");
  assert.equal(bannerText("reconnecting", null), "Live updates interrupted. Reconnecting… — nothing will be missed.");
  assert.match(bannerText("offline", 3), /^You are offline/);
  assert.equal(secondsUntil(10_500, 10_000), 1);
  assert.equal(secondsUntil(9_000, 10_000), 0);
  assert.equal(secondsUntil(null, 10_000), null);
  assert.equal(
    whoamiTitle({ subject: "dev|creator", creator_scope: "c-1", expires_at: null }, format),
    "dev|creator (creator c-1)",
  );
  assert.match(whoamiTitle({ subject: "dev|admin", expires_at: 1767225600 }, format), /^dev\|admin · session until /);
});

import assert from "node:assert/strict";
import { test } from "node:test";

import { DealStore, newestFirst, PAGE_SIZE, readQuery } from "../../web/admin/static/js/store.js";

const STATUSES = [
  { value: "created", label: "Created" },
  { value: "termsheet_issued", label: "Term sheet issued" },
  { value: "paid", label: "Paid" },
];
const deal = (offer_id, fields = {}) => ({ offer_id, creator_id: `c-${offer_id}`, status: "created", ...fields });

test("a deal is kept unless the stored copy is newer (change_seq)", () => {
  const store = new DealStore();
  assert.equal(store.merge(deal("a", { change_seq: 5, status: "valued" })), true);
  assert.equal(store.merge(deal("a", { change_seq: 4 })), false);
  assert.equal(store.merge(deal("a", { change_seq: 5 })), false);
  assert.equal(store.deal("a").status, "valued");
  assert.equal(store.merge(deal("a", { change_seq: 6, status: "paid" })), true);
  assert.equal(store.deal("a").status, "paid");
  assert.equal(store.merge(deal("a")), true, "a copy without change_seq replaces");
  assert.equal(store.merge({}), false);
  assert.equal(store.merge(null), false);
  assert.equal(store.deal("missing"), null);
});

test("a streamed change says whether it is new, and takes the event's seq when it has none", () => {
  const store = new DealStore();
  const first = store.applyChange({ seq: 10, deal: deal("a") });
  assert.equal(first.isNew, true);
  assert.equal(first.deal.change_seq, 10);
  assert.equal(store.applyChange({ seq: 9, deal: deal("a") }), null, "older than what we hold");
  const second = store.applyChange({ seq: 11, deal: deal("a", { status: "valued" }) });
  assert.equal(second.isNew, false);
  assert.equal(store.applyChange({ seq: 12 }), null);
  assert.equal(store.applyChange(null), null);
});

test("filters: server status and a substring of the offer or creator id", () => {
  const store = new DealStore();
  store.merge(deal("AAAA1111", { status: "paid" }));
  store.merge(deal("bbbb2222", { creator_id: "XYZ-creator" }));
  assert.equal(store.visible().length, 2);
  store.search = "  aaaa ";
  assert.deepEqual(store.visible().map((d) => d.offer_id), ["AAAA1111"]);
  store.search = "xyz";
  assert.deepEqual(store.visible().map((d) => d.offer_id), ["bbbb2222"]);
  store.search = "";
  store.status = "paid";
  assert.deepEqual(store.visible().map((d) => d.offer_id), ["AAAA1111"]);
});

test("newest first: creation time, then the latest change", () => {
  const older = deal("a", { created_at: "2026-01-01T00:00:00Z", change_seq: 9 });
  const newer = deal("b", { created_at: "2026-01-02T00:00:00Z", change_seq: 1 });
  const sameTimeLater = deal("c", { created_at: "2026-01-02T00:00:00Z", change_seq: 2 });
  const byUpdate = deal("d", { updated_at: "2026-01-03T00:00:00Z" });
  assert.deepEqual(
    [older, newer, sameTimeLater, byUpdate].sort(newestFirst).map((d) => d.offer_id),
    ["d", "c", "b", "a"],
  );
});

test("statuses come from the server; an unknown status filter is dropped", () => {
  const store = new DealStore({ status: "termsheet_issued" });
  store.setStatuses(STATUSES);
  assert.equal(store.status, "termsheet_issued");
  assert.equal(store.statusLabel("termsheet_issued"), "Term sheet issued");
  assert.equal(store.statusLabel("nope"), undefined);
  const bogus = new DealStore({ status: "bogus" });
  bogus.setStatuses(STATUSES);
  assert.equal(bogus.status, "");
  const unknown = new DealStore({ status: "paid" });
  unknown.setStatuses([]); // /admin/me failed: no status can be trusted
  assert.equal(unknown.status, "");
});

test("loading pages: the cursor, the status, and superseded loads", () => {
  const store = new DealStore({ status: "paid" });
  assert.equal(String(store.pageQuery({ reset: true })), `limit=${PAGE_SIZE}&status=paid`);
  const first = store.beginLoad({ reset: true });
  assert.equal(store.loading, true);
  assert.equal(store.endLoad(first, { page: { deals: [deal("a")], next_cursor: 42 } }), true);
  assert.equal(store.loading, false);
  assert.equal(store.loaded, true);
  assert.equal(store.hasMore, true);
  assert.equal(String(store.pageQuery({ reset: false })), `limit=${PAGE_SIZE}&status=paid&cursor=42`);

  const stale = store.beginLoad({ reset: false });
  const current = store.beginLoad({ reset: false });
  assert.equal(store.endLoad(stale, { page: { deals: [deal("zzz")], next_cursor: null } }), false);
  assert.equal(store.deal("zzz"), null, "a superseded page changes nothing");
  const error = new Error("boom");
  assert.equal(store.endLoad(current, { error }), true);
  assert.equal(store.loadError, error);
  assert.equal(store.size, 1, "a failed page keeps what is loaded");

  store.beginLoad({ reset: true });
  assert.equal(store.size, 0);
  assert.equal(store.loadError, null);
  assert.equal(store.hasMore, false);
});

test("the URL describes the view, and reads back", () => {
  const store = new DealStore({ status: "paid", search: " ab cd " });
  store.selected = "offer-1";
  assert.equal(store.toQuery(), "?status=paid&q=ab+cd&offer=offer-1");
  assert.deepEqual(readQuery(store.toQuery()), { status: "paid", search: "ab cd", offer: "offer-1" });
  assert.equal(new DealStore().toQuery(), "");
  assert.deepEqual(readQuery(""), { status: "", search: "", offer: null });
});

// The deals table view: rows, the loading / error / empty states, the summary, "load more"
// and the filter controls. It reads the store; what the user asks for goes to the handlers.

import { $, h, idEl, muted, payoutPill, setChildren, statusBadge, timeEl } from "./dom.js";
import { dash, payoutState, shortId, titleCase } from "./format.js";

const SKELETON_ROWS = 8;

// --- pure: what the table shows for a store ---------------------------------------------------

/** The median valuation cell: { text, muted, title }. */
export function valuationView(deal, format) {
  if (String(deal.valuation_outcome).toLowerCase() === "failed") {
    return { text: "failed", muted: true, title: deal.valuation_failure_reason || "" };
  }
  if (deal.valuation_median_minor === null || deal.valuation_median_minor === undefined) {
    return { text: "—", muted: true, title: null };
  }
  return { text: format.money(deal.valuation_median_minor, deal.currency), muted: false, title: null };
}

/** The table's state ("loading" | "error" | "empty" | "ready") and the card shown instead of
 * rows, if any: { kind, title, message, action: "retry" | "clear" | null }. */
export function tableState(store, visibleCount) {
  const empty = visibleCount === 0;
  if (store.loading && empty) return { state: "loading", card: null };
  if (store.loadError && store.size === 0) {
    return {
      state: "error",
      card: { kind: "error", title: "Couldn't load deals", message: store.loadError.message, action: "retry" },
    };
  }
  if (!empty) return { state: "ready", card: null };
  if (store.size === 0 && !store.status) {
    return {
      state: "empty",
      card: {
        kind: "empty",
        title: "No deals yet",
        message: "New deals appear here the moment they are created.",
        action: null,
      },
    };
  }
  const label = store.statusLabel(store.status);
  const message = store.search
    ? `Nothing loaded matches “${store.search.trim()}”${store.status ? ` with status ${label}` : ""}.`
    : `No deal has the status ${label || store.status}.`;
  return { state: "empty", card: { kind: "empty", title: "No matching deals", message, action: "clear" } };
}

export function summaryText(store, visibleCount) {
  const loaded = store.size;
  if (store.loading && !store.loaded) return "Loading deals…";
  if (store.loadError && loaded === 0) return "Deals could not be loaded";
  return (
    `${loaded} deal${loaded === 1 ? "" : "s"} loaded` +
    (visibleCount !== loaded ? ` · ${visibleCount} shown` : "") +
    (store.status ? ` · status: ${store.statusLabel(store.status)}` : "")
  );
}

/** The foot: the "load more" button ({ hidden, disabled, text }) and the note beside it. */
export function footView(store) {
  const loaded = store.size;
  const hidden = !store.hasMore || Boolean(store.loadError && loaded === 0);
  const note =
    store.loadError && loaded > 0
      ? `Loading more failed: ${store.loadError.message}`
      : !store.hasMore && store.loaded && loaded > 0
        ? "All deals loaded. Newest first; live updates appear automatically."
        : "";
  return {
    loadMore: { hidden, disabled: store.loading, text: store.loading && store.loaded ? "Loading…" : "Load more" },
    note,
    hidden: hidden && !note,
  };
}

// --- the view ---------------------------------------------------------------------------------

function payoutCell(deal) {
  const pill = payoutPill(payoutState(deal));
  if (!pill) return muted("—");
  return h(
    "span",
    { class: "payout", title: deal.payout_failure_reason || deal.payout_reference || "" },
    deal.payout_provider ? h("span", { class: "payout-provider" }, titleCase(deal.payout_provider)) : null,
    pill,
  );
}

function valuationCell(deal, format) {
  const view = valuationView(deal, format);
  return h("span", { class: view.muted ? "muted" : "amount", title: view.title }, view.text);
}

export class DealsTable {
  /** handlers: onOpen(offerId, button), onSearch(text), onStatus(value), onRefresh(),
   * onLoadMore(), onRetry(), onClearFilters(). */
  constructor({ store, format, handlers }) {
    this.store = store;
    this.format = format;
    this.handlers = handlers;
    this.rows = new Map(); // offer_id -> <tr>
    this.el = {
      table: $("#deals-table"),
      body: $("#deals-body"),
      state: $("#table-state"),
      summary: $("#summary"),
      footNote: $("#foot-note"),
      foot: $(".table-foot"),
      loadMore: $("#load-more"),
      search: $("#search"),
      statusFilter: $("#status-filter"),
      skeleton: $("#skeleton-row"),
    };
    const { el } = this;
    el.search.value = store.search;
    el.search.addEventListener("input", () => handlers.onSearch(el.search.value));
    el.statusFilter.addEventListener("change", () => handlers.onStatus(el.statusFilter.value));
    $("#refresh").addEventListener("click", () => handlers.onRefresh());
    el.loadMore.addEventListener("click", () => handlers.onLoadMore());
    el.body.addEventListener("click", (event) => {
      const tr = event.target.closest("tr.deal-row");
      if (!tr || event.target.closest("a")) return;
      handlers.onOpen(tr.dataset.offerId, tr.querySelector("button.row-open"));
    });
  }

  setFormat(format) {
    this.format = format;
    this.refill();
  }

  /** The status select's options (the store's statuses), and every row relabelled. */
  showStatuses() {
    const select = this.el.statusFilter;
    setChildren(
      select,
      h("option", { value: "" }, "All statuses"),
      this.store.statuses.map(({ value, label }) => h("option", { value }, label)),
    );
    select.value = this.store.status;
    this.refill();
  }

  /** Both filter controls back to the store's values (after "Clear filters"). */
  showFilters() {
    this.el.search.value = this.store.search;
    this.el.statusFilter.value = this.store.status;
  }

  refill() {
    for (const [offerId, tr] of this.rows) {
      const deal = this.store.deal(offerId);
      if (deal) this.fillRow(tr, deal);
    }
  }

  fillRow(tr, deal) {
    const { format, store } = this;
    tr.dataset.offerId = deal.offer_id;
    tr.dataset.status = deal.status || "";
    tr.dataset.seq = deal.change_seq ?? "";
    tr.classList.toggle("selected", store.selected === deal.offer_id);
    setChildren(
      tr,
      h(
        "td",
        {},
        h(
          "button",
          {
            type: "button",
            class: "row-open mono",
            title: deal.offer_id,
            "aria-label": `Open deal ${deal.offer_id}`,
            dataset: { open: deal.offer_id },
          },
          shortId(deal.offer_id),
        ),
      ),
      h("td", {}, idEl(deal.creator_id)),
      h("td", {}, statusBadge(deal.status, store.statusLabel(deal.status))),
      h("td", { class: "mono" }, dash(deal.currency)),
      h("td", { class: "num" }, valuationCell(deal, format)),
      h("td", {}, payoutCell(deal)),
      h("td", { class: "updated" }, timeEl(deal.updated_at, format, { relative: true })),
    );
  }

  rowFor(deal) {
    let tr = this.rows.get(deal.offer_id);
    if (!tr) {
      tr = h("tr", { class: "deal-row" });
      this.rows.set(deal.offer_id, tr);
      this.fillRow(tr, deal);
    } else if (tr.dataset.seq !== String(deal.change_seq ?? "") || tr.dataset.status !== (deal.status || "")) {
      this.fillRow(tr, deal);
    }
    return tr;
  }

  /** A deal that changed on the stream: re-render, and flash its row (new or changed). */
  upsert(deal, isNew) {
    const tr = this.rowFor(deal);
    this.render();
    if (tr.isConnected) flash(tr, isNew);
  }

  markSelected(offerId) {
    for (const [id, tr] of this.rows) tr.classList.toggle("selected", id === offerId);
  }

  rowButton(offerId) {
    return this.rows.get(offerId)?.querySelector("button") ?? null;
  }

  render() {
    const { el, store } = this;
    for (const id of this.rows.keys()) if (!store.deals.has(id)) this.rows.delete(id); // after a reset
    const visible = store.visible();
    const body = el.body;
    if (body.firstElementChild && !body.firstElementChild.classList.contains("deal-row")) {
      setChildren(body); // the loading skeleton
    }
    const keep = new Set();
    let cursor = body.firstElementChild;
    for (const deal of visible) {
      const tr = this.rowFor(deal);
      keep.add(tr);
      if (cursor === tr) cursor = cursor.nextElementSibling;
      else body.insertBefore(tr, cursor);
    }
    for (const tr of [...body.children]) if (!keep.has(tr)) tr.remove();

    const { state, card } = tableState(store, visible.length);
    el.table.dataset.state = state;
    el.table.setAttribute("aria-busy", store.loading ? "true" : "false");
    if (state === "loading") {
      setChildren(body, ...Array.from({ length: SKELETON_ROWS }, () => el.skeleton.content.cloneNode(true)));
    }
    this.showCard(card);

    el.summary.textContent = summaryText(store, visible.length);
    const foot = footView(store);
    el.loadMore.hidden = foot.loadMore.hidden;
    el.loadMore.disabled = foot.loadMore.disabled;
    el.loadMore.textContent = foot.loadMore.text;
    el.footNote.textContent = foot.note;
    el.foot.hidden = foot.hidden;
  }

  showCard(card) {
    const box = this.el.state;
    if (!card) {
      box.hidden = true;
      setChildren(box);
      return;
    }
    const action =
      card.action === "retry"
        ? h("button", { type: "button", class: "btn btn-primary", onclick: () => this.handlers.onRetry() }, "Retry")
        : card.action === "clear"
          ? h("button", { type: "button", class: "btn", onclick: () => this.handlers.onClearFilters() }, "Clear filters")
          : null;
    box.hidden = false;
    box.dataset.kind = card.kind;
    setChildren(
      box,
      h("div", { class: `state-icon state-${card.kind}`, "aria-hidden": "true" }, card.kind === "error" ? "!" : "∅"),
      h("p", { class: "state-title" }, card.title),
      card.message ? h("p", { class: "muted" }, card.message) : null,
      action,
    );
  }
}

function flash(tr, isNew) {
  tr.classList.remove("flash", "flash-new");
  void tr.offsetWidth; // restart the animation
  tr.classList.add(isNew ? "flash-new" : "flash");
  // Drop the class once played, or re-inserting the row (filters) would replay it.
  tr.addEventListener("animationend", () => tr.classList.remove("flash", "flash-new"), { once: true });
}

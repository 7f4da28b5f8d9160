// The detail drawer: a deal's documents, overview, valuation, term sheet, payout and its event
// history (GET /offers/{id}/events), live while open. A modal dialog: Esc or the backdrop
// closes it, focus returns to the row, Tab stays inside.

import { documentPath } from "./api.js";
import { $, h, muted, payoutPill, setChildren, spinnerRow, statusBadge, timeEl } from "./dom.js";
import { dash, payoutState, shortId, titleCase } from "./format.js";
import { PayoutActions } from "./payouts.js";
import { ClosingActions, closedBy, validityText } from "./closing.js";

const HISTORY_RELOAD_MS = 250;

// --- pure: what the history says ----------------------------------------------------------------

export const EVENT_LABELS = new Map([
  ["offer.created", "Offer created"],
  ["offer.valuated", "Valuation"],
  ["offer.termsheet.generated", "Term sheet issued"],
  ["offer.accepted", "Offer accepted"],
  ["offer.payout.requested", "Payout requested"],
  ["offer.payout.completed", "Payout completed"],
  ["offer.payout.cancel.requested", "Payout cancel requested"],
  ["offer.payout.cancel.refused", "Payout cancel refused"],
  ["offer.receipt.generated", "Receipt issued"],
  ["offer.declined", "Offer declined"],
  ["offer.withdrawn", "Offer withdrawn"],
  ["offer.lapsed", "Offer lapsed"],
]);

export const eventLabel = (eventType) => EVENT_LABELS.get(eventType) || eventType;

const failed = (value) => String(value).toLowerCase() === "failed";

/** One line about an event, amounts in the deal's currency. */
export function eventSummary(event, deal, format) {
  const p = event.payload || {};
  const c = p.currency || deal?.currency;
  const money = (minor) => format.money(minor, c);
  switch (event.event_type) {
    case "offer.created":
      return `${Array.isArray(p.royalty_history) ? p.royalty_history.length : "?"} months of royalty history in ${dash(p.currency)}`;
    case "offer.valuated":
      return failed(p.outcome)
        ? `Valuation failed: ${dash(p.failure_reason)}`
        : `Median ${money(p.median_minor)} (${money(p.low_minor)} – ${money(p.high_minor)}), model ${dash(p.model_version)}`;
    case "offer.termsheet.generated":
      return `Advance ${money(p.advance_minor)}`;
    case "offer.accepted":
      return `Accepted by ${dash(p.accepted_by)}, advance ${money(p.advance_minor)}`;
    case "offer.payout.requested":
      return `${money(p.amount_minor)} requested by ${dash(p.requested_by)}${p.retry_of ? ` (retry of ${shortId(p.retry_of)})` : ""}`;
    case "offer.payout.completed":
      return failed(p.status)
        ? `Failed via ${titleCase(p.provider)}: ${dash(p.failure_reason)}`
        : `${titleCase(p.status)} via ${titleCase(p.provider)}, ${money(p.amount_minor)}${p.provider_reference ? `, ref ${p.provider_reference}` : ""}`;
    case "offer.payout.cancel.requested":
      return `Cancel of payout ${shortId(p.payout_id)} asked by ${dash(p.requested_by)}`;
    case "offer.payout.cancel.refused":
      return `Not cancelled (asked by ${dash(p.requested_by)}): ${dash(p.reason)}`;
    case "offer.receipt.generated":
      return "Receipt PDF stored";
    case "offer.declined":
      return `Declined by ${dash(p.declined_by)}${p.reason ? `: ${p.reason}` : ""}`;
    case "offer.withdrawn":
      return `Withdrawn by ${dash(p.withdrawn_by)}${p.reason ? `: ${p.reason}` : ""}`;
    case "offer.lapsed":
      return `Not accepted by ${p.valid_until ? format.date(p.valid_until) : "its valid-until date"}`;
    default:
      return "";
  }
}

/** The timeline dot's colour: "bad" (a failure), "ok" (money moved, receipt) or "neutral". */
export function eventTone(event) {
  const p = event.payload || {};
  if (
    (event.event_type === "offer.valuated" && failed(p.outcome)) ||
    (event.event_type === "offer.payout.completed" && failed(p.status)) ||
    event.event_type === "offer.payout.cancel.refused"
  ) {
    return "bad";
  }
  if (event.event_type === "offer.payout.completed" || event.event_type === "offer.receipt.generated") return "ok";
  return "neutral";
}

// --- building blocks ------------------------------------------------------------------------------

function field(label, value, { mono = false } = {}) {
  let content = value;
  if (!(value instanceof Node)) {
    const empty = value === null || value === undefined || value === "";
    content = h("span", { class: empty ? "muted" : mono ? "mono" : null }, dash(value));
  }
  return [h("dt", {}, label), h("dd", {}, content)];
}

const section = (title, ...content) => h("section", { class: "drawer-section" }, h("h3", {}, title), ...content);
const fields = (...pairs) => h("dl", { class: "fields" }, ...pairs);
const hashEl = (hash) => (hash ? h("span", { class: "mono hash", title: hash }, `${hash.slice(0, 12)}…`) : null);

function documentLink(deal, kind, label) {
  const key = kind === "termsheet" ? deal.termsheet_key : deal.receipt_key;
  const icon = h("span", { class: "doc-icon", "aria-hidden": "true" }, "PDF");
  if (!key) return h("span", { class: "doc doc-missing", dataset: { doc: kind } }, icon, `${label}: not issued yet`);
  const sha = kind === "termsheet" ? deal.termsheet_sha256 : deal.receipt_sha256;
  return h(
    "a",
    {
      class: "doc",
      href: documentPath(deal.offer_id, kind),
      target: "_blank",
      rel: "noopener",
      dataset: { doc: kind },
      title: sha && `SHA-256 ${sha}`,
    },
    icon,
    `${label} (PDF)`,
  );
}

function rangeValue(label, value, className) {
  return h(
    "div",
    { class: className },
    h("span", { class: "range-label" }, label),
    h("span", { class: "range-value" }, value),
  );
}

function dealDetails(deal, format) {
  const c = deal.currency;
  const money = (minor) => (minor != null ? format.money(minor, c) : null);
  const time = (iso) => timeEl(iso, format);
  return [
    h(
      "div",
      { class: "doc-links" },
      documentLink(deal, "termsheet", "Term sheet"),
      documentLink(deal, "receipt", "Receipt"),
    ),
    section(
      "Overview",
      fields(
        ...field("Offer", deal.offer_id, { mono: true }),
        ...field("Creator", deal.creator_id, { mono: true }),
        ...field("Currency", deal.currency, { mono: true }),
        ...field("Events", deal.event_count),
        ...field("Created", time(deal.created_at)),
        ...field("Updated", time(deal.updated_at)),
        ...field("Royalty history", deal.royalty_months != null ? `${deal.royalty_months} months` : null),
        ...field("Royalties total", money(deal.royalty_total_minor)),
      ),
    ),
    section(
      "Valuation",
      deal.valuation_outcome
        ? h(
            "div",
            { class: "range", "aria-label": "Valuation range" },
            rangeValue("Low", format.money(deal.valuation_low_minor, c), null),
            rangeValue("Median", format.money(deal.valuation_median_minor, c), "range-median"),
            rangeValue("High", format.money(deal.valuation_high_minor, c), null),
          )
        : null,
      fields(
        ...field("Outcome", deal.valuation_outcome ? titleCase(deal.valuation_outcome) : null),
        ...field("Model", deal.valuation_model, { mono: true }),
        ...field("Valued", time(deal.valued_at)),
        ...(deal.valuation_failure_reason ? field("Failure reason", deal.valuation_failure_reason) : []),
      ),
    ),
    section(
      "Term sheet & acceptance",
      fields(
        ...field("Term sheet", deal.termsheet_key ? "issued" : null),
        ...field("Term sheet SHA-256", hashEl(deal.termsheet_sha256)),
        ...field("Advance", money(deal.advance_minor)),
        ...field("Valid until", time(deal.valid_until)),
        ...(validityText(deal, Date.now()) ? field("Offer window", validityText(deal, Date.now())) : []),
        ...field("Accepted", time(deal.accepted_at)),
        ...closedFields(closedBy(deal), time),
      ),
    ),
    section(
      "Payout",
      fields(
        ...field("Status", payoutPill(payoutState(deal))),
        ...field("Provider", deal.payout_provider ? titleCase(deal.payout_provider) : null),
        ...field("Amount paid", money(deal.paid_amount_minor)),
        ...field("Reference", deal.payout_reference, { mono: true }),
        ...field("Requested", time(deal.payout_requested_at)),
        ...field("Completed", time(deal.payout_completed_at)),
        ...field("Payout id", deal.payout_id, { mono: true }),
        ...field("Recipient", deal.recipient_id, { mono: true }),
        ...(deal.payout_failure_reason ? field("Failure reason", deal.payout_failure_reason) : []),
        ...(deal.payout_reversed_at
          ? [
              ...field("Reversed", time(deal.payout_reversed_at)),
              ...field("Amount reversed", money(deal.payout_reversed_amount_minor)),
              ...field("Reversal reason", deal.payout_reversal_reason, { mono: true }),
            ]
          : []),
        ...field("Receipt SHA-256", hashEl(deal.receipt_sha256)),
      ),
    ),
  ];
}

/** Declined / withdrawn / lapsed: when, by whom, why (closing.js reads which one). */
function closedFields(closed, time) {
  if (!closed) return [];
  return [
    ...field(closed.kind, time(closed.at)),
    ...(closed.by ? field(`${closed.kind} by`, closed.by, { mono: true }) : []),
    ...(closed.reason ? field("Reason", closed.reason) : []),
  ];
}

function focusables(root) {
  return [...root.querySelectorAll("a[href], button:not([disabled]), summary, [tabindex]:not([tabindex='-1'])")].filter(
    (el) => !el.closest("[hidden]") && el.getClientRects().length > 0,
  );
}

// --- the view ---------------------------------------------------------------------------------

export class Drawer {
  /** handlers: onSelect(offerId | null) after it opens or closes, rowButton(offerId). */
  constructor({ store, api, format, handlers }) {
    this.store = store;
    this.api = api;
    this.format = format;
    this.handlers = handlers;
    this.history = { offerId: null, events: null, error: null, deal: null, timer: null, generation: 0 };
    this.openPayloads = new Set(); // event ids whose raw payload is expanded
    this.returnFocus = null;
    this.el = {
      drawer: $("#drawer"),
      backdrop: $("#drawer-backdrop"),
      title: $("#drawer-title"),
      status: $("#drawer-status"),
      body: $("#drawer-body"),
      close: $("#drawer-close"),
      details: h("div", { class: "drawer-details" }),
      history: h("section", { class: "drawer-section history", "aria-live": "polite" }),
    };
    // Retry / cancel of the open deal's payout (operators); reloads the history once asked.
    this.payoutActions = new PayoutActions({ api, onChanged: () => this.dealChanged() });
    // Decline / withdraw of the open offer; the new status arrives on the stream.
    this.closingActions = new ClosingActions({ api, onChanged: () => this.dealChanged() });
    setChildren(this.el.body, this.el.details, this.closingActions.el, this.payoutActions.el, this.el.history);
    this.el.close.addEventListener("click", () => this.close());
    this.el.backdrop.addEventListener("click", () => this.close());
    document.addEventListener("keydown", (event) => this.onKey(event));
  }

  setFormat(format) {
    this.format = format;
    this.render();
  }

  /** The principal's permissions (GET /admin/me): which offer actions it may take. */
  setPermissions(permissions) {
    this.closingActions.setPermissions(permissions);
  }

  open(offerId, opener) {
    const wasOpen = Boolean(this.store.selected);
    this.store.selected = offerId;
    this.returnFocus = opener || (wasOpen ? this.returnFocus : document.activeElement);
    this.el.drawer.hidden = false;
    this.el.backdrop.hidden = false;
    document.body.classList.add("drawer-open");
    this.el.body.scrollTop = 0;
    this.render();
    this.loadHistory();
    this.el.close.focus();
    this.handlers.onSelect(offerId);
  }

  close() {
    const id = this.store.selected;
    if (!id) return;
    this.store.selected = null;
    const history = this.history;
    clearTimeout(history.timer);
    history.generation += 1;
    Object.assign(history, { offerId: null, events: null, error: null, deal: null });
    this.payoutActions.reset();
    this.closingActions.reset();
    this.el.drawer.hidden = true;
    this.el.backdrop.hidden = true;
    document.body.classList.remove("drawer-open");
    this.handlers.onSelect(null);
    const back = this.returnFocus;
    this.returnFocus = null;
    if (back && back.isConnected) back.focus();
    else this.handlers.rowButton(id)?.focus();
  }

  /** The open deal changed on the stream: its fields at once, its history shortly after. */
  dealChanged() {
    this.render();
    clearTimeout(this.history.timer);
    this.history.timer = setTimeout(() => this.loadHistory(), HISTORY_RELOAD_MS);
  }

  render() {
    const id = this.store.selected;
    if (!id) return;
    const { el, format, store } = this;
    const deal = store.deal(id) || this.history.deal;
    el.title.textContent = id;
    setChildren(el.status, deal ? statusBadge(deal.status, store.statusLabel(deal.status)) : muted("Loading…"));
    if (!deal) setChildren(el.details, spinnerRow("Loading deal…"));
    else setChildren(el.details, ...dealDetails(deal, format));
    if (deal) this.payoutActions.show(deal);
    if (deal) this.closingActions.show(deal);
  }

  async loadHistory() {
    const offerId = this.store.selected;
    if (!offerId) return;
    const history = this.history;
    const generation = ++history.generation;
    if (history.offerId !== offerId) Object.assign(history, { offerId, events: null, error: null, deal: null });
    this.renderHistory();
    const current = () => generation === history.generation && this.store.selected === offerId;
    try {
      const needDeal = !this.store.deals.has(offerId);
      const [page, deal] = await Promise.all([
        this.api.events(offerId),
        needDeal ? this.api.offer(offerId) : null,
      ]);
      if (!current()) return;
      history.events = page.events;
      history.error = null;
      if (deal) {
        history.deal = deal;
        this.render();
      }
    } catch (error) {
      if (!current()) return;
      history.error = error;
      if (!this.store.deals.has(offerId) && !history.deal) {
        setChildren(
          this.el.details,
          h("div", { class: "inline-error", role: "alert" }, `Couldn't load the deal: ${error.message}`),
        );
      }
    } finally {
      if (generation === history.generation) this.renderHistory();
    }
  }

  renderHistory() {
    const box = this.el.history;
    const history = this.history;
    const heading = h("h3", {}, "Event history");
    if (history.error && !history.events) {
      setChildren(
        box,
        heading,
        h(
          "div",
          { class: "inline-error", role: "alert" },
          h("span", {}, `Couldn't load the history: ${history.error.message}`),
          h("button", { type: "button", class: "btn btn-small", onclick: () => this.loadHistory() }, "Retry"),
        ),
      );
      return;
    }
    if (!history.events) {
      setChildren(box, heading, spinnerRow("Loading history…"));
      return;
    }
    if (history.events.length === 0) {
      setChildren(box, heading, h("p", { class: "muted" }, "No events recorded yet."));
      return;
    }
    const deal = this.store.deal(history.offerId);
    setChildren(
      box,
      heading,
      history.error ? h("p", { class: "inline-error", role: "alert" }, `Refresh failed: ${history.error.message}`) : null,
      h(
        "ol",
        { class: "timeline", "aria-label": "Events, oldest first" },
        history.events.map((event) => this.timelineItem(event, deal)),
      ),
    );
  }

  timelineItem(event, deal) {
    const details = h(
      "details",
      { class: "payload" },
      h("summary", {}, "Payload"),
      h("pre", { class: "mono" }, JSON.stringify(event.payload, null, 2)),
    );
    details.open = this.openPayloads.has(event.event_id);
    details.addEventListener("toggle", () => {
      if (details.open) this.openPayloads.add(event.event_id);
      else this.openPayloads.delete(event.event_id);
    });
    return h(
      "li",
      {
        class: `timeline-item tone-${eventTone(event)}`,
        dataset: { eventType: event.event_type, eventId: event.event_id },
      },
      h("span", { class: "timeline-dot", "aria-hidden": "true" }),
      h(
        "div",
        { class: "timeline-body" },
        h(
          "div",
          { class: "timeline-head" },
          h("span", { class: "timeline-title" }, eventLabel(event.event_type)),
          timeEl(event.occurred_at, this.format),
        ),
        h("p", { class: "timeline-summary" }, eventSummary(event, deal, this.format)),
        h("p", { class: "timeline-meta mono", title: event.event_id }, `${event.event_type} · ${shortId(event.event_id)}`),
        details,
      ),
    );
  }

  onKey(event) {
    if (!this.store.selected) return;
    if (event.key === "Escape") {
      event.preventDefault();
      this.close();
    } else if (event.key === "Tab") {
      const drawer = this.el.drawer;
      const items = focusables(drawer);
      if (items.length === 0) return;
      const first = items[0];
      const last = items[items.length - 1];
      if (!drawer.contains(document.activeElement)) {
        event.preventDefault();
        first.focus();
      } else if (event.shiftKey && document.activeElement === first) {
        event.preventDefault();
        last.focus();
      } else if (!event.shiftKey && document.activeElement === last) {
        event.preventDefault();
        first.focus();
      }
    }
  }
}

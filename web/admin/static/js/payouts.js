// Operators' payout actions: "Retry payout" (a failed payout, optionally to another of the
// creator's recipients) and "Cancel payout" (a parked or unknown one) in the drawer, and the
// "Stuck payouts" panel of the deals page. Each action asks for confirmation, sends an
// Idempotency-Key (the same key while the same confirmation is retried) and shows the answer.
// The pure functions at the top carry the logic and are unit tested under node.

import { confirmGroup, h, muted, setChildren } from "./dom.js";
import { dash, shortId } from "./format.js";

// Phases whose outcome is unknown: the only ones an operator may cancel (models/payout.py).
export const CANCELLABLE = new Set(["parked", "stripe_unknown", "wise_unknown", "stripe_pending", "wise_pending"]);
const STUCK_REFRESH_MS = 15000;
const STUCK_RELOAD_AFTER_CHANGE_MS = 500;

// --- pure ---------------------------------------------------------------------------------------

/** Which actions the drawer offers for a deal: `stuck` is its row of GET /payouts?stuck=true. */
export function payoutActions(deal, stuck) {
  return {
    retry: Boolean(deal && deal.status === "payout_failed"),
    cancel: Boolean(deal && stuck && CANCELLABLE.has(stuck.phase)),
  };
}

/** The deal's row among the stuck payouts (the newest, should there be several). */
export function stuckFor(offerId, stuckPayouts) {
  const mine = (stuckPayouts || []).filter((p) => p.offer_id === offerId);
  return mine.length ? mine[mine.length - 1] : null;
}

/** The creator's recipients that can take this deal's money (same currency), labelled by
 * their masked details; the deal's last recipient first (the default retry target). */
export function recipientChoices(creator, deal) {
  const recipients = (creator?.recipients || []).filter((r) => !deal?.currency || r.currency === deal.currency);
  const label = (r) => {
    const m = r.masked || {};
    const parts = [m.stripe_account && `Stripe ${m.stripe_account}`, m.iban && `IBAN ${m.iban}`].filter(Boolean);
    const current = r.recipient_id === deal?.recipient_id ? " (last used)" : "";
    return `${parts.join(" · ") || shortId(r.recipient_id)} · ${r.currency}${current}`;
  };
  const choices = recipients.map((r) => ({ id: r.recipient_id, label: label(r) }));
  choices.sort((a, b) => (b.id === deal?.recipient_id) - (a.id === deal?.recipient_id));
  return choices;
}

/** "42 s", "7 min", "3 h 5 min", "2 d 4 h": how long a payout has been stuck. */
export function formatAge(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(Number(seconds))) return "—";
  const s = Math.max(0, Math.floor(Number(seconds)));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  const hrs = Math.floor(m / 60);
  if (hrs < 24) return m % 60 ? `${hrs} h ${m % 60} min` : `${hrs} h`;
  const d = Math.floor(hrs / 24);
  return hrs % 24 ? `${d} d ${hrs % 24} h` : `${d} d`;
}

/** The stuck payouts, oldest first, parked ones before the others. */
export function sortStuck(payouts) {
  const rank = (p) => (p.phase === "parked" ? 0 : 1);
  return [...(payouts || [])].sort((a, b) => rank(a) - rank(b) || (b.age_seconds || 0) - (a.age_seconds || 0));
}

/** One sentence about an accepted action (the 202's body). */
export function answerText(kind, body) {
  if (kind === "retry") {
    return `Retry requested: payout ${shortId(body.payout_id)} (retries ${shortId(body.retry_of)}) by ${dash(body.requested_by)}.`;
  }
  return `Cancel requested by ${dash(body.requested_by)}: the payouts worker asks the provider and records the outcome in the history.`;
}

export const newIdempotencyKey = () =>
  globalThis.crypto?.randomUUID ? globalThis.crypto.randomUUID() : `${Date.now()}-${Math.random().toString(16).slice(2)}`;

// --- the drawer's section -------------------------------------------------------------------------

/** The "Payout actions" section of the drawer. */
export class PayoutActions {
  constructor({ api, onChanged = () => {} }) {
    this.api = api;
    this.onChanged = onChanged;
    this.el = h("section", { class: "drawer-section payout-actions", dataset: { section: "payout-actions" } });
    this.reset();
  }

  reset() {
    this.offerId = null;
    this.creator = null;
    this.stuck = null;
    this.chosen = null; // the recipient picked for a retry
    this.loadedFor = null; // what the last load was for (the deal's id, status and event count)
    this.confirming = null; // { kind, key } while a confirmation is shown
    this.busy = false;
    this.message = null; // { tone: "ok" | "bad", text }
    this.el.hidden = true;
    setChildren(this.el);
  }

  /** The open deal (re)rendered; loads what the actions need when the deal changes. */
  show(deal) {
    if (!deal) return;
    if (deal.offer_id !== this.offerId) {
      this.reset();
      this.offerId = deal.offer_id;
    }
    this.deal = deal;
    const loadFor = `${deal.offer_id}:${deal.status}:${deal.event_count}`;
    if (loadFor !== this.loadedFor) {
      this.loadedFor = loadFor; // one request per change of the deal, not per render
      this.load(deal);
    }
    this.render();
  }

  async load(deal) {
    const offerId = deal.offer_id;
    try {
      const [stuck, creator] = await Promise.all([
        this.api.stuckPayouts(),
        deal.status === "payout_failed" && !this.creator ? this.api.creator(deal.creator_id) : this.creator,
      ]);
      if (this.offerId !== offerId) return;
      this.stuck = stuckFor(offerId, stuck.payouts);
      this.creator = creator;
    } catch (error) {
      if (this.offerId !== offerId) return;
      if (error.status === 403) this.stuck = null; // not an operator: no actions
      else this.message = { tone: "bad", text: `Couldn't load the payout actions: ${error.message}` };
    }
    this.render();
  }

  render() {
    const deal = this.deal;
    const actions = payoutActions(deal, this.stuck);
    this.el.hidden = !(actions.retry || actions.cancel || this.message);
    if (this.el.hidden) return;
    const parts = [h("h3", {}, "Payout actions")];
    if (actions.retry) parts.push(this.retryBlock(deal));
    if (actions.cancel) parts.push(this.cancelBlock());
    if (this.message) {
      parts.push(
        h(
          "p",
          { class: this.message.tone === "ok" ? "action-answer" : "inline-error", role: "status" },
          this.message.text,
        ),
      );
    }
    setChildren(this.el, ...parts);
  }

  retryBlock(deal) {
    const choices = recipientChoices(this.creator, deal);
    const select = h(
      "select",
      { id: "retry-recipient", "aria-label": "Recipient for the retry", disabled: this.busy || null },
      choices.length ? choices.map((c) => h("option", { value: c.id }, c.label)) : h("option", { value: "" }, "Loading recipients…"),
    );
    if (this.chosen) select.value = this.chosen;
    select.addEventListener("change", () => {
      this.chosen = select.value;
      this.confirming = null; // another request: another key
      this.render();
    });
    const asking = this.confirming?.kind === "retry";
    return h(
      "div",
      { class: "action-row" },
      h("label", { class: "field" }, h("span", {}, "Pay to "), select),
      asking
        ? this.confirmRow(
            `Retry the failed payout to ${choices.find((c) => c.id === (this.chosen || choices[0]?.id))?.label || "the last recipient"}? This may move money.`,
            () => this.retry(select.value),
            "Yes, retry payout",
          )
        : h(
            "button",
            { type: "button", class: "btn", dataset: { action: "retry-payout" }, onclick: () => this.ask("retry") },
            "Retry payout",
          ),
    );
  }

  cancelBlock() {
    const stuck = this.stuck;
    const asking = this.confirming?.kind === "cancel";
    return h(
      "div",
      { class: "action-row" },
      h(
        "p",
        { class: "muted" },
        `Payout ${shortId(stuck.payout_id)} is ${stuck.phase}${stuck.parked_from ? ` (${stuck.parked_from})` : ""} for ${formatAge(stuck.age_seconds)}.`,
      ),
      asking
        ? this.confirmRow(
            "Cancel this payout? It is cancelled only if the provider confirms that no money moved.",
            () => this.cancel(stuck.payout_id),
            "Yes, cancel payout",
          )
        : h(
            "button",
            { type: "button", class: "btn", dataset: { action: "cancel-payout" }, onclick: () => this.ask("cancel") },
            "Cancel payout",
          ),
    );
  }

  confirmRow(question, onYes, yesLabel) {
    return confirmGroup({ question, yesLabel, busy: this.busy, onYes, onNo: () => this.ask(null) });
  }

  ask(kind) {
    // A fresh key per confirmation; pressing "Yes" again after a failure reuses it.
    this.confirming = kind ? { kind, key: newIdempotencyKey() } : null;
    this.message = null;
    this.render();
  }

  async send(kind, call) {
    const key = this.confirming.key;
    this.busy = true;
    this.render();
    try {
      const body = await call(key);
      this.confirming = null;
      this.message = { tone: "ok", text: answerText(kind, body) };
      this.loadedFor = null; // the next render asks again (the payout is no longer stuck)
      this.onChanged();
    } catch (error) {
      this.message = { tone: "bad", text: `Not done: ${error.message}` };
    } finally {
      this.busy = false;
      this.render();
    }
  }

  retry(recipientId) {
    return this.send("retry", (key) => this.api.retryPayout(this.offerId, recipientId || null, key));
  }

  cancel(payoutId) {
    return this.send("cancel", (key) => this.api.cancelPayout(payoutId, key));
  }
}

// --- the deals page's panel -----------------------------------------------------------------------

/** "Stuck payouts": every payout neither paid nor refused, with its age; hidden when none. */
export class StuckPanel {
  constructor({ api, root, onOpen }) {
    this.api = api;
    this.root = root;
    this.onOpen = onOpen;
    this.timer = null;
    this.reloadTimer = null;
  }

  start() {
    if (!this.root) return;
    this.load();
    this.timer = setInterval(() => this.load(), STUCK_REFRESH_MS);
  }

  /** A deal changed on the stream: reload shortly (several changes, one request). */
  dealChanged() {
    clearTimeout(this.reloadTimer);
    this.reloadTimer = setTimeout(() => this.load(), STUCK_RELOAD_AFTER_CHANGE_MS);
  }

  async load() {
    try {
      const page = await this.api.stuckPayouts();
      this.render(sortStuck(page.payouts), null);
    } catch (error) {
      if (error.status === 403) {
        clearInterval(this.timer); // not an operator: the panel stays hidden
        this.root.hidden = true;
        return;
      }
      this.render(null, error);
    }
  }

  render(payouts, error) {
    const root = this.root;
    if (error) {
      root.hidden = false;
      setChildren(root, h("h2", {}, "Stuck payouts"), h("p", { class: "inline-error", role: "alert" }, error.message));
      return;
    }
    root.hidden = payouts.length === 0;
    root.dataset.count = String(payouts.length);
    const row = (p) =>
      h(
        "tr",
        { dataset: { payoutId: p.payout_id, phase: p.phase } },
        h("td", {}, h("button", { type: "button", class: "link mono", onclick: () => this.onOpen(p.offer_id) }, shortId(p.offer_id))),
        h("td", { class: "mono", title: p.payout_id }, shortId(p.payout_id)),
        h("td", {}, p.phase, p.parked_from ? muted(` (${p.parked_from})`) : null),
        h("td", { class: "num" }, formatAge(p.age_seconds)),
        h("td", { class: "num" }, String(p.checks ?? "—")),
      );
    setChildren(
      root,
      h("h2", { id: "stuck-title" }, `Stuck payouts (${payouts.length})`),
      h(
        "table",
        { class: "deals stuck" },
        h(
          "thead",
          {},
          h("tr", {}, ...["Offer", "Payout", "Phase", "Stuck for", "Checks"].map((t) => h("th", { scope: "col" }, t))),
        ),
        h("tbody", {}, payouts.map(row)),
      ),
    );
  }
}

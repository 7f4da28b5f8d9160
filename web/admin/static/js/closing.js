// Closing an open offer from the drawer: "Decline offer" (a creator its own, an operator any;
// POST /offers/{id}/decline) and "Withdraw offer" (operators only; POST /offers/{id}/withdraw).
// Each asks for confirmation with an optional short reason and shows the answer; the deal's
// new status arrives on the stream. The pure functions at the top carry the logic and are
// unit tested under node (tests/js/closing.test.js).

import { confirmGroup, h, setChildren } from "./dom.js";
import { dash } from "./format.js";

// Statuses in which an offer may still be accepted, declined or withdrawn (models/deal.py
// OPEN_STATUSES); past valid_until the server refuses with 409 offer_lapsed.
export const OPEN_STATUSES = new Set(["created", "valued", "termsheet_issued"]);
export const MAX_REASON_CHARS = 500; // models/offers.py MAX_REASON_CHARS
const ADMIN = "admin";
const OFFERS_WRITE = "offers:write";

// --- pure ---------------------------------------------------------------------------------------

/** Whether the offer stood past its valid_until at `now` (ms since the epoch). */
export function pastValidUntil(deal, now) {
  if (!deal?.valid_until) return false;
  const until = Date.parse(deal.valid_until);
  return Number.isFinite(until) && now > until;
}

/** Which closing actions the drawer offers for a deal to a principal with `permissions`. */
export function closingActions(deal, permissions, now) {
  const perms = new Set(permissions || []);
  const open = Boolean(deal && OPEN_STATUSES.has(deal.status)) && !pastValidUntil(deal, now);
  return {
    decline: open && (perms.has(ADMIN) || perms.has(OFFERS_WRITE)),
    withdraw: open && perms.has(ADMIN),
  };
}

/** How the offer's window reads: "Lapsed", "Lapses in 3 d 4 h", "Past valid until (lapsing)". */
export function validityText(deal, now) {
  if (!deal) return null;
  if (deal.status === "lapsed") return "Lapsed";
  if (!deal.valid_until || !OPEN_STATUSES.has(deal.status)) return null;
  const left = Date.parse(deal.valid_until) - now;
  if (!Number.isFinite(left)) return null;
  if (left < 0) return "Past valid until (lapsing)";
  const hours = Math.floor(left / 3_600_000);
  if (hours < 1) return `Lapses in ${Math.max(1, Math.floor(left / 60_000))} min`;
  if (hours < 48) return `Lapses in ${hours} h`;
  return `Lapses in ${Math.floor(hours / 24)} d ${hours % 24} h`;
}

/** The confirmation question for an action. */
export function confirmQuestion(kind) {
  return kind === "withdraw"
    ? "Withdraw this offer? The creator can no longer accept it."
    : "Decline this offer on the creator's behalf? It can no longer be accepted.";
}

/** The body to send: a trimmed reason, or none at all (the body is optional). */
export function reasonBody(text) {
  const reason = String(text ?? "").trim().slice(0, MAX_REASON_CHARS);
  return reason ? { reason } : undefined;
}

/** One sentence about the answer (202: published; 200 with `already`: it had happened). */
export function closingAnswerText(kind, body) {
  const done = kind === "withdraw" ? "withdrawn" : "declined";
  return body?.already ? `The offer was already ${done}.` : `Offer ${done}: the deal updates as the event is projected.`;
}

/** Who and why, for the drawer's fields ("staff" for a creator that did not do it itself). */
export function closedBy(deal) {
  if (!deal) return null;
  if (deal.withdrawn_at) return { kind: "Withdrawn", at: deal.withdrawn_at, by: deal.withdrawn_by, reason: deal.withdraw_reason };
  if (deal.declined_at) return { kind: "Declined", at: deal.declined_at, by: deal.declined_by, reason: deal.decline_reason };
  if (deal.lapsed_at) return { kind: "Lapsed", at: deal.lapsed_at, by: null, reason: null };
  return null;
}

// --- the drawer's section -------------------------------------------------------------------------

/** The "Offer actions" section of the drawer. */
export class ClosingActions {
  constructor({ api, onChanged = () => {}, now = () => Date.now() }) {
    this.api = api;
    this.onChanged = onChanged;
    this.now = now;
    this.permissions = [];
    this.el = h("section", { class: "drawer-section closing-actions", dataset: { section: "closing-actions" } });
    this.reset();
  }

  /** The principal's permissions (GET /admin/me): which buttons to show. */
  setPermissions(permissions) {
    this.permissions = permissions || [];
    this.render();
  }

  reset() {
    this.offerId = null;
    this.deal = null;
    this.confirming = null; // "decline" | "withdraw" while its confirmation is shown
    this.reason = "";
    this.busy = false;
    this.message = null; // { tone: "ok" | "bad", text }
    this.el.hidden = true;
    setChildren(this.el);
  }

  show(deal) {
    if (!deal) return;
    if (deal.offer_id !== this.offerId) {
      this.reset();
      this.offerId = deal.offer_id;
    }
    this.deal = deal;
    this.render();
  }

  render() {
    const actions = closingActions(this.deal, this.permissions, this.now());
    this.el.hidden = !(actions.decline || actions.withdraw || this.message);
    if (this.el.hidden) return;
    const parts = [h("h3", {}, "Offer actions")];
    if (this.confirming && actions[this.confirming]) parts.push(this.confirmBlock(this.confirming));
    else {
      this.confirming = null;
      const buttons = [];
      if (actions.decline) buttons.push(this.button("decline", "Decline offer"));
      if (actions.withdraw) buttons.push(this.button("withdraw", "Withdraw offer"));
      if (buttons.length) parts.push(h("div", { class: "action-row" }, ...buttons));
    }
    if (this.message) {
      parts.push(
        h("p", { class: this.message.tone === "ok" ? "action-answer" : "inline-error", role: "status" }, this.message.text),
      );
    }
    setChildren(this.el, ...parts);
  }

  button(kind, label) {
    return h(
      "button",
      { type: "button", class: "btn btn-danger-outline", dataset: { action: `${kind}-offer` }, onclick: () => this.ask(kind) },
      label,
    );
  }

  confirmBlock(kind) {
    const input = h("input", {
      type: "text",
      id: "closing-reason",
      maxlength: String(MAX_REASON_CHARS),
      placeholder: "Reason (optional, shown to the other side; no personal data)",
      "aria-label": "Reason (optional)",
      value: this.reason,
      disabled: this.busy || null,
    });
    input.addEventListener("input", () => {
      this.reason = input.value;
    });
    return confirmGroup({
      question: confirmQuestion(kind),
      controls: [input],
      yesLabel: kind === "withdraw" ? "Yes, withdraw" : "Yes, decline",
      busy: this.busy,
      onYes: () => this.send(kind),
      onNo: () => this.ask(null),
    });
  }

  ask(kind) {
    this.confirming = kind;
    this.reason = "";
    this.message = null;
    this.render();
  }

  async send(kind) {
    this.busy = true;
    this.render();
    try {
      const body = await this.api.closeOffer(this.offerId, kind, reasonBody(this.reason));
      this.confirming = null;
      this.message = { tone: "ok", text: closingAnswerText(kind, body) };
      this.onChanged();
    } catch (error) {
      this.message = { tone: "bad", text: `Not done: ${dash(error.message)}` };
    } finally {
      this.busy = false;
      this.render();
    }
  }
}

// SpaceMusic admin: the deals page. Plain ES module, no build step.
//
// Data: GET /deals (the session cookie authenticates), live changes from the SSE stream
// GET /offers/events/deals, a deal's history from GET /offers/{id}/events. Server text is
// only ever put into the page with textContent / DOM APIs, never innerHTML.

const STATUSES = [
  ["created", "Created"],
  ["valued", "Valued"],
  ["valuation_failed", "Valuation failed"],
  ["termsheet_issued", "Term sheet issued"],
  ["accepted", "Accepted"],
  ["payout_requested", "Payout requested"],
  ["paid", "Paid"],
  ["payout_failed", "Payout failed"],
];
const STATUS_LABEL = new Map(STATUSES);
const EVENT_LABEL = new Map([
  ["offer.created", "Offer created"],
  ["offer.valuated", "Valuation"],
  ["offer.termsheet.generated", "Term sheet issued"],
  ["offer.accepted", "Offer accepted"],
  ["offer.payout.requested", "Payout requested"],
  ["offer.payout.completed", "Payout completed"],
  ["offer.receipt.generated", "Receipt issued"],
]);
const PAGE_SIZE = 100;
const STREAM_URL = "/offers/events/deals";
const RETRY_BASE_MS = 1000;
const RETRY_MAX_MS = 30000;
const READY_WAIT_MS = 4000;
const SKELETON_ROWS = 8;

// --- tiny helpers ---------------------------------------------------------------------------

const $ = (selector, root = document) => root.querySelector(selector);

/** Builds an element; children are Nodes or strings (strings become text nodes). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** replaceChildren, skipping null/undefined/false (which the DOM would print as text). */
function setChildren(el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const shortId = (id) => (id ? String(id).slice(0, 8) : "—");
const dash = (value) => (value === null || value === undefined || value === "" ? "—" : String(value));

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let onSignedOut = () => {};

async function api(path, { method = "GET", signal } = {}) {
  let response;
  try {
    response = await fetch(path, {
      method,
      signal,
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "network", "The server cannot be reached. Check your connection.");
  }
  if (response.status === 401) {
    onSignedOut();
    throw new ApiError(401, "signed_out", "Your session has ended.");
  }
  if (!response.ok) {
    let body = {};
    try {
      body = await response.json();
    } catch {
      // not JSON: keep the status line
    }
    throw new ApiError(
      response.status,
      body.error || `http_${response.status}`,
      body.message || `${response.status} ${response.statusText || "error"}`,
    );
  }
  return response.status === 204 ? null : response.json();
}

// --- formatting -----------------------------------------------------------------------------

const locale = navigator.language || "en-GB";
const moneyFormats = new Map();
let currencyExponents = {};

function intlDigits(currency) {
  try {
    return new Intl.NumberFormat(locale, { style: "currency", currency }).resolvedOptions().maximumFractionDigits;
  } catch {
    return null; // not a currency Intl knows
  }
}

/** Minor units (integer) as a decimal string with `exponent` digits, without float maths. */
function minorToDecimal(minor, exponent) {
  const negative = minor < 0;
  const digits = String(Math.abs(Math.trunc(minor))).padStart(exponent + 1, "0");
  const whole = exponent ? digits.slice(0, -exponent) : digits;
  const fraction = exponent ? `.${digits.slice(-exponent)}` : "";
  return `${negative ? "-" : ""}${whole}${fraction}`;
}

function formatMoney(minor, currency) {
  if (minor === null || minor === undefined) return "—";
  if (!currency) return `${minor} (minor units)`;
  const exponent = currencyExponents[currency] ?? intlDigits(currency);
  if (exponent === null || exponent === undefined) return `${minor} ${currency} (minor units)`;
  const key = `${currency}:${exponent}`;
  let format = moneyFormats.get(key);
  if (!format) {
    format = new Intl.NumberFormat(locale, {
      style: "currency",
      currency,
      minimumFractionDigits: exponent,
      maximumFractionDigits: exponent,
    });
    moneyFormats.set(key, format);
  }
  // Intl formats decimal strings exactly (no rounding through a double).
  return format.format(minorToDecimal(minor, exponent));
}

const dateTime = new Intl.DateTimeFormat(locale, { dateStyle: "medium", timeStyle: "medium" });
const relativeFormat = new Intl.RelativeTimeFormat(locale, { numeric: "auto" });
const RELATIVE_UNITS = [
  ["year", 365 * 86400],
  ["month", 30 * 86400],
  ["week", 7 * 86400],
  ["day", 86400],
  ["hour", 3600],
  ["minute", 60],
];

function formatDate(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : dateTime.format(date);
}

function relativeTime(iso) {
  const at = Date.parse(iso);
  if (Number.isNaN(at)) return "—";
  const seconds = (at - Date.now()) / 1000;
  if (Math.abs(seconds) < 45) return "just now";
  for (const [unit, size] of RELATIVE_UNITS) {
    if (Math.abs(seconds) >= size) return relativeFormat.format(Math.round(seconds / size), unit);
  }
  return relativeFormat.format(Math.round(seconds / 60), "minute");
}

function timeEl(iso, { relative = false } = {}) {
  if (!iso) return h("span", { class: "muted" }, "—");
  const el = h("time", { datetime: iso, title: `${formatDate(iso)} (${iso})` });
  if (relative) {
    el.dataset.relative = "";
    el.textContent = relativeTime(iso);
  } else {
    el.textContent = formatDate(iso);
  }
  return el;
}

function statusBadge(status, extraClass = "") {
  return h(
    "span",
    { class: `badge badge-${status || "unknown"} ${extraClass}`.trim(), dataset: { status: status || "" } },
    STATUS_LABEL.get(status) || dash(status),
  );
}

function idEl(id, { short = true } = {}) {
  if (!id) return h("span", { class: "muted" }, "—");
  return h("span", { class: "mono", title: id }, short ? shortId(id) : id);
}

const titleCase = (text) => (text ? String(text).charAt(0).toUpperCase() + String(text).slice(1).toLowerCase() : "—");

// --- state ----------------------------------------------------------------------------------

const state = {
  deals: new Map(), // offer_id -> deal (everything loaded or streamed)
  rows: new Map(), // offer_id -> <tr>
  status: "",
  search: "",
  nextCursor: null,
  loading: false,
  loaded: false,
  loadError: null,
  generation: 0,
  selected: null,
  returnFocus: null,
  history: { offerId: null, events: null, error: null, loading: false, timer: null, generation: 0 },
  openPayloads: new Set(),
  signedOut: false,
};

function newestFirst(a, b) {
  const at = a.created_at || a.updated_at || "";
  const bt = b.created_at || b.updated_at || "";
  if (at !== bt) return at < bt ? 1 : -1;
  return (b.change_seq ?? 0) - (a.change_seq ?? 0);
}

function matches(deal) {
  if (state.status && deal.status !== state.status) return false;
  const needle = state.search.trim().toLowerCase();
  if (!needle) return true;
  return [deal.offer_id, deal.creator_id].some((id) => id && String(id).toLowerCase().includes(needle));
}

/** Stores a deal unless what we hold is already newer; returns whether it changed. */
function mergeDeal(deal) {
  if (!deal || !deal.offer_id) return false;
  const known = state.deals.get(deal.offer_id);
  if (known && known.change_seq != null && deal.change_seq != null && deal.change_seq <= known.change_seq) {
    return false;
  }
  state.deals.set(deal.offer_id, deal);
  return true;
}

// --- table ----------------------------------------------------------------------------------

const els = {};

function payoutCell(deal) {
  const pill = payoutPill(deal);
  if (!pill) return h("span", { class: "muted" }, "—");
  return h(
    "span",
    { class: "payout", title: deal.payout_failure_reason || deal.payout_reference || "" },
    deal.payout_provider ? h("span", { class: "payout-provider" }, titleCase(deal.payout_provider)) : null,
    pill,
  );
}

/** The payout's state as a coloured pill (the API spells statuses in capitals). */
function payoutPill(deal) {
  if (deal.payout_status) {
    const status = String(deal.payout_status).toLowerCase();
    const kind = status === "succeeded" ? "ok" : status === "failed" ? "bad" : "neutral";
    return h("span", { class: `pill pill-${kind}` }, status);
  }
  if (deal.payout_requested_at) return h("span", { class: "pill pill-pending" }, "requested");
  return null;
}

function valuationCell(deal) {
  if (String(deal.valuation_outcome).toLowerCase() === "failed") {
    return h("span", { class: "muted", title: deal.valuation_failure_reason || "" }, "failed");
  }
  if (deal.valuation_median_minor === null || deal.valuation_median_minor === undefined) {
    return h("span", { class: "muted" }, "—");
  }
  return h("span", { class: "amount" }, formatMoney(deal.valuation_median_minor, deal.currency));
}

function fillRow(tr, deal) {
  tr.dataset.offerId = deal.offer_id;
  tr.dataset.status = deal.status || "";
  tr.dataset.seq = deal.change_seq ?? "";
  tr.classList.toggle("selected", state.selected === deal.offer_id);
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
    h("td", {}, statusBadge(deal.status)),
    h("td", { class: "mono" }, dash(deal.currency)),
    h("td", { class: "num" }, valuationCell(deal)),
    h("td", {}, payoutCell(deal)),
    h("td", { class: "updated" }, timeEl(deal.updated_at, { relative: true })),
  );
}

function flash(tr, isNew) {
  tr.classList.remove("flash", "flash-new");
  void tr.offsetWidth; // restart the animation
  tr.classList.add(isNew ? "flash-new" : "flash");
  // Drop the class once played, or re-inserting the row (filters) would replay it.
  tr.addEventListener("animationend", () => tr.classList.remove("flash", "flash-new"), { once: true });
}

function rowFor(deal) {
  let tr = state.rows.get(deal.offer_id);
  if (!tr) {
    tr = h("tr", { class: "deal-row" });
    state.rows.set(deal.offer_id, tr);
    fillRow(tr, deal);
  } else if (tr.dataset.seq !== String(deal.change_seq ?? "") || tr.dataset.status !== (deal.status || "")) {
    fillRow(tr, deal);
  }
  return tr;
}

function renderTable() {
  const body = els.tbody;
  const all = [...state.deals.values()];
  const visible = all.filter(matches).sort(newestFirst);
  const keep = new Set();
  if (body.firstElementChild && !body.firstElementChild.classList.contains("deal-row")) {
    setChildren(body); // the loading skeleton
  }
  let cursor = body.firstElementChild;
  for (const deal of visible) {
    const tr = rowFor(deal);
    keep.add(tr);
    if (cursor === tr) {
      cursor = cursor.nextElementSibling;
    } else {
      body.insertBefore(tr, cursor);
    }
  }
  for (const tr of [...body.children]) if (!keep.has(tr)) tr.remove();

  // Loading / error / empty states.
  const table = els.table;
  const empty = visible.length === 0;
  table.setAttribute("aria-busy", state.loading ? "true" : "false");
  if (state.loading && empty) {
    table.dataset.state = "loading";
    const skeleton = $("#skeleton-row");
    setChildren(body, ...Array.from({ length: SKELETON_ROWS }, () => skeleton.content.cloneNode(true)));
    showTableState(null);
  } else if (state.loadError && all.length === 0) {
    table.dataset.state = "error";
    showTableState(
      "error",
      "Couldn't load deals",
      state.loadError.message,
      h("button", { type: "button", class: "btn btn-primary", onclick: () => loadDeals({ reset: true }) }, "Retry"),
    );
  } else if (empty) {
    table.dataset.state = "empty";
    if (all.length === 0 && !state.status) {
      showTableState("empty", "No deals yet", "New deals appear here the moment they are created.");
    } else {
      showTableState(
        "empty",
        "No matching deals",
        state.search
          ? `Nothing loaded matches “${state.search.trim()}”${state.status ? ` with status ${STATUS_LABEL.get(state.status)}` : ""}.`
          : `No deal has the status ${STATUS_LABEL.get(state.status) || state.status}.`,
        h("button", { type: "button", class: "btn", onclick: clearFilters }, "Clear filters"),
      );
    }
  } else {
    table.dataset.state = "ready";
    showTableState(null);
  }

  // Summary and "load more".
  const loaded = all.length;
  els.summary.textContent =
    state.loading && !state.loaded
      ? "Loading deals…"
      : state.loadError && loaded === 0
        ? "Deals could not be loaded"
        : `${loaded} deal${loaded === 1 ? "" : "s"} loaded` +
          (visible.length !== loaded ? ` · ${visible.length} shown` : "") +
          (state.status ? ` · status: ${STATUS_LABEL.get(state.status)}` : "");
  els.loadMore.hidden =
    state.nextCursor === null || state.nextCursor === undefined || (state.loadError && loaded === 0);
  els.loadMore.disabled = state.loading;
  els.loadMore.textContent = state.loading && state.loaded ? "Loading…" : "Load more";
  els.footNote.textContent =
    state.loadError && loaded > 0
      ? `Loading more failed: ${state.loadError.message}`
      : state.nextCursor == null && state.loaded && loaded > 0
        ? "All deals loaded. Newest first; live updates appear automatically."
        : "";
  els.tableFoot.hidden = els.loadMore.hidden && !els.footNote.textContent;
}

function showTableState(kind, title, message, action) {
  const box = els.tableState;
  if (!kind) {
    box.hidden = true;
    setChildren(box);
    return;
  }
  box.hidden = false;
  box.dataset.kind = kind;
  setChildren(
    box,
    h("div", { class: `state-icon state-${kind}`, "aria-hidden": "true" }, kind === "error" ? "!" : "∅"),
    h("p", { class: "state-title" }, title),
    message ? h("p", { class: "muted" }, message) : null,
    action || null,
  );
}

function clearFilters() {
  els.search.value = "";
  state.search = "";
  if (state.status) {
    els.statusFilter.value = "";
    setStatusFilter("");
  } else {
    syncUrl();
    renderTable();
  }
}

async function loadDeals({ reset }) {
  const generation = ++state.generation;
  if (reset) {
    state.deals.clear();
    state.rows.clear();
    state.nextCursor = null;
    state.loaded = false;
  }
  state.loading = true;
  state.loadError = null;
  renderTable();
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (state.status) params.set("status", state.status);
  if (!reset && state.nextCursor !== null && state.nextCursor !== undefined)
    params.set("cursor", String(state.nextCursor));
  try {
    const page = await api(`/deals?${params}`);
    if (generation !== state.generation) return;
    for (const deal of page.deals) mergeDeal(deal);
    state.nextCursor = page.next_cursor;
    state.loaded = true;
  } catch (error) {
    if (generation !== state.generation) return;
    state.loadError = error;
  } finally {
    if (generation === state.generation) {
      state.loading = false;
      renderTable();
      if (state.selected) renderDrawer();
    }
  }
}

function setStatusFilter(status) {
  state.status = status;
  syncUrl();
  loadDeals({ reset: true });
}

// --- live updates ---------------------------------------------------------------------------

function applyChange(change) {
  const deal = change.deal;
  if (!deal || !deal.offer_id) return;
  if (deal.change_seq == null) deal.change_seq = change.seq;
  const isNew = !state.deals.has(deal.offer_id);
  if (!mergeDeal(deal)) return;
  const tr = rowFor(deal);
  renderTable();
  if (tr.isConnected) flash(tr, isNew);
  if (state.selected === deal.offer_id) {
    renderDrawer();
    scheduleHistoryReload();
  }
}

/**
 * The SSE connection. Every error, whether the browser would retry by itself (network drop,
 * server restart) or has given up (401/5xx answer), closes the EventSource and opens a new
 * one with ?last_event_id=<last seq seen> after a backoff: a brand-new EventSource that has
 * not received an id yet would otherwise resume from the server's head and miss changes.
 */
class DealStream {
  constructor(handlers) {
    this.handlers = handlers;
    this.lastSeq = null;
    this.source = null;
    this.failures = 0;
    this.timer = null;
    this.stopped = false;
    this.retryAt = null;
  }

  start() {
    window.addEventListener("online", () => this.retryNow());
    window.addEventListener("offline", () => {
      // A stream that still delivers is live, whatever navigator.onLine says.
      if (!this.source || this.source.readyState !== EventSource.OPEN) this.handlers.onState("offline");
    });
    this.open();
  }

  open() {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.timer = null;
    this.retryAt = null;
    this.close();
    const url = new URL(STREAM_URL, window.location.origin);
    if (this.lastSeq !== null) url.searchParams.set("last_event_id", String(this.lastSeq));
    const source = new EventSource(url, { withCredentials: true });
    this.source = source;
    this.handlers.onState(this.failures ? "reconnecting" : "connecting");
    source.addEventListener("ready", (event) => {
      if (source !== this.source) return;
      let info = {};
      try {
        info = JSON.parse(event.data);
      } catch {
        // keep going: the stream itself is fine
      }
      if (this.lastSeq === null && Number.isFinite(info.resume_from)) this.lastSeq = info.resume_from;
      this.failures = 0;
      this.handlers.onState("live");
      this.handlers.onReady(info);
    });
    source.addEventListener("deal", (event) => {
      if (source !== this.source) return;
      let change;
      try {
        change = JSON.parse(event.data);
      } catch {
        return;
      }
      const seq = Number(change.seq ?? event.lastEventId);
      if (Number.isFinite(seq)) {
        if (this.lastSeq !== null && seq <= this.lastSeq) return; // already applied
        this.lastSeq = seq;
      }
      this.handlers.onChange(change);
    });
    source.addEventListener("error", () => {
      if (source !== this.source) return;
      this.fail();
    });
  }

  async fail() {
    this.close();
    this.failures += 1;
    if (navigator.onLine === false) {
      this.handlers.onState("offline");
      return; // the "online" event reconnects
    }
    this.handlers.onState("reconnecting");
    // A 401 closes an EventSource without telling why: ask whether the session still holds.
    if (this.failures > 1) {
      try {
        const probe = await fetch("/admin/me", { credentials: "same-origin", headers: { Accept: "application/json" } });
        if (probe.status === 401) {
          this.stop();
          this.handlers.onSignedOut();
          return;
        }
      } catch {
        // unreachable: keep retrying
      }
    }
    if (this.stopped || this.source) return; // stopped, or "Retry now" already reopened it
    const base = Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** (this.failures - 1));
    const delay = Math.round(base * (0.8 + Math.random() * 0.4));
    this.retryAt = Date.now() + delay;
    this.handlers.onState("reconnecting");
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.open(), delay);
  }

  retryNow() {
    if (this.stopped) return;
    if (this.source && this.source.readyState === EventSource.OPEN) return;
    this.open();
  }

  close() {
    if (this.source) {
      this.source.close();
      this.source = null;
    }
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.close();
  }
}

const CONNECTION_TEXT = {
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
  offline: "Offline",
  "signed-out": "Signed out",
};

let stream = null;
let bannerTimer = null;

function setConnection(kind) {
  els.connection.dataset.state = kind;
  els.connectionText.textContent = CONNECTION_TEXT[kind] || kind;
  els.connection.title =
    kind === "live" && stream?.lastSeq != null ? `Live updates (change #${stream.lastSeq})` : CONNECTION_TEXT[kind];
  clearInterval(bannerTimer);
  bannerTimer = null;
  if (kind === "reconnecting" || kind === "offline") {
    const update = () => {
      const wait = stream?.retryAt ? Math.max(0, Math.ceil((stream.retryAt - Date.now()) / 1000)) : null;
      const text =
        kind === "offline"
          ? "You are offline. Live updates resume, with nothing missed, when the connection is back."
          : `Live updates interrupted. Reconnecting${wait ? ` in ${wait} s` : "…"} — nothing will be missed.`;
      showBanner("warning", text, "Retry now", () => stream?.retryNow());
    };
    update();
    bannerTimer = setInterval(update, 1000);
  } else if (kind === "live") {
    hideBanner();
  }
}

function showBanner(kind, text, actionLabel, action) {
  els.banner.hidden = false;
  els.banner.dataset.kind = kind;
  els.bannerText.textContent = text;
  els.bannerAction.hidden = !actionLabel;
  els.bannerAction.textContent = actionLabel || "";
  els.bannerAction.onclick = action || null;
}

function hideBanner() {
  els.banner.hidden = true;
  els.bannerAction.onclick = null;
}

function handleSignedOut() {
  if (state.signedOut) return;
  state.signedOut = true;
  stream?.stop();
  clearInterval(bannerTimer);
  setConnection("signed-out");
  showBanner("error", "Your session has ended. Sign in again to keep watching deals.", "Sign in", () =>
    window.location.assign("/admin"),
  );
}

// --- drawer ---------------------------------------------------------------------------------

function field(label, value, { mono = false } = {}) {
  let content = value;
  if (!(value instanceof Node)) {
    const empty = value === null || value === undefined || value === "";
    content = h("span", { class: empty ? "muted" : mono ? "mono" : null }, dash(value));
  }
  return [h("dt", {}, label), h("dd", {}, content)];
}

function section(title, ...content) {
  return h("section", { class: "drawer-section" }, h("h3", {}, title), ...content);
}

function fields(...pairs) {
  return h("dl", { class: "fields" }, ...pairs);
}

function documentLink(deal, kind, label) {
  const key = kind === "termsheet" ? deal.termsheet_key : deal.receipt_key;
  if (!key) {
    return h(
      "span",
      { class: "doc doc-missing", dataset: { doc: kind } },
      h("span", { class: "doc-icon", "aria-hidden": "true" }, "PDF"),
      `${label}: not issued yet`,
    );
  }
  return h(
    "a",
    {
      class: "doc",
      href: `/offers/${encodeURIComponent(deal.offer_id)}/documents/${kind}`,
      target: "_blank",
      rel: "noopener",
      dataset: { doc: kind },
      title:
        kind === "termsheet"
          ? deal.termsheet_sha256 && `SHA-256 ${deal.termsheet_sha256}`
          : deal.receipt_sha256 && `SHA-256 ${deal.receipt_sha256}`,
    },
    h("span", { class: "doc-icon", "aria-hidden": "true" }, "PDF"),
    `${label} (PDF)`,
  );
}

function hashEl(hash) {
  if (!hash) return null;
  return h("span", { class: "mono hash", title: hash }, `${hash.slice(0, 12)}…`);
}

function renderDrawer() {
  const id = state.selected;
  if (!id) return;
  const deal = state.deals.get(id) || state.history.deal;
  els.drawerTitle.textContent = id;
  setChildren(els.drawerStatus, deal ? statusBadge(deal.status) : h("span", { class: "muted" }, "Loading…"));
  const details = els.drawerDetails;
  if (!deal) {
    setChildren(
      details,
      h("div", { class: "spinner-row" }, h("span", { class: "spinner", "aria-hidden": "true" }), "Loading deal…"),
    );
    return;
  }
  const c = deal.currency;
  const payoutState = payoutPill(deal);
  setChildren(
    details,
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
        ...field("Created", timeEl(deal.created_at)),
        ...field("Updated", timeEl(deal.updated_at)),
        ...field("Royalty history", deal.royalty_months != null ? `${deal.royalty_months} months` : null),
        ...field("Royalties total", deal.royalty_total_minor != null ? formatMoney(deal.royalty_total_minor, c) : null),
      ),
    ),
    section(
      "Valuation",
      deal.valuation_outcome
        ? h(
            "div",
            { class: "range", "aria-label": "Valuation range" },
            h(
              "div",
              {},
              h("span", { class: "range-label" }, "Low"),
              h("span", { class: "range-value" }, formatMoney(deal.valuation_low_minor, c)),
            ),
            h(
              "div",
              { class: "range-median" },
              h("span", { class: "range-label" }, "Median"),
              h("span", { class: "range-value" }, formatMoney(deal.valuation_median_minor, c)),
            ),
            h(
              "div",
              {},
              h("span", { class: "range-label" }, "High"),
              h("span", { class: "range-value" }, formatMoney(deal.valuation_high_minor, c)),
            ),
          )
        : null,
      fields(
        ...field("Outcome", deal.valuation_outcome ? titleCase(deal.valuation_outcome) : null),
        ...field("Model", deal.valuation_model, { mono: true }),
        ...field("Valued", timeEl(deal.valued_at)),
        ...(deal.valuation_failure_reason ? field("Failure reason", deal.valuation_failure_reason) : []),
      ),
    ),
    section(
      "Term sheet & acceptance",
      fields(
        ...field("Term sheet", deal.termsheet_key ? "issued" : null),
        ...field("Term sheet SHA-256", hashEl(deal.termsheet_sha256) || null),
        ...field("Advance", deal.advance_minor != null ? formatMoney(deal.advance_minor, c) : null),
        ...field("Accepted", timeEl(deal.accepted_at)),
      ),
    ),
    section(
      "Payout",
      fields(
        ...field("Status", payoutState),
        ...field("Provider", deal.payout_provider ? titleCase(deal.payout_provider) : null),
        ...field("Amount paid", deal.paid_amount_minor != null ? formatMoney(deal.paid_amount_minor, c) : null),
        ...field("Reference", deal.payout_reference, { mono: true }),
        ...field("Requested", timeEl(deal.payout_requested_at)),
        ...field("Completed", timeEl(deal.payout_completed_at)),
        ...field("Payout id", deal.payout_id, { mono: true }),
        ...field("Recipient", deal.recipient_id, { mono: true }),
        ...(deal.payout_failure_reason ? field("Failure reason", deal.payout_failure_reason) : []),
        ...field("Receipt SHA-256", hashEl(deal.receipt_sha256) || null),
      ),
    ),
  );
}

function eventSummary(event, deal) {
  const p = event.payload || {};
  const c = p.currency || deal?.currency;
  switch (event.event_type) {
    case "offer.created":
      return `${Array.isArray(p.royalty_history) ? p.royalty_history.length : "?"} months of royalty history in ${dash(p.currency)}`;
    case "offer.valuated":
      return String(p.outcome).toLowerCase() === "failed"
        ? `Valuation failed: ${dash(p.failure_reason)}`
        : `Median ${formatMoney(p.median_minor, c)} (${formatMoney(p.low_minor, c)} – ${formatMoney(p.high_minor, c)}), model ${dash(p.model_version)}`;
    case "offer.termsheet.generated":
      return `Advance ${formatMoney(p.advance_minor, c)}`;
    case "offer.accepted":
      return `Accepted by ${dash(p.accepted_by)}, advance ${formatMoney(p.advance_minor, c)}`;
    case "offer.payout.requested":
      return `${formatMoney(p.amount_minor, c)} requested by ${dash(p.requested_by)}`;
    case "offer.payout.completed":
      return String(p.status).toLowerCase() === "failed"
        ? `Failed via ${titleCase(p.provider)}: ${dash(p.failure_reason)}`
        : `${titleCase(p.status)} via ${titleCase(p.provider)}, ${formatMoney(p.amount_minor, c)}${p.provider_reference ? `, ref ${p.provider_reference}` : ""}`;
    case "offer.receipt.generated":
      return "Receipt PDF stored";
    default:
      return "";
  }
}

function eventTone(event) {
  const p = event.payload || {};
  const failed =
    (event.event_type === "offer.valuated" && String(p.outcome).toLowerCase() === "failed") ||
    (event.event_type === "offer.payout.completed" && String(p.status).toLowerCase() === "failed");
  if (failed) return "bad";
  if (event.event_type === "offer.payout.completed" || event.event_type === "offer.receipt.generated") return "ok";
  return "neutral";
}

function renderHistory() {
  const box = els.drawerHistory;
  const hist = state.history;
  const heading = h("h3", {}, "Event history");
  if (hist.error && !hist.events) {
    setChildren(
      box,
      heading,
      h(
        "div",
        { class: "inline-error", role: "alert" },
        h("span", {}, `Couldn't load the history: ${hist.error.message}`),
        h("button", { type: "button", class: "btn btn-small", onclick: () => loadHistory() }, "Retry"),
      ),
    );
    return;
  }
  if (!hist.events) {
    setChildren(
      box,
      heading,
      h("div", { class: "spinner-row" }, h("span", { class: "spinner", "aria-hidden": "true" }), "Loading history…"),
    );
    return;
  }
  if (hist.events.length === 0) {
    setChildren(box, heading, h("p", { class: "muted" }, "No events recorded yet."));
    return;
  }
  const deal = state.deals.get(hist.offerId);
  const items = hist.events.map((event) => {
    const details = h(
      "details",
      { class: "payload" },
      h("summary", {}, "Payload"),
      h("pre", { class: "mono" }, JSON.stringify(event.payload, null, 2)),
    );
    details.open = state.openPayloads.has(event.event_id);
    details.addEventListener("toggle", () => {
      if (details.open) state.openPayloads.add(event.event_id);
      else state.openPayloads.delete(event.event_id);
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
          h("span", { class: "timeline-title" }, EVENT_LABEL.get(event.event_type) || event.event_type),
          timeEl(event.occurred_at),
        ),
        h("p", { class: "timeline-summary" }, eventSummary(event, deal)),
        h(
          "p",
          { class: "timeline-meta mono", title: event.event_id },
          `${event.event_type} · ${shortId(event.event_id)}`,
        ),
        details,
      ),
    );
  });
  setChildren(
    box,
    heading,
    hist.error ? h("p", { class: "inline-error", role: "alert" }, `Refresh failed: ${hist.error.message}`) : null,
    h("ol", { class: "timeline", "aria-label": "Events, oldest first" }, items),
  );
}

async function loadHistory() {
  const offerId = state.selected;
  if (!offerId) return;
  const hist = state.history;
  const generation = ++hist.generation;
  if (hist.offerId !== offerId) {
    Object.assign(hist, { offerId, events: null, error: null, deal: null });
  }
  hist.loading = true;
  renderHistory();
  try {
    const needDeal = !state.deals.has(offerId);
    const [history, deal] = await Promise.all([
      api(`/offers/${encodeURIComponent(offerId)}/events`),
      needDeal ? api(`/offers/${encodeURIComponent(offerId)}`) : null,
    ]);
    if (generation !== hist.generation || state.selected !== offerId) return;
    hist.events = history.events;
    hist.error = null;
    if (deal) {
      hist.deal = deal;
      renderDrawer();
    }
  } catch (error) {
    if (generation !== hist.generation || state.selected !== offerId) return;
    hist.error = error;
    if (!state.deals.has(offerId) && !hist.deal) {
      setChildren(
        els.drawerDetails,
        h("div", { class: "inline-error", role: "alert" }, `Couldn't load the deal: ${error.message}`),
      );
    }
  } finally {
    if (generation === hist.generation) {
      hist.loading = false;
      renderHistory();
    }
  }
}

function scheduleHistoryReload() {
  clearTimeout(state.history.timer);
  state.history.timer = setTimeout(loadHistory, 250);
}

function focusables(root) {
  return [...root.querySelectorAll("a[href], button:not([disabled]), summary, [tabindex]:not([tabindex='-1'])")].filter(
    (el) => !el.closest("[hidden]") && el.getClientRects().length > 0,
  );
}

function openDrawer(offerId, opener) {
  const wasOpen = Boolean(state.selected);
  state.selected = offerId;
  state.returnFocus = opener || (wasOpen ? state.returnFocus : document.activeElement);
  for (const [id, tr] of state.rows) tr.classList.toggle("selected", id === offerId);
  els.drawer.hidden = false;
  els.backdrop.hidden = false;
  document.body.classList.add("drawer-open");
  els.drawerBody.scrollTop = 0;
  renderDrawer();
  loadHistory();
  els.drawerClose.focus();
  syncUrl();
}

function closeDrawer() {
  if (!state.selected) return;
  const id = state.selected;
  state.selected = null;
  clearTimeout(state.history.timer);
  state.history.generation += 1;
  Object.assign(state.history, { offerId: null, events: null, error: null, deal: null });
  els.drawer.hidden = true;
  els.backdrop.hidden = true;
  document.body.classList.remove("drawer-open");
  state.rows.get(id)?.classList.remove("selected");
  const back = state.returnFocus;
  state.returnFocus = null;
  if (back && back.isConnected) back.focus();
  else state.rows.get(id)?.querySelector("button")?.focus();
  syncUrl();
}

// --- URL state (shareable filters and drawer) -----------------------------------------------

function syncUrl() {
  const params = new URLSearchParams();
  if (state.status) params.set("status", state.status);
  if (state.search.trim()) params.set("q", state.search.trim());
  if (state.selected) params.set("offer", state.selected);
  const query = params.toString();
  window.history.replaceState(null, "", `${window.location.pathname}${query ? `?${query}` : ""}`);
}

function readUrl() {
  const params = new URLSearchParams(window.location.search);
  const status = params.get("status");
  if (status && STATUS_LABEL.has(status)) state.status = status;
  state.search = params.get("q") || "";
  return params.get("offer");
}

// --- sign-in / sign-out ---------------------------------------------------------------------

async function signOut() {
  stream?.stop();
  try {
    await fetch("/auth/logout", { method: "POST", credentials: "same-origin" });
  } finally {
    window.location.assign("/admin");
  }
}

function initSignIn() {
  const form = $("#signin-form");
  if (!form) return;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = $("#signin-error");
    const token = $("#signin-token").value.trim();
    error.hidden = true;
    if (!token) {
      error.textContent = "Paste an access token first.";
      error.hidden = false;
      return;
    }
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const response = await fetch("/auth/session", {
        method: "POST",
        credentials: "same-origin",
        headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
      });
      if (response.ok) {
        window.location.assign("/admin");
        return;
      }
      const body = await response.json().catch(() => ({}));
      error.textContent = body.message || `Sign-in failed (${response.status}).`;
    } catch {
      error.textContent = "The server cannot be reached.";
    } finally {
      button.disabled = false;
    }
    error.hidden = false;
  });
}

// --- start-up -------------------------------------------------------------------------------

async function loadMe() {
  try {
    const me = await api("/admin/me");
    if (me.currency_exponents) currencyExponents = me.currency_exponents;
    els.whoami.textContent = me.subject;
    const expires = me.expires_at ? ` · session until ${formatDate(new Date(me.expires_at * 1000).toISOString())}` : "";
    els.whoami.title = `${me.subject}${me.creator_scope ? ` (creator ${me.creator_scope})` : ""}${expires}`;
  } catch {
    // Formatting falls back to Intl; a 401 has already switched the page to "signed out".
  }
}

function bindDealsPage() {
  Object.assign(els, {
    table: $("#deals-table"),
    tbody: $("#deals-body"),
    tableState: $("#table-state"),
    summary: $("#summary"),
    footNote: $("#foot-note"),
    tableFoot: $(".table-foot"),
    loadMore: $("#load-more"),
    search: $("#search"),
    statusFilter: $("#status-filter"),
    connection: $("#connection"),
    connectionText: $("#connection-text"),
    banner: $("#banner"),
    bannerText: $("#banner-text"),
    bannerAction: $("#banner-action"),
    whoami: $("#whoami"),
    drawer: $("#drawer"),
    backdrop: $("#drawer-backdrop"),
    drawerTitle: $("#drawer-title"),
    drawerStatus: $("#drawer-status"),
    drawerBody: $("#drawer-body"),
    drawerClose: $("#drawer-close"),
  });
  els.drawerDetails = h("div", { class: "drawer-details" });
  els.drawerHistory = h("section", { class: "drawer-section history", "aria-live": "polite" });
  setChildren(els.drawerBody, els.drawerDetails, els.drawerHistory);

  for (const [value, label] of STATUSES) els.statusFilter.append(h("option", { value }, label));
  els.statusFilter.value = state.status;
  els.search.value = state.search;

  els.search.addEventListener("input", () => {
    state.search = els.search.value;
    syncUrl();
    renderTable();
  });
  els.statusFilter.addEventListener("change", () => setStatusFilter(els.statusFilter.value));
  $("#refresh").addEventListener("click", () => loadDeals({ reset: true }));
  els.loadMore.addEventListener("click", () => loadDeals({ reset: false }));
  els.tbody.addEventListener("click", (event) => {
    const tr = event.target.closest("tr.deal-row");
    if (!tr || event.target.closest("a")) return;
    openDrawer(tr.dataset.offerId, tr.querySelector("button.row-open"));
  });
  els.drawerClose.addEventListener("click", closeDrawer);
  els.backdrop.addEventListener("click", closeDrawer);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && state.selected) {
      event.preventDefault();
      closeDrawer();
    } else if (event.key === "Tab" && state.selected) {
      const items = focusables(els.drawer);
      if (items.length === 0) return;
      const first = items[0];
      const last = items[items.length - 1];
      if (!els.drawer.contains(document.activeElement)) {
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
  });
  // Relative times ("3 minutes ago") stay current.
  setInterval(() => {
    for (const el of document.querySelectorAll("time[data-relative]")) el.textContent = relativeTime(el.dateTime);
  }, 15000);
}

async function initDeals() {
  const offerFromUrl = readUrl();
  bindDealsPage();
  onSignedOut = handleSignedOut;
  renderTable();

  let markReady;
  const ready = new Promise((resolve) => {
    markReady = resolve;
  });
  stream = new DealStream({
    onState: setConnection,
    onReady: () => markReady(),
    onChange: applyChange,
    onSignedOut: handleSignedOut,
  });
  stream.start();
  // Position the stream first (it starts at the server's head), then load the list: a
  // change landing in between arrives on the stream, and the per-deal change_seq keeps
  // whichever copy is newer.
  await Promise.all([loadMe(), Promise.race([ready, sleep(READY_WAIT_MS)])]);
  await loadDeals({ reset: true });
  if (offerFromUrl) openDrawer(offerFromUrl, null);

  // Inspection hook for operators and the browser test (read-only view of the live state).
  window.spacemusicAdmin = {
    get lastSeq() {
      return stream.lastSeq;
    },
    get connection() {
      return els.connection.dataset.state;
    },
    deal: (offerId) => state.deals.get(offerId) ?? null,
  };
}

function init() {
  for (const button of document.querySelectorAll("[data-action=sign-out]")) button.addEventListener("click", signOut);
  const view = document.body.dataset.view;
  if (view === "deals") initDeals();
  else if (view === "signin") initSignIn();
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
else init();

// Building DOM nodes. Server text only ever goes in as text nodes / textContent, never as
// HTML. Nothing here runs at import time, so pure modules' tests can import the views.

export const $ = (selector, root = document) => root.querySelector(selector);

const absent = (value) => value === null || value === undefined || value === false;

/** An element; attrs: class, text, dataset, on<event> handlers, other attributes (true: ""). Children
 * are Nodes or strings (strings become text nodes); null/undefined/false are skipped. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (absent(value)) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (absent(child)) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** replaceChildren, skipping null/undefined/false (which the DOM would print as text). */
export function setChildren(el, ...children) {
  el.replaceChildren(...children.flat().filter((child) => !absent(child)));
}

export const muted = (text) => h("span", { class: "muted" }, text);

/** A confirmation step: the question, any controls that go with it, "Yes …" and "No". The
 * buttons are disabled while the request is on its way (busy), so it is never sent twice. */
export function confirmGroup({ question, controls = [], yesLabel, busy, onYes, onNo }) {
  return h(
    "div",
    { class: "confirm", role: "group", "aria-label": "Confirm" },
    h("p", {}, question),
    controls,
    h(
      "button",
      { type: "button", class: "btn btn-primary", dataset: { action: "confirm" }, disabled: busy || null, onclick: onYes },
      busy ? "Sending…" : yesLabel,
    ),
    h("button", { type: "button", class: "btn btn-ghost", disabled: busy || null, onclick: onNo }, "No"),
  );
}

export const spinnerRow = (text) =>
  h("div", { class: "spinner-row" }, h("span", { class: "spinner", "aria-hidden": "true" }), text);

/** A <time>: the exact date, or (relative) "3 minutes ago" refreshed by refreshTimes(). */
export function timeEl(iso, format, { relative = false } = {}) {
  if (!iso) return muted("—");
  const el = h("time", { datetime: iso, title: `${format.date(iso)} (${iso})` });
  if (relative) {
    el.dataset.relative = "";
    el.textContent = format.relative(iso);
  } else {
    el.textContent = format.date(iso);
  }
  return el;
}

/** Keeps every relative <time> under `root` current. */
export function refreshTimes(format, root = document) {
  for (const el of root.querySelectorAll("time[data-relative]")) el.textContent = format.relative(el.dateTime);
}

/** The colour-coded status badge; `label` is the server's human label. */
export function statusBadge(status, label) {
  return h(
    "span",
    { class: `badge badge-${status || "unknown"}`, dataset: { status: status || "" } },
    label || (status ? String(status) : "—"),
  );
}

/** The payout pill of format.payoutState(), or null. */
export const payoutPill = (state) => (state ? h("span", { class: `pill pill-${state.kind}` }, state.text) : null);

/** A monospace id: its first 8 characters (short) with the full id in the tooltip. */
export function idEl(id, { short = true } = {}) {
  if (!id) return muted("—");
  return h("span", { class: "mono", title: id }, short ? String(id).slice(0, 8) : id);
}

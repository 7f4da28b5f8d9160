// The session as the page shows it: the connection indicator and its banner, signing out,
// the "signed out" state, and the sign-in form (outside dev).

import { $ } from "./dom.js";

// --- pure: the words ------------------------------------------------------------------------------

export const CONNECTION_TEXT = Object.freeze({
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
  offline: "Offline",
  "signed-out": "Signed out",
});

export const connectionText = (kind) => CONNECTION_TEXT[kind] || kind;

export function connectionTitle(kind, lastSeq) {
  return kind === "live" && lastSeq != null ? `Live updates (change #${lastSeq})` : CONNECTION_TEXT[kind];
}

/** The banner while the stream is down; `waitSeconds` until the next attempt, if known. */
export function bannerText(kind, waitSeconds) {
  return kind === "offline"
    ? "You are offline. Live updates resume, with nothing missed, when the connection is back."
    : `Live updates interrupted. Reconnecting${waitSeconds ? ` in ${waitSeconds} s` : "…"} — nothing will be missed.`;
}

export const secondsUntil = (at, now) => (at ? Math.max(0, Math.ceil((at - now) / 1000)) : null);

/** The tooltip of the signed-in subject: creator scope and session expiry when known. */
export function whoamiTitle(me, format) {
  const scope = me.creator_scope ? ` (creator ${me.creator_scope})` : "";
  const expires = me.expires_at ? ` · session until ${format.date(new Date(me.expires_at * 1000).toISOString())}` : "";
  return `${me.subject}${scope}${expires}`;
}

export const SIGNED_OUT_TEXT = "Your session has ended. Sign in again to keep watching deals.";

// --- the view -------------------------------------------------------------------------------------

/** The connection indicator (role=status) and the banner under the top bar. */
export class ConnectionView {
  /** `stream()` returns the DealStream (its lastSeq, retryAt, retryNow), or null. */
  constructor(stream) {
    this.stream = stream;
    this.timer = null;
    this.el = {
      connection: $("#connection"),
      text: $("#connection-text"),
      banner: $("#banner"),
      bannerText: $("#banner-text"),
      bannerAction: $("#banner-action"),
    };
  }

  get state() {
    return this.el.connection.dataset.state;
  }

  show(kind) {
    const { el } = this;
    el.connection.dataset.state = kind;
    el.text.textContent = connectionText(kind);
    el.connection.title = connectionTitle(kind, this.stream()?.lastSeq);
    clearInterval(this.timer);
    this.timer = null;
    if (kind === "reconnecting" || kind === "offline") {
      const update = () =>
        this.showBanner("warning", bannerText(kind, secondsUntil(this.stream()?.retryAt, Date.now())), "Retry now", () =>
          this.stream()?.retryNow(),
        );
      update();
      this.timer = setInterval(update, 1000);
    } else if (kind === "live") {
      this.hideBanner();
    }
  }

  signedOut() {
    this.show("signed-out");
    this.showBanner("error", SIGNED_OUT_TEXT, "Sign in", () => window.location.assign("/admin"));
  }

  showBanner(kind, text, actionLabel, action) {
    const { el } = this;
    el.banner.hidden = false;
    el.banner.dataset.kind = kind;
    el.bannerText.textContent = text;
    el.bannerAction.hidden = !actionLabel;
    el.bannerAction.textContent = actionLabel || "";
    el.bannerAction.onclick = action || null;
  }

  hideBanner() {
    this.el.banner.hidden = true;
    this.el.bannerAction.onclick = null;
  }
}

/** Who is signed in (GET /admin/me), in the top bar. */
export function showWhoami(me, format) {
  const el = $("#whoami");
  el.textContent = me.subject;
  el.title = whoamiTitle(me, format);
}

/** Every "Sign out" button posts /auth/logout, then reloads /admin (which redirects to sign in). */
export function bindSignOut(api, beforeSignOut = () => {}) {
  for (const button of document.querySelectorAll("[data-action=sign-out]")) {
    button.addEventListener("click", async () => {
      beforeSignOut();
      try {
        await api.logout();
      } finally {
        window.location.assign("/admin");
      }
    });
  }
}

/** The sign-in page: the pasted access token becomes the session cookie. */
export function initSignIn(api) {
  const form = $("#signin-form");
  if (!form) return;
  const error = $("#signin-error");
  const input = $("#signin-token");
  const button = form.querySelector("button[type=submit]");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    error.hidden = true;
    if (!token) {
      error.textContent = "Paste an access token first.";
      error.hidden = false;
      return;
    }
    button.disabled = true;
    const failure = await api.signIn(token);
    button.disabled = false;
    if (failure === null) {
      window.location.assign("/admin");
      return;
    }
    error.textContent = failure;
    error.hidden = false;
  });
}

// The API the page calls, authenticated by the session cookie. No DOM; `fetch` is injected
// (the browser's by default) so the module runs under node's test runner too.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

const JSON_ACCEPT = { Accept: "application/json" };
const offerPath = (offerId) => `/offers/${encodeURIComponent(offerId)}`;

/**
 * `onSignedOut` runs when any call answers 401 (the session has ended); the call then
 * rejects with an ApiError whose code is "signed_out".
 */
export function createApi({ fetch = globalThis.fetch.bind(globalThis), onSignedOut = () => {} } = {}) {
  async function request(path, { method = "GET", signal, body, headers = {} } = {}) {
    let response;
    const init = { method, signal, credentials: "same-origin", headers: { ...JSON_ACCEPT, ...headers } };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = "application/json";
    }
    try {
      response = await fetch(path, init);
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

  return Object.freeze({
    request,
    me: () => request("/admin/me"),
    deals: (params) => request(`/deals?${params}`),
    offer: (offerId) => request(offerPath(offerId)),
    events: (offerId) => request(`${offerPath(offerId)}/events`),
    /** Decline ("decline") or withdraw ("withdraw") an open offer; body {reason} or none. */
    closeOffer: (offerId, kind, body) => request(`${offerPath(offerId)}/${kind}`, { method: "POST", body }),
    creator: (creatorId) => request(`/creators/${encodeURIComponent(creatorId)}`),
    stuckPayouts: () => request("/payouts?stuck=true"),
    /** Operators: retry a deal's failed payout (recipientId null: the last one's recipient). */
    retryPayout: (offerId, recipientId, idempotencyKey) =>
      request(`${offerPath(offerId)}/payout/retry`, {
        method: "POST",
        body: recipientId ? { recipient_id: recipientId } : {},
        headers: { "Idempotency-Key": idempotencyKey },
      }),
    /** Operators: ask to cancel a parked payout (202: the payouts worker decides). */
    cancelPayout: (payoutId, idempotencyKey) =>
      request(`/payouts/${encodeURIComponent(payoutId)}/cancel`, {
        method: "POST",
        headers: { "Idempotency-Key": idempotencyKey },
      }),

    /** Whether the session still holds: false on a 401, null when the server is unreachable.
     * (An EventSource closed by a 401 does not say why; the stream asks this.) */
    async sessionAlive() {
      try {
        const probe = await fetch("/admin/me", { credentials: "same-origin", headers: JSON_ACCEPT });
        return probe.status !== 401;
      } catch {
        return null;
      }
    },

    logout: () => fetch("/auth/logout", { method: "POST", credentials: "same-origin" }),

    /** Exchanges an access token for the session cookie; resolves to an error message or null. */
    async signIn(token) {
      let response;
      try {
        response = await fetch("/auth/session", {
          method: "POST",
          credentials: "same-origin",
          headers: { Authorization: `Bearer ${token}`, ...JSON_ACCEPT },
        });
      } catch {
        return "The server cannot be reached.";
      }
      if (response.ok) return null;
      const body = await response.json().catch(() => ({}));
      return body.message || `Sign-in failed (${response.status}).`;
    },
  });
}

/** The path of an offer's PDF (`termsheet` or `receipt`). */
export const documentPath = (offerId, kind) => `${offerPath(offerId)}/documents/${kind}`;

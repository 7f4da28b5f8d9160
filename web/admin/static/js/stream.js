// The live deals stream (SSE). No DOM: the browser objects it needs (EventSource, timers, the
// online/offline events) are injected, so node's test runner can drive it with fakes.
//
// Every error, whether the browser would retry by itself (network drop, server restart) or
// has given up (401/5xx answer), closes the EventSource and opens a new one with
// ?last_event_id=<last seq seen> after a backoff: a brand-new EventSource that has not
// received an id yet would otherwise resume from the server's head and miss changes.

export const STREAM_PATH = "/offers/events/deals";
export const RETRY_BASE_MS = 1000;
export const RETRY_MAX_MS = 30000;
const OPEN = 1; // EventSource.OPEN

/** The backoff before reconnection attempt `failures` (1, 2, …): 1 s, 2 s, 4 s … 30 s, ±20 %. */
export function retryDelay(failures, random = Math.random) {
  const base = Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** (failures - 1));
  return Math.round(base * (0.8 + random() * 0.4));
}

/** The stream's URL, resuming after `lastSeq` when there is one. */
export function streamUrl(origin, lastSeq) {
  const url = new URL(STREAM_PATH, origin);
  if (lastSeq !== null && lastSeq !== undefined) url.searchParams.set("last_event_id", String(lastSeq));
  return url;
}

/** The `ready` event's data ({head, resume_from}); {} when it is not JSON. */
export function parseReady(data) {
  try {
    const info = JSON.parse(data);
    return info && typeof info === "object" ? info : {};
  } catch {
    return {};
  }
}

/**
 * A `deal` event against the last sequence applied: { change, seq } to apply (seq is the new
 * last sequence, unchanged when the event carries none), or null (not JSON, or already applied).
 */
export function readChange(data, lastEventId, lastSeq) {
  let change;
  try {
    change = JSON.parse(data);
  } catch {
    return null;
  }
  const seq = Number(change?.seq ?? lastEventId);
  if (!Number.isFinite(seq)) return { change, seq: lastSeq };
  if (lastSeq !== null && seq <= lastSeq) return null;
  return { change, seq };
}

export class DealStream {
  /**
   * handlers: onState(kind), onReady(info), onChange(change), onSignedOut().
   * env: EventSource, origin, sessionAlive() (false: signed out), isOnline(), events (an
   * EventTarget with online/offline), setTimeout, clearTimeout, random, now.
   */
  constructor(handlers, env) {
    this.handlers = handlers;
    this.env = env;
    this.lastSeq = null;
    this.source = null;
    this.failures = 0;
    this.timer = null;
    this.stopped = false;
    this.retryAt = null;
  }

  start() {
    this.env.events?.addEventListener("online", () => this.retryNow());
    this.env.events?.addEventListener("offline", () => {
      // A stream that still delivers is live, whatever navigator.onLine says.
      if (!this.source || this.source.readyState !== OPEN) this.handlers.onState("offline");
    });
    this.open();
  }

  open() {
    if (this.stopped) return;
    this.env.clearTimeout(this.timer);
    this.timer = null;
    this.retryAt = null;
    this.close();
    const source = new this.env.EventSource(streamUrl(this.env.origin, this.lastSeq), { withCredentials: true });
    this.source = source;
    this.handlers.onState(this.failures ? "reconnecting" : "connecting");
    source.addEventListener("ready", (event) => {
      if (source !== this.source) return;
      const info = parseReady(event.data);
      if (this.lastSeq === null && Number.isFinite(info.resume_from)) this.lastSeq = info.resume_from;
      this.failures = 0;
      this.handlers.onState("live");
      this.handlers.onReady(info);
    });
    source.addEventListener("deal", (event) => {
      if (source !== this.source) return;
      const read = readChange(event.data, event.lastEventId, this.lastSeq);
      if (!read) return;
      this.lastSeq = read.seq;
      this.handlers.onChange(read.change);
    });
    source.addEventListener("error", () => {
      if (source !== this.source) return;
      this.fail();
    });
  }

  async fail() {
    this.close();
    this.failures += 1;
    if (!this.env.isOnline()) {
      this.handlers.onState("offline");
      return; // the "online" event reconnects
    }
    this.handlers.onState("reconnecting");
    // A 401 closes an EventSource without telling why: ask whether the session still holds.
    if (this.failures > 1 && (await this.env.sessionAlive()) === false) {
      this.stop();
      this.handlers.onSignedOut();
      return;
    }
    if (this.stopped || this.source) return; // stopped, or "Retry now" already reopened it
    const delay = retryDelay(this.failures, this.env.random);
    this.retryAt = this.env.now() + delay;
    this.handlers.onState("reconnecting");
    this.env.clearTimeout(this.timer);
    this.timer = this.env.setTimeout(() => this.open(), delay);
  }

  retryNow() {
    if (this.stopped) return;
    if (this.source && this.source.readyState === OPEN) return;
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
    this.env.clearTimeout(this.timer);
    this.close();
  }
}

/** The browser's environment for a DealStream. */
export function browserStreamEnv(sessionAlive) {
  return {
    EventSource: globalThis.EventSource,
    origin: globalThis.location.origin,
    sessionAlive,
    isOnline: () => globalThis.navigator.onLine !== false,
    events: globalThis,
    setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
    clearTimeout: (id) => globalThis.clearTimeout(id),
    random: Math.random,
    now: Date.now,
  };
}

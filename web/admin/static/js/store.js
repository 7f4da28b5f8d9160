// The page's state: every deal loaded or streamed, the filters, paging, the open deal and the
// statuses the server serves. Pure (no DOM): the views read it, main.js changes it.

export const PAGE_SIZE = 100;

/** Newest first: by creation time, then by the latest change. */
export function newestFirst(a, b) {
  const at = a.created_at || a.updated_at || "";
  const bt = b.created_at || b.updated_at || "";
  if (at !== bt) return at < bt ? 1 : -1;
  return (b.change_seq ?? 0) - (a.change_seq ?? 0);
}

/** The shareable part of the state, from a query string (`?status=&q=&offer=`). */
export function readQuery(search) {
  const params = new URLSearchParams(search);
  return { status: params.get("status") || "", search: params.get("q") || "", offer: params.get("offer") };
}

export class DealStore {
  constructor({ status = "", search = "" } = {}) {
    this.deals = new Map(); // offer_id -> deal
    this.statuses = []; // [{ value, label }] in lifecycle order, from GET /admin/me
    this.labels = new Map();
    this.status = status;
    this.search = search;
    this.selected = null;
    this.nextCursor = null;
    this.loading = false;
    this.loaded = false;
    this.loadError = null;
    this.generation = 0;
    this.signedOut = false;
  }

  /** The server's statuses; a status filter the server does not know is dropped. */
  setStatuses(statuses) {
    this.statuses = statuses.map(({ value, label }) => ({ value, label }));
    this.labels = new Map(this.statuses.map(({ value, label }) => [value, label]));
    if (this.status && !this.labels.has(this.status)) this.status = "";
  }

  statusLabel(value) {
    return this.labels.get(value);
  }

  matches(deal) {
    if (this.status && deal.status !== this.status) return false;
    const needle = this.search.trim().toLowerCase();
    if (!needle) return true;
    return [deal.offer_id, deal.creator_id].some((id) => id && String(id).toLowerCase().includes(needle));
  }

  /** The deals the filters let through, newest first. */
  visible() {
    return [...this.deals.values()].filter((deal) => this.matches(deal)).sort(newestFirst);
  }

  get size() {
    return this.deals.size;
  }

  deal(offerId) {
    return this.deals.get(offerId) ?? null;
  }

  /** Stores a deal unless what we hold is already newer (change_seq); returns whether it did. */
  merge(deal) {
    if (!deal || !deal.offer_id) return false;
    const known = this.deals.get(deal.offer_id);
    if (known && known.change_seq != null && deal.change_seq != null && deal.change_seq <= known.change_seq) {
      return false;
    }
    this.deals.set(deal.offer_id, deal);
    return true;
  }

  /** A `deal` event from the stream: { deal, isNew } when it changed what we hold, else null. */
  applyChange(change) {
    const deal = change?.deal;
    if (!deal || !deal.offer_id) return null;
    const stored = deal.change_seq == null ? { ...deal, change_seq: change.seq } : deal;
    const isNew = !this.deals.has(deal.offer_id);
    return this.merge(stored) ? { deal: stored, isNew } : null;
  }

  /** Starts loading a page (the first one on reset); returns the load's generation. */
  beginLoad({ reset }) {
    this.generation += 1;
    if (reset) {
      this.deals.clear();
      this.nextCursor = null;
      this.loaded = false;
    }
    this.loading = true;
    this.loadError = null;
    return this.generation;
  }

  /** The GET /deals query for the next page. */
  pageQuery({ reset }) {
    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (this.status) params.set("status", this.status);
    if (!reset && this.nextCursor !== null && this.nextCursor !== undefined) {
      params.set("cursor", String(this.nextCursor));
    }
    return params;
  }

  /** Ends a load with its page or its error; false (and nothing changes) when it was superseded. */
  endLoad(generation, { page = null, error = null } = {}) {
    if (generation !== this.generation) return false;
    if (error) {
      this.loadError = error;
    } else {
      for (const deal of page.deals) this.merge(deal);
      this.nextCursor = page.next_cursor;
      this.loaded = true;
    }
    this.loading = false;
    return true;
  }

  get hasMore() {
    return this.nextCursor !== null && this.nextCursor !== undefined;
  }

  /** The query string that describes this view (`status`, `q`, `offer`), "" when none. */
  toQuery() {
    const params = new URLSearchParams();
    if (this.status) params.set("status", this.status);
    if (this.search.trim()) params.set("q", this.search.trim());
    if (this.selected) params.set("offer", this.selected);
    const query = params.toString();
    return query ? `?${query}` : "";
  }
}

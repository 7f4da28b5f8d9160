// SpaceMusic admin: the deals page. Plain ES modules, no build step. This module wires the
// pieces together: the store (state), the API, the stream, and the views (table, drawer,
// connection), and keeps the URL in step with the view.
//
// Data: GET /deals (the session cookie authenticates), live changes from the SSE stream
// GET /offers/events/deals, a deal's history from GET /offers/{id}/events, who is signed in,
// the statuses and the currency exponents from GET /admin/me.

import { createApi } from "./api.js";
import { Drawer } from "./drawer.js";
import { refreshTimes } from "./dom.js";
import { createFormat } from "./format.js";
import { StuckPanel } from "./payouts.js";
import { bindSignOut, ConnectionView, initSignIn, showWhoami } from "./session.js";
import { DealStore, readQuery } from "./store.js";
import { browserStreamEnv, DealStream } from "./stream.js";
import { DealsTable } from "./table.js";

const READY_WAIT_MS = 4000;
const RELATIVE_TIME_REFRESH_MS = 15000;
const locale = navigator.language || "en-GB";
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function startDealsPage() {
  const query = readQuery(window.location.search);
  const store = new DealStore({ status: query.status, search: query.search });
  let format = createFormat({ locale });
  let stream = null;
  const connection = new ConnectionView(() => stream);

  function signedOut() {
    if (store.signedOut) return;
    store.signedOut = true;
    stream?.stop();
    connection.signedOut();
  }

  const api = createApi({ onSignedOut: signedOut });
  const syncUrl = () => window.history.replaceState(null, "", `${window.location.pathname}${store.toQuery()}`);

  async function loadDeals({ reset }) {
    const params = store.pageQuery({ reset });
    const generation = store.beginLoad({ reset });
    table.render();
    let outcome;
    try {
      outcome = { page: await api.deals(params) };
    } catch (error) {
      outcome = { error };
    }
    if (!store.endLoad(generation, outcome)) return; // a newer load took over
    table.render();
    drawer.render();
  }

  function setStatus(status) {
    store.status = status;
    syncUrl();
    loadDeals({ reset: true });
  }

  const table = new DealsTable({
    store,
    format,
    handlers: {
      onOpen: (offerId, button) => drawer.open(offerId, button),
      onSearch: (text) => {
        store.search = text;
        syncUrl();
        table.render();
      },
      onStatus: setStatus,
      onRefresh: () => loadDeals({ reset: true }),
      onLoadMore: () => loadDeals({ reset: false }),
      onRetry: () => loadDeals({ reset: true }),
      onClearFilters: () => {
        const hadStatus = Boolean(store.status);
        store.search = "";
        store.status = "";
        table.showFilters();
        if (hadStatus) {
          setStatus("");
        } else {
          syncUrl();
          table.render();
        }
      },
    },
  });
  const drawer = new Drawer({
    store,
    api,
    format,
    handlers: {
      onSelect: (offerId) => {
        table.markSelected(offerId);
        syncUrl();
      },
      rowButton: (offerId) => table.rowButton(offerId),
    },
  });

  async function loadMe() {
    try {
      const me = await api.me();
      store.setStatuses(me.statuses || []);
      if (me.currency_exponents) {
        format = createFormat({ locale, exponents: me.currency_exponents });
        table.setFormat(format);
        drawer.setFormat(format);
      }
      drawer.setPermissions(me.permissions);
      showWhoami(me, format);
    } catch {
      // Formatting falls back to Intl; a 401 has already switched the page to "signed out".
      store.setStatuses([]);
    }
    table.showStatuses();
  }

  // Operators: the payouts neither paid nor refused, refreshed on deal changes and a timer.
  const stuck = new StuckPanel({
    api,
    root: document.getElementById("stuck-payouts"),
    onOpen: (offerId) => drawer.open(offerId, null),
  });

  function applyChange(change) {
    const result = store.applyChange(change);
    if (!result) return;
    stuck.dealChanged();
    table.upsert(result.deal, result.isNew);
    if (store.selected === result.deal.offer_id) drawer.dealChanged();
  }

  bindSignOut(api, () => stream?.stop());
  table.render();
  setInterval(() => refreshTimes(format), RELATIVE_TIME_REFRESH_MS); // "3 minutes ago" stays current

  let markReady;
  const ready = new Promise((resolve) => {
    markReady = resolve;
  });
  stream = new DealStream(
    { onState: (kind) => connection.show(kind), onReady: () => markReady(), onChange: applyChange, onSignedOut: signedOut },
    browserStreamEnv(() => api.sessionAlive()),
  );
  stream.start();

  // Inspection hook for operators and the browser test (a read-only view of the live state).
  window.spacemusicAdmin = Object.freeze({
    get lastSeq() {
      return stream.lastSeq;
    },
    get connection() {
      return connection.state;
    },
    deal: (offerId) => store.deal(offerId),
  });

  // Position the stream first (it starts at the server's head), then load the list: a change
  // landing in between arrives on the stream, and the per-deal change_seq keeps whichever
  // copy is newer.
  return (async () => {
    await Promise.all([loadMe(), Promise.race([ready, sleep(READY_WAIT_MS)])]);
    await loadDeals({ reset: true });
    stuck.start();
    if (query.offer) drawer.open(query.offer, null);
  })();
}

function start() {
  const view = document.body.dataset.view;
  if (view === "deals") startDealsPage();
  else {
    const api = createApi();
    bindSignOut(api);
    if (view === "signin") initSignIn(api);
  }
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();

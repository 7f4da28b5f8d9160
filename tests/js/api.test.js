import assert from "node:assert/strict";
import { test } from "node:test";

import { ApiError, createApi, documentPath } from "../../web/admin/static/js/api.js";

const reply = (status, body, statusText = "") => ({
  status,
  statusText,
  ok: status >= 200 && status < 300,
  json: async () => {
    if (body === undefined) throw new SyntaxError("not JSON");
    return body;
  },
});

function fakeFetch(responses) {
  const calls = [];
  const fetch = async (path, init) => {
    calls.push({ path, init });
    const next = responses.shift();
    if (next instanceof Error) throw next;
    return next;
  };
  return { fetch, calls };
}

test("a call sends the cookie and asks for JSON", async () => {
  const { fetch, calls } = fakeFetch([reply(200, { deals: [] })]);
  const api = createApi({ fetch });
  assert.deepEqual(await api.deals(new URLSearchParams({ limit: "100" })), { deals: [] });
  assert.equal(calls[0].path, "/deals?limit=100");
  assert.equal(calls[0].init.credentials, "same-origin");
  assert.equal(calls[0].init.headers.Accept, "application/json");
});

test("paths are encoded", async () => {
  const { fetch, calls } = fakeFetch([reply(200, {}), reply(200, {})]);
  const api = createApi({ fetch });
  await api.offer("a/b");
  await api.events("a b");
  assert.deepEqual(calls.map((c) => c.path), ["/offers/a%2Fb", "/offers/a%20b/events"]);
  assert.equal(documentPath("x?y", "receipt"), "/offers/x%3Fy/documents/receipt");
});

test("errors: the API's JSON error, a bare status, the network, a 401", async () => {
  let signedOut = 0;
  const { fetch } = fakeFetch([
    reply(404, { error: "not_found", message: "no such offer" }),
    reply(502, undefined, "Bad Gateway"),
    new TypeError("Failed to fetch"),
    reply(401, {}),
  ]);
  const api = createApi({ fetch, onSignedOut: () => (signedOut += 1) });
  await assert.rejects(api.offer("x"), (e) => e instanceof ApiError && e.status === 404 && e.code === "not_found" && e.message === "no such offer");
  await assert.rejects(api.offer("x"), { status: 502, code: "http_502", message: "502 Bad Gateway" });
  await assert.rejects(api.offer("x"), { status: 0, code: "network" });
  await assert.rejects(api.me(), { status: 401, code: "signed_out" });
  assert.equal(signedOut, 1);
});

test("sessionAlive: false only on a 401", async () => {
  const { fetch } = fakeFetch([reply(401), reply(200, {}), reply(503), new TypeError("down")]);
  const api = createApi({ fetch });
  assert.deepEqual([await api.sessionAlive(), await api.sessionAlive(), await api.sessionAlive(), await api.sessionAlive()], [false, true, true, null]);
});

test("signIn posts the token once as a bearer and reports the failure", async () => {
  const { fetch, calls } = fakeFetch([reply(204), reply(401, { message: "invalid token" }), reply(500), new TypeError("x")]);
  const api = createApi({ fetch });
  assert.equal(await api.signIn("tok"), null);
  assert.equal(calls[0].path, "/auth/session");
  assert.equal(calls[0].init.method, "POST");
  assert.equal(calls[0].init.headers.Authorization, "Bearer tok");
  assert.equal(await api.signIn("bad"), "invalid token");
  assert.equal(await api.signIn("bad"), "Sign-in failed (500).");
  assert.equal(await api.signIn("bad"), "The server cannot be reached.");
});

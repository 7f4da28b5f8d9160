import assert from "node:assert/strict";
import { test } from "node:test";

import { DealStream, parseReady, readChange, retryDelay, streamUrl } from "../../web/admin/static/js/stream.js";

test("the backoff doubles from 1 s to 30 s, with ±20 % jitter", () => {
  const mid = () => 0.5;
  assert.deepEqual([1, 2, 3, 4, 5, 6, 7, 12].map((n) => retryDelay(n, mid)), [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
  assert.equal(retryDelay(1, () => 0), 800);
  assert.equal(retryDelay(1, () => 1), 1200);
  assert.equal(retryDelay(9, () => 0.999999), 36000);
});

test("the stream URL resumes after the last sequence", () => {
  assert.equal(String(streamUrl("http://h:1", null)), "http://h:1/offers/events/deals");
  assert.equal(String(streamUrl("http://h:1", 0)), "http://h:1/offers/events/deals?last_event_id=0");
  assert.equal(String(streamUrl("http://h:1", 57)), "http://h:1/offers/events/deals?last_event_id=57");
});

test("ready and deal events", () => {
  assert.deepEqual(parseReady('{"head":9,"resume_from":9}'), { head: 9, resume_from: 9 });
  assert.deepEqual(parseReady("nope"), {});
  assert.deepEqual(parseReady("null"), {});
  assert.deepEqual(readChange('{"seq":5,"deal":{}}', "5", 4), { change: { seq: 5, deal: {} }, seq: 5 });
  assert.equal(readChange('{"seq":4}', "4", 4), null, "already applied");
  assert.equal(readChange("not json", "6", 4), null);
  assert.deepEqual(readChange('{"deal":{}}', "7", 4), { change: { deal: {} }, seq: 7 }, "the SSE id as fallback");
  assert.deepEqual(readChange('{"seq":2}', "", null), { change: { seq: 2 }, seq: 2 });
});

// --- the connection, driven with a fake EventSource and fake timers ----------------------------

class FakeSource {
  static opened = [];
  constructor(url) {
    this.url = String(url);
    this.readyState = 0;
    this.listeners = {};
    this.closed = false;
    FakeSource.opened.push(this);
  }
  addEventListener(type, fn) {
    (this.listeners[type] ||= []).push(fn);
  }
  emit(type, data, lastEventId = "") {
    if (type === "ready") this.readyState = 1;
    for (const fn of this.listeners[type] || []) fn({ data, lastEventId });
  }
  close() {
    this.closed = true;
    this.readyState = 2;
  }
}

function harness({ alive = true, online = true } = {}) {
  FakeSource.opened = [];
  const log = { states: [], changes: [], signedOut: 0, ready: 0 };
  const timers = [];
  const env = {
    EventSource: FakeSource,
    origin: "http://app",
    sessionAlive: async () => alive,
    isOnline: () => online,
    events: new EventTarget(),
    setTimeout: (fn, ms) => timers.push({ fn, ms }) - 1,
    clearTimeout: () => {},
    random: () => 0.5,
    now: () => 1000,
  };
  const stream = new DealStream(
    {
      onState: (s) => log.states.push(s),
      onReady: () => (log.ready += 1),
      onChange: (c) => log.changes.push(c.seq),
      onSignedOut: () => (log.signedOut += 1),
    },
    env,
  );
  const last = () => FakeSource.opened.at(-1);
  return { stream, log, timers, env, last };
}

test("after a drop the stream reopens with ?last_event_id and skips what it has applied", async () => {
  const { stream, log, timers, last } = harness();
  stream.start();
  assert.equal(last().url, "http://app/offers/events/deals");
  last().emit("ready", '{"head":10,"resume_from":10}');
  assert.equal(stream.lastSeq, 10);
  last().emit("deal", '{"seq":11,"deal":{}}', "11");
  last().emit("deal", '{"seq":11,"deal":{}}', "11");
  assert.deepEqual(log.changes, [11]);

  const dropped = last();
  dropped.emit("error"); // the EventSource reports the drop
  await new Promise(setImmediate);
  assert.equal(dropped.closed, true);
  assert.deepEqual(timers.map((t) => t.ms), [1000]);
  assert.equal(stream.retryAt, 2000);
  timers[0].fn();
  assert.equal(last().url, "http://app/offers/events/deals?last_event_id=11");
  assert.deepEqual(log.states, ["connecting", "live", "reconnecting", "reconnecting", "reconnecting"]);
  last().emit("deal", '{"seq":12,"deal":{}}', "12");
  assert.deepEqual(log.changes, [11, 12]);
  dropped.emit("deal", '{"seq":13,"deal":{}}', "13"); // a closed source is ignored
  assert.deepEqual(log.changes, [11, 12]);
});

test("repeated failures back off, and a 401 on /admin/me stops the stream as signed out", async () => {
  const { stream, log, timers, last } = harness({ alive: false });
  stream.start();
  await stream.fail();
  assert.deepEqual(timers.map((t) => t.ms), [1000], "the first failure does not ask");
  timers[0].fn();
  await stream.fail();
  assert.equal(log.signedOut, 1);
  assert.equal(stream.stopped, true);
  assert.equal(last().closed, true);
  stream.retryNow();
  assert.equal(FakeSource.opened.length, 2, "a stopped stream stays closed");
});

test("a live session keeps retrying, each wait longer", async () => {
  const { stream, timers } = harness({ alive: true });
  stream.start();
  for (let i = 0; i < 3; i += 1) {
    await stream.fail();
    timers.at(-1).fn();
  }
  assert.deepEqual(timers.map((t) => t.ms), [1000, 2000, 4000]);
});

test("offline waits for the online event, then reconnects at once", async () => {
  const h = harness({ online: false });
  h.stream.start();
  await h.stream.fail();
  assert.equal(h.log.states.at(-1), "offline");
  assert.equal(h.timers.length, 0);
  h.env.events.dispatchEvent(new Event("online"));
  assert.equal(FakeSource.opened.length, 2);
  assert.equal(h.log.states.at(-1), "reconnecting");
});

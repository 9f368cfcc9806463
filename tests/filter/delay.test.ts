// Delay rules (nginx limit_req with delay; docs/rules.md): a request over the soft limit is held and
// released from the root context's tick, spaced to the rule's rate; past delay.max it is denied, past the
// `then` limit the client is banned; a held stream that ends leaves nothing behind.
import { test } from "node:test";
import assert from "node:assert/strict";
import { type Host, type HttpStream, type RequestOptions } from "../emulator/emulator.ts";
import { start, assertPassed, assertDenied, assertHostClean, bans, ruleMetric } from "./helpers.ts";

const C = { peer: "198.51.100.7:4000" } satisfies RequestOptions;

/** 10 requests a second (one token every 100 ms), held at most 1 s; hard limit 30 a second, then a 1-minute ban. */
const SLOW = {
  name: "slow-down",
  take: { request: {} },
  limit: { requests: 10, per: "1s" },
  delay: { max: "1s" },
  then: { limit: { requests: 30, per: "1s" }, ban: "1m" },
};

/** The root context's tick period while nothing is held (index.ts, the ban cache's lift check). */
const IDLE_TICK = 1000;

const metric = (h: Host, kind: "denied" | "bans" | "delayed" | "delayed_ms") => h.metrics.get(ruleMetric("slow-down", kind));

/** Moves the clock in 5 ms steps for `ms`, delivering a tick whenever the module's tick period is 5 ms. */
function run(h: Host, ms: number): void {
  for (let t = 0; t < ms; t += 5) {
    h.clock.advance(5);
    if (h.vm(0).tickPeriodMs === 5) h.vm(0).tick();
  }
}

test("requests over a delay rule's limit are held and released by the tick, spaced to the rule's rate, in order", async () => {
  const h = await start({ rules: { custom: [SLOW] } });
  for (let i = 0; i < 10; i++) assertPassed(h.vm(0).send(C), `burst ${i}`);
  assert.equal(h.vm(0).tickPeriodMs, IDLE_TICK, "the usual tick while nothing is held");
  const held: HttpStream[] = [];
  for (let i = 0; i < 5; i++) held.push(h.vm(0).request(C));
  assert.ok(held.every((s) => s.paused), "the five requests over the limit are held, not denied");
  assert.equal(h.vm(0).tickPeriodMs, 5, "a fast tick while requests are held");
  const releasedAt: number[] = [];
  const t0 = h.clock.nowMs;
  for (let step = 0; step < 120 && held.some((s) => s.paused); step++) {
    h.clock.advance(5);
    h.vm(0).tick();
    for (const s of held) if (s.passed && releasedAt.length < held.indexOf(s) + 1) releasedAt.push(h.clock.nowMs - t0);
  }
  assert.deepEqual(releasedAt, [100, 200, 300, 400, 500], "one request per token, every 100 ms");
  assert.deepEqual(h.vm(0).continues, held.map((s) => s.contextId), "released in arrival order");
  for (const s of held) s.respond(200);
  assert.equal(metric(h, "delayed"), 5);
  assert.equal(metric(h, "delayed_ms"), 100 + 200 + 300 + 400 + 500);
  assert.equal(metric(h, "denied"), 0);
  h.vm(0).tick();
  assert.equal(h.vm(0).tickPeriodMs, IDLE_TICK, "back to the usual tick once nothing is held");
  assertHostClean(h);
});

test("a request that would wait longer than delay.max is denied, and the then limit bans", async () => {
  const h = await start({ rules: { custom: [SLOW] } });
  for (let i = 0; i < 10; i++) assertPassed(h.vm(0).send(C));
  const held: HttpStream[] = [];
  for (let i = 0; i < 10; i++) held.push(h.vm(0).request(C)); // waits 100 ms ... 1000 ms
  assert.ok(held.every((s) => s.paused));
  const over = h.vm(0).request(C); // would wait 1100 ms
  assert.equal(assertDenied(over).details, "traffic_guard_rule");
  assert.equal(metric(h, "denied"), 1);
  // 21 of the 30 hard tokens are spent (held and denied requests count); the 31st request bans.
  for (let i = 0; i < 9; i++) assertDenied(h.vm(0).request(C), 403, `over delay.max ${i}`);
  assert.equal(bans(h).length, 0);
  assertDenied(h.vm(0).request(C), 403, "the 31st request in a second");
  assert.deepEqual(bans(h).map((b) => [b.rule, b.limit, b.per, b.seconds]), [["slow-down", 30, "1s", 60]]);
  assert.equal(metric(h, "bans"), 1);
  // The held requests are still released (they were admitted before the ban).
  run(h, 1000);
  assert.ok(held.every((s) => s.passed));
  for (const s of held) s.respond(200);
  assertHostClean(h);
});

test("a held request whose client goes away is forgotten: no release, no leak, the tick stops", async () => {
  const h = await start({ rules: { custom: [SLOW] } });
  for (let i = 0; i < 10; i++) h.vm(0).send(C);
  const gone = h.vm(0).request(C);
  const kept = h.vm(0).request(C);
  assert.ok(gone.paused && kept.paused);
  gone.finish(); // the client reset the stream: proxy_on_done, proxy_on_log, proxy_on_delete
  run(h, 300);
  assert.deepEqual(h.vm(0).continues, [kept.contextId], "only the live stream is continued");
  kept.respond(200);
  assert.equal(metric(h, "delayed"), 1);
  // Many streams reset while held leave the queue empty again: a full queue would let requests through.
  for (let round = 0; round < 3; round++) {
    h.clock.advance("2s");
    for (let i = 0; i < 10; i++) h.vm(0).send(C);
    const streams = Array.from({ length: 10 }, () => h.vm(0).request(C));
    assert.ok(streams.every((s) => s.paused), `round ${round}: held`);
    for (const s of streams) s.finish();
  }
  h.vm(0).tick();
  assert.equal(h.vm(0).tickPeriodMs, IDLE_TICK, "nothing held: back to the usual tick");
  assert.deepEqual(h.vm(0).continues, [kept.contextId]);
  assertHostClean(h);
});

test("dry-run never holds a request", async () => {
  const h = await start({ mode: "dry-run", rules: { custom: [SLOW] } });
  for (let i = 0; i < 15; i++) assertPassed(h.vm(0).send(C), `request ${i}`);
  assert.equal(h.vm(0).tickPeriodMs, IDLE_TICK);
  assertHostClean(h);
});

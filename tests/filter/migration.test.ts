// Capacity changes at the largest capacity: configure only records the new geometry, requests drain
// the old sets in bounded slices, and no ban lapses on the way (see assembly/table.ts).
import { test } from "node:test";
import assert from "node:assert/strict";
import { Host } from "../emulator/emulator.ts";
import { M, cfg, rateRule, assertDenied, assertPassed, assertHostClean, tableKeys } from "./helpers.ts";

const conf = (capacity: number) => cfg({ capacity, rules: { rate: rateRule(1, "24h", "1h") } });

function sharedCalls(h: Host): number {
  const c = h.vm(0).importCalls;
  return (c.get("proxy_get_shared_data") ?? 0) + (c.get("proxy_set_shared_data") ?? 0);
}

test("shrinking from the maximum capacity (1 048 576) to 1024 does bounded work per callback and keeps every ban", async (t) => {
  const h = await Host.start({ config: conf(1 << 20) });
  const banned = Array.from({ length: 200 }, (_, i) => `198.51.${100 + (i >> 8)}.${i & 255}:1`);
  for (const peer of banned) {
    assertPassed(h.vm(0).send({ peer }));
    assertDenied(h.vm(0).send({ peer }), 403, `ban ${peer}`);
  }
  for (let i = 0; i < 2000; i++) h.vm(0).send({ peer: `100.64.${i >> 8}.${i & 255}:1` });
  const oldKeys = tableKeys(h).length;

  let calls = sharedCalls(h);
  let t0 = performance.now();
  assert.ok(h.vm(0).configure(conf(1024)));
  const configureMs = performance.now() - t0;
  const configureCalls = sharedCalls(h) - calls;
  // The table's meta read and CAS, and the ban cache's lift-generation read (assembly/ban-cache.ts).
  assert.ok(configureCalls <= 3, `configure made ${configureCalls} shared-data calls (meta read, meta CAS, lift generation)`);

  // Banned clients come back first: each request merges its own old set before anything else.
  for (const peer of banned.slice(0, 50)) assertDenied(h.vm(0).send({ peer }), 403, `${peer} during the migration`);

  let maxCalls = 0;
  let requests = 0;
  t0 = performance.now();
  const done = () => h.logs.some((l) => /capacity change complete/.test(l.text));
  while (!done()) {
    calls = sharedCalls(h);
    h.vm(0).send({ peer: `203.0.${(requests >> 8) & 255}.${requests & 255}:1` });
    maxCalls = Math.max(maxCalls, sharedCalls(h) - calls);
    requests++;
    assert.ok(requests <= 20_000, "the migration completes within 20 000 requests");
  }
  const drainMs = performance.now() - t0;
  // A slice: 8 old sets (+ the client's own) x (1 read + 8 records x (read + write) + 1 emptying write),
  // plus the client's own read and write, the meta read and the completing CAS.
  assert.ok(maxCalls <= 9 * 18 + 8, `at most ${9 * 18 + 8} shared-data calls per request, saw ${maxCalls}`);
  for (const peer of banned) assertDenied(h.vm(0).send({ peer }), 403, `${peer} after the migration`);
  assert.equal(h.metrics.get(M.tracked), 1024, "the new table is full and the gauge matches it");
  const line = h.logs.find((l) => /capacity change complete/.test(l.text))!.text;
  t.diagnostic(
    `${oldKeys} old keys (131072 sets); configure: ${configureCalls} shared-data calls, ${configureMs.toFixed(1)} ms; ` +
      `drain: ${requests} requests, max ${maxCalls} shared-data calls per request, ${drainMs.toFixed(0)} ms (emulator); ${line}`,
  );
  assertHostClean(h);
});

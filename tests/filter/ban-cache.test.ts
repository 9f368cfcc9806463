// The per-worker ban cache (assembly/ban-cache.ts): a banned client is denied without a shared-data
// call, a ban ends on time, and a lift announced through the generation counter reaches every worker
// on its next tick.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { Host } from "../emulator/emulator.ts";
import { M, cfg, start, rateRule, assertDenied, assertPassed, assertHostClean, tableKeys } from "./helpers.ts";

const PEER = { peer: "203.0.113.7:4000" };
const LIFTS_KEY = "traffic-guard/traffic-guard/lifts";

function sharedGets(h: Host, vm = 0): number {
  return h.vm(vm).importCalls.get("proxy_get_shared_data") ?? 0;
}

// Empties every table set, as a lifted decision would clear the client's ban (without telling the caches).
function clearTable(h: Host): void {
  for (const key of tableKeys(h)) h.store.set(key, new Uint8Array(h.store.valueSize(key)!), 0);
}

// Bumps the lift generation the way ban-cache.ts noteBanLifted does.
function announceLift(h: Host): void {
  const old = h.store.get(LIFTS_KEY);
  const g = old ? new DataView(old.value.buffer, old.value.byteOffset).getBigUint64(0, true) : 0n;
  const v = new Uint8Array(8);
  new DataView(v.buffer).setBigUint64(0, g + 1n, true);
  h.store.set(LIFTS_KEY, v, 0);
}

const CONFIG = { rules: { rate: rateRule(1, "1m", "10m") } };

async function banned(): Promise<Host> {
  const h = await start(CONFIG);
  assertPassed(h.vm(0).send(PEER));
  assertDenied(h.vm(0).send(PEER), 403, "the second request starts the ban");
  return h;
}

test("a banned client's later requests are denied without a shared-data call", async () => {
  const h = await banned();
  const before = sharedGets(h);
  for (let i = 0; i < 20; i++) assertDenied(h.vm(0).send(PEER), 403, `request ${i} while banned`);
  assert.equal(sharedGets(h) - before, 0, "no shared-data read on the block path once the ban is cached");
  assert.equal(h.metrics.get(M.deniedBanned), 20, "the 20 requests after the one that started the ban (counted as denied_rate)");
  const r = h.vm(0).send(PEER);
  assert.ok(Number(r.localReply!.headers.find(([k]) => k === "retry-after")![1]) > 590, "retry-after still counts down from the cached ban end");
  assertHostClean(h);
});

test("a cached ban ends exactly when the ban in shared data does", async () => {
  const h = await banned();
  h.clock.advance("9m59s");
  assertDenied(h.vm(0).send(PEER), 403, "one second before the end");
  h.clock.advance("1s");
  assertPassed(h.vm(0).send(PEER), "the ban has ended and the bucket refilled");
  assertHostClean(h);
});

test("without an announced lift, a worker keeps denying from its cache; after one, every worker lets the client through on its next tick", async () => {
  const h = await banned();
  assert.ok(h.addVm().configure(cfg(CONFIG)));
  assertDenied(h.vm(1).send(PEER), 403, "the second worker reads the ban from shared data and caches it");
  clearTable(h);
  assertDenied(h.vm(0).send(PEER), 403, "not yet announced: still cached");
  announceLift(h);
  assertDenied(h.vm(0).send(PEER), 403, "announced, but this worker has not ticked yet");
  h.vm(0).tick();
  h.vm(1).tick();
  assertPassed(h.vm(1).send(PEER), "worker 1 after its tick");
  clearTable(h); // the request above spent the client's only token
  assertPassed(h.vm(0).send(PEER), "worker 0 after its tick");
  assertHostClean(h);
});

test("a reconfigure starts with an empty ban cache", async () => {
  const h = await banned();
  clearTable(h);
  assertDenied(h.vm(0).send(PEER), 403, "cached");
  assert.ok(h.vm(0).configure(cfg(CONFIG)));
  assertPassed(h.vm(0).send(PEER), "the cache was emptied by the reconfigure and the table has no ban");
  assertHostClean(h);
});

test("the filter asks for a tick, so lifts reach the cache", async () => {
  const h = await start();
  assert.ok(h.vm(0).tickPeriodMs > 0 && h.vm(0).tickPeriodMs <= 1000, `tick period ${h.vm(0).tickPeriodMs} ms`);
  h.vm(0).tick();
  assertHostClean(h);
});

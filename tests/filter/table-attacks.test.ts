// Attacks on the client table itself: colluding addresses aimed at a banned client's set, and two
// traffic-guard plugins sharing one proxy's shared data.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Host } from "../emulator/emulator.ts";
import { aimedAt } from "./unkeyed-hash.ts";
import { M, cfg, rateRule, assertPassed, assertDenied, assertHostClean, isTableKeyOf, keyPrefixOf, CLOCK_KEY } from "./helpers.ts";

/** The shared-data keys a request wrote. */
function keysWrittenBy(h: Host, send: () => void): string[] {
  const snap = h.store.snapshot();
  send();
  return h.store.changedSince(snap);
}

test("eight addresses aimed with the unkeyed hash at a banned client's set and banned themselves do not lift its ban", async (t) => {
  const h = await Host.start({ config: cfg({ capacity: 1024, rules: { rate: rateRule(1, "24h", "1h") } }) });
  const target = "198.51.100.7";
  const send = (a: string) => h.vm(0).send({ peer: `${a}:1` });
  const [targetKey] = keysWrittenBy(h, () => assertPassed(send(target)));
  assertDenied(send(target), 403, "the target is banned");

  const aimed = aimedAt(target, 8, 1024 / 8);
  let landed = 0;
  for (const a of aimed) {
    const keys = keysWrittenBy(h, () => send(a));
    if (keys.includes(targetKey)) landed++;
    assertDenied(send(a), 403, `${a} gets itself banned`);
  }
  t.diagnostic(`${landed} of 8 aimed addresses landed in the target's set`);
  assert.ok(landed < 8, "the keyed hash does not put all eight aimed addresses into the target's set");
  assertDenied(send(target), 403, "the target is still banned after eight bans aimed at its set");
  assert.equal(h.metrics.get(M.deniedBanned), 1, "denied as banned (not re-judged as a new client)");
  assertHostClean(h);
});

test("every worker of a process uses the same hash secret, kept in the meta key, and a new process draws another", async () => {
  const conf = cfg({ capacity: 1024, rules: { rate: rateRule(1, "24h", "1h") } });
  const h = await Host.start({ config: conf, vms: 2 });
  const peers = Array.from({ length: 40 }, (_, i) => `192.0.2.${i + 1}:1`);
  const setOn = (vm: number, peer: string) => keysWrittenBy(h, () => h.vm(vm).send({ peer }))[0];
  for (const p of peers) assert.equal(setOn(0, p), setOn(1, p) ?? setOn(0, p), `${p}: both workers use one set`);
  for (const p of peers) assertDenied(h.vm(1).send({ peer: p }), 403, `${p} banned on worker 1 too`);
  const meta = h.store.get(keyPrefixOf("traffic-guard") + "meta")!.value;
  assert.equal(meta.length, 24, "meta: set count, and the 128-bit secret");

  const other = await Host.start({ config: conf, randomSeed: 12345n });
  const otherMeta = other.store.get(keyPrefixOf("traffic-guard") + "meta")!.value;
  assert.notDeepEqual(otherMeta.subarray(8), meta.subarray(8), "another process (other random bytes from the host) has another secret");
});

test("two traffic-guard plugins in one proxy keep separate tables and neither moves the other's on a capacity change", async () => {
  const a = Host.load({ rootId: "ns-a.traffic-guard" });
  const b = Host.load({ rootId: "ns-b.traffic-guard" });
  // Envoy gives both plugins (same vm_id, none set by Istio) one shared-data store.
  Object.defineProperty(b, "store", { value: a.store });
  assert.ok(a.vm(0).configure(cfg({ capacity: 1024, rules: { rate: rateRule(1, "24h", "1h") } })));
  assert.ok(b.vm(0).configure(cfg({ mode: "dry-run", capacity: 2048, rules: { rate: rateRule(100, "1m", "1m") } })));
  const C = { peer: "198.51.100.9:1" };
  assertPassed(a.vm(0).send(C));
  assertDenied(a.vm(0).send(C), 403, "banned by plugin A");
  for (let i = 0; i < 5; i++) assertPassed(b.vm(0).send(C), "plugin B has its own record, far from its limit");
  assert.equal(b.metrics.get(M.wouldDeny), 0, "plugin B does not see plugin A's ban");

  const keys = a.store.keys();
  assert.ok(keys.every((k) => isTableKeyOf("ns-a.traffic-guard", k) || isTableKeyOf("ns-b.traffic-guard", k) || k.endsWith("/meta") || k === CLOCK_KEY));
  const aKeys = keys.filter((k) => isTableKeyOf("ns-a.traffic-guard", k));
  const before = new Map(aKeys.map((k) => [k, a.store.get(k)!.cas]));
  assert.ok(b.vm(0).configure(cfg({ mode: "dry-run", capacity: 4096, rules: { rate: rateRule(100, "1m", "1m") } })));
  for (const [k, cas] of before) assert.equal(a.store.get(k)!.cas, cas, `${k}: plugin B's capacity change left plugin A's keys alone`);
  assert.ok(!b.logs.some((l) => /moved 0 of/.test(l.text)), "plugin B moved only its own records");
  assertDenied(a.vm(0).send(C), 403, "plugin A's ban survives plugin B's reconfiguration");
  assert.ok(a.vm(0).configure(cfg({ capacity: 2048, rules: { rate: rateRule(1, "24h", "1h") } })));
  assertDenied(a.vm(0).send(C), 403, "and its own capacity change");
  assertPassed(b.vm(0).send(C), "plugin B still passes C");
});

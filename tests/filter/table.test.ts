// The bounded client table in shared data: fixed keys, bounded bytes, replacement policy, evictions.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Host, type RequestOptions } from "../emulator/emulator.ts";
import { M, cfg, start, tableKeys, TABLE_KEY, rateRule, assertPassed, assertDenied, assertHostClean, bans } from "./helpers.ts";

const KEY_RE = TABLE_KEY;

/** The i-th of many distinct client addresses (IPv4 for most, a distinct IPv6 /64 for every 5th). */
function churnPeer(i: number): string {
  if (i % 5 === 4) return `[2001:db8:${(i >>> 16).toString(16)}:${(i & 0xffff).toString(16)}::1]:443`;
  return `100.${64 + ((i >>> 16) & 63)}.${(i >>> 8) & 255}.${i & 255}:443`;
}

test("100 000 distinct addresses against capacity 1024 keep the table bounded, count evictions and keep banned clients banned", async (t) => {
  const t0 = performance.now();
  const h = await start({ capacity: 1024, rules: { rate: rateRule(2, "1h", "24h") } });
  const banned = Array.from({ length: 50 }, (_, i) => `198.51.100.${i + 1}:1`);
  for (const peer of banned) {
    h.vm(0).send({ peer });
    h.vm(0).send({ peer });
    assertDenied(h.vm(0).send({ peer }), 403, `ban ${peer}`);
  }
  assert.equal(bans(h).length, 50);

  const N = 100_000;
  for (let i = 0; i < N; i++) {
    const r = h.vm(0).send({ peer: churnPeer(i) });
    if (!r.upstreamReached) assert.fail(`churn request ${i} (${churnPeer(i)}) was denied`);
    if (i % 100 === 0) h.clock.advance(1);
  }

  const keys = tableKeys(h);
  assert.ok(keys.length <= 1024 / 8, `at most capacity/8 = 128 keys, got ${keys.length}`);
  for (const k of keys) assert.match(k, KEY_RE);
  const bytes = keys.reduce((n, k) => n + (h.store.valueSize(k) ?? 0), 0);
  assert.ok(bytes <= 1024 * 48, `at most 48 bytes per tracked client: ${bytes} bytes for capacity 1024`);

  const tracked = h.metrics.get(M.tracked);
  const evictions = h.metrics.get(M.evictions);
  assert.ok(tracked <= 1024, `tracked-clients gauge ${tracked} <= capacity`);
  assert.equal(tracked, 1024, "after the churn every slot is occupied");
  assert.equal(tracked + evictions, N + banned.length, "every new client filled an empty slot or evicted a record");
  assert.equal(h.metrics.get(M.internalErrors), 0);

  const deniedBefore = h.metrics.get(M.deniedBanned);
  for (const peer of banned) assertDenied(h.vm(0).send({ peer }), 403, `${peer} still banned after the churn`);
  assert.equal(h.metrics.get(M.deniedBanned) - deniedBefore, 50, "denied as banned, not re-judged");
  assert.ok(h.vm(0).memoryBytes <= 16 * 1024 * 1024, `VM memory stays small: ${h.vm(0).memoryBytes} bytes`);
  assertHostClean(h);
  t.diagnostic(`churn: ${N} clients, ${keys.length} keys, ${bytes} bytes, ${evictions} evictions, memory ${h.vm(0).memoryBytes} B, ${(performance.now() - t0).toFixed(0)} ms`);
});

/** Finds `n` distinct IPv4 peers whose records land in the same shared-data key (capacity 1024). */
function sameSetPeers(n: number): string[] {
  const probe = Host.load();
  assert.ok(probe.vm(0).configure(cfg({ capacity: 1024, rules: { rate: rateRule(1000, "1h", "1h") } })));
  const bySet = new Map<string, string[]>();
  for (let i = 1; i < 20_000; i++) {
    const peer = `172.16.${i >>> 8}.${i & 255}:1`;
    const snap = probe.store.snapshot();
    probe.vm(0).send({ peer });
    const [key] = probe.store.changedSince(snap);
    const list = bySet.get(key) ?? [];
    list.push(peer);
    bySet.set(key, list);
    if (list.length === n) return list;
  }
  assert.fail("could not find addresses sharing one set");
}

test("a full set evicts an expired record before the least recently used active one, and never a banned one while others exist", async () => {
  const [b1, b2, b3, b4, b5, b6, active, expiring, newcomer] = sameSetPeers(9);
  const h = await start({ capacity: 1024, rules: { rate: rateRule(2, "1h", "24h") }, ban: { escalation: 2, max: "24h", forgetAfter: "1h" } });
  const send = (peer: string) => h.vm(0).send({ peer });
  // t=0: `active` empties its bucket (2/h: full again only at t=60m); six clients get banned for 24 h.
  assertPassed(send(active));
  assertPassed(send(active));
  for (const p of [b1, b2, b3, b4, b5, b6]) {
    send(p);
    send(p);
    assertDenied(send(p), 403, `ban ${p}`);
  }
  // t=10m: `expiring` takes one token; its bucket is full again at t=40m, so from then on it is expired.
  h.clock.advance("10m");
  assertPassed(send(expiring));
  assert.equal(h.metrics.get(M.tracked), 8);
  assert.equal(h.metrics.get(M.evictions), 0);

  // t=50m: `active` is the least recently updated unbanned record but not expired; `expiring` is expired.
  h.clock.advance("40m");
  assertPassed(send(newcomer), "a 9th client gets a slot");
  assert.equal(h.metrics.get(M.evictions), 1);
  assert.equal(h.metrics.get(M.tracked), 8);
  // `active` kept its state: 50 min refilled 1.67 tokens, so one request passes and the next violates.
  assertPassed(send(active), "active client's refilled token");
  assertDenied(send(active), 403, "active client kept its bucket: the expired record was replaced, not the LRU one");
  for (const p of [b1, b2, b3, b4, b5, b6]) assertDenied(send(p), 403, `${p} still banned`);
});

test("a set in which every record is banned keeps every ban and leaves a newcomer untracked", async () => {
  const peers = sameSetPeers(9);
  const h = await start({ capacity: 1024, rules: { rate: rateRule(1, "24h", "1h") } });
  const send = (peer: string) => h.vm(0).send({ peer });
  for (const p of peers.slice(0, 8)) {
    send(p);
    assertDenied(send(p), 403, `ban ${p}`);
    h.clock.advance("1m"); // each ban ends one minute after the previous one
  }
  const before = h.store.snapshot();
  assertPassed(send(peers[8]), "a 9th client passes");
  assertPassed(send(peers[8]), "and is not tracked: its one-per-day budget is not spent");
  assert.deepEqual(h.store.changedSince(before), [], "the set was not written");
  assert.equal(h.metrics.get(M.evictions), 0);
  assert.equal(h.metrics.get(M.admissionsRefused), 2);
  for (const p of peers.slice(0, 8)) assertDenied(send(p), 403, `${p} keeps its ban, the soonest-ending one too`);
});

test("the tracked-clients gauge counts occupied records and never exceeds capacity, with two VMs", async () => {
  const h = await start({ capacity: 1024, rules: { rate: rateRule(10, "1m", "1m") } }, { vms: 2 });
  for (let i = 0; i < 300; i++) h.vm(i % 2).send({ peer: churnPeer(i) });
  const tracked = h.metrics.get(M.tracked);
  const evictions = h.metrics.get(M.evictions);
  assert.equal(tracked + evictions, 300);
  for (let i = 300; i < 5000; i++) h.vm(i % 2).send({ peer: churnPeer(i) });
  assert.equal(h.metrics.get(M.tracked), 1024);
  assert.equal(h.metrics.get(M.tracked) + h.metrics.get(M.evictions), 5000);
  assertHostClean(h);
});

// Mesh-wide decisions (assembly/decisions.ts) in the emulator, against an in-memory etcd gateway
// (etcd-fake.ts): publishing, polling, full ranges, lifting, election, failures and garbage.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { Host, type HttpCall } from "../emulator/emulator.ts";
import { M, cfg, rateRule, assertDenied, assertPassed, assertHostClean } from "./helpers.ts";
import { EtcdFake } from "./etcd-fake.ts";

const PREFIX = "traffic-guard/test/";
const BANS = PREFIX + "bans/";
const DECISIONS = { cluster: "etcd", prefix: PREFIX, interval: "1s", timeout: "500ms", publish: true };
const FIXTURES = JSON.parse(readFileSync(new URL("../fixtures/decisions/records.json", import.meta.url), "utf8")) as {
  valid: { name: string; client: string; value: string }[];
  malformed: { name: string; client: string; value: string }[];
};

/** A proxy with the decisions block, a 1-request-per-day rate rule (the second request bans for 1h). */
async function proxy(extra: Record<string, unknown> = {}, vms = 2, nodeId = "replica-a"): Promise<{ h: Host; etcd: EtcdFake }> {
  const h = await Host.start({
    vms,
    nodeId,
    clusters: ["etcd"],
    config: cfg({ rules: { rate: rateRule(1, "24h", "1h") }, decisions: DECISIONS, ...extra }),
  });
  return { h, etcd: new EtcdFake(h) };
}

/** A record as another proxy writes it, banning for `ms` from now. */
function record(h: Host, ms: number, origin = "replica-b", reason = "rate"): string {
  return JSON.stringify({ until: h.clock.nowMs + ms, reason, strike: 1, origin, created: h.clock.nowMs });
}

/** One poll period: the clock moves by the interval, every VM ticks, calls are answered. */
function poll(h: Host, etcd: EtcdFake, n = 1): void {
  for (let i = 0; i < n; i++) {
    h.clock.advance("1s");
    etcd.sync();
  }
}

const REMOTE_LINE = /^traffic-guard: remote ban (\S+) for (\d+)s: reason=(\S*) origin=(\S*) strike=(\d+)$/;

test("without a decisions block nothing is called (local-only)", async () => {
  const h = await Host.start({ vms: 2, clusters: ["etcd"], config: cfg({ rules: { rate: rateRule(1, "24h", "1h") } }) });
  h.tick();
  assertPassed(h.vm(0).send({ peer: "203.0.113.7:1" }));
  assertDenied(h.vm(0).send({ peer: "203.0.113.7:1" }));
  assert.equal(h.httpCalls.length, 0);
  assertHostClean(h);
});

test("the tick comes at least every interval, and exactly one worker of the process syncs", async () => {
  const { h, etcd } = await proxy({}, 3);
  for (const vm of h.vms) assert.equal(vm.tickPeriodMs, 1000);
  poll(h, etcd, 3);
  const vms = new Set(h.httpCalls.map((c) => c.vm.index));
  assert.equal(vms.size, 1, "one syncing worker");
  const first = h.httpCalls[0];
  assert.equal(first.cluster, "etcd");
  assert.equal(first.header(":method"), "POST");
  assert.equal(first.header(":path"), "/v3/kv/range");
  assert.equal(first.header(":authority"), "etcd", "the authority defaults to the cluster name");
  assert.equal(first.timeoutMs, 500);
  assert.deepEqual(first.json(), { key: Buffer.from(BANS).toString("base64"), range_end: Buffer.from(PREFIX + "bans0").toString("base64"), limit: 500, serializable: true });
  const later = h.httpCalls.slice(1).map((c) => c.json());
  assert.ok(later.length >= 2 && later.every((b) => b.min_mod_revision !== undefined && b.serializable === true), "then polls with min_mod_revision");
  assertHostClean(h);
});

test("a ban started on any worker is published once, with its record and a lease covering the ban", async () => {
  const { h, etcd } = await proxy({}, 2);
  poll(h, etcd);
  const syncing = h.httpCalls[0].vm.index;
  const other = 1 - syncing;
  assertPassed(h.vm(other).send({ peer: "203.0.113.7:1" }));
  assertDenied(h.vm(other).send({ peer: "203.0.113.7:1" }));
  poll(h, etcd);
  const recs = etcd.records(BANS);
  assert.deepEqual([...recs.keys()], ["203.0.113.7"]);
  const r = recs.get("203.0.113.7");
  assert.equal(r.reason, "rate");
  assert.equal(r.strike, 1);
  assert.equal(r.origin, "replica-a", "origin = Envoy's node id");
  assert.ok(Math.abs(r.until - (h.clock.nowMs - 1000 + 3_600_000)) <= 1000, `until ${r.until} is the ban's end`);
  assert.ok(r.created <= h.clock.nowMs);
  const kv = etcd.kv.get(BANS + "203.0.113.7")!;
  const lease = etcd.leases.get(kv.lease)!;
  assert.ok(lease.expiresMs >= r.until && lease.expiresMs <= r.until + 12_000, "the lease ends with the ban's bucket");
  poll(h, etcd, 3);
  assert.equal(h.metrics.get(M.decisionsPublished), 1);
  assert.equal(h.metrics.get(M.decisionsApplied), 0, "its own record is not applied again");
  assert.equal(h.metrics.get(M.decisionsSyncErrors), 0);
  assertHostClean(h);
});

test("a remote ban is enforced on every worker like a local one, with one warn line naming its origin", async () => {
  const { h, etcd } = await proxy({}, 2);
  poll(h, etcd);
  etcd.put(BANS + "198.51.100.4", record(h, 600_000), 600_000);
  poll(h, etcd);
  for (const vm of [0, 1]) {
    const r = assertDenied(h.vm(vm).send({ peer: "198.51.100.4:9" }), 403, `worker ${vm}`);
    assert.equal(r.header("retry-after"), "599", "the record was read one poll (1 s) after it was written");
  }
  assertPassed(h.vm(0).send({ peer: "198.51.100.5:9" }), "another client");
  const lines = h.logs.filter((l) => REMOTE_LINE.test(l.text));
  assert.equal(lines.length, 1);
  assert.equal(lines[0].levelName, "warn");
  assert.deepEqual(REMOTE_LINE.exec(lines[0].text)!.slice(1), ["198.51.100.4", "599", "rate", "replica-b", "1"]);
  poll(h, etcd, 2);
  assert.equal(h.metrics.get(M.decisionsApplied), 1);
  assert.equal(h.metrics.get(M.deniedBanned), 2);
  assert.equal(h.metrics.get(M.decisionsActive), 1);
  assertHostClean(h);
});

test("a deleted decision lifts the ban on the next poll; an expired lease lifts it too", async () => {
  const { h, etcd } = await proxy({}, 2);
  poll(h, etcd);
  etcd.put(BANS + "198.51.100.4", record(h, 600_000), 600_000);
  etcd.put(BANS + "198.51.100.6", record(h, 5_000), 5_000);
  poll(h, etcd);
  assertDenied(h.vm(1).send({ peer: "198.51.100.4:9" }));
  etcd.delete(BANS + "198.51.100.4");
  poll(h, etcd, 2); // the poll sees fewer keys than it knows, the full range finds which
  assertPassed(h.vm(1).send({ peer: "198.51.100.4:9" }), "lifted after delete");
  assert.equal(h.metrics.get(M.decisionsLifted), 1);
  poll(h, etcd, 5);
  assertPassed(h.vm(0).send({ peer: "198.51.100.6:9" }), "the short ban ended");
  assert.equal(h.metrics.get(M.decisionsActive), 0);
  assertHostClean(h);
});

test("deleting this proxy's own decision lifts its local ban too", async () => {
  const { h, etcd } = await proxy({}, 1);
  poll(h, etcd);
  assertPassed(h.vm(0).send({ peer: "203.0.113.7:1" }));
  assertDenied(h.vm(0).send({ peer: "203.0.113.7:1" }));
  poll(h, etcd, 2);
  assert.ok(etcd.records(BANS).has("203.0.113.7"));
  etcd.delete(BANS + "203.0.113.7");
  poll(h, etcd, 2);
  assertPassed(h.vm(0).send({ peer: "203.0.113.7:1" }), "an operator's unban reaches the replica that banned");
  assert.equal(h.metrics.get(M.decisionsLifted), 1);
  assertHostClean(h);
});

test("an unreachable store: local bans keep working, errors are counted with back-off, pending bans are published later", async () => {
  const { h, etcd } = await proxy({}, 1);
  poll(h, etcd);
  etcd.override = (c: HttpCall) => c.fail();
  assertPassed(h.vm(0).send({ peer: "203.0.113.7:1" }));
  assertDenied(h.vm(0).send({ peer: "203.0.113.7:1" }), 403, "a new local ban while the store is down");
  const before = h.httpCalls.length;
  poll(h, etcd, 15);
  const attempts = h.httpCalls.length - before;
  assert.ok(attempts >= 3 && attempts <= 6, `backed off: ${attempts} attempts in 15 s`);
  assert.equal(h.metrics.get(M.decisionsSyncErrors), attempts);
  assertPassed(h.vm(0).send({ peer: "203.0.113.8:1" }), "other clients pass");
  assertDenied(h.vm(0).send({ peer: "203.0.113.7:1" }), 403, "the local ban holds");
  etcd.override = undefined;
  poll(h, etcd, 32);
  assert.ok(etcd.records(BANS).has("203.0.113.7"), "the ban made while the store was down is published");
  assert.equal(h.metrics.get(M.decisionsPublished), 1);
  assertHostClean(h);
});

test("garbage answers (not JSON, wrong shapes, HTTP errors, an oversized body) never trap and never ban", async () => {
  const { h, etcd } = await proxy({}, 1);
  const answers: ((c: HttpCall) => void)[] = [
    (c) => c.respond(200, "not json"),
    (c) => c.respond(200, "[]"),
    (c) => c.respond(200, JSON.stringify({ header: { revision: 5 }, kvs: "x" })),
    (c) => c.respond(200, JSON.stringify({ header: { revision: "5" }, kvs: [1, null, { key: 7 }, { key: "!!!" }] })),
    (c) => c.respond(500, "boom"),
    (c) => c.respond(200, "{".repeat(100_000)),
    (c) => c.respond(200, "x".repeat(9 << 20)),
    (c) => c.respond(200, ""),
  ];
  for (const a of answers) {
    etcd.override = a;
    poll(h, etcd, 31); // past any back-off
  }
  assert.ok(h.metrics.get(M.decisionsSyncErrors) >= answers.length);
  assert.equal(h.metrics.get(M.decisionsApplied), 0);
  assertPassed(h.vm(0).send({ peer: "203.0.113.9:1" }));
  etcd.override = undefined;
  etcd.put(BANS + "198.51.100.4", record(h, 600_000), 600_000);
  poll(h, etcd, 31);
  assertDenied(h.vm(0).send({ peer: "198.51.100.4:9" }), 403, "the sync recovers");
  assertHostClean(h);
});

test("the shared fixtures: valid records are applied, malformed ones skipped and counted once", async () => {
  const { h, etcd } = await proxy({ clientAddress: { source: "peer", meshCallers: "identity" } }, 1, "replica-x");
  const valid = FIXTURES.valid.map((f) => ({ ...f, value: JSON.stringify({ ...JSON.parse(f.value), until: h.clock.nowMs + 600_000 }) }));
  for (const f of valid) etcd.put(BANS + f.client, f.value, 600_000);
  for (const f of FIXTURES.malformed) etcd.put(BANS + f.client, f.value, 600_000);
  etcd.kv.set(BANS + "203.0.113.50", { value: Buffer.from("x".repeat(100_000)), create: 1, mod: ++etcd.revision, lease: "" });
  poll(h, etcd, 3);
  assert.equal(h.metrics.get(M.decisionsApplied), valid.length, FIXTURES.valid.map((f) => f.name).join("; "));
  assert.equal(h.metrics.get(M.decisionsSyncErrors), FIXTURES.malformed.length + 1, "each malformed record counted once");
  assertDenied(h.vm(0).send({ peer: "203.0.113.7:1" }), 403, "IPv4 record");
  assertDenied(h.vm(0).send({ peer: "[2001:db8:1:2::99]:1" }), 403, "IPv6 /64 record");
  assertPassed(h.vm(0).send({ peer: "203.0.113.30:1" }), "malformed record bans nobody");
  assertHostClean(h);
});

test("bad base64 in a key or a value is skipped and counted", async () => {
  const { h, etcd } = await proxy({}, 1);
  poll(h, etcd);
  etcd.override = (c) => {
    etcd.override = undefined; // one answer
    const rev = String(etcd.revision + 10);
    c.respond(200, JSON.stringify({ header: { revision: rev }, count: "2", kvs: [
      { key: "%%%", value: Buffer.from(record(h, 60_000)).toString("base64"), mod_revision: rev },
      { key: Buffer.from(BANS + "198.51.100.4").toString("base64"), value: "***=", mod_revision: rev },
    ] }));
  };
  poll(h, etcd);
  etcd.override = undefined;
  assert.equal(h.metrics.get(M.decisionsSyncErrors), 2);
  assertPassed(h.vm(0).send({ peer: "198.51.100.4:1" }));
  assertHostClean(h);
});

test("a compacted revision (HTTP 400, code 11) restarts the full range", async () => {
  const { h, etcd } = await proxy({}, 1);
  for (let i = 0; i < 1200; i++) etcd.put(BANS + `10.1.${i >> 8}.${i & 255}`, record(h, 600_000), 600_000);
  etcd.compacted = etcd.revision + 1; // every read at a revision fails: the second page
  poll(h, etcd);
  assert.equal(h.metrics.get(M.decisionsSyncErrors), 1);
  etcd.compacted = 0;
  poll(h, etcd, 2);
  const pages = etcd.calls.filter((c) => c.body.limit !== undefined);
  assert.ok(pages.length >= 4, "the full range started again and was paginated");
  assert.equal(h.metrics.get(M.decisionsApplied), 1200);
  assertDenied(h.vm(0).send({ peer: "10.1.4.7:1" }));
  assert.equal(h.metrics.get(M.decisionsActive), 1200);
  assertHostClean(h);
});

test("allow wins: a record never bans an allowed address or identity", async () => {
  const { h, etcd } = await proxy({ allow: ["198.51.100.0/24", "spiffe://cluster.local/ns/shop/sa/*"] }, 1);
  poll(h, etcd);
  etcd.put(BANS + "198.51.100.4", record(h, 600_000), 600_000);
  etcd.put(BANS + "spiffe://cluster.local/ns/shop/sa/scraper", record(h, 600_000), 600_000);
  poll(h, etcd);
  assertPassed(h.vm(0).send({ peer: "198.51.100.4:1" }));
  assert.equal(h.metrics.get(M.decisionsApplied), 0);
  assertHostClean(h);
});

test("a syncing worker that goes silent is replaced by another", async () => {
  const { h, etcd } = await proxy({}, 2);
  poll(h, etcd);
  const first = h.httpCalls[0].vm;
  const other = h.vm(1 - first.index);
  first.tickPeriodMs = 0; // its ticks stop (host.tick skips it)
  h.clock.advance("6s");
  etcd.sync();
  etcd.put(BANS + "198.51.100.4", record(h, 600_000), 600_000);
  poll(h, etcd, 2);
  assert.ok(h.httpCalls.some((c) => c.vm === other), "the other worker took over");
  assertDenied(h.vm(0).send({ peer: "198.51.100.4:9" }));
  assertHostClean(h);
});

test("a page of a full range that fails is retried after the back-off, not the whole range", async () => {
  const { h, etcd } = await proxy({}, 1);
  for (let i = 0; i < 1200; i++) etcd.put(BANS + `10.2.${i >> 8}.${i & 255}`, record(h, 600_000), 600_000);
  let failedKey: string | undefined;
  const fail = (c: HttpCall): void => {
    const body = c.json();
    etcd.override = undefined;
    if (body.revision !== undefined) {
      failedKey = body.key;
      return c.fail(); // the second page
    }
    etcd.answer(c);
    etcd.override = fail;
  };
  etcd.override = fail;
  poll(h, etcd);
  assert.ok(failedKey, "the second page was asked for");
  etcd.override = undefined;
  const before = etcd.calls.length;
  poll(h, etcd, 2);
  const next = etcd.calls.slice(before).filter((c) => c.body.limit !== undefined);
  assert.equal(next[0].body.key, failedKey, "the retry asks for the page that failed");
  assert.equal(h.metrics.get(M.decisionsApplied), 1200);
  assert.equal(h.metrics.get(M.decisionsSyncErrors), 1);
  assertHostClean(h);
});

test("the periodic full range reads keys only, and a change it finds unseen is read by a full range with values", async () => {
  const { h, etcd } = await proxy({}, 1);
  poll(h, etcd);
  etcd.put(BANS + "198.51.100.4", record(h, 600_000), 600_000);
  // The poll that would have seen the new key is lost: the store answers it with no changes.
  etcd.override = (c) => {
    etcd.override = undefined;
    c.respond(200, JSON.stringify({ header: { revision: String(etcd.revision) }, count: "0" }));
  };
  poll(h, etcd);
  assertPassed(h.vm(0).send({ peer: "198.51.100.4:9" }), "not seen yet");
  h.clock.advance("60s");
  const before = etcd.calls.length;
  etcd.sync();
  const fulls = etcd.calls.slice(before).filter((c) => c.body.limit !== undefined).map((c) => c.body.keys_only === true);
  assert.deepEqual(fulls, [true, false], "a keys-only full range, then one with values");
  assertDenied(h.vm(0).send({ peer: "198.51.100.4:9" }), 403, "the missed record is applied");
  assertHostClean(h);
});

test("a range record bans its range when its length is the configured range prefix; other lengths are skipped and counted", async () => {
  const { h, etcd } = await proxy({}, 2);
  poll(h, etcd);
  etcd.put(BANS + "2001:db8:9::/48", record(h, 600_000), 600_000);
  etcd.put(BANS + "2001:db8:a::/40", record(h, 600_000), 600_000);
  poll(h, etcd);
  h.clock.advance("1s"); // workers read the range bans at most once a second
  for (const vm of [0, 1]) assertDenied(h.vm(vm).send({ peer: "[2001:db8:9:1234::1]:1" }), 403, `an address of the banned /48 on worker ${vm}`);
  assertPassed(h.vm(0).send({ peer: "[2001:db8:a:1::1]:1" }), "a /40 record bans nothing");
  assert.equal(h.metrics.get(M.decisionsApplied), 1);
  assert.equal(h.metrics.get(M.decisionsSyncErrors), 1);
  etcd.delete(BANS + "2001:db8:9::/48");
  poll(h, etcd, 2);
  h.clock.advance("1s");
  assertPassed(h.vm(1).send({ peer: "[2001:db8:9:1234::1]:1" }), "the range ban is lifted");
  assertHostClean(h);
});

test("a SPIFFE ID record bans the mesh caller keyed by that identity", async () => {
  const { h, etcd } = await proxy({ clientAddress: { source: "peer", meshCallers: "identity" } }, 2);
  poll(h, etcd);
  const id = "spiffe://cluster.local/ns/shop/sa/scraper";
  etcd.put(BANS + id, record(h, 600_000), 600_000);
  poll(h, etcd);
  const as = (identity: string) => ({ peer: "10.1.2.3:4000", properties: { "connection.uri_san_peer_certificate": identity } });
  assertDenied(h.vm(1).send(as(id)), 403, "the banned identity");
  assertPassed(h.vm(1).send(as("spiffe://cluster.local/ns/shop/sa/web")), "another identity from the same address");
  assertHostClean(h);
});

test("puts the store refuses outright are dropped, and never hold up the polls", async () => {
  const { h, etcd } = await proxy({}, 1);
  poll(h, etcd);
  etcd.override = (c) => {
    if (c.header(":path") === "/v3/kv/txn") return c.respond(403, JSON.stringify({ error: "etcdserver: permission denied", code: 7, message: "etcdserver: permission denied" }));
    const o = etcd.override;
    etcd.override = undefined;
    etcd.answer(c);
    etcd.override = o;
  };
  assertPassed(h.vm(0).send({ peer: "203.0.113.7:1" }));
  assertDenied(h.vm(0).send({ peer: "203.0.113.7:1" }));
  etcd.put(BANS + "198.51.100.4", record(h, 600_000), 600_000);
  poll(h, etcd, 5);
  const txns = etcd.calls.filter((c) => c.path === "/v3/kv/txn").length;
  assert.equal(h.metrics.get(M.decisionsSyncErrors), 1, "one refusal");
  assert.equal(h.metrics.get(M.decisionsPublished), 0);
  assertDenied(h.vm(0).send({ peer: "198.51.100.4:1" }), 403, "polling went on");
  etcd.override = undefined;
  poll(h, etcd, 3);
  assert.equal(etcd.calls.filter((c) => c.path === "/v3/kv/txn").length, txns, "the refused ban is not sent again");
  assertHostClean(h);
});

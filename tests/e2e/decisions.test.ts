// Mesh-wide decisions in real Envoy against a real etcd: three "replica" Envoys, each with the filter and
// a static cluster to etcd's JSON gateway, share their bans. Clients are told apart by their loopback
// source address (the replicas take the peer address).
import assert from "node:assert/strict";
import type { TestContext } from "node:test";
import { edgeSpec, staticCluster } from "../../dev/envoy-topologies.ts";
import type { RunningEnvoy } from "../../dev/envoy-process.ts";
import { e2e, get, guardFilter, guardMetrics, portOf, type Stack } from "./harness.ts";
import { Etcd, findEtcd, IN_CI } from "./etcd.ts";
import { runCli } from "../cli/helpers.ts";

const NAMES = ["replica-a", "replica-b", "replica-c"];

/** etcd, or a skip (a failure under CI=true) when the binary is not built. */
async function etcdOrSkip(t: TestContext): Promise<Etcd | undefined> {
  const found = findEtcd();
  if (!found.ok) {
    if (IN_CI) assert.fail(`CI=true and the decisions tests need etcd: ${found.reason}`);
    t.skip(`needs etcd: ${found.reason}`);
    return undefined;
  }
  return Etcd.start(found.bin);
}

/** The filter config of every replica: 20 requests a minute, a 1-minute ban, decisions under `prefix`. */
function replicaConfig(prefix: string, extra: Record<string, unknown> = {}): object {
  return {
    clientAddress: { source: "peer" },
    rules: { rate: { limit: { requests: 20, per: "1m" }, ban: "1m" }, userAgent: { enabled: false }, errors: { enabled: false } },
    decisions: { cluster: "etcd", prefix, interval: "500ms", timeout: "500ms" },
    ...extra,
  };
}

/** Starts the app and three replicas whose decisions live under `prefix`. */
async function replicas(s: Stack, etcd: Etcd, prefix: string, extra: Record<string, unknown> = {}): Promise<RunningEnvoy[]> {
  const app = await s.app();
  const out: RunningEnvoy[] = [];
  for (const name of NAMES) {
    const spec = { ...edgeSpec({ upstreamPort: app.port, filters: [guardFilter(replicaConfig(prefix, extra))] }), nodeId: name, clusters: [staticCluster("etcd", etcd.port)] };
    out.push(await s.envoy({ label: name, concurrency: 2, spec }));
  }
  return out;
}

/** The status a client at `from` gets from a replica. */
async function status(e: RunningEnvoy, from: string): Promise<number> {
  return (await get("127.0.0.1", portOf(e, "edge"), "/", { from })).status;
}

/** Polls until every replica answers `from` with `want`; returns the time it took in ms. */
async function converge(rs: RunningEnvoy[], from: string, want: number, withinMs: number, what: string): Promise<number> {
  const t0 = Date.now();
  for (;;) {
    const got = await Promise.all(rs.map((e) => status(e, from)));
    if (got.every((c) => c === want)) return Date.now() - t0;
    if (Date.now() - t0 > withinMs) assert.fail(`${what}: after ${withinMs} ms the replicas answer ${from} with ${got.join(", ")}, not ${want}`);
    await new Promise((r) => setTimeout(r, 200)); // at most 10 requests in 2 s: below the rate limit
  }
}

/** One metric of a replica. */
async function metric(e: RunningEnvoy, name: string): Promise<number> {
  return (await guardMetrics(e)).values.get(name) ?? 0;
}

/** Runs `traffic-guard decisions <args> --etcd <etcd> --prefix <prefix>` (the CLI bundle); fails on a non-zero exit. */
async function decisions(etcd: Etcd, prefix: string, ...args: string[]): Promise<string> {
  const r = await runCli(["decisions", ...args, "--etcd", etcd.url, "--prefix", prefix]);
  assert.equal(r.code, 0, `traffic-guard decisions ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

/** A record as the contract spells it. */
function record(untilMs: number, reason = "manual", origin = "operator"): string {
  return JSON.stringify({ until: untilMs, reason, strike: 0, origin, created: Date.now() });
}

e2e("a ban on one replica reaches the others; an added decision blocks everywhere, a deleted or expired one lifts everywhere; allow wins", async (s, t) => {
  const etcd = await etcdOrSkip(t);
  if (!etcd) return;
  try {
    const prefix = "traffic-guard/e2e1/";
    const rs = await replicas(s, etcd, prefix, { allow: ["127.0.0.7/32"] });
    const [a, b, c] = rs;
    // 1. A client flooding replica A is banned there; B and C deny it within 2 s, and the store shows origin A.
    for (let i = 0; i < 20; i++) assert.equal(await status(a, "127.0.0.2"), 200);
    assert.equal(await status(a, "127.0.0.2"), 403, "banned on A");
    assert.equal(await status(b, "127.0.0.3"), 200, "another client passes B");
    const took = await converge([b, c], "127.0.0.2", 403, 2000, "A's ban on B and C");
    t.diagnostic(`A's ban reached B and C in ${took} ms`);
    const listed = JSON.parse(await decisions(etcd, prefix, "list", "--json")) as { client: string; origin: string; reason: string }[];
    const a2 = listed.find((d) => d.client === "127.0.0.2");
    assert.equal(a2?.origin, "replica-a", "decisions list names A");
    assert.equal(a2?.reason, "rate");
    assert.match(await decisions(etcd, prefix, "list"), /127\.0\.0\.2\s+rate\s+replica-a\s/, "and so does its table");
    assert.equal(await metric(a, "traffic_guard_decisions_published_total"), 1);
    assert.ok(b.log().includes("traffic-guard: remote ban 127.0.0.2 for ") && b.log().includes("origin=replica-a"), "B logs the remote ban with its origin");
    // 2. `decisions add 127.0.0.9 --for 1m` blocks it on all three within 2 s; `decisions delete` lets it through within 2 s.
    await decisions(etcd, prefix, "add", "127.0.0.9", "--for", "1m");
    t.diagnostic(`added decision enforced in ${await converge(rs, "127.0.0.9", 403, 2000, "an added decision")} ms`);
    await decisions(etcd, prefix, "delete", "127.0.0.9");
    t.diagnostic(`deleted decision lifted in ${await converge(rs, "127.0.0.9", 200, 2000, "a deleted decision")} ms`);
    // Deleting A's own decision lifts it on A too.
    await decisions(etcd, prefix, "delete", "127.0.0.2");
    await converge(rs, "127.0.0.2", 200, 2000, "an unban of A's ban");
    // 3. A decision whose lease expires (3 s, though its record says a minute) is lifted everywhere.
    const short = await etcd.grant(3);
    await etcd.put(prefix + "bans/127.0.0.10", record(Date.now() + 60_000), short);
    await converge(rs, "127.0.0.10", 403, 2000, "a leased decision");
    await converge(rs, "127.0.0.10", 200, 7000, "an expired lease");
    // 6. allow wins over a remote ban.
    await decisions(etcd, prefix, "add", "127.0.0.7", "--for", "1m");
    await new Promise((r) => setTimeout(r, 1500));
    for (const e of rs) assert.equal(await status(e, "127.0.0.7"), 200, `${e.label}: an allowed address`);
    for (const e of rs) {
      assert.equal(await metric(e, "traffic_guard_decisions_sync_errors_total"), 0, `${e.label}: no sync errors`);
      assert.equal(await metric(e, "traffic_guard_internal_errors_total"), 0);
    }
    assert.ok((await metric(b, "traffic_guard_decisions_lifted_total")) >= 3, "B lifted the deleted and expired decisions");
  } finally {
    await etcd.stop();
  }
});

e2e("with etcd down, local bans still work and nothing fails closed; once it is back the bans made meanwhile reach every replica", async (s, t) => {
  const etcd = await etcdOrSkip(t);
  if (!etcd) return;
  try {
    const prefix = "traffic-guard/e2e4/";
    const rs = await replicas(s, etcd, prefix);
    const [a, b, c] = rs;
    for (let i = 0; i < 21; i++) await status(a, "127.0.0.2");
    await converge(rs, "127.0.0.2", 403, 2000, "a ban before the outage");
    await etcd.kill();
    for (let i = 0; i < 20; i++) assert.equal(await status(b, "127.0.0.4"), 200);
    assert.equal(await status(b, "127.0.0.4"), 403, "a new local ban while etcd is down");
    assert.equal(await status(b, "127.0.0.2"), 403, "an earlier ban holds");
    const statuses: number[] = [];
    for (const e of rs) for (const from of ["127.0.0.5", "127.0.0.6"]) statuses.push(await status(e, from));
    assert.deepEqual(statuses, [200, 200, 200, 200, 200, 200], "other clients pass, no 5xx");
    await new Promise((r) => setTimeout(r, 2000));
    for (const e of rs) assert.ok((await metric(e, "traffic_guard_decisions_sync_errors_total")) > 0, `${e.label} counts sync errors`);
    await etcd.start();
    // Back-off is at most 30 s after a long outage; this one lasted seconds.
    const took = await converge([a, c], "127.0.0.4", 403, 15_000, "the ban made during the outage");
    t.diagnostic(`converged ${took} ms after etcd came back`);
    assert.equal((await etcd.records(prefix + "bans/")).get("127.0.0.4")?.origin, "replica-b");
  } finally {
    await etcd.stop();
  }
});

e2e("garbage in the store (bad JSON, binary, huge values, 100 000 keys) never traps and never blocks an innocent client", async (s, t) => {
  const etcd = await etcdOrSkip(t);
  if (!etcd) return;
  try {
    const prefix = "traffic-guard/e2e5/";
    const n = 100_000;
    await etcd.putMany(Array.from({ length: n }, (_, i) => [`${prefix}bans/junk-${i}`, `{"until":`] as [string, string]));
    await etcd.put(`${prefix}bans/127.0.0.11`, "not json at all");
    await etcd.put(`${prefix}bans/127.0.0.12`, Buffer.from([0xff, 0xfe, 0x00, 0x80, 0x22]));
    await etcd.put(`${prefix}bans/127.0.0.13`, "x".repeat(1_000_000));
    await etcd.put(`${prefix}bans/127.0.0.14`, JSON.stringify({ until: "soon", reason: 1 }));
    const rs = await replicas(s, etcd, prefix);
    const t0 = Date.now();
    for (;;) {
      const errors = await Promise.all(rs.map((e) => metric(e, "traffic_guard_decisions_sync_errors_total")));
      if (errors.every((v) => v >= n + 4)) break;
      if (Date.now() - t0 > 180_000) assert.fail(`after 180 s the replicas counted ${errors.join(", ")} sync errors, not ${n + 4}`);
      await new Promise((r) => setTimeout(r, 500));
    }
    t.diagnostic(`every replica read ${n + 4} malformed records in ${Date.now() - t0} ms`);
    for (const e of rs) {
      for (const from of ["127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14", "127.0.0.15"]) assert.equal(await status(e, from), 200, `${e.label}: ${from}`);
      assert.equal(await metric(e, "traffic_guard_decisions_applied_total"), 0);
      assert.doesNotMatch(e.log(), /wasm.*(trap|RuntimeError|unreachable|abort)/i, `${e.label}: no trap`);
    }
    // And a good record still arrives among the garbage.
    await etcd.put(`${prefix}bans/127.0.0.16`, record(Date.now() + 60_000), await etcd.grant(60));
    await converge(rs, "127.0.0.16", 403, 5000, "a good record among 100 000 bad ones");
  } finally {
    await etcd.stop();
  }
});

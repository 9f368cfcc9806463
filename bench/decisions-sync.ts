/**
 * What the decisions sync costs Envoy: one etcd holding N active bans of another proxy (default 10 000,
 * one-hour lease), two idle Envoys with the same filter configuration, one with the `decisions` block
 * (interval 1s) and one without. Once the first has applied every ban, both are measured for DURATION
 * seconds (default 120, so two full ranges fall inside); the difference of their CPU time (user + system,
 * all threads, from /proc) per second is the sync's cost. Also prints the cost of the first full range.
 *
 *   node --import tsx bench/decisions-sync.ts            (TRAFFIC_GUARD_BANS=10000 TRAFFIC_GUARD_SECONDS=120)
 *
 * Needs Envoy (dev/envoy.ts) and the etcd of scripts/kube-bins.sh. On a shared, loaded machine the
 * figure moves by tens of percent between runs; run it more than once.
 */
import { readFileSync } from "node:fs";
import { ensureEnvoy } from "../dev/envoy.ts";
import { startEnvoy, type RunningEnvoy } from "../dev/envoy-process.ts";
import { startSampleApp } from "../dev/sample-app.ts";
import { edgeSpec, staticCluster } from "../dev/envoy-topologies.ts";
import type { WasmFilterSpec } from "../dev/envoy-config.ts";
import { Etcd, findEtcd } from "../tests/e2e/etcd.ts";
import { FILTER_WASM } from "../tests/e2e/harness.ts";

const BANS = Number(process.env.TRAFFIC_GUARD_BANS ?? 10_000);
const SECONDS = Number(process.env.TRAFFIC_GUARD_SECONDS ?? 120);
const PREFIX = "traffic-guard/bench/";

function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime + stime, in clock ticks of 10 ms
}

function filter(decisions: boolean): WasmFilterSpec {
  const config = {
    clientAddress: { source: "peer" },
    ...(decisions ? { decisions: { cluster: "etcd", prefix: PREFIX, interval: "1s", timeout: "2s" } } : {}),
  };
  return { kind: "wasm", namespace: "default", name: "traffic-guard", pluginName: "traffic-guard", pluginConfig: JSON.stringify(config), wasmPath: FILTER_WASM };
}

async function metric(e: RunningEnvoy, name: string): Promise<number> {
  const m = new RegExp(`^${name}\\{\\} (\\d+)$`, "m").exec(await e.admin("/stats/prometheus"));
  return m ? Number(m[1]) : 0;
}

async function main(): Promise<void> {
  ensureEnvoy();
  const found = findEtcd();
  if (!found.ok) throw new Error(`needs etcd: ${found.reason}`);
  const etcd = await Etcd.start(found.bin);
  const app = await startSampleApp();
  const envoys: RunningEnvoy[] = [];
  try {
    const lease = await etcd.grant(3600);
    const until = Date.now() + 3_500_000;
    const entries: [string, string][] = [];
    for (let i = 0; i < BANS; i++) {
      const client = `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
      entries.push([`${PREFIX}bans/${client}`, JSON.stringify({ until, reason: "rate", strike: 1, origin: "bench-other-proxy", created: Date.now() })]);
    }
    await etcd.putMany(entries, lease);
    const spec = (d: boolean) => ({ ...edgeSpec({ upstreamPort: app.port, filters: [filter(d)] }), nodeId: d ? "bench-sync" : "bench-idle", clusters: [staticCluster("etcd", etcd.port)] });
    const t0 = Date.now();
    const withSync = await startEnvoy({ label: "decisions-sync", concurrency: 2, spec: spec(true), logLevel: "warning" });
    envoys.push(withSync);
    const without = await startEnvoy({ label: "decisions-idle", concurrency: 2, spec: spec(false), logLevel: "warning" });
    envoys.push(without);
    const pidWith = withSync.child.pid!, pidWithout = without.child.pid!;
    const startCpu = cpuSeconds(pidWith);
    for (;;) {
      if ((await metric(withSync, "traffic_guard_decisions_applied_total")) >= BANS) break;
      if (Date.now() - t0 > 300_000) throw new Error("the bans were not applied within 300 s");
      await new Promise((r) => setTimeout(r, 250));
    }
    const loadMs = Date.now() - t0;
    const loadCpu = cpuSeconds(pidWith) - startCpu;
    console.log(`first full range: ${BANS} bans applied ${loadMs} ms after start (CPU of the whole Envoy meanwhile, startup included: ${(loadCpu * 1000).toFixed(0)} ms)`);
    await new Promise((r) => setTimeout(r, 2000));
    const a0 = cpuSeconds(pidWith), b0 = cpuSeconds(pidWithout);
    const calls0 = Number(/cluster\.etcd\.upstream_rq_total: (\d+)/.exec(await withSync.admin("/stats?filter=cluster.etcd.upstream_rq_total"))?.[1] ?? 0);
    await new Promise((r) => setTimeout(r, SECONDS * 1000));
    const a1 = cpuSeconds(pidWith), b1 = cpuSeconds(pidWithout);
    const calls1 = Number(/cluster\.etcd\.upstream_rq_total: (\d+)/.exec(await withSync.admin("/stats?filter=cluster.etcd.upstream_rq_total"))?.[1] ?? 0);
    const withMs = ((a1 - a0) * 1000) / SECONDS, withoutMs = ((b1 - b0) * 1000) / SECONDS;
    console.log(`over ${SECONDS} s with ${await metric(withSync, "traffic_guard_decisions_active")} active decisions, ${calls1 - calls0} calls to etcd:`);
    console.log(`  Envoy with the sync:    ${withMs.toFixed(2)} ms CPU per second`);
    console.log(`  Envoy without it:       ${withoutMs.toFixed(2)} ms CPU per second`);
    console.log(`  the sync's cost:        ${(withMs - withoutMs).toFixed(2)} ms CPU per second (target <= 1)`);
    console.log(`  sync errors: ${await metric(withSync, "traffic_guard_decisions_sync_errors_total")}`);
  } finally {
    for (const e of envoys) await e.stop();
    await app.close();
    await etcd.stop();
  }
}

await main();

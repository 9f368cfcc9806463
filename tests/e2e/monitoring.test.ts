// The alerts against a real Prometheus (Debian's `prometheus`): started on loopback with a temporary storage
// directory and the emitted rule group (a test variant with short windows, `for:` and evaluation interval), it scrapes
// a real Envoy running traffic-guard at the admin /stats/prometheus with the PodMonitor's own metric relabelling.
// Normal traffic, then an attack (a flood and a probe): TrafficGuardBlockRateSpike must become pending or firing, and
// resolve after the attack stops. Skips when prometheus is missing, fails under CI=true.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { Agent } from "node:http";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { stringify } from "yaml";
import { edgeSpec } from "../../dev/envoy-topologies.ts";
import { DEFAULT_TIMING, metricRelabelConfigs, ruleGroups, type RuleTiming } from "../../tools/lib/monitoring.ts";
import { e2e, get, guardFilter, portOf } from "./harness.ts";

/** The shipped rules with every window and `for:` shortened so that the test runs in about a minute. */
const TEST_TIMING: RuleTiming = {
  ...DEFAULT_TIMING,
  interval: "1s",
  spikeWindow: "10s",
  baselineWindow: "2m",
  spikeFor: "2s",
};

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as { port: number }).port;
      server.close(() => resolve(port));
    });
    server.on("error", reject);
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function api<T>(base: string, path: string): Promise<T> {
  const res = await fetch(`${base}${path}`);
  const body = (await res.json()) as { status: string; data: T; error?: string };
  assert.equal(body.status, "success", `${path}: ${body.error}`);
  return body.data;
}

interface Alert { labels: Record<string, string>; state: string }

/** Polls until `check` returns a value (not undefined) or `ms` pass; fails with `what`. */
async function until<T>(what: string, ms: number, check: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) assert.fail(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(500);
  }
}

e2e("a real Prometheus with the emitted rules raises TrafficGuardBlockRateSpike on a flood and a probe against a real Envoy, and resolves it after", async (s, t) => {
  const app = await s.app();
  const envoy = await s.envoy({
    label: "monitored",
    concurrency: 1,
    spec: edgeSpec({
      upstreamPort: app.port,
      filters: [guardFilter({
        rules: { rate: { limit: { requests: 30, per: "10s" }, ban: "15s" }, errors: { limit: { requests: 5, per: "1m" }, ban: "15s" } },
      })],
    }),
  });
  const port = portOf(envoy, "edge");

  const dir = await mkdtemp(join(tmpdir(), "tg-prometheus-"));
  let prometheus: ChildProcess | undefined;
  let promLog = "";
  t.after(async () => {
    if (prometheus && prometheus.exitCode === null) {
      const exited = new Promise((r) => prometheus!.once("exit", r));
      prometheus.kill("SIGTERM");
      await Promise.race([exited, sleep(5000)]);
      if (prometheus.exitCode === null) prometheus.kill("SIGKILL");
    }
    await rm(dir, { recursive: true, force: true });
  });

  await writeFile(join(dir, "rules.yaml"), stringify({ groups: ruleGroups({ timing: TEST_TIMING }) }, { lineWidth: 0 }));
  await writeFile(join(dir, "prometheus.yaml"), stringify({
    global: { scrape_interval: "1s", evaluation_interval: "1s" },
    rule_files: [join(dir, "rules.yaml")],
    scrape_configs: [{
      job_name: "traffic-guard",
      metrics_path: "/stats/prometheus",
      static_configs: [{
        targets: [new URL(envoy.adminUrl).host],
        // What the PodMonitor's relabelling derives from Kubernetes service discovery in a cluster.
        labels: { namespace: "e2e", pod: "edge-0", workload: "edge" },
      }],
      metric_relabel_configs: metricRelabelConfigs(),
    }],
  }, { lineWidth: 0 }));
  const promPort = await freePort();
  const base = `http://127.0.0.1:${promPort}`;
  prometheus = spawn("prometheus", [
    `--config.file=${join(dir, "prometheus.yaml")}`, `--storage.tsdb.path=${join(dir, "data")}`,
    `--web.listen-address=127.0.0.1:${promPort}`, "--log.level=warn",
  ], { stdio: ["ignore", "pipe", "pipe"] });
  prometheus.stdout!.on("data", (d) => (promLog += d));
  prometheus.stderr!.on("data", (d) => (promLog += d));
  try {
    await until("Prometheus to be ready", 30_000, async () => ((await fetch(`${base}/-/ready`)).ok ? true : undefined));
    await until("the first scrape of traffic-guard's metrics", 30_000, async () => {
      const r = await api<{ result: unknown[] }>(base, "/api/v1/query?query=traffic_guard_requests_total");
      return r.result.length > 0 ? true : undefined;
    });

    // Normal traffic: a browser from 127.0.0.6, ~5 requests/s for 15 s, all allowed.
    const normal: number[] = [];
    for (let i = 0; i < 75; i++) {
      normal.push((await get("127.0.0.1", port, i % 3 ? "/" : "/static/app.js", { from: "127.0.0.6" })).status);
      await sleep(200);
    }
    assert.deepEqual([...new Set(normal)], [200]);
    const quiet = await api<{ alerts: Alert[] }>(base, "/api/v1/alerts");
    assert.deepEqual(quiet.alerts.filter((a) => a.labels.alertname === "TrafficGuardBlockRateSpike"), [], "no spike on normal traffic");

    // The attack: a flood from 127.0.0.7 (banned by the rate rule, then denied as banned) and a probe of missing
    // paths from 127.0.0.5 (banned by the errors rule), kept up until the alert shows.
    let attacking = true;
    const statuses: number[] = [];
    const flood = (async () => {
      const agent = new Agent({ keepAlive: true, maxSockets: 4, localAddress: "127.0.0.7" });
      try {
        while (attacking) statuses.push((await get("127.0.0.1", port, "/", { agent })).status);
      } finally {
        agent.destroy();
      }
    })();
    const probe = (async () => {
      for (let i = 0; attacking; i++) {
        statuses.push((await get("127.0.0.1", port, `/probe-${i}.php`, { from: "127.0.0.5" })).status);
        await sleep(50);
      }
    })();
    let alert: Alert;
    try {
      alert = await until("TrafficGuardBlockRateSpike to become pending or firing", 45_000, async () => {
        const { alerts } = await api<{ alerts: Alert[] }>(base, "/api/v1/alerts");
        return alerts.find((a) => a.labels.alertname === "TrafficGuardBlockRateSpike" && ["pending", "firing"].includes(a.state));
      });
    } finally {
      attacking = false;
      await Promise.all([flood, probe]);
    }
    assert.equal(alert.labels.workload, "edge");
    assert.equal(alert.labels.namespace, "e2e");
    assert.ok(statuses.filter((c) => c === 429 || c === 403).length > 0, `the attack was denied (${statuses.length} requests)`);
    // The relabelling turned the reasons and rules in the metric names into labels.
    const reasons = await api<{ result: Array<{ metric: { reason?: string } }> }>(base, "/api/v1/query?query=sum%20by%20(reason)%20(traffic_guard_denied_total)%20%3E%200");
    const denied = reasons.result.map((r) => r.metric.reason).sort();
    assert.ok(denied.includes("rate") && denied.includes("banned"), `denied reasons: ${denied.join(", ")}`);
    const rules = await api<{ result: Array<{ metric: { rule?: string } }> }>(base, "/api/v1/query?query=sum%20by%20(rule)%20(traffic_guard_bans_total)%20%3E%200");
    assert.deepEqual(rules.result.map((r) => r.metric.rule).sort(), ["errors", "rate"]);

    // After the attack the 10 s rate falls to zero and the alert resolves (leaves the list of active alerts).
    await until("TrafficGuardBlockRateSpike to resolve after the attack", 45_000, async () => {
      const { alerts } = await api<{ alerts: Alert[] }>(base, "/api/v1/alerts");
      return alerts.some((a) => a.labels.alertname === "TrafficGuardBlockRateSpike") ? undefined : true;
    });
  } catch (err) {
    process.stderr.write(`\n----- prometheus log -----\n${promLog}\n----- end of prometheus log -----\n`);
    throw err;
  }
}, ["prometheus"]);

// `traffic-guard sync --watch` against a real API server: it follows label changes within seconds, repairs
// WasmPlugins deleted or edited by hand, keeps going across a kube-apiserver restart (etcd keeps the data, as in a
// control-plane upgrade), and exits 0 on SIGTERM and SIGINT.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Admin, CliProcess, startCluster, CuttableProxy, MODULE_ARGS, until, workDir, WP } from "./helpers.ts";
import type { TestCluster } from "./harness.ts";

let cluster: TestCluster | undefined;
/** Why the suite skips locally (binaries not built), when it does. */
let skip: string | undefined;
let admin: Admin;
let work: Awaited<ReturnType<typeof workDir>>;

/** How long a change may take to be reconciled while the watch is connected. */
const FOLLOW_MS = 5_000;

function watchSync(): CliProcess {
  return new CliProcess(["sync", "--watch", "--kubeconfig", cluster!.kubeconfig, "--policy", work.policy, ...MODULE_ARGS]);
}

function count(text: string, line: string): number {
  return text.split("\n").filter((l) => l === line).length;
}

/** Waits until `line` has been printed `n` times; returns the time it took. */
async function printed(sync: CliProcess, line: string, n = 1, timeoutMs = FOLLOW_MS): Promise<number> {
  const start = Date.now();
  await until(`"${line}" ×${n} on stdout; stdout:\n${sync.stdout}\nstderr:\n${sync.stderr}`, timeoutMs, async () => {
    if (sync.child.exitCode !== null) throw new Error(`sync --watch exited (${sync.child.exitCode}): ${sync.stderr}`);
    return count(sync.stdout, line) >= n;
  });
  return Date.now() - start;
}

describe("traffic-guard sync --watch against a real API server", { timeout: 180_000 }, () => {
  before(async () => {
    ({ cluster, skip } = await startCluster());
    if (!cluster) return;
    admin = new Admin(cluster.kubeconfig);
    await admin.installWasmPluginCrd(cluster);
    work = await workDir();
  });
  after(async () => {
    await cluster?.stop();
    await work?.cleanup();
  });

  test("follows label changes within seconds and repairs WasmPlugins deleted or edited by hand; SIGTERM exits 0", async (t) => {
    if (!cluster) return t.skip(skip);
    await admin.createNamespace("early", { "traffic-guard": "enabled" });
    const sync = watchSync();
    try {
      // The first pass prints the full report and a summary.
      await printed(sync, "created      early/traffic-guard (mode enforce)", 1, 20_000);
      await sync.waitFor(/1 namespace opt in with label traffic-guard: 1 created/);

      await admin.createNamespace("shop");
      await admin.label("shop", { "traffic-guard": "enabled" });
      const labelled = await printed(sync, "created      shop/traffic-guard (mode enforce)");
      assert.ok(await admin.plugin("shop"));

      await admin.label("shop", { "traffic-guard": "dry-run" });
      const relabelled = await printed(sync, "updated      shop/traffic-guard (mode dry-run)");
      assert.equal((await admin.plugin("shop"))!.spec.pluginConfig!.mode, "dry-run");

      // Deleted by hand: recreated.
      await admin.custom.deleteNamespacedCustomObject({ ...WP, namespace: "shop", name: "traffic-guard" });
      const repaired = await printed(sync, "created      shop/traffic-guard (mode dry-run)");
      assert.equal((await admin.plugin("shop"))!.spec.pluginConfig!.mode, "dry-run");

      // Edited by hand (another field manager takes spec.url): sync takes its field back.
      const path = "/apis/extensions.istio.io/v1alpha1/namespaces/shop/wasmplugins/traffic-guard";
      const current = (await cluster.adminRequest("GET", path)).body as { spec: Record<string, unknown> };
      current.spec.url = "https://evil.example.com/other.wasm";
      const put = await cluster.adminRequest("PUT", `${path}?fieldManager=kubectl-edit`, current);
      assert.equal(put.status, 200, JSON.stringify(put.body));
      await printed(sync, "updated      shop/traffic-guard (mode dry-run)", 2);
      assert.equal((await admin.plugin("shop"))!.spec.url, "https://wasm.example.com/traffic-guard.wasm");

      await admin.label("shop", { "traffic-guard": null });
      const unlabelled = await printed(sync, "deleted      shop/traffic-guard (namespace no longer opts in)");
      assert.equal(await admin.plugin("shop"), undefined);
      t.diagnostic(`reconcile latency ms: label ${labelled}, relabel ${relabelled}, hand-delete ${repaired}, unlabel ${unlabelled}`);

      // Our own writes come back as watch events; they must not cause more writes (no loop).
      const before = await admin.versions();
      await new Promise((r) => setTimeout(r, 1500));
      assert.deepEqual(await admin.versions(), before);
    } finally {
      const r = await sync.stop("SIGTERM");
      assert.equal(r.code, 0, `exit ${r.code} ${r.signal}\n${r.stderr}`);
      assert.match(r.stderr, /sync: SIGTERM received, stopping\nsync: stopped\n$/);
    }
  });

  test("survives a kube-apiserver restart and a dropped connection: changes made while it was cut off all land after it reconnects; SIGINT exits 0", async (t) => {
    if (!cluster) return t.skip(skip);
    // sync reaches the API server through a proxy the test can cut, so the changes below provably happen while
    // sync is disconnected; the admin client talks to the API server directly.
    const proxy = new CuttableProxy(cluster.apiPort);
    await proxy.start();
    const kubeconfig = `${work.dir}/via-proxy.kubeconfig`;
    await cluster.writeKubeconfig(kubeconfig, { name: "admin", certFile: `${cluster.dir}/admin.crt`, keyFile: `${cluster.dir}/admin.key` }, proxy.port);
    await admin.createNamespace("stays", { "traffic-guard": "enabled" });
    await admin.createNamespace("goes", { "traffic-guard": "enabled" });
    const sync = new CliProcess(["sync", "--watch", "--kubeconfig", kubeconfig, "--policy", work.policy, ...MODULE_ARGS]);
    try {
      await printed(sync, "created      stays/traffic-guard (mode enforce)", 1, 20_000);
      await printed(sync, "created      goes/traffic-guard (mode enforce)");
      await sync.waitFor(/namespaces? opt in with label traffic-guard/);

      proxy.cut();
      await sync.waitFor(/watch namespaces: API server unreachable/, 10_000, "stderr");
      await sync.waitFor(/watch WasmPlugins: API server unreachable/, 10_000, "stderr");
      // A restart while sync is away: the new kube-apiserver has a fresh watch cache, so resuming from the old
      // resourceVersion is not a given; sync must relist or resume without missing anything.
      const stopping = Date.now();
      await cluster.stopApiserver();
      const stopped = Date.now() - stopping;
      await cluster.startApiserver();
      t.diagnostic(`kube-apiserver stopped in ${stopped} ms, ready again ${cluster.lastApiserverStartMs} ms after start`);
      // Three kinds of change sync cannot see as they happen.
      await admin.createNamespace("arrives", { "traffic-guard": "dry-run" });
      await admin.label("goes", { "traffic-guard": null });
      await admin.custom.deleteNamespacedCustomObject({ ...WP, namespace: "stays", name: "traffic-guard" });
      const reconnect = Date.now();
      proxy.restore();

      await printed(sync, "created      arrives/traffic-guard (mode dry-run)", 1, 40_000);
      await printed(sync, "deleted      goes/traffic-guard (namespace no longer opts in)", 1, 40_000);
      await printed(sync, "created      stays/traffic-guard (mode enforce)", 2, 40_000);
      t.diagnostic(`all three changes reconciled ${Date.now() - reconnect} ms after the connection came back`);
      assert.equal((await admin.plugin("arrives"))!.spec.pluginConfig!.mode, "dry-run");
      assert.equal(await admin.plugin("goes"), undefined);
      assert.ok(await admin.plugin("stays"));
      assert.match(sync.stderr, /watch namespaces: (resumed|relisted) at resourceVersion \d+/);
      assert.match(sync.stderr, /watch WasmPlugins: (resumed|relisted) at resourceVersion \d+/);

      // The watch is live again, not just a one-off relist.
      await admin.label("arrives", { "traffic-guard": null });
      await printed(sync, "deleted      arrives/traffic-guard (namespace no longer opts in)");
      t.diagnostic(`sync stderr:\n${sync.stderr}`);
    } finally {
      const r = await sync.stop("SIGINT");
      await proxy.stop();
      assert.equal(r.code, 0, `exit ${r.code} ${r.signal}\n${r.stderr}`);
      assert.match(r.stderr, /sync: SIGINT received, stopping\nsync: stopped\n$/);
    }
  });

  test("survives a kube-apiserver restart while connected directly", async (t) => {
    if (!cluster) return t.skip(skip);
    await admin.createNamespace("direct", { "traffic-guard": "enabled" });
    const sync = watchSync();
    try {
      await printed(sync, "created      direct/traffic-guard (mode enforce)", 1, 20_000);
      await sync.waitFor(/namespaces? opt in with label traffic-guard/);
      await cluster.stopApiserver();
      await sync.waitFor(/watch (namespaces|WasmPlugins): .*resuming in/, 15_000, "stderr");
      await cluster.startApiserver();
      await admin.custom.deleteNamespacedCustomObject({ ...WP, namespace: "direct", name: "traffic-guard" });
      await admin.createNamespace("direct-after", { "traffic-guard": "enabled" });
      await printed(sync, "created      direct/traffic-guard (mode enforce)", 2, 40_000);
      await printed(sync, "created      direct-after/traffic-guard (mode enforce)", 1, 40_000);
    } finally {
      const r = await sync.stop("SIGTERM");
      assert.equal(r.code, 0, `exit ${r.code} ${r.signal}\n${r.stderr}`);
    }
  });
});

// Bad input for `traffic-guard sync`: every case must end with one clear line naming the problem and exit 1
// (2 for command-line usage errors, like every traffic-guard command). The first group needs no cluster; the
// second runs against a real API server that has no WasmPlugin CRD installed.
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { stringify } from "yaml";
import { startCluster, CliProcess, MODULE_ARGS, runCli, workDir, type CliResult } from "./helpers.ts";
import { freePort, type TestCluster } from "./harness.ts";

let work: Awaited<ReturnType<typeof workDir>>;

function explain(r: CliResult): string {
  return `exit ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`;
}

function syncArgs(...extra: string[]): string[] {
  return ["sync", "--policy", work.policy, ...MODULE_ARGS, ...extra];
}

/** A kubeconfig for `server` with a bearer token and no CA check (the server is never reached, or is fake). */
async function kubeconfigFor(server: string, token = "not-a-real-token"): Promise<string> {
  const path = join(work.dir, `kubeconfig-${Math.random().toString(36).slice(2)}`);
  await writeFile(path, stringify({
    apiVersion: "v1", kind: "Config",
    clusters: [{ name: "c", cluster: { server, "insecure-skip-tls-verify": true } }],
    users: [{ name: "u", user: { token } }],
    contexts: [{ name: "ctx", context: { cluster: "c", user: "u" } }],
    "current-context": "ctx",
  }));
  return path;
}

before(async () => {
  work = await workDir();
});
after(async () => {
  await work.cleanup();
});

describe("sync: bad input that needs no cluster", () => {
  test("a --kubeconfig that does not exist is named in the error and exits 1", async () => {
    const r = await runCli(syncArgs("--kubeconfig", "/nonexistent/traffic-guard/kubeconfig"));
    assert.equal(r.code, 1, explain(r));
    assert.equal(r.stderr, "error: kubeconfig not found: /nonexistent/traffic-guard/kubeconfig\n");
  });

  test("no kubeconfig anywhere and not in a pod says where it looked and exits 1", async () => {
    const home = await mkdtemp(join(tmpdir(), "traffic-guard-home-"));
    try {
      const r = await runCli(syncArgs(), { HOME: home, KUBECONFIG: undefined, KUBERNETES_SERVICE_HOST: undefined });
      assert.equal(r.code, 1, explain(r));
      assert.equal(
        r.stderr,
        "error: no Kubernetes configuration found: pass --kubeconfig <file>, set KUBECONFIG, create ~/.kube/config, or run in a pod with a service account\n",
      );
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  });

  test("a --context missing from the kubeconfig lists the contexts there and exits 1", async () => {
    const kubeconfig = await kubeconfigFor("https://127.0.0.1:1");
    const r = await runCli(syncArgs("--kubeconfig", kubeconfig, "--context", "prod"));
    assert.equal(r.code, 1, explain(r));
    assert.equal(r.stderr, `error: context "prod" not found in kubeconfig ${kubeconfig} (available: ctx)\n`);
  });

  test("an unreachable API server is named with the connection error and exits 1, with and without --watch", async () => {
    const port = await freePort(); // nothing listens there
    const kubeconfig = await kubeconfigFor(`https://127.0.0.1:${port}`);
    for (const extra of [[], ["--watch"]]) {
      const r = await runCli(syncArgs("--kubeconfig", kubeconfig, ...extra));
      assert.equal(r.code, 1, explain(r));
      assert.match(
        r.stderr,
        new RegExp(`^error: cannot reach the Kubernetes API server at https://127\\.0\\.0\\.1:${port} \\(kubeconfig ${kubeconfig} \\(context ctx\\)\\): .*ECONNREFUSED`, "m"),
      );
    }
  });

  test("an invalid --label key and a missing module source are usage errors (exit 2)", async () => {
    const kubeconfig = await kubeconfigFor("https://127.0.0.1:1");
    let r = await runCli(syncArgs("--kubeconfig", kubeconfig, "--label", "not a label"));
    assert.equal(r.code, 2, explain(r));
    assert.match(r.stderr, /"not a label" is not a valid label key/);
    r = await runCli(["sync", "--kubeconfig", kubeconfig]);
    assert.equal(r.code, 2, explain(r));
    assert.match(r.stderr, /give exactly one of --image or --url/);
  });
});

describe("sync: a real API server without the WasmPlugin CRD", { timeout: 120_000 }, () => {
  let cluster: TestCluster | undefined;
  let skip: string | undefined;
  before(async () => {
    ({ cluster, skip } = await startCluster());
  });
  after(async () => {
    await cluster?.stop();
  });

  test("says the WasmPlugin CRD is missing and exits 1, with and without --watch", async (t) => {
    if (!cluster) return t.skip(skip);
    for (const extra of [[], ["--watch"], ["--dry-run"]]) {
      const r = await runCli(syncArgs("--kubeconfig", cluster.kubeconfig, ...extra));
      assert.equal(r.code, 1, explain(r));
      assert.match(
        r.stderr,
        new RegExp(`error: the WasmPlugin CRD \\(wasmplugins\\.extensions\\.istio\\.io\\) is not installed in the cluster at ${cluster.server.replace(/\./g, "\\.")}: install Istio`),
      );
    }
  });

  test("credentials the API server rejects are reported as such (401) and exit 1", async (t) => {
    if (!cluster) return t.skip(skip);
    const kubeconfig = await kubeconfigFor(cluster.server, "wrong-token");
    const r = await runCli(syncArgs("--kubeconfig", kubeconfig));
    assert.equal(r.code, 1, explain(r));
    assert.match(r.stderr, /error: the Kubernetes API server at https:\/\/127\.0\.0\.1:\d+ rejected the credentials of kubeconfig .* \(401 Unauthorized\)/);
  });

  test("--watch exits 1 on bad input instead of retrying forever", async (t) => {
    if (!cluster) return t.skip(skip);
    const watcher = new CliProcess(syncArgs("--kubeconfig", cluster.kubeconfig, "--watch"));
    const r = await watcher.exit(30_000);
    assert.equal(r.code, 1, explain(r));
    assert.match(r.stderr, /WasmPlugin CRD .* is not installed/);
  });
});

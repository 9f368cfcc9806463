// Shared pieces of the tests/kube suites: one real control plane per test file, an admin client, the CLI as a
// child process (so exit codes, output and signal handling are the real ones), and small polling helpers.
import {
  ApiextensionsV1Api, CoreV1Api, CustomObjectsApi, KubeConfig, KubernetesObjectApi, PatchStrategy,
  type KubernetesObject,
} from "@kubernetes/client-node";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import { createServer, connect, type Server, type Socket } from "node:net";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { wasmPluginCrd, WASMPLUGIN_CRD } from "./crd.ts";
import { findKubeBinaries, IN_CI, liveChildren, REPO, TestCluster, type KubeBinaries } from "./harness.ts";

/** The WasmPlugin API coordinates. */
export const WP = { group: "extensions.istio.io", version: "v1alpha1", plural: "wasmplugins" } as const;

/** A WasmPlugin as the tests read it. */
export type WasmPlugin = KubernetesObject & { spec: Record<string, unknown> & { pluginConfig?: Record<string, unknown> } };

/** Admin clients for one cluster. */
export class Admin {
  readonly kc: KubeConfig;
  readonly core: CoreV1Api;
  readonly custom: CustomObjectsApi;
  readonly ext: ApiextensionsV1Api;
  readonly objects: KubernetesObjectApi;

  constructor(kubeconfig: string) {
    this.kc = new KubeConfig();
    this.kc.loadFromFile(kubeconfig);
    this.core = this.kc.makeApiClient(CoreV1Api);
    this.custom = this.kc.makeApiClient(CustomObjectsApi);
    this.ext = this.kc.makeApiClient(ApiextensionsV1Api);
    this.objects = KubernetesObjectApi.makeApiClient(this.kc);
  }

  /** Creates a namespace with the given labels. */
  async createNamespace(name: string, labels: Record<string, string> = {}): Promise<void> {
    await this.core.createNamespace({ body: { metadata: { name, labels } } });
  }

  /** Sets (string) or removes (null) namespace labels, like `kubectl label namespace`. */
  async label(name: string, labels: Record<string, string | null>): Promise<void> {
    await this.objects.patch(
      { apiVersion: "v1", kind: "Namespace", metadata: { name, labels: labels as Record<string, string> } },
      undefined, undefined, "kubectl-label", undefined, PatchStrategy.MergePatch,
    );
  }

  /** The WasmPlugins of a namespace. */
  async plugins(namespace: string): Promise<WasmPlugin[]> {
    const list = (await this.custom.listNamespacedCustomObject({ ...WP, namespace })) as { items: WasmPlugin[] };
    return list.items;
  }

  /** One WasmPlugin, or undefined when it does not exist. */
  async plugin(namespace: string, name = "traffic-guard"): Promise<WasmPlugin | undefined> {
    return (await this.plugins(namespace)).find((p) => p.metadata?.name === name);
  }

  /** Every WasmPlugin in the cluster, keyed "namespace/name" → resourceVersion. */
  async versions(): Promise<Map<string, string>> {
    const list = (await this.custom.listClusterCustomObject(WP)) as { items: WasmPlugin[] };
    return new Map(list.items.map((p) => [`${p.metadata!.namespace}/${p.metadata!.name}`, p.metadata!.resourceVersion!]));
  }

  /** Installs the WasmPlugin CRD (see crd.ts) and waits until it is established and served. */
  async installWasmPluginCrd(cluster: TestCluster): Promise<void> {
    const created = await cluster.adminRequest("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", await wasmPluginCrd());
    if (created.status !== 201) throw new Error(`creating the WasmPlugin CRD failed: HTTP ${created.status} ${JSON.stringify(created.body)}`);
    await until("the WasmPlugin CRD to be established", 30_000, async () => {
      const got = await this.ext.readCustomResourceDefinition({ name: WASMPLUGIN_CRD });
      return got.status?.conditions?.some((c) => c.type === "Established" && c.status === "True") ?? false;
    });
    await until("wasmplugins to be served", 30_000, async () => {
      await this.custom.listClusterCustomObject(WP);
      return true;
    });
  }
}

/** Polls `probe` every 100 ms until it returns true; fails with `what` after `timeoutMs`. */
export async function until(what: string, timeoutMs: number, probe: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      if (await probe()) return;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${String(last)})` : ""}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A started cluster, or why the suite skips (never under CI=true: there a missing component throws). */
export type ClusterOrSkip = { cluster: TestCluster; skip?: undefined } | { cluster?: undefined; skip: string };

/**
 * Starts a cluster for a test file. Locally, missing binaries (or a missing build/traffic-guard.wasm) mean skip,
 * with the reason; with CI=true they are an error, so CI can never pass by skipping.
 */
export async function startCluster(): Promise<ClusterOrSkip> {
  const found = findKubeBinaries();
  let reason: string | undefined;
  if (!found.ok) reason = found.reason;
  else if (!existsSync(join(REPO, "build/traffic-guard.wasm"))) {
    reason = "build/traffic-guard.wasm is missing (run npm run build): sync validates the policy with it";
  }
  if (reason !== undefined) {
    if (IN_CI) throw new Error(`CI=true and the Kubernetes API server tests cannot run: ${reason}`);
    return { skip: reason };
  }
  return { cluster: await TestCluster.start((found as { bins: KubeBinaries }).bins) };
}

/** Same as startCluster, for callers that pass a skip callback (tests/cli/kube-apply.test.ts uses this form). */
export async function clusterFor(t: { skip: (msg: string) => void }): Promise<TestCluster | undefined> {
  const started = await startCluster();
  if (!started.cluster) {
    t.skip(started.skip);
    return undefined;
  }
  return started.cluster;
}

/** Result of one CLI run. */
export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * The CLI the tests run: the bundle users get (dist/traffic-guard.mjs, built by `npm run build`, which `npm test`
 * runs first) when it is newer than every source file under tools/, else tools/cli.ts through tsx. The bundle
 * also starts about ten times faster, which matters for a suite that runs the CLI ~40 times.
 */
const CLI_ARGS: string[] = (() => {
  const bundle = join(REPO, "dist/traffic-guard.mjs");
  const newest = (dir: string): number =>
    Math.max(0, ...readdirSync(dir, { withFileTypes: true }).map((e) =>
      e.isDirectory() ? newest(join(dir, e.name)) : e.name.endsWith(".ts") ? statSync(join(dir, e.name)).mtimeMs : 0));
  if (existsSync(bundle) && statSync(bundle).mtimeMs > newest(join(REPO, "tools"))) return [bundle];
  return ["--import", "tsx", join(REPO, "tools/cli.ts")];
})();

function cliEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  // No ambient configuration may leak in: each test names its kubeconfig (or deliberately none).
  const env: NodeJS.ProcessEnv = { ...process.env, KUBECONFIG: undefined, HOME: tmpdir(), ...extra };
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete env[k];
  return env;
}

/** Runs `traffic-guard <args>` to completion. */
export function runCli(args: string[], env: Record<string, string | undefined> = {}, timeoutMs = 60_000): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...CLI_ARGS, ...args], { cwd: REPO, env: cliEnv(env) });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`traffic-guard ${args.join(" ")} did not finish in ${timeoutMs} ms\nstdout:\n${stdout}\nstderr:\n${stderr}`));
    }, timeoutMs);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** What a pod's service account gives a process: the files under /var/run/secrets and two environment variables. */
export interface PodIdentity {
  token: string;
  caFile: string;
  namespace: string;
  port: number;
}

/**
 * Runs `traffic-guard <args>` as if in a pod: in a private mount namespace (unshare, root only) /run is a fresh
 * tmpfs holding /var/run/secrets/kubernetes.io/serviceaccount/{token,ca.crt,namespace}, and
 * KUBERNETES_SERVICE_HOST/PORT point at the API server. No kubeconfig exists, so the CLI must use the in-cluster
 * configuration. The machine's real /run is untouched.
 */
export async function runCliInPod(args: string[], pod: PodIdentity, timeoutMs = 60_000): Promise<CliResult> {
  const home = await mkdtemp(join(tmpdir(), "traffic-guard-pod-home-"));
  const tokenFile = join(home, "token");
  await writeFile(tokenFile, pod.token);
  const script = [
    "set -e",
    "mount -t tmpfs tmpfs /run",
    "d=/var/run/secrets/kubernetes.io/serviceaccount",
    "mkdir -p $d",
    'cp "$POD_TOKEN" $d/token',
    'cp "$POD_CA" $d/ca.crt',
    'printf %s "$POD_NAMESPACE" > $d/namespace',
    'exec "$@"',
  ].join("\n");
  try {
    return await new Promise((resolve, reject) => {
      const child = spawn("unshare", ["--mount", "--propagation", "private", "sh", "-c", script, "sh", process.execPath, ...CLI_ARGS, ...args], {
        cwd: REPO,
        env: cliEnv({
          HOME: home, KUBECONFIG: undefined,
          KUBERNETES_SERVICE_HOST: "127.0.0.1", KUBERNETES_SERVICE_PORT: String(pod.port),
          POD_TOKEN: tokenFile, POD_CA: pod.caFile, POD_NAMESPACE: pod.namespace,
        }),
      });
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (d) => (stdout += d));
      child.stderr.on("data", (d) => (stderr += d));
      const timer = setTimeout(() => {
        child.kill("SIGKILL");
        reject(new Error(`traffic-guard ${args.join(" ")} (in a pod) did not finish in ${timeoutMs} ms\n${stderr}`));
      }, timeoutMs);
      child.on("close", (code, signal) => {
        clearTimeout(timer);
        resolve({ code, signal, stdout, stderr });
      });
    });
  } finally {
    await rm(home, { recursive: true, force: true });
  }
}

/** Why runCliInPod cannot work here (not root, or no unshare), or undefined when it can. */
export function podSimulationUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return "simulating a pod needs root (a private mount namespace with unshare)";
  const probe = spawnSync("unshare", ["--mount", "--propagation", "private", "sh", "-c", "mount -t tmpfs tmpfs /run"], { encoding: "utf8" });
  if (probe.status !== 0) return `unshare --mount failed: ${probe.error?.message ?? probe.stderr.trim()}`;
  return undefined;
}

/** A long-running `traffic-guard sync --watch`. */
export class CliProcess {
  readonly child: ChildProcess;
  stdout = "";
  stderr = "";
  private readonly exited: Promise<CliResult>;

  constructor(args: string[], env: Record<string, string | undefined> = {}) {
    this.child = spawn(process.execPath, [...CLI_ARGS, ...args], { cwd: REPO, env: cliEnv(env) });
    liveChildren.add(this.child);
    this.child.on("exit", () => liveChildren.delete(this.child));
    this.child.stdout!.on("data", (d) => (this.stdout += d));
    this.child.stderr!.on("data", (d) => (this.stderr += d));
    this.exited = new Promise((resolve) => {
      this.child.on("close", (code, signal) => resolve({ code, signal, stdout: this.stdout, stderr: this.stderr }));
    });
  }

  /** Waits until stdout (or stderr) matches `pattern`. */
  async waitFor(pattern: RegExp, timeoutMs = 20_000, stream: "stdout" | "stderr" = "stdout"): Promise<void> {
    await until(`${stream} to match ${pattern}; ${stream} so far:\n${this[stream]}`, timeoutMs, async () => {
      if (this.child.exitCode !== null) throw new Error(`sync exited early (${this.child.exitCode}): ${this.stderr}`);
      return pattern.test(this[stream]);
    });
  }

  /** Waits for the process to exit by itself; kills it and fails after `timeoutMs`. */
  async exit(timeoutMs: number): Promise<CliResult> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        this.child.kill("SIGKILL");
        reject(new Error(`sync did not exit within ${timeoutMs} ms\nstdout:\n${this.stdout}\nstderr:\n${this.stderr}`));
      }, timeoutMs);
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Sends `signal` and waits for the process to exit. */
  async stop(signal: NodeJS.Signals = "SIGTERM", timeoutMs = 15_000): Promise<CliResult> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    const timer = setTimeout(() => this.child.kill("SIGKILL"), timeoutMs);
    const result = await this.exited;
    clearTimeout(timer);
    return result;
  }
}

/** A temporary directory with a policy file, removed by cleanup(). */
export async function workDir(): Promise<{ dir: string; policy: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), "traffic-guard-sync-"));
  const policy = join(dir, "policy.yaml");
  // A small enforce-mode policy the filter accepts: rate limit with a ban.
  await writeFile(policy, "rules:\n  rate:\n    limit: { requests: 100, per: 1s }\n    ban: 60s\n");
  return { dir, policy, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** The module source every test passes: a URL plus its digest (the API server does not fetch it). */
export const MODULE_ARGS = ["--url", "https://wasm.example.com/traffic-guard.wasm", "--sha256", "a".repeat(64)];

/**
 * A loopback TCP proxy in front of the API server. cut() drops every connection and refuses new ones (a network
 * partition as the client sees it), restore() lets traffic through again. Tests use it to make changes while sync
 * is provably disconnected, instead of hoping a restart window is wide enough.
 */
export class CuttableProxy {
  private server?: Server;
  private readonly sockets = new Set<Socket>();
  private open = true;
  port = 0;

  constructor(private readonly targetPort: number) {}

  /** Starts listening on a free loopback port. */
  async start(): Promise<void> {
    this.server = createServer((client) => {
      if (!this.open) {
        client.destroy();
        return;
      }
      const upstream = connect(this.targetPort, "127.0.0.1");
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on("close", () => this.sockets.delete(s));
        s.on("error", () => {
          client.destroy();
          upstream.destroy();
        });
      }
      client.pipe(upstream);
      upstream.pipe(client);
    });
    await new Promise<void>((resolve) => this.server!.listen(0, "127.0.0.1", resolve));
    this.port = (this.server.address() as { port: number }).port;
  }

  /** Drops all connections; new ones are accepted and closed at once. */
  cut(): void {
    this.open = false;
    for (const s of this.sockets) s.destroy();
  }

  /** Lets connections through again. */
  restore(): void {
    this.open = true;
  }

  /** Stops the proxy. */
  async stop(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

// A real, throwaway Kubernetes control plane for tests/kube: etcd + kube-apiserver on loopback, built from the
// Go module proxy by scripts/kube-bins.sh and cached under ~/.cache/traffic-guard. No controller-manager,
// scheduler or kubelet runs: sync only talks to the API server, and nothing here needs pods to run.
//
// Security setup, all generated per run with openssl in a temporary directory:
// - a CA that signs the serving certificate (SAN 127.0.0.1, localhost) and the admin client certificate
//   (O=system:masters, so RBAC lets it do anything);
// - an RSA key pair for service-account tokens, so the RBAC test can mint a real ServiceAccount token with the
//   TokenRequest API and run sync as that ServiceAccount;
// - authorization mode RBAC only, so the ServiceAccount gets exactly what the traffic-guard ClusterRole grants.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { createWriteStream, existsSync, rmSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { request } from "node:https";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { stringify } from "yaml";

/** Repository root. */
export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

/** Where the control-plane binaries live. */
export interface KubeBinaries {
  apiserver: string;
  etcd: string;
}

/** Outcome of looking for the binaries: found, or the reason the suite must skip (or, under CI=true, fail). */
export type BinaryLookup = { ok: true; bins: KubeBinaries } | { ok: false; reason: string };

/** True when the suite runs in CI, where a missing component is a failure instead of a skip. */
export const IN_CI = process.env.CI === "true";

/**
 * Finds kube-apiserver and etcd: TRAFFIC_GUARD_KUBE_APISERVER / TRAFFIC_GUARD_ETCD if set, else the cache that
 * scripts/kube-bins.sh fills. Locally a missing cache is a skip (a fresh build takes many minutes); under CI=true
 * the script is run to build them, so CI never silently skips.
 */
export function findKubeBinaries(): BinaryLookup {
  const envApi = process.env.TRAFFIC_GUARD_KUBE_APISERVER;
  const envEtcd = process.env.TRAFFIC_GUARD_ETCD;
  if (envApi || envEtcd) {
    for (const [name, path] of [["TRAFFIC_GUARD_KUBE_APISERVER", envApi], ["TRAFFIC_GUARD_ETCD", envEtcd]]) {
      if (!path || !existsSync(path)) return { ok: false, reason: `${name}=${path ?? ""} does not point to a binary` };
    }
    return { ok: true, bins: { apiserver: envApi!, etcd: envEtcd! } };
  }
  if (spawnSync("openssl", ["version"]).status !== 0) return { ok: false, reason: "openssl is not installed" };
  const script = join(REPO, "scripts/kube-bins.sh");
  const check = spawnSync("bash", [script, "--check"], { encoding: "utf8" });
  let out = check.stdout;
  if (check.status !== 0) {
    if (!IN_CI) {
      return {
        ok: false,
        reason: `kube-apiserver/etcd are not built yet (${check.stderr.trim().replace(/\n/g, "; ")}); run scripts/kube-bins.sh once (about 9 minutes and 2.4 GB of RAM on 2 cores)`,
      };
    }
    const build = spawnSync("bash", [script], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] });
    if (build.status !== 0) return { ok: false, reason: `scripts/kube-bins.sh failed with exit code ${build.status}` };
    out = build.stdout;
  }
  const [apiserver, etcd] = out.trim().split("\n");
  return { ok: true, bins: { apiserver, etcd } };
}

/** A free TCP port on 127.0.0.1 (bound and released; the tiny race is acceptable for tests). */
export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolvePort(port));
    });
  });
}

function openssl(args: string[], cwd: string): void {
  const r = spawnSync("openssl", args, { cwd, encoding: "utf8" });
  if (r.status !== 0) throw new Error(`openssl ${args.join(" ")} failed: ${r.stderr}`);
}

/** Generates the CA, serving cert, admin client cert and service-account key pair in `dir`. */
function makeCertificates(dir: string): void {
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  openssl(["req", "-x509", ...ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=traffic-guard-test-ca"], dir);
  openssl([
    "req", "-x509", ...ec, "-keyout", "server.key", "-out", "server.crt", "-days", "2", "-subj", "/CN=kube-apiserver",
    "-CA", "ca.crt", "-CAkey", "ca.key",
    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-addext", "extendedKeyUsage=serverAuth",
    "-addext", "basicConstraints=critical,CA:FALSE",
  ], dir);
  openssl([
    "req", "-x509", ...ec, "-keyout", "admin.key", "-out", "admin.crt", "-days", "2", "-subj", "/O=system:masters/CN=traffic-guard-test-admin",
    "-CA", "ca.crt", "-CAkey", "ca.key", "-addext", "extendedKeyUsage=clientAuth", "-addext", "basicConstraints=critical,CA:FALSE",
  ], dir);
  openssl(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "sa.key"], dir);
  openssl(["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"], dir);
}

/** Credentials for a kubeconfig user. */
export type KubeUser = { name: string; token: string } | { name: string; certFile: string; keyFile: string };

async function waitFor(what: string, timeoutMs: number, probe: () => Promise<boolean>, alive?: () => string | undefined): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const dead = alive?.();
    if (dead) throw new Error(`${what}: ${dead}`);
    if (await probe().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`${what}: not ready after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** One etcd + kube-apiserver pair in a temporary directory. */
export class TestCluster {
  readonly dir: string;
  readonly bins: KubeBinaries;
  readonly apiPort: number;
  readonly etcdPort: number;
  readonly etcdPeerPort: number;
  /** Admin kubeconfig (client certificate in system:masters). */
  readonly kubeconfig: string;
  private etcd?: ChildProcess;
  private apiserver?: ChildProcess;
  private apiserverStarts = 0;
  /** How long the last kube-apiserver start took until /readyz answered ok, in ms. */
  lastApiserverStartMs = 0;

  private constructor(dir: string, bins: KubeBinaries, apiPort: number, etcdPort: number, etcdPeerPort: number) {
    this.dir = dir;
    this.bins = bins;
    this.apiPort = apiPort;
    this.etcdPort = etcdPort;
    this.etcdPeerPort = etcdPeerPort;
    this.kubeconfig = join(dir, "admin.kubeconfig");
  }

  /** The API server URL. */
  get server(): string {
    return `https://127.0.0.1:${this.apiPort}`;
  }

  /** Generates certificates, starts etcd and kube-apiserver, and waits until the API server is ready. */
  static async start(bins: KubeBinaries): Promise<TestCluster> {
    const dir = await mkdtemp(join(tmpdir(), "traffic-guard-kube-"));
    const cluster = new TestCluster(dir, bins, await freePort(), await freePort(), await freePort());
    live.add(cluster);
    try {
      makeCertificates(dir);
      await cluster.writeKubeconfig(cluster.kubeconfig, { name: "admin", certFile: join(dir, "admin.crt"), keyFile: join(dir, "admin.key") });
      await cluster.startEtcd();
      await cluster.startApiserver();
    } catch (err) {
      await cluster.stop();
      throw err;
    }
    return cluster;
  }

  private spawnLogged(name: string, bin: string, args: string[]): ChildProcess {
    const log = createWriteStream(join(this.dir, `${name}.log`), { flags: "a" });
    const child = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"] });
    child.stdout!.pipe(log, { end: false });
    child.stderr!.pipe(log, { end: false });
    return child;
  }

  private async startEtcd(): Promise<void> {
    const client = `http://127.0.0.1:${this.etcdPort}`;
    const peer = `http://127.0.0.1:${this.etcdPeerPort}`;
    const etcd = this.spawnLogged("etcd", this.bins.etcd, [
      "--name=default", `--data-dir=${join(this.dir, "etcd-data")}`,
      `--listen-client-urls=${client}`, `--advertise-client-urls=${client}`,
      `--listen-peer-urls=${peer}`, `--initial-advertise-peer-urls=${peer}`, `--initial-cluster=default=${peer}`,
      // Throwaway data: skipping fsync makes every write (and so every test) several times faster.
      "--unsafe-no-fsync", "--log-level=warn",
    ]);
    this.etcd = etcd;
    await waitFor("etcd", 30_000, async () => {
      const res = await fetch(`${client}/health`);
      return res.ok && ((await res.json()) as { health?: string }).health === "true";
    }, () => (etcd.exitCode !== null ? `exited with code ${etcd.exitCode}; see ${join(this.dir, "etcd.log")}` : undefined));
  }

  /** Starts kube-apiserver (again, after stopApiserver) on the same port and etcd, and waits for /readyz. */
  async startApiserver(): Promise<void> {
    const d = this.dir;
    const started = Date.now();
    this.apiserverStarts++;
    const apiserver = this.spawnLogged("kube-apiserver", this.bins.apiserver, [
      `--etcd-servers=http://127.0.0.1:${this.etcdPort}`,
      "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", `--secure-port=${this.apiPort}`,
      `--tls-cert-file=${join(d, "server.crt")}`, `--tls-private-key-file=${join(d, "server.key")}`,
      `--client-ca-file=${join(d, "ca.crt")}`,
      `--service-account-issuer=https://kubernetes.default.svc`,
      `--service-account-key-file=${join(d, "sa.pub")}`, `--service-account-signing-key-file=${join(d, "sa.key")}`,
      "--authorization-mode=RBAC",
      "--service-cluster-ip-range=10.0.0.0/24",
      // No controller-manager runs, so nothing would act on the default Service's endpoints anyway.
      "--endpoint-reconciler-type=none",
      `--cert-dir=${join(d, "apiserver-certs")}`,
      "--profiling=false", "--v=1",
    ]);
    this.apiserver = apiserver;
    const ca = await readFile(join(d, "ca.crt"));
    const cert = await readFile(join(d, "admin.crt"));
    const key = await readFile(join(d, "admin.key"));
    await waitFor("kube-apiserver", 90_000, () => new Promise<boolean>((ok) => {
      const req = request({ host: "127.0.0.1", port: this.apiPort, path: "/readyz", ca, cert, key, timeout: 2000 }, (res) => {
        res.resume();
        ok(res.statusCode === 200);
      });
      req.on("error", () => ok(false));
      req.on("timeout", () => req.destroy());
      req.end();
    }), () => (apiserver.exitCode !== null ? `exited with code ${apiserver.exitCode}; see ${join(d, "kube-apiserver.log")}` : undefined));
    this.lastApiserverStartMs = Date.now() - started;
  }

  /**
   * Stops kube-apiserver: SIGTERM, then SIGKILL after `graceMs`; etcd keeps the data. While clients hold watches
   * open, kube-apiserver's graceful shutdown does not finish on its own within seconds (it keeps serving those
   * watches and answers new requests with 429/503), so a restart here is a graceful phase followed by a crash.
   */
  async stopApiserver(graceMs = 3_000): Promise<void> {
    await stopProcess(this.apiserver, graceMs);
    this.apiserver = undefined;
  }

  /**
   * A raw request as the admin (client certificate), for objects client-node's typed models would mangle: its
   * JSONSchemaProps model drops `x-kubernetes-int-or-string`, which Istio's CRD schema relies on.
   */
  async adminRequest(method: string, path: string, body?: unknown): Promise<{ status: number; body: unknown }> {
    const [ca, cert, key] = await Promise.all(["ca.crt", "admin.crt", "admin.key"].map((f) => readFile(join(this.dir, f))));
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return new Promise((resolveReq, reject) => {
      const req = request(
        {
          host: "127.0.0.1", port: this.apiPort, path, method, ca, cert, key,
          headers: payload ? { "content-type": "application/json", "content-length": Buffer.byteLength(payload) } : {},
        },
        (res) => {
          let text = "";
          res.setEncoding("utf8");
          res.on("data", (d) => (text += d));
          res.on("end", () => {
            let parsed: unknown = text;
            try {
              parsed = JSON.parse(text);
            } catch {
              // keep the text
            }
            resolveReq({ status: res.statusCode ?? 0, body: parsed });
          });
        },
      );
      req.on("error", reject);
      req.end(payload);
    });
  }

  /** Writes a kubeconfig for this cluster with the given user (and, optionally, another server port: a proxy). */
  async writeKubeconfig(path: string, user: KubeUser, port = this.apiPort): Promise<void> {
    const ca = await readFile(join(this.dir, "ca.crt"));
    const userEntry =
      "token" in user
        ? { token: user.token }
        : {
            "client-certificate-data": (await readFile(user.certFile)).toString("base64"),
            "client-key-data": (await readFile(user.keyFile)).toString("base64"),
          };
    const config = {
      apiVersion: "v1",
      kind: "Config",
      clusters: [{ name: "test", cluster: { server: `https://127.0.0.1:${port}`, "certificate-authority-data": ca.toString("base64") } }],
      users: [{ name: user.name, user: userEntry }],
      contexts: [{ name: user.name, context: { cluster: "test", user: user.name } }],
      "current-context": user.name,
    };
    await writeFile(path, stringify(config), { mode: 0o600 });
  }

  /** Stops both processes and removes the directory (logs are kept when TRAFFIC_GUARD_KEEP_KUBE_DIR=1). */
  async stop(): Promise<void> {
    await stopProcess(this.apiserver);
    await stopProcess(this.etcd);
    this.apiserver = this.etcd = undefined;
    live.delete(this);
    if (process.env.TRAFFIC_GUARD_KEEP_KUBE_DIR === "1") {
      console.error(`kube test directory kept: ${this.dir}`);
    } else {
      await rm(this.dir, { recursive: true, force: true });
    }
  }
}

async function stopProcess(child: ChildProcess | undefined, graceMs = 10_000): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
  await exited;
  clearTimeout(timer);
}

// A test that crashes, or a test run that is interrupted, must not leave etcd or kube-apiserver running.
const live = new Set<TestCluster>();
/** Other child processes to kill if the test process dies (the CLI under test). */
export const liveChildren = new Set<ChildProcess>();
function killAll(): void {
  for (const child of liveChildren) if (child.exitCode === null) child.kill("SIGKILL");
  for (const cluster of live) {
    for (const child of [(cluster as unknown as { apiserver?: ChildProcess }).apiserver, (cluster as unknown as { etcd?: ChildProcess }).etcd]) {
      if (child && child.exitCode === null) child.kill("SIGKILL");
    }
    if (process.env.TRAFFIC_GUARD_KEEP_KUBE_DIR !== "1") rmSync(cluster.dir, { recursive: true, force: true });
  }
}
process.on("exit", killAll);
for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.once(signal, () => {
    killAll();
    process.exit(128 + (signal === "SIGINT" ? 2 : 15));
  });
}

// A throwaway single-member etcd for the `decisions` tests and the decisions load tool: the binary that
// scripts/kube-bins.sh builds (found by tests/kube/harness.ts), on loopback ports, in a temporary directory;
// optionally serving TLS with certificates made by openssl, and optionally with auth enabled through the gateway.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { createWriteStream } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TestContext } from "node:test";
import { findKubeBinaries, freePort, IN_CI } from "../kube/harness.ts";

/** A running etcd. */
export interface EtcdServer {
  /** Client URL (http:// or https://). */
  endpoint: string;
  /** The temporary directory (data, log, certificates: ca.crt, client.crt, client.key). */
  dir: string;
  /** The etcd process id, to read its CPU time from /proc. */
  pid: number;
  /** Stops etcd and removes its directory. */
  stop: () => Promise<void>;
}

/** Options of {@link startEtcd}. */
export interface EtcdServerOptions {
  /** Serve TLS and require a client certificate signed by the test CA. */
  tls?: boolean;
}

function openssl(args: string[], cwd: string): void {
  const r = spawnSync("openssl", args, { cwd, encoding: "utf8" });
  if (r.status !== 0) throw new Error(`openssl ${args.join(" ")} failed: ${r.stderr}`);
}

// The server certificate also allows clientAuth: with --client-cert-auth, etcd's JSON gateway dials the gRPC
// server in the same process presenting the server certificate as its client certificate.
function makeCertificates(dir: string): void {
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"];
  openssl(["req", "-x509", ...ec, "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=traffic-guard-etcd-test-ca"], dir);
  openssl(["req", "-x509", ...ec, "-keyout", "server.key", "-out", "server.crt", "-subj", "/CN=etcd", "-CA", "ca.crt", "-CAkey", "ca.key",
    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-addext", "extendedKeyUsage=serverAuth,clientAuth", "-addext", "basicConstraints=critical,CA:FALSE"], dir);
  openssl(["req", "-x509", ...ec, "-keyout", "client.key", "-out", "client.crt", "-subj", "/CN=operator", "-CA", "ca.crt", "-CAkey", "ca.key",
    "-addext", "extendedKeyUsage=clientAuth", "-addext", "basicConstraints=critical,CA:FALSE"], dir);
}

/** The etcd binary, or undefined after skipping `t` (a failure under CI=true). */
export function etcdBinary(t: TestContext | undefined): string | undefined {
  const found = findKubeBinaries();
  if (found.ok) return found.bins.etcd;
  if (IN_CI) throw new Error(`CI=true and etcd is missing: ${found.reason}`);
  if (t) t.skip(`etcd is not available: ${found.reason}`);
  return undefined;
}

/** Starts etcd and waits until it answers /health. */
export async function startEtcd(bin: string, opts: EtcdServerOptions = {}): Promise<EtcdServer> {
  const dir = await mkdtemp(join(tmpdir(), "tg-etcd-"));
  const [port, peerPort] = [await freePort(), await freePort()];
  const scheme = opts.tls ? "https" : "http";
  const client = `${scheme}://127.0.0.1:${port}`;
  const peer = `http://127.0.0.1:${peerPort}`;
  const args = [
    "--name=default", `--data-dir=${join(dir, "data")}`, `--listen-client-urls=${client}`, `--advertise-client-urls=${client}`,
    `--listen-peer-urls=${peer}`, `--initial-advertise-peer-urls=${peer}`, `--initial-cluster=default=${peer}`,
    "--unsafe-no-fsync", "--log-level=warn",
  ];
  if (opts.tls) {
    makeCertificates(dir);
    args.push(`--cert-file=${join(dir, "server.crt")}`, `--key-file=${join(dir, "server.key")}`, `--trusted-ca-file=${join(dir, "ca.crt")}`, "--client-cert-auth");
  }
  const log = createWriteStream(join(dir, "etcd.log"));
  const child: ChildProcess = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"] });
  child.stdout!.pipe(log);
  child.stderr!.pipe(log);
  const stop = async () => {
    if (child.exitCode === null) {
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
      if (child.exitCode === null) child.kill("SIGKILL");
    }
    await rm(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) {
      const text = await readFile(join(dir, "etcd.log"), "utf8").catch(() => "");
      await stop();
      throw new Error(`etcd exited with code ${child.exitCode}:\n${text}`);
    }
    const probe = opts.tls
      ? spawnSync("curl", ["-sf", "--cacert", join(dir, "ca.crt"), "--cert", join(dir, "client.crt"), "--key", join(dir, "client.key"), `${client}/health`], { encoding: "utf8" })
      : spawnSync("curl", ["-sf", `${client}/health`], { encoding: "utf8" });
    if (probe.status === 0 && probe.stdout.includes('"health":"true"')) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error("etcd did not become healthy within 30 s");
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return { endpoint: client, dir, pid: child.pid!, stop };
}

/** POSTs a JSON body to the gateway of a plain-http etcd (for setting up auth); throws on an error answer. */
export async function gateway(endpoint: string, path: string, body: unknown, token?: string): Promise<Record<string, unknown>> {
  const res = await fetch(`${endpoint}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(token ? { authorization: token } : {}) },
    body: JSON.stringify(body),
  });
  const json = (await res.json()) as Record<string, unknown>;
  if (!res.ok) throw new Error(`${path} answered ${res.status}: ${JSON.stringify(json)}`);
  return json;
}

/**
 * Enables auth: user root (password `rootpw`, role root) and user operator (password `operatorpw`), whose role may
 * read and write `traffic-guard/default/` only.
 */
export async function enableAuth(endpoint: string): Promise<void> {
  const b64 = (s: string) => Buffer.from(s).toString("base64");
  await gateway(endpoint, "/v3/auth/role/add", { name: "root" });
  await gateway(endpoint, "/v3/auth/user/add", { name: "root", password: "rootpw" });
  await gateway(endpoint, "/v3/auth/user/grant", { user: "root", role: "root" });
  await gateway(endpoint, "/v3/auth/role/add", { name: "decisions-operator" });
  await gateway(endpoint, "/v3/auth/role/grant", {
    name: "decisions-operator",
    perm: { permType: "READWRITE", key: b64("traffic-guard/default/"), range_end: b64("traffic-guard/default0") },
  });
  await gateway(endpoint, "/v3/auth/user/add", { name: "operator", password: "operatorpw" });
  await gateway(endpoint, "/v3/auth/user/grant", { user: "operator", role: "decisions-operator" });
  await gateway(endpoint, "/v3/auth/enable", {});
}

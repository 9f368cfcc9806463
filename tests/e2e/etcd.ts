/**
 * A throwaway single-member etcd on loopback for the real decisions tests (the binary scripts/kube-bins.sh
 * builds, found like tests/kube does), and a few JSON-gateway calls the tests use to look at the store or
 * to write what no CLI would (garbage, huge values, many keys).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { findKubeBinaries, freePort, IN_CI } from "../kube/harness.ts";

const b64 = (s: string | Buffer): string => Buffer.from(s).toString("base64");

/** The etcd binary, or why there is none (the caller skips locally and fails under CI=true). */
export function findEtcd(): { ok: true; bin: string } | { ok: false; reason: string } {
  const found = findKubeBinaries();
  return found.ok ? { ok: true, bin: found.bins.etcd } : { ok: false, reason: found.reason };
}

export { IN_CI };

/** One etcd process; stop() kills it (SIGKILL: a crash), start() brings it back on the same port and data. */
export class Etcd {
  readonly dir = mkdtempSync(join(tmpdir(), "tg-etcd-"));
  private child: ChildProcess | undefined;
  private constructor(readonly bin: string, readonly port: number, readonly peerPort: number) {}

  /** Starts etcd on free ports and waits until it is healthy. */
  static async start(bin: string): Promise<Etcd> {
    const e = new Etcd(bin, await freePort(), await freePort());
    await e.start();
    return e;
  }

  /** The client URL. */
  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** (Re)starts the process and waits for /health. */
  async start(): Promise<void> {
    const peer = `http://127.0.0.1:${this.peerPort}`;
    const log = createWriteStream(join(this.dir, "etcd.log"), { flags: "a" });
    const child = spawn(this.bin, [
      "--name=default", `--data-dir=${join(this.dir, "data")}`,
      `--listen-client-urls=${this.url}`, `--advertise-client-urls=${this.url}`,
      `--listen-peer-urls=${peer}`, `--initial-advertise-peer-urls=${peer}`, `--initial-cluster=default=${peer}`,
      "--unsafe-no-fsync", "--log-level=warn",
    ], { stdio: ["ignore", "pipe", "pipe"] });
    child.stdout!.pipe(log, { end: false });
    child.stderr!.pipe(log, { end: false });
    this.child = child;
    live.add(child);
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`etcd exited with code ${child.exitCode}: ${this.log().slice(-2000)}`);
      const ok = await fetch(`${this.url}/health`).then(async (r) => r.ok && ((await r.json()) as { health?: string }).health === "true").catch(() => false);
      if (ok) return;
      if (Date.now() > deadline) throw new Error(`etcd not healthy after 30 s: ${this.log().slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  /** Kills the process (SIGKILL) and waits for it to exit. */
  async kill(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((r) => child.once("exit", () => r()));
    child.kill("SIGKILL");
    await exited;
    live.delete(child);
  }

  /** Kills the process and removes its directory. */
  async stop(): Promise<void> {
    await this.kill();
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** etcd's own log. */
  log(): string {
    try {
      return readFileSync(join(this.dir, "etcd.log"), "utf8");
    } catch {
      return "";
    }
  }

  /** One JSON-gateway call; throws on an HTTP error. */
  async call(path: string, body: object): Promise<any> {
    const res = await fetch(this.url + path, { method: "POST", body: JSON.stringify(body), headers: { "content-type": "application/json" } });
    const text = await res.text();
    if (!res.ok) throw new Error(`etcd ${path}: HTTP ${res.status}: ${text.slice(0, 300)}`);
    return JSON.parse(text);
  }

  /** Grants a lease of `ttlS` seconds; returns its id (a string: ids exceed 2^53). */
  async grant(ttlS: number): Promise<string> {
    return (await this.call("/v3/lease/grant", { TTL: ttlS })).ID as string;
  }

  /** Puts raw bytes (with a lease when given). */
  async put(key: string, value: string | Buffer, lease?: string): Promise<void> {
    await this.call("/v3/kv/put", { key: b64(key), value: b64(value), ...(lease ? { lease } : {}) });
  }

  /** Puts many keys, `batch` per transaction. */
  async putMany(entries: [string, string | Buffer][], lease?: string, batch = 128): Promise<void> {
    for (let i = 0; i < entries.length; i += batch) {
      const success = entries.slice(i, i + batch).map(([k, v]) => ({ request_put: { key: b64(k), value: b64(v), ...(lease ? { lease } : {}) } }));
      await this.call("/v3/kv/txn", { success });
    }
  }

  /** Deletes one key, or every key under a prefix. */
  async delete(key: string, prefix = false): Promise<void> {
    const end = prefix ? b64(key.slice(0, -1) + String.fromCharCode(key.charCodeAt(key.length - 1) + 1)) : undefined;
    await this.call("/v3/kv/deleterange", { key: b64(key), ...(end ? { range_end: end } : {}) });
  }

  /** The records under `prefix`: client → decoded JSON (or the raw text when it is not JSON). */
  async records(prefix: string): Promise<Map<string, any>> {
    const end = b64(prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1));
    const r = await this.call("/v3/kv/range", { key: b64(prefix), range_end: end });
    const out = new Map<string, any>();
    for (const kv of r.kvs ?? []) {
      const k = Buffer.from(kv.key, "base64").toString().slice(prefix.length);
      const v = Buffer.from(kv.value ?? "", "base64").toString();
      try {
        out.set(k, JSON.parse(v));
      } catch {
        out.set(k, v);
      }
    }
    return out;
  }
}

const live = new Set<ChildProcess>();
process.on("exit", () => {
  for (const c of live) if (c.exitCode === null) c.kill("SIGKILL");
});

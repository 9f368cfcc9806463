// Load on one etcd as a mesh of traffic-guard proxies makes it (docs/decisions.md#size): N proxies each poll once a
// second and run a full range every minute, over a store holding B active bans, while the mesh publishes a few new
// bans a second. The calls are the filter's (assembly/decisions.ts):
//   poll:  /v3/kv/range {key: <prefix>bans/, range_end: <prefix>bans0, min_mod_revision: <last seen + 1>, serializable}
//   full:  /v3/kv/range {..., limit: 1000, keys_only, serializable, revision: <first page's>} page after page
//          (the first full range of a proxy reads values, 500 a page; later ones keys only, twice as many a page)
//   publish: /v3/lease/grant per 10 s expiry bucket, then /v3/kv/txn of puts with that lease.
// Prints etcd's CPU (from /proc/<pid>/stat) and the latency percentiles of each call kind.
//
//   node --import tsx bench/decisions-load.ts [--proxies 1000] [--bans 10000] [--seconds 30] [--publish 5]
//        [--connections 64] [--etcd http://127.0.0.1:2379 --pid <etcd pid>]
// Without --etcd it starts a throwaway etcd (the binary of scripts/kube-bins.sh).
import { Agent, request } from "node:http";
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { etcdBinary, startEtcd } from "../tests/cli/etcd-server.ts";

const { values: args } = parseArgs({
  options: {
    proxies: { type: "string", default: "1000" },
    bans: { type: "string", default: "10000" },
    seconds: { type: "string", default: "30" },
    publish: { type: "string", default: "5" },
    connections: { type: "string", default: "64" },
    etcd: { type: "string" },
    pid: { type: "string" },
    prefix: { type: "string", default: "traffic-guard/default/" },
    // Polls that ask for keys only (same etcd read, smaller answers), to compare with the filter's polls.
    "keys-only-polls": { type: "boolean", default: false },
  },
});
const PROXIES = Number(args.proxies);
const BANS = Number(args.bans);
const SECONDS = Number(args.seconds);
const PUBLISH = Number(args.publish);
const FULL_EVERY_S = 60;
const b64 = (s: string) => Buffer.from(s).toString("base64");
const KEY = b64(`${args.prefix}bans/`);
const END = b64(`${args.prefix}bans0`);

let endpoint = args.etcd;
let pid = args.pid ? Number(args.pid) : undefined;
let stop: (() => Promise<void>) | undefined;
if (!endpoint) {
  const bin = etcdBinary(undefined);
  if (!bin) {
    console.error("etcd is not available: run scripts/kube-bins.sh, or pass --etcd and --pid");
    process.exit(1);
  }
  const server = await startEtcd(bin);
  endpoint = server.endpoint;
  pid = server.pid;
  stop = server.stop;
}
const url = new URL(endpoint);
const agent = new Agent({ keepAlive: true, maxSockets: Number(args.connections) });

function post(path: string, body: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: url.hostname, port: url.port, path, method: "POST", agent, headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) } }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (text += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, text }));
    });
    // The filter's calls time out after decisions.timeout (500 ms by default); a call here gives up after 2 s so
    // a saturated etcd ends the run instead of queueing without end. Those count as errors.
    req.setTimeout(2000, () => req.destroy(new Error("timeout")));
    req.on("error", reject);
    req.end(body);
  });
}

function record(client: string, until: number): string {
  return JSON.stringify({ until, reason: "rate", strike: 1, origin: "sidecar~10.0.0.1~web-7d9f-abcde.shop~shop.svc.cluster.local", created: Date.now() });
}

// Publishes `n` bans ending in `ttl` seconds, as the filter does: one lease for the bucket, then txns of 64 puts.
let published = 0;
async function publish(n: number, ttl: number): Promise<string> {
  const lease = JSON.parse((await post("/v3/lease/grant", JSON.stringify({ TTL: ttl }))).text).ID as string;
  let revision = "0";
  for (let i = 0; i < n; i += 64) {
    const puts = [];
    for (let j = i; j < Math.min(n, i + 64); j++) {
      const n2 = published++;
      const client = `10.${(n2 >> 16) & 255}.${(n2 >> 8) & 255}.${n2 & 255}`;
      puts.push({ request_put: { key: b64(`${args.prefix}bans/${client}`), value: b64(record(client, Date.now() + ttl * 1000)), lease } });
    }
    const res = await post("/v3/kv/txn", JSON.stringify({ success: puts }));
    if (res.status !== 200) throw new Error(`txn answered ${res.status}: ${res.text}`);
    revision = JSON.parse(res.text).header.revision;
  }
  return revision;
}

function cpuTicks(p: number): number {
  const f = readFileSync(`/proc/${p}/stat`, "utf8").split(") ")[1].split(" ");
  return Number(f[11]) + Number(f[12]); // utime + stime (fields 14 and 15 of stat)
}

const pct = (xs: number[], p: number) => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

console.log(`etcd ${endpoint}: seeding ${BANS} bans...`);
let revision = await publish(BANS, 3600);
const dbSize = JSON.parse((await post("/v3/maintenance/status", "{}")).text).dbSize;

const lat: Record<string, number[]> = { poll: [], page: [], publish: [] };
let errors = 0;
let late = 0;
let bytes = 0;
const inflight = new Set<Promise<void>>();
const track = (p: Promise<void>) => {
  inflight.add(p);
  void p.finally(() => inflight.delete(p));
};

async function timed(kind: string, path: string, body: string): Promise<string | undefined> {
  const t0 = performance.now();
  try {
    const res = await post(path, body);
    lat[kind].push(performance.now() - t0);
    bytes += res.text.length;
    if (res.status !== 200) {
      errors++;
      return undefined;
    }
    return res.text;
  } catch {
    errors++;
    return undefined;
  }
}

async function poll(): Promise<void> {
  const next = String(Number(revision) + 1);
  const keysOnly = args["keys-only-polls"] ? `,"keys_only":true` : "";
  await timed("poll", "/v3/kv/range", `{"key":"${KEY}","range_end":"${END}","min_mod_revision":"${next}"${keysOnly},"serializable":true}`);
}

async function fullRange(): Promise<void> {
  let key = KEY;
  let rev = "";
  for (;;) {
    const text = await timed("page", "/v3/kv/range", `{"key":"${key}","range_end":"${END}","limit":1000,"keys_only":true,"serializable":true${rev ? `,"revision":"${rev}"` : ""}}`);
    if (!text) return;
    const page = JSON.parse(text) as { kvs?: { key: string }[]; more?: boolean; header: { revision: string } };
    rev ||= page.header.revision;
    if (!page.more || !page.kvs?.length) return;
    key = Buffer.concat([Buffer.from(page.kvs[page.kvs.length - 1].key, "base64"), Buffer.from([0])]).toString("base64");
  }
}

console.log(`load: ${PROXIES} proxies polling every 1s and a full range every ${FULL_EVERY_S}s, ${PUBLISH} new bans/s, for ${SECONDS}s over ${args.connections} connections`);
const ticksPerSecond = 100; // USER_HZ on Linux
const cpu0 = cpuTicks(pid!);
const selfCpu0 = process.cpuUsage();
const start = performance.now();
// Proxy i polls at i/PROXIES into each second; its full range falls in second (i mod 60) of each minute.
let sent = 0;
for (let s = 0; s < SECONDS; s++) {
  for (let i = 0; i < PROXIES; i++) {
    const due = start + (s + i / PROXIES) * 1000;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    else if (wait < -100) late++;
    track(poll());
    if (i % FULL_EVERY_S === s % FULL_EVERY_S) track(fullRange());
    sent++;
  }
  if (PUBLISH > 0) track(publish(PUBLISH, 120).then((r) => void (revision = r)).catch(() => void errors++));
}
await Promise.all([...inflight]);
const elapsed = (performance.now() - start) / 1000;
const cpu1 = cpuTicks(pid!);
const self = process.cpuUsage(selfCpu0);

const etcdCpu = (cpu1 - cpu0) / ticksPerSecond / elapsed;
const fmt = (k: string) => `${k.padEnd(8)} n=${String(lat[k].length).padStart(6)}  p50 ${pct(lat[k], 50).toFixed(1)} ms  p90 ${pct(lat[k], 90).toFixed(1)} ms  p99 ${pct(lat[k], 99).toFixed(1)} ms  max ${Math.max(...lat[k]).toFixed(1)} ms`;
const over = (k: string, ms: number) => lat[k].filter((x) => x > ms).length;
console.log(`\nran ${elapsed.toFixed(1)} s (${sent} polls scheduled, ${late} started over 100 ms late, ${errors} errors or 2 s timeouts); ${published} bans published in all, db ${(dbSize / 1048576).toFixed(1)} MiB before the run`);
console.log(`polls over the filter's default 500 ms timeout: ${over("poll", 500)} of ${lat.poll.length}`);
console.log(`etcd CPU: ${(etcdCpu * 100).toFixed(0)}% of one core (${((cpu1 - cpu0) / ticksPerSecond).toFixed(1)} s over ${elapsed.toFixed(1)} s)`);
console.log(`load tool CPU: ${(((self.user + self.system) / 1e6 / elapsed) * 100).toFixed(0)}% of one core; ${(bytes / elapsed / 1048576).toFixed(1)} MiB/s of answers`);
for (const k of ["poll", "page", "publish"]) if (lat[k].length) console.log(fmt(k));
agent.destroy();
await stop?.();

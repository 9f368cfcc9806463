/**
 * `npm run bench:calls`: what one request costs in host calls, counted in the host emulator
 * (tests/emulator/emulator.ts), which serves the same ABI as Envoy. Most of the filter's cost in
 * Envoy is host calls (each crosses from V8 into Envoy, and every value returned costs a call back
 * into the module's malloc), and unlike CPU time these counts do not depend on the machine's load,
 * so two versions can be compared exactly. The emulator does not know what each call costs in
 * Envoy: `npm run bench` measures that.
 *
 * The pluginConfigs are the benchmark's (dev/envoy-topologies.ts): the allow path with every rule
 * on, and the block path (a banned client), one plaintext client keyed on its peer address; and the
 * allow path with `--clients` addresses rotating through x-forwarded-for. Each path is warmed up,
 * then `--requests` complete exchanges (request headers, a 200 response or the local reply, end of
 * stream) are counted and divided.
 *
 * Options: --requests <n> (2000), --clients <n> (10000), --baseline <git revision> (adds the filter
 * built at that revision, side by side), --json <file>.
 */
import { writeFileSync } from "node:fs";
import { Host } from "../tests/emulator/emulator.ts";
import { allowPathConfig, blockPathConfig, customRulesConfig } from "../dev/envoy-topologies.ts";
import { buildAtRevision, ensureFilterBuilt } from "../dev/wasm-build.ts";
import { BENCH_USER_AGENT } from "./lib.ts";

/** Parsed command-line options. */
interface Options {
  requests: number;
  clients: number;
  baseline?: string;
  json?: string;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { requests: 2000, clients: 10_000 };
  for (let i = 0; i < argv.length; i += 2) {
    const flag = argv[i];
    const value = argv[i + 1];
    if (flag === "--requests" || flag === "--clients") {
      const n = Number(value);
      if (!Number.isInteger(n) || n <= 0) throw new Error(`${flag}: expected a positive integer, got "${value ?? ""}"`);
      o[flag === "--requests" ? "requests" : "clients"] = n;
    } else if (flag === "--baseline" || flag === "--json") {
      if (!value) throw new Error(`${flag}: expected a value`);
      o[flag === "--baseline" ? "baseline" : "json"] = value;
    } else throw new Error(`unknown option "${flag}" (options: --requests, --clients, --baseline, --json)`);
  }
  return o;
}

/** The three measured paths. */
const PATHS = ["allow, one client", "block, one banned client", "allow, rotating clients", "allow + 10 custom rules matching nothing, one client"] as const;
type PathName = (typeof PATHS)[number];

/** Host work per request on one path: calls by import / callback name, and malloc copy-outs. */
type Counts = Record<string, number>;

const CLIENT = "203.0.113.7";
const UA = BENCH_USER_AGENT;

function countsOf(h: Host): Map<string, number> {
  const vm = h.vm(0);
  const m = new Map<string, number>();
  for (const [k, v] of vm.importCalls) m.set(`host: ${k}`, v);
  for (const [k, v] of vm.callbackCalls) m.set(`callback: ${k}`, v);
  m.set("malloc copy-outs", vm.mallocCalls);
  return m;
}

/** Counts of one path, or null when the module rejects the path's pluginConfig (an older revision may). */
async function measurePath(wasm: string, path: PathName, o: Options): Promise<Counts | null> {
  const rotating = path === "allow, rotating clients";
  const config = path.startsWith("block") ? blockPathConfig("peer") : path.includes("custom") ? customRulesConfig("peer") : allowPathConfig(rotating ? "xff" : "peer");
  let h: Host;
  try {
    h = await Host.start({ wasm, config });
  } catch (e) {
    if (/proxy_on_configure returned 0/.test((e as Error).message)) return null;
    throw e;
  }
  let n = 0;
  const one = () => {
    const i = n++ % o.clients;
    // As the benchmark's Envoy delivers it: wrk's address, then the TCP peer Envoy appends (use_remote_address).
    const xff = `198.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}, 127.0.0.1`;
    const s = h.vm(0).request({ peer: `${rotating ? "127.0.0.1" : CLIENT}:40000`, headers: rotating ? { "user-agent": UA, "x-forwarded-for": xff } : { "user-agent": UA } });
    const blocked = s.localReply !== undefined;
    if (path.startsWith("block") ? !blocked && n > 1 : blocked) throw new Error(`${path}: request ${n} was ${blocked ? "denied" : "let through"}; the configuration is not measuring what it claims`);
    s.respond(200);
  };
  // Warm up: the first request creates the client's record (and on the block path earns the ban);
  // the rotating path fills the table once.
  for (let i = 0; i < (rotating ? o.clients : 50); i++) one();
  const before = countsOf(h);
  for (let i = 0; i < o.requests; i++) one();
  const after = countsOf(h);
  const out: Counts = {};
  for (const [k, v] of after) {
    const d = v - (before.get(k) ?? 0);
    if (d > 0) out[k] = d / o.requests;
  }
  return out;
}

function render(results: Record<string, Record<PathName, Counts | null>>): string {
  const versions = Object.keys(results);
  const lines: string[] = [];
  for (const path of PATHS) {
    const keys = [...new Set(versions.flatMap((v) => Object.keys(results[v][path] ?? {})))].sort((a, b) => {
      const rank = (k: string) => (k.startsWith("callback") ? 0 : k.startsWith("host") ? 1 : 2);
      return rank(a) - rank(b) || a.localeCompare(b);
    });
    const cell = (v: string, f: (c: Counts) => number) => {
      const c = results[v][path];
      return c === null ? "n/a" : f(c).toFixed(2);
    };
    const total = (prefix: string) => (c: Counts) => Object.entries(c).filter(([k]) => k.startsWith(prefix)).reduce((s, [, x]) => s + x, 0);
    lines.push(`### ${path}`, "", `| per request | ${versions.join(" | ")} |`, `| --- |${versions.map(() => " ---: |").join("")}`);
    for (const k of keys) lines.push(`| ${k} | ${versions.map((v) => cell(v, (c) => c[k] ?? 0)).join(" | ")} |`);
    lines.push(`| **host calls** | ${versions.map((v) => cell(v, total("host"))).join(" | ")} |`);
    lines.push(`| **callbacks** | ${versions.map((v) => cell(v, total("callback"))).join(" | ")} |`, "");
    if (versions.some((v) => results[v][path] === null)) lines.push("n/a: that revision rejects this path's pluginConfig.", "");
  }
  return lines.join("\n");
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const modules: [string, string][] = [["this checkout", ensureFilterBuilt((l) => process.stderr.write(`${l}\n`)).path]];
  if (o.baseline) {
    const b = buildAtRevision(o.baseline, (l) => process.stderr.write(`${l}\n`));
    modules.push([`${o.baseline} (${b.commit.slice(0, 12)})`, b.path]);
  }
  const results: Record<string, Record<PathName, Counts | null>> = {};
  for (const [label, wasm] of modules) {
    const per = {} as Record<PathName, Counts | null>;
    for (const path of PATHS) per[path] = await measurePath(wasm, path, o);
    results[label] = per;
  }
  console.log(`Host calls per request, counted in the host emulator over ${o.requests} requests per path (${o.clients} rotating clients).\n`);
  console.log(render(results));
  if (o.json) writeFileSync(o.json, JSON.stringify({ options: o, results }, null, 2));
}

main().catch((e) => {
  console.error(`bench:calls: ${(e as Error).message}`);
  process.exit(1);
});

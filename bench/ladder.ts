/**
 * `npm run bench:ladder`: what each host interaction costs Envoy, measured without any SDK. Every rung
 * is a raw-ABI module (the floor of bench/floor/floor.wat) plus one host interaction on every request:
 * an exported callback, a header or property read, the clock, a shared-data get and set, a metric
 * increment. The last rung makes all the calls traffic-guard's allow path makes (bench:calls counts them),
 * so the gap between it and traffic-guard is what the module itself (SDK, AssemblyScript, the rules) adds.
 * One single-worker Envoy per rung, measured in alternation with wrk; the figure of merit is Envoy's CPU
 * time per request, minus the floor's. Not part of npm test.
 *
 * Options: --duration <s> (3), --reps <n> (5), --connections <n> (16), --only <comma-separated rung names>,
 * --times <n> (1: each rung's request-path interactions made n times per request, to lift one
 * interaction's cost above this machine's noise; the figures are then n times the cost).
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { startEnvoy, type RunningEnvoy } from "../dev/envoy-process.ts";
import type { HttpFilterSpec } from "../dev/envoy-config.ts";
import { REPO_ROOT } from "../dev/envoy.ts";
import { assembleWat, ensureFilterBuilt } from "../dev/wasm-build.ts";
import { allowPathConfig } from "../dev/envoy-topologies.ts";
import { isolateEnvoy, checkWrk, median, wrk } from "./lib.ts";

/** One host interaction a rung adds to the floor. */
type Step =
  | "on_delete" // export proxy_on_delete (Envoy calls it once per stream)
  | "on_done" // export proxy_on_done
  | "on_log" // export proxy_on_log (reads :status there when "status" is also a step and on_response_headers is not)
  | "no_context_create" // leave proxy_on_context_create unexported (Envoy then creates no in-VM context)
  | "on_response_headers" // export proxy_on_response_headers (returns Continue, reads nothing)
  | "status" // in on_response_headers: read :status (present: a malloc copy-out)
  | "clock" // WASI clock_time_get
  | "now_ns" // proxy_get_current_time_nanoseconds
  | "source_address" // property source.address (present: a malloc copy-out)
  | "peer_san" // property connection.uri_san_peer_certificate (absent on plaintext: no copy-out)
  | "connection_id" // property connection.id
  | "header_absent" // request header that wrk never sends (no copy-out)
  | "header_present" // request header :path (a copy-out)
  | "user_agent" // request header user-agent (a copy-out of the 110-byte Chrome User-Agent wrk sends)
  | "five_headers" // what ten custom rules read: :method and :path (present), x-probe, sec-fetch-mode, cookie (absent)
  | "header_pairs" // the whole request header map in one call (one copy-out)
  | "shared_get_set" // shared-data get (384-byte value, a copy-out) and a CAS set of the same value
  | "shared_get_set_704" // the same with a 704-byte value (a set of the table with ten custom rules)
  | "metric"; // proxy_increment_metric on a counter defined at configure

/** The rungs: a name, what it adds to the floor, and a one-line label. */
const RUNGS: [string, Step[], string][] = [
  ["floor", [], "raw-ABI floor (bench/floor/floor.wat)"],
  ["two_callbacks", ["no_context_create", "on_log"], "proxy_on_request_headers + proxy_on_log, no proxy_on_context_create"],
  ["on_delete", ["on_delete"], "+ proxy_on_delete exported"],
  ["on_response_headers", ["on_response_headers"], "+ proxy_on_response_headers exported"],
  ["status", ["on_response_headers", "status"], "+ on_response_headers reading :status"],
  ["clock", ["clock"], "+ WASI clock_time_get"],
  ["source_address", ["source_address"], "+ property source.address"],
  ["peer_san", ["peer_san"], "+ property connection.uri_san_peer_certificate (absent)"],
  ["header_absent", ["header_absent"], "+ one absent request header"],
  ["header_present", ["header_present"], "+ one present request header (:path)"],
  ["user_agent", ["user_agent"], "+ the User-Agent request header"],
  ["header_pairs", ["header_pairs"], "+ the request header map in one call"],
  ["five_headers", ["five_headers"], "+ five request headers, two present (what ten custom rules read)"],
  ["shared_get_set", ["shared_get_set"], "+ shared-data get and set (384 bytes)"],
  ["shared_get_set_704", ["shared_get_set_704"], "+ shared-data get and set (704 bytes)"],
  ["metric", ["metric"], "+ one counter increment"],
  ["no_context_create", ["no_context_create"], "- proxy_on_context_create (not exported)"],
  ["on_log_status", ["no_context_create", "on_log", "status"], "- proxy_on_context_create, + proxy_on_log reading :status"],
  ["four_callbacks_status", ["on_delete", "on_response_headers", "status"], "+ proxy_on_delete, + on_response_headers reading :status"],
  [
    "allow_path_calls",
    ["no_context_create", "on_log", "status", "clock", "source_address", "peer_san", "header_present", "shared_get_set", "metric"],
    "traffic-guard's allow-path calls without the module (one client, every rule on; bench:calls)",
  ],
];

const WASI = "wasi_snapshot_preview1";

/** The WAT text of a rung: the floor module plus the steps. */
export function rungWat(steps: Step[], times = 1): string {
  const has = (s: Step) => steps.includes(s);
  const data: string[] = [];
  let at = 1024;
  // Constant strings in memory: [offset, length] by name.
  const str = (s: string): [number, number] => {
    const bytes = Buffer.from(s, "utf8");
    const off = at;
    data.push(`(data (i32.const ${off}) "${[...bytes].map((b) => "\\" + b.toString(16).padStart(2, "0")).join("")}")`);
    at += bytes.length + 8;
    return [off, bytes.length];
  };
  const OUT = 512; // out-parameters: pointer at 512, size at 516, cas at 520, clock at 528, metric id at 536
  const imports: string[] = [];
  const body: string[] = [];
  const resp: string[] = [];
  const configure: string[] = [];
  const logBody: string[] = [];
  const get = (call: string) => `(drop (${call}))`;
  if (has("clock")) {
    imports.push(`(import "${WASI}" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))`);
    body.push(get(`call $clock (i32.const 0) (i64.const 1) (i32.const ${OUT + 16})`));
  }
  if (has("now_ns")) {
    imports.push(`(import "env" "proxy_get_current_time_nanoseconds" (func $now (param i32) (result i32)))`);
    body.push(get(`call $now (i32.const ${OUT + 16})`));
  }
  const property = (path: string) => {
    const [p, n] = str(path);
    body.push(get(`call $prop (i32.const ${p}) (i32.const ${n}) (i32.const ${OUT}) (i32.const ${OUT + 4})`));
  };
  if (has("source_address") || has("peer_san") || has("connection_id")) {
    imports.push(`(import "env" "proxy_get_property" (func $prop (param i32 i32 i32 i32) (result i32)))`);
    if (has("source_address")) property("source\0address");
    if (has("peer_san")) property("connection\0uri_san_peer_certificate");
    if (has("connection_id")) property("connection\0id");
  }
  if (has("header_absent") || has("header_present") || has("user_agent") || has("status") || has("five_headers")) {
    imports.push(`(import "env" "proxy_get_header_map_value" (func $header (param i32 i32 i32 i32 i32) (result i32)))`);
    const header = (to: string[], map: number, name: string) => {
      const [p, n] = str(name);
      to.push(get(`call $header (i32.const ${map}) (i32.const ${p}) (i32.const ${n}) (i32.const ${OUT}) (i32.const ${OUT + 4})`));
    };
    if (has("header_absent")) header(body, 0, "x-probe");
    if (has("header_present")) header(body, 0, ":path");
    if (has("user_agent")) header(body, 0, "user-agent");
    if (has("five_headers")) for (const h of [":method", ":path", "x-probe", "sec-fetch-mode", "cookie"]) header(body, 0, h);
    if (has("status")) header(resp, 2, ":status");
    if (has("status") && has("on_log") && !has("on_response_headers")) logBody.push(...resp.splice(0));
  }
  if (has("header_pairs")) {
    imports.push(`(import "env" "proxy_get_header_map_pairs" (func $pairs (param i32 i32 i32) (result i32)))`);
    body.push(get(`call $pairs (i32.const 0) (i32.const ${OUT}) (i32.const ${OUT + 4})`));
  }
  if (has("shared_get_set") || has("shared_get_set_704")) {
    const size = has("shared_get_set_704") ? 704 : 384;
    imports.push(`(import "env" "proxy_get_shared_data" (func $sget (param i32 i32 i32 i32 i32) (result i32)))`);
    imports.push(`(import "env" "proxy_set_shared_data" (func $sset (param i32 i32 i32 i32 i32) (result i32)))`);
    const [k, kn] = str("bench-ladder-key");
    // The value is created at configure (zero bytes at 4096); each request reads it and writes it back.
    configure.push(get(`call $sset (i32.const ${k}) (i32.const ${kn}) (i32.const 4096) (i32.const ${size}) (i32.const 0)`));
    body.push(get(`call $sget (i32.const ${k}) (i32.const ${kn}) (i32.const ${OUT}) (i32.const ${OUT + 4}) (i32.const ${OUT + 8})`));
    body.push(get(`call $sset (i32.const ${k}) (i32.const ${kn}) (i32.load (i32.const ${OUT})) (i32.const ${size}) (i32.load (i32.const ${OUT + 8}))`));
  }
  if (has("metric")) {
    imports.push(`(import "env" "proxy_define_metric" (func $define (param i32 i32 i32 i32) (result i32)))`);
    imports.push(`(import "env" "proxy_increment_metric" (func $inc (param i32 i64) (result i32)))`);
    const [p, n] = str("bench_ladder_requests_total");
    configure.push(get(`call $define (i32.const 0) (i32.const ${p}) (i32.const ${n}) (i32.const ${OUT + 24})`));
    body.push(get(`call $inc (i32.load (i32.const ${OUT + 24})) (i64.const 1)`));
  }
  // --times: the request's interactions repeated, so that one interaction's cost stands above the noise.
  const requestBody = Array.from({ length: times }, () => body.join(" ")).join(" ");
  const exports: string[] = [];
  if (has("on_delete")) exports.push(`(func (export "proxy_on_delete") (param i32))`);
  if (has("on_log")) exports.push(`(func (export "proxy_on_log") (param i32) (global.set $next (i32.const 65536)) ${logBody.join(" ")})`);
  if (has("on_done")) exports.push(`(func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))`);
  if (has("on_response_headers")) {
    exports.push(`(func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (global.set $next (i32.const 65536)) ${resp.join(" ")} (i32.const 0))`);
  }
  return `;; generated by bench/ladder.ts: the raw-ABI floor plus ${steps.join(", ") || "nothing"}
(module
  ${imports.join("\n  ")}
  (memory (export "memory") 2)
  (global $next (mut i32) (i32.const 65536))
  ${data.join("\n  ")}
  (func (export "malloc") (param $size i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $next))
    (global.set $next (i32.add (local.get $p) (i32.and (i32.add (local.get $size) (i32.const 7)) (i32.const -8))))
    (local.get $p))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) ${configure.join(" ")} (i32.const 1))
  ${has("no_context_create") ? "" : '(func (export "proxy_on_context_create") (param i32 i32))'}
  ;; each callback resets the bump allocator: a value is used only within the callback that read it
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (global.set $next (i32.const 65536)) ${requestBody} (i32.const 0))
  ${exports.join("\n  ")})
`;
}

function parseArgs(argv: string[]): { duration: number; reps: number; connections: number; times: number; only: string[] | null } {
  const o = { duration: 3, reps: 5, connections: 16, times: 1, only: null as string[] | null };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, "");
    if (key === "only") {
      o.only = (argv[i + 1] ?? "").split(",");
      for (const n of o.only) if (!RUNGS.some((r) => r[0] === n)) throw new Error(`unknown rung "${n}" (rungs: ${RUNGS.map((r) => r[0]).join(", ")})`);
      continue;
    }
    const n = Number(argv[i + 1]);
    if (!(key in o) || !Number.isFinite(n) || n <= 0) throw new Error(`bad option ${argv[i]} ${argv[i + 1] ?? ""} (options: --duration, --reps, --connections, --times, --only)`);
    (o as unknown as Record<string, number>)[key] = n;
  }
  return o;
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  await checkWrk();
  const guard = ensureFilterBuilt((l) => process.stderr.write(`${l}\n`)).path;
  const dir = join(REPO_ROOT, "build", "extra", "ladder");
  mkdirSync(dir, { recursive: true });
  const rungs = RUNGS.filter(([name]) => name === "floor" || o.only === null || o.only.includes(name));
  const entries: { label: string; filters: HttpFilterSpec[] }[] = [{ label: "no filter", filters: [] }];
  for (const [name, steps, label] of rungs) {
    const rel = join("build", "extra", "ladder", `${name}.wat`);
    writeFileSync(join(REPO_ROOT, rel), rungWat(steps, o.times));
    const wasmPath = await assembleWat(rel, `ladder-${name}.wasm`);
    entries.push({ label, filters: [{ kind: "wasm", namespace: "bench", name, pluginName: name, pluginConfig: "", wasmPath }] });
  }
  entries.push({
    label: "traffic-guard, allow path (one client, every rule on)",
    filters: [{ kind: "wasm", namespace: "bench", name: "tg", pluginName: "traffic-guard", pluginConfig: JSON.stringify(allowPathConfig("peer")), wasmPath: guard }],
  });
  const envoys: RunningEnvoy[] = [];
  try {
    for (const e of entries) {
      envoys.push(
        await startEnvoy({
          label: `ladder-${envoys.length}`,
          concurrency: 1,
          logLevel: "warning",
          spec: { listeners: [{ name: "b", ipv4: "127.0.0.1", useRemoteAddress: false, filters: e.filters, route: { kind: "direct_response", status: 200, body: "ok\n" } }] },
        }),
      );
      isolateEnvoy(envoys[envoys.length - 1].child.pid!);
    }
    const cpu: number[][] = entries.map(() => []);
    for (let rep = 0; rep < o.reps; rep++) {
      for (let k = 0; k < entries.length; k++) {
        const i = (k + rep) % entries.length;
        const r = await wrk(envoys[i], envoys[i].ports.get("b")!.ipv4, o.duration, o.connections);
        if (r.non2xx !== 0) throw new Error(`${entries[i].label}: ${r.non2xx} non-2xx responses`);
        cpu[i].push(r.cpuUs);
      }
      process.stderr.write(`rep ${rep + 1}/${o.reps} done\n`);
    }
    const none = median(cpu[0]);
    const floor = median(cpu[1]);
    console.log(`| rung | Envoy CPU µs/req (median of ${o.reps}) | runs | added vs no filter | added vs floor |`);
    console.log("| --- | ---: | --- | ---: | ---: |");
    entries.forEach((e, i) => {
      const m = median(cpu[i]);
      console.log(`| ${e.label} | ${m.toFixed(2)} | ${cpu[i].map((c) => c.toFixed(1)).join(", ")} | ${(m - none).toFixed(2)} | ${i === 0 ? "" : (m - floor).toFixed(2)} |`);
    });
  } finally {
    await Promise.all(envoys.map((e) => e.stop()));
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((e) => {
    console.error(`bench:ladder: ${(e as Error).message}`);
    process.exit(1);
  });
}

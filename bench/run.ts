/**
 * `npm run bench`: what traffic-guard costs in real Envoy, side by side with Envoy's own per-client
 * limiter. Five single-worker Envoys (`--concurrency 1`, a direct_response route so the upstream
 * costs nothing) differ only in their HTTP filter:
 *   0. the raw-ABI floor: a hand-written module with no SDK (bench/floor/floor.wat), the least any Wasm
 *      filter costs; every configuration's added CPU is also given as a multiple of it;
 *   1. no filter;
 *   2. Envoy's native local_ratelimit with a per-remote_address dynamic descriptor, never limiting;
 *   3. traffic-guard on the allow path (all rules on, limits never reached);
 *   4. traffic-guard on the block path (every request from an already banned client);
 *   5. a no-op AssemblyScript filter on the same patched SDK (the SDK + V8 floor).
 * wrk (keep-alive, fixed connections and duration) measures each in turn; the configurations are
 * alternated, in a rotated order, and every one is measured `--reps` times. The whole comparison runs
 * twice: one client address, then 10 000 addresses rotating through X-Forwarded-For (traffic-guard's
 * `xff` source, and Envoy's remote address for the native limiter).
 *
 * Options: --duration <s> (8), --reps <n> (3), --connections <n> (16), --warmup <s> (2),
 *          --clients <n> (10000), --only single|churn, --json <file>, --baseline <git revision>.
 * --baseline adds two configurations, the filter built at that revision on the allow and the block path
 * with the same pluginConfigs, so a change is measured before and after in one run (the revision's
 * config parser must accept them).
 */
import { writeFileSync } from "node:fs";
import { availableParallelism, loadavg } from "node:os";
import { ensureEnvoy } from "../dev/envoy.ts";
import { startEnvoy, type RunningEnvoy } from "../dev/envoy-process.ts";
import { BASELINE_CONFIGS, BENCH_CONFIGS, benchListener, benchPort, type BenchConfig } from "../dev/envoy-topologies.ts";
import { assembleWat, buildAtRevision, compileModule, ensureFilterBuilt } from "../dev/wasm-build.ts";
import { isolateEnvoy, checkWrk, median, wrk, type WrkResult } from "./lib.ts";

/** Parsed command-line options. */
interface Options {
  duration: number;
  reps: number;
  connections: number;
  warmup: number;
  clients: number;
  only?: "single" | "churn";
  json?: string;
  baseline?: string;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { duration: 8, reps: 3, connections: 16, warmup: 2, clients: 10_000 };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[i + 1];
    const num = () => {
      const n = Number(value);
      if (!Number.isFinite(n) || n <= 0) throw new Error(`${flag}: expected a positive number, got "${value ?? ""}"`);
      i++;
      return n;
    };
    if (flag === "--duration") o.duration = num();
    else if (flag === "--reps") o.reps = Math.round(num());
    else if (flag === "--connections") o.connections = Math.round(num());
    else if (flag === "--warmup") o.warmup = num();
    else if (flag === "--clients") o.clients = Math.round(num());
    else if (flag === "--only") {
      if (value !== "single" && value !== "churn") throw new Error(`--only: expected "single" or "churn", got "${value ?? ""}"`);
      o.only = value;
      i++;
    } else if (flag === "--baseline") {
      if (!value) throw new Error("--baseline: expected a git revision");
      o.baseline = value;
      i++;
    } else if (flag === "--json") {
      if (!value) throw new Error("--json: expected a file name");
      o.json = value;
      i++;
    } else throw new Error(`unknown option "${flag}" (see bench/run.ts for the options)`);
  }
  return o;
}

const LABELS: Record<BenchConfig, string> = {
  "raw-floor": "0. raw-ABI Wasm floor (bench/floor/floor.wat)",
  "no-filter": "1. no filter",
  "native-local-ratelimit": "2. Envoy local_ratelimit per remote_address",
  "guard-allow": "3. traffic-guard, allow path",
  "guard-block": "4. traffic-guard, block path (banned client)",
  "noop-wasm": "5. no-op AssemblyScript filter (SDK + V8 floor)",
  "baseline-allow": "3b. baseline revision, allow path",
  "baseline-block": "4b. baseline revision, block path",
  "guard-custom": "6. traffic-guard, allow path + 10 custom rules matching nothing",
  "baseline-custom": "6b. baseline revision, allow path + 10 custom rules matching nothing",
};

/** Aggregated numbers of one configuration. */
interface Row {
  config: BenchConfig;
  runs: WrkResult[];
  rps: number;
  p50: number;
  p90: number;
  p99: number;
  cpuUs: number;
}

async function metric(envoy: RunningEnvoy, name: string): Promise<number> {
  const m = new RegExp(`^${name}\\{\\} (\\d+)$`, "m").exec(await envoy.admin("/stats/prometheus"));
  return m ? Number(m[1]) : 0;
}

async function measure(mode: "single" | "churn", o: Options, wasm: { guard: string; noop: string; floor: string; baseline?: string }): Promise<Row[]> {
  const configs: readonly BenchConfig[] = wasm.baseline ? [...BENCH_CONFIGS, ...BASELINE_CONFIGS] : BENCH_CONFIGS;
  const source = mode === "churn" ? "xff" : "peer";
  const churn = mode === "churn" ? o.clients : undefined;
  const envoys = new Map<BenchConfig, RunningEnvoy>();
  try {
    for (const config of configs) {
      const listener = benchListener(config, { guardWasm: wasm.guard, noopWasm: wasm.noop, floorWasm: wasm.floor, baselineWasm: wasm.baseline, source });
      const envoy = await startEnvoy({ label: `bench-${mode}-${config}`, concurrency: 1, logLevel: "warning", spec: { listeners: [listener] } });
      isolateEnvoy(envoy.child.pid!);
      envoys.set(config, envoy);
    }
    const port = (c: BenchConfig) => benchPort(envoys.get(c)!, c);
    const run = (c: BenchConfig, seconds: number) => wrk(envoys.get(c)!, port(c), seconds, o.connections, churn);

    // The block path needs every benchmark client banned before it is measured.
    const wanted = churn ?? 1;
    for (const block of configs.filter((c) => c.endsWith("-block"))) {
      for (let attempt = 0; (await metric(envoys.get(block)!, "traffic_guard_bans_rate_total")) < wanted; attempt++) {
        if (attempt === 5) throw new Error(`could not ban all ${wanted} benchmark clients on the ${block} Envoy`);
        await run(block, 2);
      }
    }
    for (const config of configs) await run(config, o.warmup);

    const runs = new Map<BenchConfig, WrkResult[]>(configs.map((c) => [c, []]));
    for (let rep = 0; rep < o.reps; rep++) {
      // Rotate the order every repetition so no configuration always runs first or last.
      const order = configs.map((_, i) => configs[(i + rep) % configs.length]);
      for (const config of order) {
        const r = await run(config, o.duration);
        const blocked = config.endsWith("-block");
        if (blocked ? r.non2xx !== r.requests : r.non2xx !== 0) {
          throw new Error(`${config} (${mode}): ${r.non2xx} of ${r.requests} responses were not 2xx/3xx; the configuration is not measuring what it claims`);
        }
        runs.get(config)!.push(r);
        process.stderr.write(`  ${mode} rep ${rep + 1}/${o.reps} ${config.padEnd(22)} ${r.rps.toFixed(0).padStart(7)} req/s  p50 ${r.p50.toFixed(0)}us  p99 ${r.p99.toFixed(0)}us  Envoy CPU ${r.cpuUs.toFixed(2)}us/req  load ${loadavg()[0].toFixed(2)}\n`);
      }
    }
    if (churn) {
      const tracked = await metric(envoys.get("guard-allow")!, "traffic_guard_tracked_clients");
      process.stderr.write(`  churn: traffic-guard (allow path) tracks ${tracked} clients\n`);
    }
    return configs.map((config) => {
      const rs = runs.get(config)!;
      return { config, runs: rs, rps: median(rs.map((r) => r.rps)), p50: median(rs.map((r) => r.p50)), p90: median(rs.map((r) => r.p90)), p99: median(rs.map((r) => r.p99)), cpuUs: median(rs.map((r) => r.cpuUs)) };
    });
  } finally {
    await Promise.all([...envoys.values()].map((e) => e.stop()));
  }
}

/** Renders one Markdown table. */
export function table(rows: Row[]): string {
  const by = (c: BenchConfig) => rows.find((r) => r.config === c)!;
  const base = by("no-filter");
  const native = by("native-local-ratelimit");
  const floor = by("raw-floor").cpuUs - base.cpuUs;
  const usPerReq = (r: Row) => 1e6 / r.rps;
  const lines = [
    "| configuration | added CPU × floor | req/s (median) | runs (req/s) | p50 µs | p90 µs | p99 µs | × no filter | × native | added µs/req (1/throughput) | Envoy CPU µs/req | added CPU µs/req |",
    "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
  ];
  for (const r of rows) {
    lines.push(
      `| ${LABELS[r.config]} | ${r.config === "no-filter" ? "" : floor > 0.2 ? ((r.cpuUs - base.cpuUs) / floor).toFixed(2) : "n/a"} | ${r.rps.toFixed(0)} | ${r.runs.map((x) => x.rps.toFixed(0)).join(", ")} | ${r.p50.toFixed(0)} | ${r.p90.toFixed(0)} | ${r.p99.toFixed(0)} | ` +
        `${(r.rps / base.rps).toFixed(3)} | ${(r.rps / native.rps).toFixed(3)} | ${(usPerReq(r) - usPerReq(base)).toFixed(2)} | ` +
        `${r.cpuUs.toFixed(2)} | ${(r.cpuUs - base.cpuUs).toFixed(2)} |`,
    );
  }
  return lines.join("\n");
}

/**
 * The targets docs/benchmark.md states, checked against one table. Throughput ratios are wrk's; costs per request
 * are compared on Envoy's CPU time, which other load on the machine disturbs far less.
 */
function verdicts(rows: Row[]): string[] {
  const by = (c: BenchConfig) => rows.find((r) => r.config === c)!;
  const base = by("no-filter");
  const addedCpu = (c: BenchConfig) => by(c).cpuUs - base.cpuUs;
  const allow = by("guard-allow").rps / base.rps;
  const block = by("guard-block").rps / base.rps;
  const native = addedCpu("native-local-ratelimit");
  const mark = (ok: boolean) => (ok ? "met" : "NOT met");
  const cost =
    native > 0.5
      ? `${(addedCpu("guard-allow") / native).toFixed(2)} × the native limiter's ${native.toFixed(2)} µs (target ≤ 1.5): ${mark(addedCpu("guard-allow") <= 1.5 * native)}`
      : `the native limiter's added cost (${native.toFixed(2)} µs) is within the noise of this run, no ratio`;
  const before = rows.some((r) => r.config === "baseline-allow")
    ? (["allow", "block"] as const).map((path) => {
        const now = addedCpu(`guard-${path}`);
        const then = addedCpu(`baseline-${path}`);
        return `- ${path} path against the baseline revision: ${now.toFixed(2)} µs vs ${then.toFixed(2)} µs Envoy CPU added per request (${(now / then).toFixed(2)} ×), ${(by(`guard-${path}`).rps / by(`baseline-${path}`).rps).toFixed(3)} × its throughput`;
      })
    : [];
  const floor = addedCpu("raw-floor");
  const floorLine =
    floor > 0.2
      ? `- allow path, every rule on: ${(addedCpu("guard-allow") / floor).toFixed(2)} × the raw-ABI floor's ${floor.toFixed(2)} µs (target ≤ 3): ${mark(addedCpu("guard-allow") <= 3 * floor)}; block path ${(addedCpu("guard-block") / floor).toFixed(2)} × (target: at most the allow path): ${mark(addedCpu("guard-block") <= addedCpu("guard-allow"))}`
      : `- the raw-ABI floor's added cost (${floor.toFixed(2)} µs) is within the noise of this run, no ratio`;
  return [
    floorLine,
    ...before,
    `- allow path: ${allow.toFixed(3)} × no-filter throughput (target ≥ 0.90): ${mark(allow >= 0.9)}`,
    `- block path: ${block.toFixed(3)} × no-filter throughput (target ≥ 1.0): ${mark(block >= 1.0)}`,
    `- Envoy CPU added per request: traffic-guard allow path ${addedCpu("guard-allow").toFixed(2)} µs = ${cost}`,
    `- Envoy CPU added per request: block path ${addedCpu("guard-block").toFixed(2)} µs, no-op AssemblyScript filter (SDK + V8 floor) ${addedCpu("noop-wasm").toFixed(2)} µs`,
    customVerdict(by("guard-allow"), by("guard-custom")),
  ];
}

/**
 * The custom-rules line: Envoy CPU per request with 10 custom rules matching nothing minus the built-in rules
 * alone. A difference smaller than the run-to-run spread of either configuration is reported as noise.
 */
function customVerdict(allow: Row, custom: Row): string {
  const diff = custom.cpuUs - allow.cpuUs;
  const spread = (r: Row) => Math.max(...r.runs.map((x) => x.cpuUs)) - Math.min(...r.runs.map((x) => x.cpuUs));
  const noise = Math.max(spread(allow), spread(custom));
  const head = `- 10 custom rules matching nothing: ${diff.toFixed(2)} µs Envoy CPU per request more than the built-in rules alone (target ≤ 1)`;
  if (noise > 1) return `${head}: within this run's noise (runs spread over ${noise.toFixed(2)} µs), no verdict`;
  return `${head}: ${diff <= 1 ? "met" : "NOT met"}`;
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const envoy = ensureEnvoy();
  const wrkVersion = await checkWrk();
  const guard = ensureFilterBuilt((l) => process.stderr.write(`${l}\n`)).path;
  const noop = compileModule("bench/noop/index.ts", "noop.wasm");
  const floor = await assembleWat("bench/floor/floor.wat", "floor.wasm");
  const baseline = o.baseline ? buildAtRevision(o.baseline, (l) => process.stderr.write(`${l}\n`)) : undefined;
  const modes = o.only ? [o.only] : (["single", "churn"] as const);
  process.stderr.write(
    `${envoy.versionLine}\n${wrkVersion.split("\n")[0]}\n` +
      `wrk -t1 -c${o.connections} -d${o.duration}s x ${o.reps} reps x ${BENCH_CONFIGS.length + (baseline ? BASELINE_CONFIGS.length : 0)} configs x ${modes.length} modes\n`,
  );
  const results: Record<string, Row[]> = {};
  for (const mode of modes) results[mode] = await measure(mode, o, { guard, noop, floor, baseline: baseline?.path });

  const out: string[] = [
    `Envoy ${envoy.version}, --concurrency 1, direct_response; wrk -t1 -c${o.connections} -d${o.duration}s, ${o.reps} runs per configuration, alternated; ` +
      `load average at the end ${loadavg().map((x) => x.toFixed(2)).join(" ")} on ${availableParallelism()} CPUs` +
      `${process.getuid?.() === 0 ? "; Envoy and wrk ran at nice -10" : ""}` +
      `${baseline ? `; baseline revision ${baseline.commit.slice(0, 12)} (${o.baseline})` : ""}.`,
    "",
  ];
  if (results.single) out.push("### One client address", "", table(results.single), "", ...verdicts(results.single), "");
  if (results.churn) {
    out.push(`### ${o.clients} client addresses rotating through X-Forwarded-For (traffic-guard source "xff")`, "", table(results.churn), "", ...verdicts(results.churn), "");
  }
  console.log(out.join("\n"));
  if (o.json) writeFileSync(o.json, JSON.stringify({ options: o, envoy: envoy.versionLine, results }, null, 2));
}

main().catch((e) => {
  console.error(`bench: ${(e as Error).message}`);
  process.exit(1);
});

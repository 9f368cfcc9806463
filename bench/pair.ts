/**
 * `npm run bench:pair -- <config A> <config B>`: the difference between two `npm run bench`
 * configurations (dev/envoy-topologies.ts BENCH_CONFIGS), measured as precisely as this machine allows:
 * two single-worker Envoys run side by side and wrk measures them in strict alternation, A B B A A B ...,
 * so that both see the same drift in the machine's load; each round's difference of Envoy CPU time per
 * request is one sample. Which of two Envoys was started first can itself shift its figures by about a
 * microsecond here, so half of the rounds run on a second pair started in the other order. The median of
 * the samples, with their interquartile range, is the result. Not part of npm test.
 *
 * Options: --rounds <n> (16, an even number), --duration <s> (3), --connections <n> (16), --clients <n> (rotate that
 * many addresses through X-Forwarded-For, traffic-guard source "xff"; default: one client, source "peer"),
 * --split (needs `perf`: each run is also sampled with `perf record -e cpu-clock`, and the part of Envoy's CPU
 * spent in V8's JIT-compiled code, which is the Wasm module's own work, is paired the same way: a sharper
 * figure for a change inside the module, since Envoy's share of the noise drops out), --baseline <git revision>
 * (builds the filter at that revision, so that configurations baseline-allow, baseline-block and baseline-custom can be
 * paired with guard-allow, guard-block and guard-custom: a change's before and after), --chain <k> (each Envoy runs k copies of the
 * configuration's Wasm filter in one chain, as k plugins with their own names: a per-filter difference is
 * multiplied by k while Envoy's own per-request work is not; the figures are then reported per filter too),
 * --together (both configurations as listeners of one Envoy: same process, same worker, and the same Wasm VM when
 * the module is the same, so that which process started first no longer matters).
 * --json <file> (saves every round's figures). `--pool <file>...`, given alone, measures nothing: it reports the
 * rounds saved by several runs of one pair of configurations as one sample, with each run's median beside it.
 * Besides the median and interquartile range, a 95 % bootstrap confidence interval of the median is given,
 * and the difference as a share of A's cost (the median of the per-round ratios), which moves less with the
 * machine's speed from one hour to the next.
 */
import { ensureFilterBuilt, compileModule, assembleWat, buildAtRevision } from "../dev/wasm-build.ts";
import { startEnvoy, type RunningEnvoy } from "../dev/envoy-process.ts";
import { benchListener, benchPort, namedFor, type BenchConfig } from "../dev/envoy-topologies.ts";
import type { HttpFilterSpec, ListenerSpec } from "../dev/envoy-config.ts";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { configPair, isolateEnvoy, checkWrk, median, wrk, type WrkResult } from "./lib.ts";

interface Options {
  a: BenchConfig;
  b: BenchConfig;
  rounds: number;
  duration: number;
  connections: number;
  clients?: number;
  split: boolean;
  baseline?: string;
  chain: number;
  together: boolean;
  json?: string;
}

/** What --json saves of a run, and --pool reads back. */
interface SavedRun {
  a: BenchConfig;
  b: BenchConfig;
  duration: number;
  clients?: number;
  /** Envoy CPU µs per request of A and of B, per round. */
  cpuA: number[];
  cpuB: number[];
}

function parseArgs(argv: string[]): Options {
  const names: string[] = [];
  const o = { rounds: 16, duration: 3, connections: 16, split: false, chain: 1, together: false } as Partial<Options> & { rounds: number; duration: number; connections: number; split: boolean; chain: number; together: boolean };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    if (!flag.startsWith("--")) {
      names.push(flag);
      continue;
    }
    if (flag === "--split" || flag === "--together") {
      o[flag === "--split" ? "split" : "together"] = true;
      continue;
    }
    if (flag === "--pool") throw new Error("--pool: give it first, with only the files of --json runs after it (it measures nothing)");
    if (flag === "--baseline" || flag === "--json") {
      const value = argv[++i];
      if (!value) throw new Error(`${flag}: expected ${flag === "--json" ? "a file" : "a git revision"}`);
      o[flag === "--json" ? "json" : "baseline"] = value;
      continue;
    }
    const n = Number(argv[++i]);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`${flag}: expected a positive number, got "${argv[i] ?? ""}"`);
    if (flag === "--rounds") o.rounds = Math.round(n);
    else if (flag === "--duration") o.duration = n;
    else if (flag === "--connections") o.connections = Math.round(n);
    else if (flag === "--clients") o.clients = Math.round(n);
    else if (flag === "--chain") o.chain = Math.round(n);
    else throw new Error(`unknown option "${flag}" (options: --rounds, --duration, --connections, --clients, --split, --together, --baseline, --chain, --json; or --pool alone)`);
  }
  const [a, b] = configPair(names, o.baseline);
  return { ...o, a, b };
}

/** perf's sampling frequency for --split: one sample per 250 µs of a thread's CPU time. */
const PERF_HZ = 4000;

/** Fails with a clear message when `perf` cannot sample (not installed, or not permitted). */
function checkPerf(): void {
  try {
    execFileSync("perf", ["--version"], { stdio: "ignore" });
  } catch {
    throw new Error("--split needs perf (Debian: apt-get install linux-perf), run as root or with kernel.perf_event_paranoid <= 0");
  }
}

/**
 * Runs `measure` while `perf record` samples process `pid`; returns its result and the µs per request that
 * Envoy spent in V8's JIT-compiled code (perf's "[JIT]" map: the Wasm module's functions and V8's
 * wrappers around them).
 */
async function sampled(pid: number, dir: string, measure: () => Promise<WrkResult>): Promise<{ r: WrkResult; jitUs: number }> {
  const out = join(dir, "perf.data");
  const perf = spawn("perf", ["record", "-q", "-e", "cpu-clock", "-F", String(PERF_HZ), "-o", out, "-p", String(pid)], { stdio: "ignore" });
  const exited = new Promise((resolve) => perf.on("exit", resolve));
  await new Promise((resolve) => setTimeout(resolve, 300)); // perf attaches before the load starts
  let r: WrkResult;
  try {
    r = await measure();
  } finally {
    perf.kill("SIGINT");
    await exited;
  }
  const report = execFileSync("perf", ["report", "-i", out, "--no-children", "--sort", "dso", "--stdio", "-n"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
  let jit = 0;
  for (const line of report.split("\n")) {
    const m = /^\s*[\d.]+%\s+(\d+)\s+\[JIT\]/.exec(line);
    if (m) jit += Number(m[1]);
  }
  return { r, jitUs: (jit * (1e6 / PERF_HZ)) / r.requests };
}

/** The listener with each Wasm filter repeated k times in its chain, as k plugins with their own names. */
function chained(listener: ListenerSpec, k: number): ListenerSpec {
  if (k <= 1) return listener;
  const filters = listener.filters.flatMap((f): HttpFilterSpec[] =>
    f.kind === "wasm" ? Array.from({ length: k }, (_, i) => ({ ...f, name: `${f.name}-${i}`, pluginName: `${f.pluginName}-${i}` })) : [f],
  );
  return { ...listener, filters };
}

/**
 * A 95 % confidence interval of the median of `xs`, by bootstrap (2 000 resamples drawn with a fixed seed, so
 * that the same samples give the same interval).
 */
function medianInterval(xs: number[]): [number, number] {
  let seed = 0x9e3779b9;
  const random = () => {
    // mulberry32
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const medians: number[] = [];
  for (let i = 0; i < 2000; i++) medians.push(median(xs.map(() => xs[Math.floor(random() * xs.length)])));
  return [quantile(medians, 0.025), quantile(medians, 0.975)];
}

/** The q-quantile of a non-empty list (linear interpolation). */
function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((x, y) => x - y);
  const pos = (s.length - 1) * q;
  const lo = Math.floor(pos);
  return s[lo] + (s[Math.min(lo + 1, s.length - 1)] - s[lo]) * (pos - lo);
}

/** Prints B minus A over paired rounds: the median difference with its spread and interval, and as a share of A. */
function report(aName: string, bName: string, a: number[], b: number[]): number[] {
  const diffs = b.map((x, i) => x - a[i]);
  const [low, high] = medianInterval(diffs);
  console.log(`  median of the paired differences ${median(diffs).toFixed(2)} µs (interquartile range ${quantile(diffs, 0.25).toFixed(2)} to ${quantile(diffs, 0.75).toFixed(2)} µs; 95 % confidence interval of the median ${low.toFixed(2)} to ${high.toFixed(2)} µs, bootstrap)`);
  const shares = b.map((x, i) => (100 * (x - a[i])) / a[i]);
  const [sLow, sHigh] = medianInterval(shares);
  console.log(`  as a share of ${aName}: median of the per-round ratios ${median(shares).toFixed(2)} % (95 % confidence interval ${sLow.toFixed(2)} to ${sHigh.toFixed(2)} %)`);
  console.log(`  medians: ${aName} ${median(a).toFixed(2)} µs, ${bName} ${median(b).toFixed(2)} µs`);
  return diffs;
}

// --pool <file>...: the saved rounds of several runs as one sample (the configurations come from the files).
function pool(files: string[]): void {
  if (files.length === 0 || files.some((f) => f.startsWith("--"))) throw new Error("--pool: expected only the files of one or more --json runs");
  const runs = files.map((f) => {
    let r: SavedRun;
    try {
      r = JSON.parse(readFileSync(f, "utf8")) as SavedRun;
    } catch (e) {
      throw new Error(`--pool: ${f}: ${(e as Error).message}`);
    }
    if (!Array.isArray(r.cpuA) || !Array.isArray(r.cpuB) || r.cpuA.length !== r.cpuB.length || r.cpuA.length === 0) {
      throw new Error(`--pool: ${f}: not a file written by --json (expected cpuA and cpuB, one figure per round each)`);
    }
    return r;
  });
  const first = runs[0];
  for (const [i, r] of runs.entries()) {
    if (r.a !== first.a || r.b !== first.b) throw new Error(`--pool: ${files[i]} pairs ${r.a} with ${r.b}, ${files[0]} ${first.a} with ${first.b}`);
  }
  const a = runs.flatMap((r) => r.cpuA);
  const b = runs.flatMap((r) => r.cpuB);
  console.log(`${first.b} minus ${first.a}, Envoy CPU per request, ${runs.length} runs pooled (${a.length} rounds; each round counts alike, whichever run it came from):`);
  report(first.a, first.b, a, b);
  for (const [i, r] of runs.entries()) {
    const d = r.cpuB.map((x, k) => x - r.cpuA[k]);
    console.log(`  ${files[i]}: ${r.cpuA.length} rounds, median ${median(d).toFixed(2)} µs, ${first.a} ${median(r.cpuA).toFixed(2)} µs`);
  }
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv[0] === "--pool") return pool(argv.slice(1));
  const o = parseArgs(argv);
  await checkWrk();
  if (o.split) checkPerf();
  const perfDir = mkdtempSync(join(tmpdir(), "bench-pair-"));
  const inputs = {
    guardWasm: ensureFilterBuilt((l) => process.stderr.write(`${l}\n`)).path,
    noopWasm: compileModule("bench/noop/index.ts", "noop.wasm"),
    floorWasm: await assembleWat("bench/floor/floor.wat", "floor.wasm"),
    source: (o.clients ? "xff" : "peer") as "xff" | "peer",
    baselineWasm: o.baseline ? buildAtRevision(o.baseline, (l) => process.stderr.write(`${l}\n`)).path : undefined,
  };
  const a: number[] = [];
  const b: number[] = [];
  const jitA: number[] = [];
  const jitB: number[] = [];
  for (const first of [o.a, o.b]) {
    const envoys = new Map<BenchConfig, RunningEnvoy>();
    try {
      if (o.together) {
        // One Envoy, one worker, both configurations as listeners: their plugins share the worker's Wasm VM
        // (same code, same vm_config), so JIT code, Envoy's code and the caches are the same for both.
        const order = first === o.a ? [o.a, o.b] : [o.b, o.a];
        const listeners = order.map((c) => namedFor(chained(benchListener(c, inputs), o.chain), c));
        const e = await startEnvoy({ label: `pair-together`, concurrency: 1, logLevel: "warning", spec: { listeners } });
        isolateEnvoy(e.child.pid!);
        for (const c of order) envoys.set(c, e);
      } else {
        for (const c of first === o.a ? [o.a, o.b] : [o.b, o.a]) {
          const e = await startEnvoy({ label: `pair-${c}`, concurrency: 1, logLevel: "warning", spec: { listeners: [chained(benchListener(c, inputs), o.chain)] } });
          isolateEnvoy(e.child.pid!);
          envoys.set(c, e);
        }
      }
      const run = async (c: BenchConfig, seconds: number, split = false) => {
        const e = envoys.get(c)!;
        const measure = () => wrk(e, benchPort(e, c), seconds, o.connections, o.clients);
        const { r, jitUs } = split ? await sampled(e.child.pid!, perfDir, measure) : { r: await measure(), jitUs: 0 };
        if (r.non2xx !== 0 && !c.endsWith("-block")) throw new Error(`${c}: ${r.non2xx} responses were not 2xx/3xx`);
        return { cpu: r.cpuUs, jitUs };
      };
      for (const c of [o.a, o.b]) await run(c, 2); // warm-up (and, on a block path, the ban)
      for (let round = 0; round < o.rounds / 2; round++) {
        // A B, then B A: each configuration goes first in half of the rounds.
        const order = round % 2 === 0 ? [o.a, o.b] : [o.b, o.a];
        const got = new Map<BenchConfig, { cpu: number; jitUs: number }>();
        for (const c of order) got.set(c, await run(c, o.duration, o.split));
        a.push(got.get(o.a)!.cpu);
        b.push(got.get(o.b)!.cpu);
        jitA.push(got.get(o.a)!.jitUs);
        jitB.push(got.get(o.b)!.jitUs);
        const jit = o.split ? ` (module ${jitA[jitA.length - 1].toFixed(2)}, ${jitB[jitB.length - 1].toFixed(2)})` : "";
        process.stderr.write(`round ${a.length}/${o.rounds} (${first} started first): ${o.a} ${a[a.length - 1].toFixed(2)}, ${o.b} ${b[b.length - 1].toFixed(2)} µs/req${jit}\n`);
      }
    } finally {
      await Promise.all([...new Set(envoys.values())].map((e) => e.stop()));
    }
  }
  console.log(`${o.b} minus ${o.a}, Envoy CPU per request (${a.length} rounds of ${o.duration} s, ${o.clients ? `${o.clients} rotating clients` : "one client"}):`);
  const diffs = report(o.a, o.b, a, b);
  if (o.json) {
    const saved: SavedRun = { a: o.a, b: o.b, duration: o.duration, clients: o.clients, cpuA: a, cpuB: b };
    writeFileSync(o.json, `${JSON.stringify(saved)}\n`);
  }
  if (o.chain > 1) {
    const k = o.chain;
    const [low, high] = medianInterval(diffs);
    console.log(`  per filter (${k} in each chain): ${(median(diffs) / k).toFixed(2)} µs (interquartile range ${(quantile(diffs, 0.25) / k).toFixed(2)} to ${(quantile(diffs, 0.75) / k).toFixed(2)} µs; confidence interval ${(low / k).toFixed(2)} to ${(high / k).toFixed(2)} µs)`);
  }
  if (o.split) {
    const d = jitB.map((x, i) => x - jitA[i]);
    console.log(`  of which in the module (V8 JIT code, perf cpu-clock samples): median of the paired differences ${median(d).toFixed(2)} µs (interquartile range ${quantile(d, 0.25).toFixed(2)} to ${quantile(d, 0.75).toFixed(2)} µs)`);
    console.log(`  module medians: ${o.a} ${median(jitA).toFixed(2)} µs, ${o.b} ${median(jitB).toFixed(2)} µs`);
  }
  rmSync(perfDir, { recursive: true, force: true });
}

main().catch((e) => {
  console.error(`bench:pair: ${(e as Error).message}`);
  process.exit(1);
});

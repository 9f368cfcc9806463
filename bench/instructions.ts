/**
 * `npm run bench:instructions -- [<config A> <config B>]`: the instructions Envoy executes per request under two
 * `npm run bench` configurations (default guard-allow and guard-custom), counted by valgrind's callgrind, which
 * unlike CPU time does not depend on the machine's load: a difference of a few hundred instructions per request
 * repeats to within a few instructions, where this VM's CPU time moves by microseconds.
 *
 * Both configurations are listeners of one Envoy (one worker) running under callgrind, so that Envoy's code, the
 * V8 engine and the Wasm VM are the same for both (their plugins get their own names, and share the worker's VM
 * when the module is the same). Each listener is warmed up (V8 compiles the module's hot functions with its
 * optimizing tier in the background); then the counters are zeroed and wrk drives A, B, A, B, ..., each run
 * followed by a callgrind dump, whose totals divided by the requests of the run are that run's figures: user-space
 * instructions of every thread (Envoy, V8 and its compiled Wasm code, libc), and the level-1 instruction and data
 * cache misses of callgrind's cache simulation. The kernel's work (sockets) is not counted; it does not depend on
 * the filter's configuration.
 *
 * The difference is then given in microseconds at the cost of an average instruction of configuration A, measured
 * natively in the same run: Envoy's user CPU per request (the same listeners, without valgrind, wrk as in
 * `npm run bench`) divided by A's instructions per request. That assumes B's extra instructions cost what A's do
 * on average, which the cache-miss counts let a reader check: extra misses in proportion to the extra instructions
 * keep the average.
 *
 * Needs valgrind (`apt-get install valgrind`) and wrk. Options: --seconds <s> (10, per counted run), --warmup <s>
 * (20, per listener), --rounds <n> (2), --native-seconds <s> (3), --baseline <git revision> (for the baseline-*
 * configurations), --json <file>, --keep <dir> (keeps callgrind's dumps there, callgrind.out.1, .2, ... in the
 * order of the runs, for callgrind_annotate). A run takes about four minutes. Not part of npm test.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { assembleWat, buildAtRevision, compileModule, ensureFilterBuilt } from "../dev/wasm-build.ts";
import { startEnvoy, type RunningEnvoy } from "../dev/envoy-process.ts";
import { benchListener, benchPort, namedFor, type BenchConfig } from "../dev/envoy-topologies.ts";
import { configPair, isolateEnvoy, checkWrk, median, wrk } from "./lib.ts";

interface Options {
  a: BenchConfig;
  b: BenchConfig;
  seconds: number;
  warmup: number;
  rounds: number;
  nativeSeconds: number;
  baseline?: string;
  json?: string;
  keep?: string;
}

function parseArgs(argv: string[]): Options {
  const names: string[] = [];
  const o = { seconds: 10, warmup: 20, rounds: 2, nativeSeconds: 3 } as Partial<Options> & { seconds: number; warmup: number; rounds: number; nativeSeconds: number };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    if (!flag.startsWith("--")) {
      names.push(flag);
      continue;
    }
    const value = argv[++i];
    if (flag === "--baseline" || flag === "--json" || flag === "--keep") {
      if (!value) throw new Error(`${flag}: expected a value`);
      o[flag === "--baseline" ? "baseline" : flag === "--json" ? "json" : "keep"] = value;
      continue;
    }
    const n = Number(value);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`${flag}: expected a positive number, got "${value ?? ""}"`);
    if (flag === "--seconds") o.seconds = n;
    else if (flag === "--warmup") o.warmup = n;
    else if (flag === "--rounds") o.rounds = Math.round(n);
    else if (flag === "--native-seconds") o.nativeSeconds = n;
    else throw new Error(`unknown option "${flag}" (options: --seconds, --warmup, --rounds, --native-seconds, --baseline, --json, --keep)`);
  }
  if (names.length === 0) names.push("guard-allow", "guard-custom");
  const [a, b] = configPair(names, o.baseline);
  return { ...o, a, b };
}

/** Fails with a clear message when valgrind's callgrind cannot run. */
function checkValgrind(): void {
  try {
    execFileSync("valgrind", ["--version"], { stdio: "ignore" });
    execFileSync("callgrind_control", ["--version"], { stdio: "ignore" });
  } catch {
    throw new Error("valgrind is not installed (apt-get install valgrind): bench:instructions counts with its callgrind tool");
  }
}

/** One counted run's figures, per request. */
interface Counted {
  config: BenchConfig;
  requests: number;
  instructions: number;
  i1Misses: number;
  d1Misses: number;
  llMisses: number;
}

/** The event totals of a callgrind dump ("events:" names, "summary:" counts). */
function dumpTotals(text: string): Map<string, number> {
  const events = /^events:\s*(.+)$/m.exec(text);
  const summary = /^(?:summary|totals):\s*(.+)$/m.exec(text);
  if (!events || !summary) throw new Error("a callgrind dump without events: and summary: lines");
  const names = events[1].trim().split(/\s+/);
  const counts = summary[1].trim().split(/\s+/).map(Number);
  return new Map(names.map((n, i) => [n, counts[i] ?? 0]));
}

/** Runs wrk against one listener, then has callgrind dump (and zero) its counters; returns the run's figures. */
async function counted(e: RunningEnvoy, c: BenchConfig, outFile: string, dumps: { n: number }, seconds: number): Promise<Counted> {
  const r = await wrk(e, benchPort(e, c), seconds, 16);
  if (r.non2xx !== 0 && !c.endsWith("-block")) throw new Error(`${c}: ${r.non2xx} responses were not 2xx/3xx`);
  const said = execFileSync("callgrind_control", [`--dump=${c}`, String(e.child.pid)], { encoding: "utf8" });
  const file = `${outFile}.${++dumps.n}`;
  for (let i = 0; i < 100 && !existsSync(file); i++) await new Promise((res) => setTimeout(res, 100));
  if (!existsSync(file)) throw new Error(`callgrind wrote no ${file} (callgrind_control said: ${said.trim()})`);
  const t = dumpTotals(readFileSync(file, "utf8"));
  const per = (k: string) => (t.get(k) ?? 0) / r.requests;
  return { config: c, requests: r.requests, instructions: per("Ir"), i1Misses: per("I1mr"), d1Misses: per("D1mr") + per("D1mw"), llMisses: per("ILmr") + per("DLmr") + per("DLmw") };
}

const fmt = (x: number, digits = 0) => x.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
const signed = (x: number, digits = 0) => `${x >= 0 ? "+" : "−"}${fmt(Math.abs(x), digits)}`;

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  checkValgrind();
  await checkWrk();
  const inputs = {
    guardWasm: ensureFilterBuilt((l) => process.stderr.write(`${l}\n`)).path,
    noopWasm: compileModule("bench/noop/index.ts", "noop.wasm"),
    floorWasm: await assembleWat("bench/floor/floor.wat", "floor.wasm"),
    source: "peer" as const,
    baselineWasm: o.baseline ? buildAtRevision(o.baseline, (l) => process.stderr.write(`${l}\n`)).path : undefined,
  };
  const listeners = [o.a, o.b].map((c) => namedFor(benchListener(c, inputs), c));

  // Natively first: Envoy's user CPU per request of configuration A.
  const native: number[] = [];
  {
    const e = await startEnvoy({ label: "instructions-native", concurrency: 1, logLevel: "warning", spec: { listeners } });
    try {
      isolateEnvoy(e.child.pid!);
      for (const c of [o.a, o.b]) await wrk(e, benchPort(e, c), 2, 16);
      for (let i = 0; i < 3; i++) native.push((await wrk(e, benchPort(e, o.a), o.nativeSeconds, 16)).userUs);
    } finally {
      await e.stop();
    }
  }

  const dir = o.keep ?? mkdtempSync(join(tmpdir(), "bench-instructions-"));
  if (o.keep) mkdirSync(o.keep, { recursive: true });
  const outFile = join(dir, "callgrind.out");
  const runs: Counted[] = [];
  process.stderr.write("starting Envoy under callgrind (about a minute)\n");
  const e = await startEnvoy({
    label: "instructions-callgrind",
    concurrency: 1,
    logLevel: "warning",
    spec: { listeners },
    readyTimeoutMs: 600_000,
    // The harness's envoy is a Python launcher that execs the binary: valgrind follows the exec. V8 writes the code
    // it compiles: valgrind must watch for self-modifying code outside mapped files.
    wrapper: ["valgrind", "--tool=callgrind", "--trace-children=yes", "--smc-check=all-non-file", "--cache-sim=yes", `--callgrind-out-file=${outFile}`],
  });
  try {
    for (const c of [o.a, o.b]) await wrk(e, benchPort(e, c), o.warmup, 16);
    execFileSync("callgrind_control", ["--zero", String(e.child.pid)], { stdio: "ignore" });
    const dumps = { n: 0 };
    for (let round = 0; round < o.rounds; round++) {
      for (const c of round % 2 === 0 ? [o.a, o.b] : [o.b, o.a]) {
        const r = await counted(e, c, outFile, dumps, o.seconds);
        runs.push(r);
        process.stderr.write(`round ${round + 1}/${o.rounds}: ${c} ${fmt(r.instructions)} instructions per request (${r.requests} requests)\n`);
      }
    }
  } finally {
    await e.stop();
    if (!o.keep) rmSync(dir, { recursive: true, force: true });
  }

  const of = (c: BenchConfig) => runs.filter((r) => r.config === c);
  const avg = (rs: Counted[], k: keyof Omit<Counted, "config">) => rs.reduce((s, r) => s + r[k], 0) / rs.length;
  const A = of(o.a);
  const B = of(o.b);
  console.log(`Envoy's user-space work per request, counted by callgrind in one Envoy with both configurations as listeners (${o.rounds} rounds of ${o.seconds} s each):\n`);
  console.log("| configuration | run | requests | instructions | I1 misses | D1 misses | LL misses |");
  console.log("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
  for (const c of [o.a, o.b]) {
    of(c).forEach((r, i) => console.log(`| ${c} | ${i + 1} | ${r.requests} | ${fmt(r.instructions)} | ${fmt(r.i1Misses, 1)} | ${fmt(r.d1Misses, 1)} | ${fmt(r.llMisses, 2)} |`));
  }
  const dI = avg(B, "instructions") - avg(A, "instructions");
  const spreadA = Math.max(...A.map((r) => r.instructions)) - Math.min(...A.map((r) => r.instructions));
  const spreadB = Math.max(...B.map((r) => r.instructions)) - Math.min(...B.map((r) => r.instructions));
  const usPerInstruction = median(native) / avg(A, "instructions");
  const estimate = dI * usPerInstruction;
  console.log(`\n${o.b} minus ${o.a}: ${signed(dI)} instructions per request (${signed((100 * dI) / avg(A, "instructions"), 2)} %; runs of one configuration differ by up to ${fmt(Math.max(spreadA, spreadB))}), ` +
    `I1 misses ${signed(avg(B, "i1Misses") - avg(A, "i1Misses"), 1)} (${signed((100 * (avg(B, "i1Misses") - avg(A, "i1Misses"))) / avg(A, "i1Misses"), 2)} %), ` +
    `D1 misses ${signed(avg(B, "d1Misses") - avg(A, "d1Misses"), 1)} (${signed((100 * (avg(B, "d1Misses") - avg(A, "d1Misses"))) / avg(A, "d1Misses"), 2)} %)`);
  console.log(`natively, ${o.a}: ${fmt(median(native), 2)} µs of Envoy user CPU per request (median of 3 runs of ${o.nativeSeconds} s: ${native.map((x) => fmt(x, 2)).join(", ")}), ${fmt(usPerInstruction * 1e6, 1)} ps per instruction`);
  console.log(`=> ${signed(estimate, 2)} µs of Envoy CPU per request at the average cost of an instruction of ${o.a}`);
  if (o.json) writeFileSync(o.json, `${JSON.stringify({ options: o, runs, native, instructionsDiff: dI, usPerInstruction, estimateUs: estimate }, null, 2)}\n`);
}

main().catch((e) => {
  console.error(`bench:instructions: ${(e as Error).message}`);
  process.exit(1);
});

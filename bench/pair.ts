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
 * many addresses through X-Forwarded-For, traffic-guard source "xff"; default: one client, source "peer").
 */
import { ensureFilterBuilt, compileModule, assembleWat } from "../dev/wasm-build.ts";
import { startEnvoy, type RunningEnvoy } from "../dev/envoy-process.ts";
import { BENCH_CONFIGS, benchListener, type BenchConfig } from "../dev/envoy-topologies.ts";
import { boostPriority, checkWrk, median, wrk } from "./lib.ts";

interface Options {
  a: BenchConfig;
  b: BenchConfig;
  rounds: number;
  duration: number;
  connections: number;
  clients?: number;
}

function parseArgs(argv: string[]): Options {
  const names: string[] = [];
  const o = { rounds: 16, duration: 3, connections: 16 } as Partial<Options> & { rounds: number; duration: number; connections: number };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    if (!flag.startsWith("--")) {
      names.push(flag);
      continue;
    }
    const n = Number(argv[++i]);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`${flag}: expected a positive number, got "${argv[i] ?? ""}"`);
    if (flag === "--rounds") o.rounds = Math.round(n);
    else if (flag === "--duration") o.duration = n;
    else if (flag === "--connections") o.connections = Math.round(n);
    else if (flag === "--clients") o.clients = Math.round(n);
    else throw new Error(`unknown option "${flag}" (options: --rounds, --duration, --connections, --clients)`);
  }
  if (names.length !== 2) throw new Error(`expected two configurations, got ${names.length} (configurations: ${BENCH_CONFIGS.join(", ")})`);
  for (const n of names) {
    if (!(BENCH_CONFIGS as readonly string[]).includes(n)) throw new Error(`unknown configuration "${n}" (configurations: ${BENCH_CONFIGS.join(", ")})`);
  }
  return { ...o, a: names[0] as BenchConfig, b: names[1] as BenchConfig };
}

/** The q-quantile of a non-empty list (linear interpolation). */
function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((x, y) => x - y);
  const pos = (s.length - 1) * q;
  const lo = Math.floor(pos);
  return s[lo] + (s[Math.min(lo + 1, s.length - 1)] - s[lo]) * (pos - lo);
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  await checkWrk();
  const inputs = {
    guardWasm: ensureFilterBuilt((l) => process.stderr.write(`${l}\n`)).path,
    noopWasm: compileModule("bench/noop/index.ts", "noop.wasm"),
    floorWasm: await assembleWat("bench/floor/floor.wat", "floor.wasm"),
    source: (o.clients ? "xff" : "peer") as "xff" | "peer",
  };
  const a: number[] = [];
  const b: number[] = [];
  for (const first of [o.a, o.b]) {
    const envoys = new Map<BenchConfig, RunningEnvoy>();
    try {
      for (const c of first === o.a ? [o.a, o.b] : [o.b, o.a]) {
        const e = await startEnvoy({ label: `pair-${c}`, concurrency: 1, logLevel: "warning", spec: { listeners: [benchListener(c, inputs)] } });
        boostPriority(e.child.pid!);
        envoys.set(c, e);
      }
      const run = async (c: BenchConfig, seconds: number) => {
        const e = envoys.get(c)!;
        const r = await wrk(e, e.ports.get(c.replace(/-/g, "_"))!.ipv4, seconds, o.connections, o.clients);
        if (r.non2xx !== 0 && !c.endsWith("-block")) throw new Error(`${c}: ${r.non2xx} responses were not 2xx/3xx`);
        return r.cpuUs;
      };
      for (const c of [o.a, o.b]) await run(c, 2); // warm-up (and, on a block path, the ban)
      for (let round = 0; round < o.rounds / 2; round++) {
        // A B, then B A: each configuration goes first in half of the rounds.
        const order = round % 2 === 0 ? [o.a, o.b] : [o.b, o.a];
        const cpu = new Map<BenchConfig, number>();
        for (const c of order) cpu.set(c, await run(c, o.duration));
        a.push(cpu.get(o.a)!);
        b.push(cpu.get(o.b)!);
        process.stderr.write(`round ${a.length}/${o.rounds} (${first} started first): ${o.a} ${a[a.length - 1].toFixed(2)}, ${o.b} ${b[b.length - 1].toFixed(2)} µs/req\n`);
      }
    } finally {
      await Promise.all([...envoys.values()].map((e) => e.stop()));
    }
  }
  const diffs = b.map((x, i) => x - a[i]);
  console.log(`${o.b} minus ${o.a}, Envoy CPU per request (${a.length} rounds of ${o.duration} s, ${o.clients ? `${o.clients} rotating clients` : "one client"}):`);
  console.log(`  median of the paired differences ${median(diffs).toFixed(2)} µs (interquartile range ${quantile(diffs, 0.25).toFixed(2)} to ${quantile(diffs, 0.75).toFixed(2)} µs)`);
  console.log(`  medians: ${o.a} ${median(a).toFixed(2)} µs, ${o.b} ${median(b).toFixed(2)} µs`);
}

main().catch((e) => {
  console.error(`bench:pair: ${(e as Error).message}`);
  process.exit(1);
});

/**
 * `npm run bench:breakdown`: where traffic-guard's per-request cost goes. One single-worker Envoy per
 * variant of the allow-path configuration (each switches one piece of work off), measured in
 * alternation with wrk; the figure of merit is Envoy's CPU time per request, minus the no-filter
 * baseline. Not part of npm test.
 *
 * Options: --duration <s> (3), --reps <n> (5), --connections <n> (16).
 */
import { startEnvoy, type RunningEnvoy } from "../dev/envoy-process.ts";
import type { HttpFilterSpec } from "../dev/envoy-config.ts";
import { compileModule, ensureFilterBuilt } from "../dev/wasm-build.ts";
import { BENCH_CUSTOM_RULES } from "../dev/envoy-topologies.ts";
import { isolateEnvoy, checkWrk, median, wrk } from "./lib.ts";

const never = { requests: 1_000_000, per: "1s" };
const off = { enabled: false };

/** The variants: a label and the pluginConfig (null = no filter, "noop" = the no-op module). */
const VARIANTS: [string, object | null | "noop"][] = [
  ["no filter", null],
  ["no-op AssemblyScript filter", "noop"],
  ["skipPaths match (filter returns at once)", { skipPaths: ["/"] }],
  ["allow-listed client (address resolved, no state)", { clientAddress: { source: "peer" }, allow: ["127.0.0.0/8"] }],
  ["all rules off (address + one table update)", { clientAddress: { source: "peer" }, rules: { rate: off, userAgent: off, errors: off } }],
  ["rate rule only, source peer", { clientAddress: { source: "peer" }, rules: { rate: { limit: never }, userAgent: off, errors: off } }],
  ["all rules, source peer", { clientAddress: { source: "peer" }, rules: { rate: { limit: never }, userAgent: { limit: never }, errors: { limit: never } } }],
  ["all rules, source auto (default)", { rules: { rate: { limit: never }, userAgent: { limit: never }, errors: { limit: never } } }],
  ["all rules, source peer, + 10 custom rules matching nothing", { clientAddress: { source: "peer" }, rules: { rate: { limit: never }, userAgent: { limit: never }, errors: { limit: never }, custom: BENCH_CUSTOM_RULES } }],
];

function parseArgs(argv: string[]): { duration: number; reps: number; connections: number } {
  const o = { duration: 3, reps: 5, connections: 16 };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, "");
    const n = Number(argv[i + 1]);
    if (!(key in o) || !Number.isFinite(n) || n <= 0) throw new Error(`bad option ${argv[i]} ${argv[i + 1] ?? ""} (options: --duration, --reps, --connections)`);
    (o as Record<string, number>)[key] = n;
  }
  return o;
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  await checkWrk();
  const guard = ensureFilterBuilt((l) => process.stderr.write(`${l}\n`)).path;
  const noop = compileModule("bench/noop/index.ts", "noop.wasm");
  const envoys: RunningEnvoy[] = [];
  try {
    for (const [label, cfg] of VARIANTS) {
      const filters: HttpFilterSpec[] =
        cfg === null
          ? []
          : [{ kind: "wasm", namespace: "bench", name: "f", pluginName: cfg === "noop" ? "noop" : "traffic-guard", pluginConfig: cfg === "noop" ? "" : JSON.stringify(cfg), wasmPath: cfg === "noop" ? noop : guard }];
      envoys.push(
        await startEnvoy({
          label: `breakdown-${envoys.length}`,
          concurrency: 1,
          logLevel: "warning",
          spec: { listeners: [{ name: "b", ipv4: "127.0.0.1", useRemoteAddress: false, filters, route: { kind: "direct_response", status: 200, body: "ok\n" } }] },
        }),
      );
      isolateEnvoy(envoys[envoys.length - 1].child.pid!);
      process.stderr.write(`started: ${label}\n`);
    }
    const cpu: number[][] = VARIANTS.map(() => []);
    const rps: number[][] = VARIANTS.map(() => []);
    for (let rep = 0; rep < o.reps; rep++) {
      for (let k = 0; k < VARIANTS.length; k++) {
        const i = (k + rep) % VARIANTS.length;
        const r = await wrk(envoys[i], envoys[i].ports.get("b")!.ipv4, o.duration, o.connections);
        if (r.non2xx !== 0) throw new Error(`${VARIANTS[i][0]}: ${r.non2xx} non-2xx responses`);
        cpu[i].push(r.cpuUs);
        rps[i].push(r.rps);
      }
      process.stderr.write(`rep ${rep + 1}/${o.reps} done\n`);
    }
    const base = median(cpu[0]);
    console.log(`| variant (allow path, one client) | Envoy CPU µs/req (median of ${o.reps}) | added vs no filter | req/s (median) |`);
    console.log("| --- | ---: | ---: | ---: |");
    VARIANTS.forEach(([label], i) => {
      console.log(`| ${label} | ${median(cpu[i]).toFixed(2)} | ${(median(cpu[i]) - base).toFixed(2)} | ${median(rps[i]).toFixed(0)} |`);
    });
  } finally {
    await Promise.all(envoys.map((e) => e.stop()));
  }
}

main().catch((e) => {
  console.error(`bench:breakdown: ${(e as Error).message}`);
  process.exit(1);
});

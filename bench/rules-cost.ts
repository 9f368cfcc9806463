/**
 * `node --import tsx bench/rules-cost.ts`: the filter's own work for 10 custom rules that match nothing,
 * measured in the proxy-wasm host emulator (tests/emulator/emulator.ts) rather than in Envoy, so that
 * other load on the machine blurs it less than the Envoy CPU figures of `npm run bench`. Two VMs run the
 * allow path with the built-in rules (bench configuration 3) and with BENCH_CUSTOM_RULES added
 * (configuration 6); each round sends the same requests (GET /, one client; a 200 response) through both,
 * alternating, and the result is the median over rounds of the time per request. Host calls cost what
 * the emulator's JavaScript host charges, not what Envoy's C++ host does, so this is a relative figure;
 * the host calls each configuration makes per request are counted too.
 *
 * Options: --rounds <n> (15), --requests <n> (20000).
 */
import { Host } from "../tests/emulator/emulator.ts";
import { allowPathConfig, customRulesConfig } from "../dev/envoy-topologies.ts";
import { median } from "./lib.ts";

function option(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  const n = i >= 0 ? Number(process.argv[i + 1]) : fallback;
  if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name}: expected a positive number`);
  return Math.round(n);
}

async function main(): Promise<void> {
  const rounds = option("rounds", 15);
  const requests = option("requests", 20_000);
  const configs = { builtIn: allowPathConfig("peer"), custom: customRulesConfig("peer") };
  const hosts = { builtIn: await Host.start({ config: configs.builtIn }), custom: await Host.start({ config: configs.custom }) };
  const perRequest: Record<keyof typeof hosts, number[]> = { builtIn: [], custom: [] };
  const calls: Record<string, number> = {};
  const run = (k: keyof typeof hosts, n: number) => {
    const vm = hosts[k].vm(0);
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) vm.request({ peer: "192.0.2.10:40000" }).respond(200);
    return Number(process.hrtime.bigint() - t0) / n;
  };
  for (const k of ["builtIn", "custom"] as const) {
    run(k, 2_000); // warm-up: V8 tiers up the module and the emulator
    const before = [...hosts[k].vm(0).importCalls.values()].reduce((a, b) => a + b, 0);
    run(k, 1_000);
    calls[k] = ([...hosts[k].vm(0).importCalls.values()].reduce((a, b) => a + b, 0) - before) / 1_000;
  }
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 === 0 ? (["builtIn", "custom"] as const) : (["custom", "builtIn"] as const);
    for (const k of order) perRequest[k].push(run(k, requests));
  }
  const b = median(perRequest.builtIn) / 1000;
  const c = median(perRequest.custom) / 1000;
  const diffs = perRequest.custom.map((x, i) => (x - perRequest.builtIn[i]) / 1000);
  console.log(`| configuration (emulator, one client, request + 200 response) | µs/request (median of ${rounds} × ${requests}) | host calls/request |`);
  console.log("| --- | ---: | ---: |");
  console.log(`| built-in rules (bench 3) | ${b.toFixed(2)} | ${calls.builtIn.toFixed(1)} |`);
  console.log(`| built-in rules + 10 custom rules matching nothing (bench 6) | ${c.toFixed(2)} | ${calls.custom.toFixed(1)} |`);
  console.log(`\nadded by the 10 custom rules: ${(c - b).toFixed(2)} µs/request (median of per-round differences ${median(diffs).toFixed(2)} µs, ` +
    `range ${Math.min(...diffs).toFixed(2)} to ${Math.max(...diffs).toFixed(2)})`);
  for (const h of Object.values(hosts)) h.assertClean();
}

main().catch((e) => {
  console.error(`bench:rules-cost: ${(e as Error).message}`);
  process.exit(1);
});

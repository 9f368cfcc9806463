/**
 * Shared helpers of the real-Envoy end-to-end tests: locating Envoy (skip locally, fail under
 * CI=true), the compiled modules, a per-test stack of processes that is always torn down (and whose
 * Envoy logs are printed when the test fails), HTTP clients bound to chosen loopback addresses, the
 * real curl binary, and the filter's metrics as Envoy renders them at /stats/prometheus.
 */
import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { spawnSync, execFile } from "node:child_process";
import { promisify } from "node:util";
import { existsSync } from "node:fs";
import { request, Agent, type IncomingHttpHeaders } from "node:http";
import { createServer } from "node:net";
import { join } from "node:path";
import { ensureEnvoy, REPO_ROOT, type EnvoyInstall } from "../../dev/envoy.ts";
import { startEnvoy, type RunningEnvoy, type StartOptions } from "../../dev/envoy-process.ts";
import { startSampleApp, type SampleApp } from "../../dev/sample-app.ts";
import type { WasmFilterSpec } from "../../dev/envoy-config.ts";
import { M } from "../filter/helpers.ts";

const execFileAsync = promisify(execFile);

/** True when running in CI, where a missing external component fails instead of skipping. */
export const IN_CI = process.env.CI === "true";

/** The release build of the filter that `npm run build` produces (TRAFFIC_GUARD_WASM overrides, for trying another build). */
export const FILTER_WASM = process.env.TRAFFIC_GUARD_WASM ?? join(REPO_ROOT, "build", "traffic-guard.wasm");

let envoyProblem: string | undefined;
let envoyInstall: EnvoyInstall | undefined;

/** Locates Envoy once per process; returns undefined (and remembers why) when unavailable. */
export function findEnvoy(): EnvoyInstall | undefined {
  if (envoyInstall || envoyProblem) return envoyInstall;
  try {
    envoyInstall = ensureEnvoy();
    // Printed once per test file: which Envoy the results below come from.
    console.log(`envoy --version: ${envoyInstall.versionLine} (${envoyInstall.source})`);
  } catch (e) {
    envoyProblem = (e as Error).message;
  }
  return envoyInstall;
}

/**
 * Makes sure a test can run: Envoy present (skip with the reason locally, fail under CI=true) and
 * the compiled filter present (always a failure: `npm test` builds it first).
 */
export function requireEnvironment(t: TestContext, tools: string[] = []): boolean {
  const missing: string[] = [];
  if (!findEnvoy()) missing.push(`Envoy (${envoyProblem})`);
  for (const tool of tools) {
    if (spawnSync("sh", ["-c", `command -v ${tool}`]).status !== 0) missing.push(`${tool} (apt-get install ${tool})`);
  }
  if (missing.length > 0) {
    const why = `needs ${missing.join(", ")}`;
    if (IN_CI) assert.fail(`CI=true and this real-Envoy test ${why}`);
    t.skip(why);
    return false;
  }
  assert.ok(existsSync(FILTER_WASM), `${FILTER_WASM} is missing: run npm run build`);
  return true;
}

export { assembleWat, compileModule } from "../../dev/wasm-build.ts";

/** The traffic-guard filter as a WasmPlugin named default/traffic-guard would render. */
export function guardFilter(pluginConfig: object | string, extra: Partial<WasmFilterSpec> = {}): WasmFilterSpec {
  return {
    kind: "wasm",
    namespace: "default",
    name: "traffic-guard",
    pluginName: "traffic-guard",
    pluginConfig: typeof pluginConfig === "string" ? pluginConfig : JSON.stringify(pluginConfig),
    wasmPath: FILTER_WASM,
    ...extra,
  };
}

/** Processes started for one test; all are stopped at the end of the test. */
export class Stack {
  readonly envoys: RunningEnvoy[] = [];
  readonly apps: SampleApp[] = [];
  /** Other clean-ups (a browser, ...), run before Envoy and the apps stop. */
  readonly cleanups: (() => Promise<void>)[] = [];

  /** Registers a clean-up to run at teardown (before Envoy and the apps stop). */
  defer(cleanup: () => Promise<void>): void {
    this.cleanups.push(cleanup);
  }

  /** Starts (and registers) an Envoy. */
  async envoy(opts: StartOptions): Promise<RunningEnvoy> {
    const e = await startEnvoy(opts);
    this.envoys.push(e);
    return e;
  }

  /** Starts (and registers) a sample app upstream. */
  async app(): Promise<SampleApp> {
    const a = await startSampleApp();
    this.apps.push(a);
    return a;
  }

  /** Stops everything; prints each Envoy's log when the test failed. */
  async teardown(failed: boolean): Promise<void> {
    if (failed) {
      for (const e of this.envoys) {
        // The startup inventory of compiled-in extensions is long and never the problem.
        const log = e.log().split("\n").filter((l) => !/\[main\] \[source\/server\/server\.cc:(4[0-9][0-9]|5[0-4][0-9])\]/.test(l));
        process.stderr.write(`\n----- Envoy "${e.label}" log (${e.logPath}) -----\n${log.join("\n")}\n----- end of "${e.label}" log -----\n`);
      }
    }
    for (const c of this.cleanups.reverse()) await c().catch((e) => process.stderr.write(`teardown: ${(e as Error).message}\n`));
    await Promise.all(this.envoys.map((e) => e.stop()));
    await Promise.all(this.apps.map((a) => a.close()));
  }
}

/**
 * Declares a real-Envoy test: checks the environment, hands the body a fresh {@link Stack}, tears it
 * down whatever happens, and dumps the Envoy logs if the body throws.
 */
export function e2e(name: string, body: (s: Stack, t: TestContext) => Promise<void>, tools: string[] = []): void {
  test(name, async (t) => {
    if (!requireEnvironment(t, tools)) return;
    const stack = new Stack();
    let failed = true;
    try {
      await body(stack, t);
      failed = false;
    } finally {
      await stack.teardown(failed);
    }
  });
}

/** A response as the tests look at it. */
export interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** Options of {@link get}. */
export interface GetOptions {
  /** Local address to bind the client socket to (127.0.0.2, ::1, ...). */
  from?: string;
  /** Extra request headers. */
  headers?: Record<string, string>;
  /** Keep-alive agent to reuse connections; default is a new connection per request. */
  agent?: Agent;
}

/** GET through Envoy at host:port, from a chosen local address. */
export function get(host: string, port: number, path: string, opts: GetOptions = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host,
        port,
        path,
        method: "GET",
        headers: { "user-agent": BROWSER_UA, ...opts.headers },
        localAddress: opts.from,
        agent: opts.agent ?? false,
        timeout: 10_000,
      },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (d) => (body += d));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      },
    );
    req.on("timeout", () => req.destroy(new Error(`GET ${path} timed out`)));
    req.on("error", reject);
    req.end();
  });
}

/** A desktop browser's User-Agent (matches none of the filter's scripted-client patterns). */
export const BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

/** One run of the real curl binary: status code and Retry-After of a single request. */
export interface CurlResult {
  status: number;
  retryAfter: string;
  userAgent: string;
}

let curlVersion: string | undefined;

/**
 * Runs the Debian curl binary once (with its own User-Agent unless `args` sets one), bound to a local
 * address, with extra curl arguments. Runs it asynchronously: the sample app upstream lives in this
 * very event loop.
 */
export async function curl(url: string, from: string, args: string[] = []): Promise<CurlResult> {
  const { stdout } = await execFileAsync("curl", ["-sS", "-o", "/dev/null", "--interface", from, "-w", "%{http_code} %header{retry-after}", ...args, url], {
    encoding: "utf8",
    timeout: 15_000,
  });
  const [code, retryAfter = ""] = stdout.trim().split(" ");
  curlVersion ??= (await execFileAsync("curl", ["--version"], { encoding: "utf8" })).stdout.split(" ")[1];
  return { status: Number(code), retryAfter, userAgent: `curl/${curlVersion}` };
}

/** True when the machine can bind ::1 (IPv6 loopback). */
export async function hasIpv6Loopback(): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once("error", () => resolve(false));
    s.listen(0, "::1", () => s.close(() => resolve(true)));
  });
}

/** Every metric docs/metrics-and-logs.md names, in its table order (the filter tests' list, tests/filter/helpers.ts). */
export const METRIC_NAMES = Object.values(M);

/** A metric name from the contract. */
export type MetricName = (typeof M)[keyof typeof M];

/**
 * Reads /stats/prometheus and returns the traffic_guard_* samples and their TYPE lines. Envoy renders
 * a proxy-wasm metric under exactly the name the filter defined (no `envoy_` prefix, no added
 * `_total`), with an empty label set: `traffic_guard_requests_total{} 6`.
 */
export async function guardMetrics(envoy: RunningEnvoy): Promise<{ values: Map<string, number>; types: Map<string, string> }> {
  const text = await envoy.admin("/stats/prometheus");
  const values = new Map<string, number>();
  const types = new Map<string, string>();
  for (const line of text.split("\n")) {
    const type = /^# TYPE (traffic_guard_\w+) (\w+)$/.exec(line);
    if (type) types.set(type[1], type[2]);
    const sample = /^(traffic_guard_\w+)\{\} (\d+)$/.exec(line);
    if (sample) values.set(sample[1], Number(sample[2]));
  }
  return { values, types };
}

/**
 * Asserts every contract metric at /stats/prometheus: the named ones must equal the given values,
 * all the others must be present and 0.
 */
export async function assertMetrics(envoy: RunningEnvoy, expected: Partial<Record<MetricName, number>>): Promise<void> {
  const { values, types } = await guardMetrics(envoy);
  const actual: Record<string, number | undefined> = {};
  const want: Record<string, number> = {};
  for (const name of METRIC_NAMES) {
    actual[name] = values.get(name);
    want[name] = expected[name] ?? 0;
    const gauge = name === M.tracked || name === M.decisionsActive;
    assert.equal(types.get(name), gauge ? "gauge" : "counter", `TYPE of ${name}`);
  }
  assert.deepEqual(actual, want, "traffic_guard_* metrics at /stats/prometheus");
}

/** A parsed ban line of the filter (`traffic-guard: banned <addr> for <s>s: rule=... limit=... ban=<n>`). */
export interface BanLine {
  address: string;
  seconds: number;
  rule: string;
  limit: string;
  strike: number;
  dryRun: boolean;
  /** The Envoy log level the line was written at. */
  level: string;
}

/** Extracts the filter's ban lines from an Envoy log. */
export function banLines(log: string): BanLine[] {
  const out: BanLine[] = [];
  const re = /\]\[(\w+)\]\[wasm\].*traffic-guard: banned (\S+) for (\d+)s: rule=([\w-]+) limit=(\S+) ban=(\d+)( \(dry-run\))?$/;
  for (const line of log.split("\n")) {
    const m = re.exec(line);
    if (m) {
      out.push({ level: m[1], address: m[2], seconds: Number(m[3]), rule: m[4], limit: m[5], strike: Number(m[6]), dryRun: m[7] !== undefined });
    }
  }
  return out;
}

/** Counts of each status in a list of replies, e.g. `{200: 5, 403: 3}`. */
export function statusCounts(statuses: number[]): Record<number, number> {
  const out: Record<number, number> = {};
  for (const s of statuses) out[s] = (out[s] ?? 0) + 1;
  return out;
}

/** The Envoy listener port of a one-listener stack. */
export function portOf(envoy: RunningEnvoy, listener: string): number {
  const p = envoy.ports.get(listener);
  assert.ok(p, `listener ${listener} not bound`);
  return p.ipv4;
}

/** The counters of one custom rule or preset (docs/metrics-and-logs.md); the `delayed` ones exist only for a `delay` rule. */
export interface RuleCounters {
  denied: number;
  bans: number;
  delayed?: number;
  delayed_ms?: number;
}

/**
 * Reads one custom rule's counters, `traffic_guard_rule_<name>_{denied,bans,delayed,delayed_ms}_total`
 * (the rule name with `-` written `_`), as Envoy renders them at /stats/prometheus. A counter the filter
 * did not define is absent from the result.
 */
export async function ruleCounters(envoy: RunningEnvoy, rule: string): Promise<RuleCounters> {
  const { values, types } = await guardMetrics(envoy);
  const prefix = `traffic_guard_rule_${rule.replace(/-/g, "_")}_`;
  const out: Record<string, number> = {};
  for (const [name, value] of values) {
    if (!name.startsWith(prefix) || !name.endsWith("_total")) continue;
    assert.equal(types.get(name), "counter", `TYPE of ${name}`);
    out[name.slice(prefix.length, -"_total".length)] = value;
  }
  return out as unknown as RuleCounters;
}

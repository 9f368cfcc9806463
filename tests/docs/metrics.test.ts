// The metric table of docs/metrics-and-logs.md is the contract; the filter tests' names (tests/filter/helpers.ts
// M, which the real-Envoy tests reuse) and the filter's own definitions (assembly/metrics.ts) must match it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { M } from "../filter/helpers.ts";

const root = new URL("../../", import.meta.url);

/** The rows of the metrics table: name and type. */
function documented(): Map<string, string> {
  const rows = new Map<string, string>();
  for (const m of readFileSync(new URL("docs/metrics-and-logs.md", root), "utf8").matchAll(/^\| `(traffic_guard_\w+)` \| (counter|gauge) \|/gm)) {
    rows.set(m[1], m[2]);
  }
  return rows;
}

test("the metric table of the docs names exactly the metrics the tests check, with their types", () => {
  const docs = documented();
  assert.ok(docs.size >= 20, `found only ${docs.size} rows in docs/metrics-and-logs.md`);
  assert.deepEqual([...docs.keys()].sort(), Object.values(M).sort());
  for (const name of [M.tracked, M.decisionsActive]) assert.equal(docs.get(name), "gauge", name);
  for (const [name, type] of docs) if (name !== M.tracked && name !== M.decisionsActive) assert.equal(type, "counter", name);
});

test("every documented metric is a name string in assembly/metrics.ts", () => {
  const source = readFileSync(new URL("assembly/metrics.ts", root), "utf8");
  // Whole names only: the per-rule prefix ("traffic_guard_rule_") is a template, documented in prose.
  const defined = new Set([...source.matchAll(/"(traffic_guard_\w+[^_])"/g)].map((m) => m[1]));
  for (const name of documented().keys()) assert.ok(defined.has(name), `${name} is documented but not defined in assembly/metrics.ts`);
  for (const name of defined) assert.ok(documented().has(name), `${name} is defined in assembly/metrics.ts but not documented`);
});

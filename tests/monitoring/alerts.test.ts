// The emitted alerting rules against Prometheus' own tools: `promtool check rules` on the rule group as the CLI prints
// it, and `promtool test rules` over the synthetic scenarios in scenarios.ts (each alert fires on its
// scenario, and none fires on a quiet service with one ban, a steady busy service, or a restart).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { before, describe, test } from "node:test";
import { stringify } from "yaml";
import { ALERTS, buildPrometheusRule } from "../../tools/lib/monitoring.ts";
import { promtoolTests, SCENARIOS } from "./scenarios.ts";
import { requireBinaries } from "./promtool.ts";

let groups: Array<Record<string, any>>;
before(() => {
  // The PrometheusRule as the CLI prints it (tests/cli/monitoring.test.ts checks the CLI prints exactly this object).
  groups = (buildPrometheusRule({ namespace: "istio-system" }).toJSON() as any).spec.groups;
});

async function withDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), "tg-promtool-"));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

describe("the PrometheusRule's alerts in promtool", () => {
  test("promtool check rules accepts the rule group the CLI prints, with every alert", async (t) => {
    if (!requireBinaries(t, ["promtool"])) return;
    assert.deepEqual(groups.flatMap((g) => g.rules.map((r: any) => r.alert)), [...ALERTS]);
    await withDir(async (dir) => {
      await writeFile(join(dir, "rules.yaml"), stringify({ groups }, { lineWidth: 0 }));
      const r = spawnSync("promtool", ["check", "rules", join(dir, "rules.yaml")], { encoding: "utf8" });
      assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
      assert.match(r.stdout, new RegExp(`SUCCESS: ${ALERTS.length} rules found`));
    });
  });

  test("promtool test rules: each alert fires on its scenario and stays silent on normal traffic", async (t) => {
    if (!requireBinaries(t, ["promtool"])) return;
    // promtool compares annotations exactly, and theirs carry {{ $value }}; the scenarios are about when alerts fire,
    // so the test copy of the rules leaves annotations out (check rules above validated their templates).
    const bare = groups.map((g) => ({ ...g, rules: g.rules.map(({ annotations: _a, ...r }: any) => r) }));
    assert.ok(SCENARIOS.some((s) => /quiet service with one ban/.test(s.name)));
    assert.ok(SCENARIOS.some((s) => /steady busy service/.test(s.name)));
    assert.ok(SCENARIOS.some((s) => /restarts/.test(s.name)));
    for (const alert of ALERTS) {
      assert.ok(SCENARIOS.some((s) => Object.values(s.expect).some((f) => f.some((e) => e.alert === alert))), `no scenario makes ${alert} fire`);
    }
    await withDir(async (dir) => {
      await writeFile(join(dir, "rules.yaml"), stringify({ groups: bare }, { lineWidth: 0 }));
      await writeFile(join(dir, "tests.yaml"), stringify(promtoolTests("rules.yaml"), { lineWidth: 0 }));
      const r = spawnSync("promtool", ["test", "rules", join(dir, "tests.yaml")], { encoding: "utf8" });
      assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
    });
  });

  test("promtool test rules fails the quiet-service scenario when the spike floor is removed (the floor is what keeps it silent)", async (t) => {
    if (!requireBinaries(t, ["promtool"])) return;
    const noFloor = groups.map((g) => ({
      ...g,
      rules: g.rules.map(({ annotations: _a, ...r }: any) => (r.alert === "TrafficGuardBlockRateSpike" ? { ...r, expr: r.expr.replace(/> [0-9.]+$/, "> 0") } : r)),
    }));
    await withDir(async (dir) => {
      await writeFile(join(dir, "rules.yaml"), stringify({ groups: noFloor }, { lineWidth: 0 }));
      await writeFile(join(dir, "tests.yaml"), stringify(promtoolTests("rules.yaml"), { lineWidth: 0 }));
      const r = spawnSync("promtool", ["test", "rules", join(dir, "tests.yaml")], { encoding: "utf8" });
      assert.notEqual(r.status, 0, "without the floor a single ban would page");
      assert.match(r.stdout + r.stderr, /quiet service with one ban[\s\S]*TrafficGuardBlockRateSpike/);
    });
  });
});

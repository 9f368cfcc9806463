// An invalid pluginConfig in real Envoy: the filter logs its one critical line and Envoy refuses the
// plugin. What Envoy then does with requests depends on how the config arrives, not on the
// WasmPlugin's failStrategy (failure_policy FAIL_CLOSED or FAIL_OPEN):
//   - inline in a static bootstrap: `envoy --mode validate` fails and Envoy itself will not start;
//   - over ECDS (how istiod delivers a WasmPlugin) as the first config: Envoy serves, but the filter
//     has no configuration and every request on that listener gets a 500 with an empty body;
//   - over ECDS on top of a valid config: the update is rejected and the previous configuration keeps
//     running, with the client state intact.
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { test } from "node:test";
import { REPO_ROOT } from "../../dev/envoy.ts";
import { EnvoyConfigInvalidError, makeEcdsDir, removeBootstrapDir, validateBootstrap, writeBootstrap, writeEcdsFile, type RunningEnvoy } from "../../dev/envoy-process.ts";
import { edgeSpec } from "../../dev/envoy-topologies.ts";
import type { WasmFilterSpec } from "../../dev/envoy-config.ts";
import { assertMetrics, banLines, e2e, get, guardFilter, guardMetrics, portOf, requireEnvironment } from "./harness.ts";

const INVALID = '{"rules":{"rate":{"limit":{"requests":10,"per":"abc"}}}}';
const CRITICAL = 'traffic-guard: invalid config: rules.rate.limit.per: expected a duration like "60s", got "abc"';
const STRATEGIES = ["FAIL_CLOSE", "FAIL_OPEN"] as const;

/** The filter's critical lines in an Envoy log. */
function criticalLines(log: string): string[] {
  return log
    .split("\n")
    .filter((l) => l.includes("[critical][wasm]") && l.includes("traffic-guard: invalid config: "))
    .map((l) => l.slice(l.indexOf("traffic-guard: invalid config: ")));
}

/** Polls the ECDS stats of the filter until `stat` reaches `value`. */
async function waitEcds(envoy: RunningEnvoy, stat: string, value: number): Promise<void> {
  const name = `extension_config_discovery.http_filter.default.traffic-guard.${stat}`;
  const deadline = Date.now() + 10_000;
  for (;;) {
    const text = await envoy.admin(`/stats?filter=^${name.replace(/\./g, "\\.")}$`);
    const m = /: (\d+)/.exec(text);
    if (m && Number(m[1]) >= value) return;
    if (Date.now() > deadline) assert.fail(`${name} did not reach ${value}: ${text}`);
    await sleep(50);
  }
}

for (const strategy of STRATEGIES) {
  test(`an invalid pluginConfig fails envoy --mode validate with the filter's critical line (${strategy})`, (t) => {
    if (!requireEnvironment(t)) return;
    const path = writeBootstrap(edgeSpec({ upstreamPort: 18080, filters: [guardFilter(INVALID, { failStrategy: strategy })] }), "bad");
    try {
      assert.throws(() => validateBootstrap(path), (e: Error) => {
        assert.ok(e instanceof EnvoyConfigInvalidError);
        assert.deepEqual(criticalLines(e.message), [CRITICAL]);
        assert.match(e.message, /Unable to create Wasm plugin default\.traffic-guard/);
        return true;
      });
    } finally {
      removeBootstrapDir(path);
    }
  });

  e2e(`Envoy refuses to start with an invalid pluginConfig in its bootstrap (${strategy})`, async (s) => {
    const app = await s.app();
    await assert.rejects(
      s.envoy({
        label: `bad-static-${strategy}`,
        concurrency: 2,
        validate: false,
        readyTimeoutMs: 15_000,
        spec: edgeSpec({ upstreamPort: app.port, filters: [guardFilter(INVALID, { failStrategy: strategy })] }),
      }),
      (e: Error) => {
        assert.match(e.message, /exited with code 1 before becoming ready/);
        assert.deepEqual(criticalLines(e.message), [CRITICAL]);
        assert.match(e.message, /Unable to create Wasm plugin default\.traffic-guard/);
        return true;
      },
    );
    assert.equal(app.seen.length, 0);
  });

  e2e(`delivered over ECDS, an invalid first pluginConfig leaves the filter unconfigured and every request gets 500 (${strategy})`, async (s) => {
    const app = await s.app();
    const filter: WasmFilterSpec = guardFilter(INVALID, { failStrategy: strategy, ecdsPath: join(makeEcdsDir("bad-first"), "traffic-guard.json") });
    writeEcdsFile(filter, "1");
    const envoy = await s.envoy({ label: `bad-ecds-${strategy}`, concurrency: 2, spec: edgeSpec({ upstreamPort: app.port, filters: [filter] }) });
    await waitEcds(envoy, "update_rejected", 1);
    const port = portOf(envoy, "edge");
    for (let i = 0; i < 3; i++) {
      const r = await get("127.0.0.1", port, "/", { from: "127.0.0.40" });
      assert.equal(r.status, 500);
      assert.equal(r.body, "");
    }
    assert.equal(app.seen.length, 0, "nothing reached the app");
    assert.deepEqual(criticalLines(envoy.log()), [CRITICAL]);
    // The plugin never ran: no request was counted (its metrics are not even defined).
    const { values } = await guardMetrics(envoy);
    assert.equal(values.get("traffic_guard_requests_total") ?? 0, 0);

    // A valid push brings the filter up.
    writeEcdsFile({ ...filter, pluginConfig: "{}" }, "2");
    await waitEcds(envoy, "update_success", 1);
    assert.equal((await get("127.0.0.1", port, "/", { from: "127.0.0.40" })).status, 200);
    await assertMetrics(envoy, { traffic_guard_requests_total: 1, traffic_guard_tracked_clients: 1 });
  });
}

e2e("an invalid pluginConfig pushed over a running one is rejected: the previous config and the bans stay in force", async (s) => {
  const app = await s.app();
  const ecdsPath = join(makeEcdsDir("bad-update"), "traffic-guard.json");
  const good = guardFilter({ rules: { rate: { limit: { requests: 3, per: "1m" }, ban: "1m" } } }, { ecdsPath });
  writeEcdsFile(good, "1");
  const envoy = await s.envoy({ label: "bad-update", concurrency: 2, spec: edgeSpec({ upstreamPort: app.port, filters: [good] }) });
  await waitEcds(envoy, "update_success", 1);
  const port = portOf(envoy, "edge");
  const send = async (from: string, n: number) => {
    const out: number[] = [];
    for (let i = 0; i < n; i++) out.push((await get("127.0.0.1", port, "/", { from })).status);
    return out;
  };
  assert.deepEqual(await send("127.0.0.41", 5), [200, 200, 200, 403, 403]);

  writeEcdsFile({ ...good, pluginConfig: INVALID }, "2");
  await waitEcds(envoy, "update_rejected", 1);
  assert.deepEqual(criticalLines(envoy.log()), [CRITICAL]);
  // Still the old rules: the banned client stays banned, a new client gets 3 requests, not 10.
  assert.deepEqual(await send("127.0.0.41", 1), [403]);
  assert.deepEqual(await send("127.0.0.42", 4), [200, 200, 200, 403]);

  // A later valid config applies and keeps the client state.
  writeEcdsFile({ ...good, pluginConfig: JSON.stringify({ rules: { rate: { limit: { requests: 10, per: "1m" }, ban: "1m" } } }) }, "3");
  await waitEcds(envoy, "update_success", 2);
  assert.deepEqual(await send("127.0.0.41", 1), [403], "the ban survived the reconfiguration");
  assert.deepEqual(await send("127.0.0.43", 5), [200, 200, 200, 200, 200]);
  assert.equal(banLines(envoy.log()).length, 2);
  await assertMetrics(envoy, {
    traffic_guard_requests_total: 5 + 1 + 4 + 1 + 5,
    traffic_guard_denied_rate_total: 2,
    traffic_guard_denied_banned_total: 1 + 1 + 1,
    traffic_guard_bans_rate_total: 2,
    traffic_guard_tracked_clients: 3,
  });
});

test("every invalid fixture is rejected by real Envoy with exactly the expected problems", (t) => {
  if (!requireEnvironment(t)) return;
  const dir = join(REPO_ROOT, "tests", "fixtures", "config", "invalid");
  const cases = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith(".json")).sort() : [];
  assert.ok(cases.length > 0, `no invalid config fixtures in ${dir}`);
  for (const file of cases) {
    const pluginConfig = readFileSync(join(dir, file), "utf8");
    const expected = readFileSync(join(dir, file.replace(/\.json$/, ".expected")), "utf8").split("\n").filter((l) => l !== "");
    const path = writeBootstrap(edgeSpec({ upstreamPort: 18080, filters: [guardFilter(pluginConfig)] }), "fixture");
    try {
      assert.throws(() => validateBootstrap(path), (e: Error) => {
        assert.deepEqual(criticalLines(e.message), [`traffic-guard: invalid config: ${expected.join("; ")}`], file);
        return true;
      });
    } finally {
      removeBootstrapDir(path);
    }
  }
});

// Custom rules in real Envoy (docs/rules.md): a delay rule holds requests and releases them from the root
// context's tick, spaced to its rate (proxy_set_effective_context + proxy_continue_stream, which Envoy runs as
// continueDecoding after the tick); a held request whose client disconnects is dropped; and a preset's ban
// names its rule in the ban line and in its own counters at /stats/prometheus.
import assert from "node:assert/strict";
import { request } from "node:http";
import { edgeSpec } from "../../dev/envoy-topologies.ts";
import { banLines, e2e, get, guardFilter, guardMetrics, portOf } from "./harness.ts";

const OFF = { enabled: false };

e2e("requests over a delay rule are held, released spaced to the rule's rate, and a disconnected held request is dropped", async (s) => {
  const app = await s.app();
  const filter = guardFilter({
    clientAddress: { source: "peer" },
    rules: {
      rate: OFF, userAgent: OFF, errors: OFF,
      custom: [{ name: "slow-down", take: { request: {} }, limit: { requests: 5, per: "1s" }, delay: { max: "5s" }, then: { limit: { requests: 100, per: "1m" }, ban: "1m" } }],
    },
  });
  const edge = await s.envoy({ label: "delay-edge", concurrency: 1, spec: edgeSpec({ upstreamPort: app.port, filters: [filter] }) });
  const port = portOf(edge, "edge");

  const t0 = performance.now();
  const done = await Promise.all(Array.from({ length: 10 }, async () => {
    const r = await get("127.0.0.1", port, "/");
    return { status: r.status, ms: performance.now() - t0 };
  }));
  assert.deepEqual(done.map((d) => d.status), Array(10).fill(200), "nothing is denied below delay.max");
  const times = done.map((d) => d.ms).sort((a, b) => a - b);
  // 5 tokens pass at once; each further request waits for its token, one every 200 ms.
  for (let k = 1; k <= 5; k++) {
    assert.ok(times[4 + k] >= k * 200 - 15, `held request ${k} completed at ${times[4 + k].toFixed(0)} ms, before its token at ${k * 200} ms`);
  }
  const gaps = times.slice(5).map((t, i) => t - times[4 + i]);
  const { values } = await guardMetrics(edge);
  const heldMs = values.get("traffic_guard_rule_slow_down_delayed_ms_total") ?? -1;
  assert.equal(values.get("traffic_guard_rule_slow_down_delayed_total"), 5);
  assert.ok(heldMs >= 2_800 && heldMs <= 3_500, `held ${heldMs} ms in total (200+400+600+800+1000 = 3000)`);
  process.stderr.write(`  delay: completions ${times.map((t) => t.toFixed(0)).join(", ")} ms; gaps between held ${gaps.map((g) => g.toFixed(0)).join(", ")} ms; held ${heldMs} ms\n`);

  // A client that gives up while held: Envoy resets the stream, the filter drops it from its queue.
  await new Promise((r) => setTimeout(r, 1_200)); // the bucket refills
  for (let i = 0; i < 5; i++) assert.equal((await get("127.0.0.1", port, "/")).status, 200);
  await new Promise<void>((resolve) => {
    const req = request({ host: "127.0.0.1", port, path: "/", agent: false });
    req.on("error", () => resolve());
    req.end();
    setTimeout(() => { req.destroy(); resolve(); }, 50);
  });
  const after = await get("127.0.0.1", port, "/");
  assert.equal(after.status, 200, "the next request is held behind the dropped one's token, then passes");
  const final = (await guardMetrics(edge)).values;
  assert.equal(final.get("traffic_guard_rule_slow_down_delayed_total"), 6, "the dropped request was never released");
  assert.equal(final.get("traffic_guard_internal_errors_total"), 0);
  assert.doesNotMatch(edge.log(), /Unable to set effective context|Unable to continue request|\]\[critical\]/);
});

e2e("a preset bans under its own name: the ban line and its counters at /stats/prometheus", async (s) => {
  const app = await s.app();
  // Two presets: the filter reads :path, accept and cookie for them.
  const filter = guardFilter({ clientAddress: { source: "peer" }, rules: { errors: OFF, presets: ["sensitive-files", "no-cookies"] } });
  const edge = await s.envoy({ label: "preset-edge", concurrency: 1, spec: edgeSpec({ upstreamPort: app.port, filters: [filter] }) });
  const port = portOf(edge, "edge");
  for (const path of ["/.env", "/.git/config", "/db.sql"]) assert.notEqual((await get("127.0.0.1", port, path)).status, 403, path);
  assert.equal((await get("127.0.0.1", port, "/backup.bak")).status, 403, "the fourth probe");
  assert.equal((await get("127.0.0.1", port, "/")).status, 403, "banned");
  assert.deepEqual(banLines(edge.log()).map((b) => [b.rule, b.limit, b.seconds]), [["sensitive-files", "3/3600s", 3600]]);
  const { values, types } = await guardMetrics(edge);
  assert.equal(types.get("traffic_guard_rule_sensitive_files_bans_total"), "counter");
  assert.equal(values.get("traffic_guard_rule_sensitive_files_bans_total"), 1);
  assert.equal(values.get("traffic_guard_rule_sensitive_files_denied_total"), 1);
  assert.equal(values.get("traffic_guard_denied_banned_total"), 1);
  assert.equal(values.has("traffic_guard_rule_sensitive_files_delayed_total"), false, "delay counters only for delay rules");
  // no-cookies: page loads (accept: text/html) without a cookie, from another client address.
  const page = { from: "127.0.0.2", headers: { accept: "text/html,application/xhtml+xml" } };
  for (let i = 0; i < 20; i++) assert.equal((await get("127.0.0.1", port, "/", page)).status, 200, `cookieless page ${i}`);
  for (let i = 0; i < 5; i++) assert.equal((await get("127.0.0.1", port, "/", { from: "127.0.0.3", headers: { ...page.headers, cookie: "sid=1" } })).status, 200);
  assert.equal((await get("127.0.0.1", port, "/", page)).status, 403, "the 21st cookieless page");
  assert.deepEqual(banLines(edge.log()).map((b) => b.rule), ["sensitive-files", "no-cookies"]);
});

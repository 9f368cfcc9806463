// Topology A: the filter runs on the proxy that clients reach directly (an edge Envoy configured
// like Istio's ingress gateway, --concurrency 2), in front of the real Node sample app. Clients are
// real: the Debian curl binary and Node HTTP clients bound to distinct loopback addresses.
import assert from "node:assert/strict";
import { Agent } from "node:http";
import { setTimeout as sleep } from "node:timers/promises";
import { edgeSpec } from "../../dev/envoy-topologies.ts";
import {
  assertMetrics, banLines, curl, e2e, get, guardFilter, guardMetrics, hasIpv6Loopback, portOf, statusCounts, type Reply,
} from "./harness.ts";

e2e(
  "the real curl binary gets 403 after the userAgent limit while a browser on another address keeps getting 200",
  async (s) => {
    const app = await s.app();
    const envoy = await s.envoy({
      label: "scenario-a",
      concurrency: 2,
      spec: edgeSpec({
        upstreamPort: app.port,
        filters: [guardFilter({ rules: { userAgent: { limit: { requests: 5, per: "1m" }, ban: "30s" } } })],
      }),
    });
    const port = portOf(envoy, "edge");
    const curlRuns = [];
    const browser: Reply[] = [];
    for (let i = 0; i < 10; i++) {
      curlRuns.push(await curl(`http://127.0.0.1:${port}/`, "127.0.0.2"));
      browser.push(await get("127.0.0.1", port, "/", { from: "127.0.0.3" }));
      browser.push(await get("127.0.0.1", port, "/static/app.js", { from: "127.0.0.3" }));
    }
    assert.deepEqual(curlRuns.map((r) => r.status), [200, 200, 200, 200, 200, 403, 403, 403, 403, 403]);
    for (const r of curlRuns.slice(5)) {
      const left = Number(r.retryAfter);
      assert.ok(left >= 29 && left <= 30, `Retry-After of a banned curl request: "${r.retryAfter}"`);
    }
    assert.deepEqual(statusCounts(browser.map((r) => r.status)), { 200: 20 });
    // Blocked requests never reached the app: it saw exactly the five curl requests that passed.
    const userAgent = curlRuns[0].userAgent;
    assert.equal(app.seen.filter((r) => r.headers["user-agent"] === userAgent).length, 5);
    assert.deepEqual(banLines(envoy.log()), [
      { level: "warning", address: "127.0.0.2", seconds: 30, rule: "userAgent", limit: "5/60s", strike: 1, dryRun: false },
    ]);
    await assertMetrics(envoy, {
      traffic_guard_requests_total: 30,
      traffic_guard_denied_user_agent_total: 1,
      traffic_guard_denied_banned_total: 4,
      traffic_guard_bans_user_agent_total: 1,
      traffic_guard_tracked_clients: 2,
    });
  },
  ["curl"],
);

e2e("a flood from one address is banned, the ban lasts and expires, Retry-After counts down, and a repeat doubles it", async (s) => {
  const app = await s.app();
  // 20 per 10 s refills 2 tokens a second, so a client is welcome again once its 2 s ban is over.
  const envoy = await s.envoy({
    label: "scenario-b",
    concurrency: 2,
    spec: edgeSpec({
      upstreamPort: app.port,
      filters: [guardFilter({ rules: { rate: { limit: { requests: 20, per: "10s" }, ban: "2s" } } })],
    }),
  });
  const port = portOf(envoy, "edge");
  const agent = new Agent({ keepAlive: true, maxSockets: 8, localAddress: "127.0.0.4" });
  const flood = async (n: number) => {
    const started = Date.now();
    // One request first (the client's first write may be to a never-written key, where Envoy
    // ignores CAS), then the rest on 8 connections at once.
    const replies = [await get("127.0.0.1", port, "/api/items", { agent })];
    replies.push(...(await Promise.all(Array.from({ length: n - 1 }, () => get("127.0.0.1", port, "/api/items", { agent })))));
    return { replies, seconds: (Date.now() - started) / 1000 };
  };

  const first = await flood(60);
  const firstBlockedAt = Date.now();
  const passed = first.replies.filter((r) => r.status === 200).length;
  // Exactly the burst of 20 passes, plus whatever the bucket refilled (2/s) while the flood ran.
  assert.ok(passed >= 20 && passed <= 20 + Math.floor(first.seconds * 2), `${passed} requests passed in ${first.seconds}s`);
  assert.equal(first.replies.filter((r) => r.status === 403).length, 60 - passed);
  for (const r of first.replies.filter((x) => x.status === 403)) {
    assert.ok(["1", "2"].includes(String(r.headers["retry-after"])), `Retry-After "${r.headers["retry-after"]}"`);
    assert.equal(r.body, "Forbidden\n");
  }

  // Still banned a second later, with one second left.
  await sleep(Math.max(0, firstBlockedAt + 1100 - Date.now()));
  const during = await get("127.0.0.1", port, "/api/items", { agent });
  assert.equal(during.status, 403);
  assert.equal(during.headers["retry-after"], "1");

  // Over once the 2 s have passed.
  await sleep(Math.max(0, firstBlockedAt + 2400 - Date.now()));
  const after = await get("127.0.0.1", port, "/api/items", { agent });
  assert.equal(after.status, 200, "the ban expired");

  // A second offence is banned for ban x escalation = 4 s.
  const second = await flood(30);
  const blocked = second.replies.filter((r) => r.status === 403);
  assert.ok(blocked.length > 0, "the repeat flood is banned again");
  for (const r of blocked) {
    assert.ok(["3", "4"].includes(String(r.headers["retry-after"])), `Retry-After "${r.headers["retry-after"]}" of the second ban`);
  }
  agent.destroy();

  const bans = banLines(envoy.log());
  assert.deepEqual(bans, [
    { level: "warning", address: "127.0.0.4", seconds: 2, rule: "rate", limit: "20/10s", strike: 1, dryRun: false },
    { level: "warning", address: "127.0.0.4", seconds: 4, rule: "rate", limit: "20/10s", strike: 2, dryRun: false },
  ]);
  const denied = 60 - passed + 1 + blocked.length;
  await assertMetrics(envoy, {
    traffic_guard_requests_total: 60 + 2 + 30,
    traffic_guard_denied_rate_total: 2,
    traffic_guard_denied_banned_total: denied - 2,
    traffic_guard_bans_rate_total: 2,
    traffic_guard_tracked_clients: 1,
  });
});

e2e("a probe of non-existent paths is banned after the configured number of 404s, normal browsing with a few 404s is not", async (s) => {
  const app = await s.app();
  const envoy = await s.envoy({
    label: "scenario-c",
    concurrency: 2,
    spec: edgeSpec({
      upstreamPort: app.port,
      filters: [guardFilter({ rules: { errors: { limit: { requests: 5, per: "1m" }, ban: "30s" } } })],
    }),
  });
  const port = portOf(envoy, "edge");
  const probe = ["/db", "/sql", "/.env", "/wp-login.php", "/phpmyadmin/", "/.git/config", "/backup.zip", "/admin.php", "/config.json", "/server-status"];
  const browse = ["/", "/static/site.css", "/static/app.js", "/favicon.ico", "/api/items", "/old-page", "/assets/logo.png", "/api/cart"];
  const probed: number[] = [];
  const browsed: number[] = [];
  for (let i = 0; i < probe.length; i++) {
    probed.push((await get("127.0.0.1", port, probe[i], { from: "127.0.0.5" })).status);
    if (i < browse.length) browsed.push((await get("127.0.0.1", port, browse[i], { from: "127.0.0.6" })).status);
  }
  // Five 404s fit the bucket; the sixth is the violation (and is still delivered); then 403.
  assert.deepEqual(probed, [404, 404, 404, 404, 404, 404, 403, 403, 403, 403]);
  assert.deepEqual(browsed, [200, 200, 200, 404, 200, 404, 200, 200]);
  assert.equal(app.seen.filter((r) => probe.includes(r.path)).length, 6, "banned probes never reached the app");
  assert.deepEqual(banLines(envoy.log()), [
    { level: "warning", address: "127.0.0.5", seconds: 30, rule: "errors", limit: "5/60s", strike: 1, dryRun: false },
  ]);
  await assertMetrics(envoy, {
    traffic_guard_requests_total: 18,
    traffic_guard_denied_banned_total: 4,
    traffic_guard_bans_errors_total: 1,
    traffic_guard_tracked_clients: 2,
  });
});

e2e("two workers keep one count: short connections spread over both workers still ban at exactly the limit", async (s) => {
  const app = await s.app();
  const envoy = await s.envoy({
    label: "two-workers",
    concurrency: 2,
    spec: edgeSpec({
      upstreamPort: app.port,
      filters: [guardFilter({ rules: { rate: { limit: { requests: 30, per: "1m" }, ban: "1m" } } })],
    }),
  });
  const port = portOf(envoy, "edge");
  // The first request alone: the first write to a never-written shared-data key ignores CAS in
  // Envoy, the one lost-update window the design documents; after it every update is CAS-checked.
  const statuses: number[] = [(await get("127.0.0.1", port, "/", { from: "127.0.0.7" })).status];
  // Then every request on its own TCP connection, four in flight at a time, so both workers update
  // the same record concurrently.
  for (let sent = 1; sent < 60; sent += 4) {
    const n = Math.min(4, 60 - sent);
    const batch = await Promise.all(Array.from({ length: n }, () => get("127.0.0.1", port, "/", { from: "127.0.0.7" })));
    statuses.push(...batch.map((r) => r.status));
  }
  assert.deepEqual(statusCounts(statuses), { 200: 30, 403: 30 });

  const perWorker = await envoy.admin("/stats?filter=^listener\\.edge\\.worker_\\d+\\.downstream_cx_total$");
  const counts = [...perWorker.matchAll(/worker_(\d+)\.downstream_cx_total: (\d+)/g)].map((m) => Number(m[2]));
  assert.equal(counts.length, 2, `per-worker connection stats: ${perWorker}`);
  assert.equal(counts[0] + counts[1], 60);
  assert.ok(counts[0] > 0 && counts[1] > 0, `both workers took connections: ${counts.join(" / ")}`);

  assert.equal(banLines(envoy.log()).length, 1);
  await assertMetrics(envoy, {
    traffic_guard_requests_total: 60,
    traffic_guard_denied_rate_total: 1,
    traffic_guard_denied_banned_total: 29,
    traffic_guard_bans_rate_total: 1,
    traffic_guard_tracked_clients: 1,
  });
});

e2e("one client's ban does not touch other clients on other loopback addresses, IPv4 or IPv6", async (s, t) => {
  const ipv6 = await hasIpv6Loopback();
  if (!ipv6) t.diagnostic("::1 is not available on this machine: the IPv6 client is left out");
  const app = await s.app();
  const envoy = await s.envoy({
    label: "addresses",
    concurrency: 2,
    spec: edgeSpec({
      upstreamPort: app.port,
      ipv6,
      filters: [guardFilter({ rules: { rate: { limit: { requests: 5, per: "1m" }, ban: "1m" } } })],
    }),
  });
  const ports = envoy.ports.get("edge")!;
  const send = async (from: string, n: number) => {
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      const r = from.includes(":")
        ? await get("::1", ports.ipv6!, "/api/items", { from })
        : await get("127.0.0.1", ports.ipv4, "/api/items", { from });
      out.push(r.status);
    }
    return out;
  };
  assert.deepEqual(await send("127.0.0.8", 8), [200, 200, 200, 200, 200, 403, 403, 403]);
  assert.deepEqual(await send("127.0.0.9", 3), [200, 200, 200]);
  assert.deepEqual(await send("127.0.0.10", 3), [200, 200, 200]);
  const expectedBans = [{ level: "warning", address: "127.0.0.8", seconds: 60, rule: "rate", limit: "5/60s", strike: 1, dryRun: false }];
  if (ipv6) {
    assert.deepEqual(await send("::1", 3), [200, 200, 200]);
    // ::1 spends its last two tokens, is banned, and that touches no IPv4 client.
    assert.deepEqual(await send("::1", 4), [200, 200, 403, 403]);
    expectedBans.push({ level: "warning", address: "::/64", seconds: 60, rule: "rate", limit: "5/60s", strike: 1, dryRun: false });
  }
  assert.deepEqual(await send("127.0.0.8", 1), [403], "the banned client stays banned");
  assert.deepEqual(await send("127.0.0.9", 2), [200, 200]);
  assert.deepEqual(await send("127.0.0.10", 2), [200, 200]);
  assert.deepEqual(banLines(envoy.log()), expectedBans);
  await assertMetrics(envoy, {
    traffic_guard_requests_total: 8 + 3 + 3 + 1 + 2 + 2 + (ipv6 ? 7 : 0),
    traffic_guard_denied_rate_total: ipv6 ? 2 : 1,
    traffic_guard_denied_banned_total: 2 + 1 + (ipv6 ? 1 : 0),
    traffic_guard_bans_rate_total: ipv6 ? 2 : 1,
    traffic_guard_tracked_clients: ipv6 ? 4 : 3,
  });
});

e2e("dry-run in real Envoy blocks nothing and counts what it would have denied", async (s) => {
  const app = await s.app();
  const envoy = await s.envoy({
    label: "dry-run",
    concurrency: 2,
    spec: edgeSpec({
      upstreamPort: app.port,
      filters: [guardFilter({ mode: "dry-run", rules: { userAgent: { limit: { requests: 3, per: "1m" }, ban: "30s" } } })],
    }),
  });
  const port = portOf(envoy, "edge");
  const statuses: number[] = [];
  for (let i = 0; i < 8; i++) {
    const r = await get("127.0.0.1", port, "/", { from: "127.0.0.11", headers: { "user-agent": "python-requests/2.32.3" } });
    statuses.push(r.status);
    assert.equal(r.headers["retry-after"], undefined);
  }
  assert.deepEqual(statuses, [200, 200, 200, 200, 200, 200, 200, 200]);
  assert.equal(app.seen.length, 8, "every request reached the app");
  assert.match(envoy.log(), /traffic-guard: configured mode=dry-run /);
  assert.deepEqual(banLines(envoy.log()), [
    { level: "warning", address: "127.0.0.11", seconds: 30, rule: "userAgent", limit: "3/60s", strike: 1, dryRun: true },
  ]);
  await assertMetrics(envoy, {
    traffic_guard_requests_total: 8,
    traffic_guard_denied_user_agent_total: 1,
    traffic_guard_denied_banned_total: 4,
    traffic_guard_bans_user_agent_total: 1,
    traffic_guard_dry_run_would_deny_total: 5,
    traffic_guard_tracked_clients: 1,
  });
});

e2e("an unusable client-address header falls back to the peer address and is counted", async (s) => {
  const app = await s.app();
  const envoy = await s.envoy({
    label: "fallback",
    concurrency: 2,
    spec: edgeSpec({
      upstreamPort: app.port,
      // The test's loopback clients stand in for a trusted proxy in front of this edge (a real TCP peer).
      filters: [guardFilter({ clientAddress: { source: "header:x-client-ip", trustedPeers: ["127.0.0.0/8"] }, rules: { rate: { limit: { requests: 3, per: "1m" }, ban: "1m" } } })],
    }),
  });
  const port = portOf(envoy, "edge");
  const statuses: number[] = [];
  // Garbage, then nothing at all: both fall back to the TCP peer 127.0.0.12, one bucket.
  for (const value of ["not-an-address", "300.1.2.3", "", "::ffff:zz"]) {
    const headers: Record<string, string> = value ? { "x-client-ip": value } : {};
    statuses.push((await get("127.0.0.1", port, "/", { from: "127.0.0.12", headers })).status);
  }
  assert.deepEqual(statuses, [200, 200, 200, 403]);
  // A usable header value is its own client.
  assert.equal((await get("127.0.0.1", port, "/", { from: "127.0.0.12", headers: { "x-client-ip": "192.0.2.7" } })).status, 200);
  assert.deepEqual(banLines(envoy.log()).map((b) => b.address), ["127.0.0.12"]);
  await assertMetrics(envoy, {
    traffic_guard_requests_total: 5,
    traffic_guard_client_address_fallbacks_total: 4,
    traffic_guard_denied_rate_total: 1,
    traffic_guard_bans_rate_total: 1,
    traffic_guard_tracked_clients: 2,
  });
});

e2e("2 000 distinct clients against capacity 1024 keep the table bounded, count every eviction and keep the banned client", async (s) => {
  const app = await s.app();
  // Behind one trusted hop: the client address is the XFF entry left of the one this edge appends.
  const envoy = await s.envoy({
    label: "evictions",
    concurrency: 2,
    spec: edgeSpec({
      upstreamPort: app.port,
      filters: [guardFilter({ capacity: 1024, clientAddress: { source: "xff", trustedHops: 1, trustedPeers: ["127.0.0.0/8"] }, rules: { rate: { limit: { requests: 2, per: "1m" }, ban: "1h" } } })],
    }),
  });
  const port = portOf(envoy, "edge");
  // One connection, so one worker: this test is about the bounded table, and keeping the requests in
  // order keeps Envoy's first-write-ignores-CAS window (documented in the design) out of the counts.
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const as = (client: string) => get("127.0.0.1", port, "/api/items", { agent, headers: { "x-forwarded-for": client } });
  assert.deepEqual([(await as("192.0.2.99")).status, (await as("192.0.2.99")).status, (await as("192.0.2.99")).status], [200, 200, 403]);
  for (let i = 0; i < 2000; i += 50) {
    const batch = await Promise.all(Array.from({ length: 50 }, (_, k) => as(`10.${(i + k) >> 16}.${((i + k) >> 8) & 255}.${(i + k) & 255}`)));
    assert.ok(batch.every((r) => r.status === 200), "a new client is never blocked");
  }
  assert.equal((await as("192.0.2.99")).status, 403, "the banned client survived 2 000 newcomers");
  agent.destroy();
  const { values } = await guardMetrics(envoy);
  const tracked = values.get("traffic_guard_tracked_clients")!;
  const evictions = values.get("traffic_guard_evictions_total")!;
  assert.ok(tracked <= 1024, `tracked ${tracked} <= capacity`);
  // Every newcomer either filled a free slot (tracked + 1) or replaced a record (an eviction).
  assert.equal(tracked + evictions, 2001);
  assert.ok(evictions >= 2001 - 1024, `evictions ${evictions}`);
  await assertMetrics(envoy, {
    traffic_guard_requests_total: 2004,
    traffic_guard_denied_rate_total: 1,
    traffic_guard_denied_banned_total: 1,
    traffic_guard_bans_rate_total: 1,
    traffic_guard_evictions_total: evictions,
    traffic_guard_tracked_clients: tracked,
  });
});

// The three kinds of abuse the README names (scripted clients, floods, URL probing) and ordinary browser
// traffic, run with docs/configuration.md's example configuration against the compiled filter.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Host } from "../emulator/emulator.ts";
import {
  M, BROWSER_UA, BAN_LINE_EXACT, exampleConfig, assertPassed, assertDenied, assertOnlyMetrics, assertMetrics,
  assertHostClean, assertNoRequestPathLogs, bans, prng,
} from "./helpers.ts";

const ATTACKER = "198.51.100.7";

test("bans a curl client on its 11th request within a minute, for 10 minutes, with a 403 and Retry-After", async () => {
  const h = await Host.start({ config: exampleConfig() });
  const curl = { path: "/api/items", peer: `${ATTACKER}:4000`, headers: { "user-agent": "curl/8.5.0" } };
  // A burst: 10 requests 100 ms apart (the bucket refills 10/min, i.e. only ~0.17 token meanwhile).
  for (let i = 1; i <= 10; i++) {
    assertPassed(h.vm(0).send(curl), `curl request ${i}`);
    h.clock.advance(100);
  }
  const r = h.vm(0).send(curl);
  const reply = assertDenied(r, 403, "11th curl request");
  assert.equal(reply.body, "Forbidden\n");
  assert.equal(reply.header("content-type"), "text/plain");
  assert.equal(reply.header("retry-after"), "600", "banned for 10m = 600 s");
  assert.equal(r.responseAction, 0, "the filter lets its own local reply through the encoder");

  const [ban, ...more] = bans(h);
  assert.deepEqual(more, [], "exactly one ban line");
  assert.equal(ban.address, ATTACKER);
  assert.equal(ban.rule, "userAgent");
  assert.equal(ban.seconds, 600);
  assert.equal(ban.limit, 10);
  assert.equal(ban.strike, 1);
  assert.equal(ban.level, 3, "ban line is a warning");
  assert.equal(ban.dryRun, false);

  // While banned, every request is denied as "banned", whatever its User-Agent.
  h.clock.advance("2m");
  const later = assertDenied(h.vm(0).send({ ...curl, headers: { "user-agent": BROWSER_UA } }), 403, "request during the ban");
  assert.equal(later.header("retry-after"), "480", "600 s ban, 120 s later");
  assertOnlyMetrics(h, { [M.requests]: 12, [M.deniedUserAgent]: 1, [M.bansUserAgent]: 1, [M.deniedBanned]: 1 });
  assertMetrics(h, { [M.tracked]: 1 });
  assertHostClean(h);
});

test("matches User-Agent patterns case-insensitively and leaves the same client's browser requests alone", async () => {
  const h = await Host.start({ config: exampleConfig() });
  const peer = `${ATTACKER}:4000`;
  // 50 browser requests interleaved with 10 scripted ones: only the scripted ones take userAgent tokens.
  for (let i = 0; i < 10; i++) {
    for (let j = 0; j < 5; j++) assertPassed(h.vm(0).send({ peer, headers: { "user-agent": BROWSER_UA } }), "browser request");
    const ua = i % 2 === 0 ? "curl/8.5.0" : "CURL/7.88.1";
    assertPassed(h.vm(0).send({ peer, headers: { "user-agent": ua } }), `scripted request ${i + 1} (${ua})`);
  }
  assertDenied(h.vm(0).send({ peer, headers: { "user-agent": "Wget/1.21.4" } }), 403, "11th scripted request (wget)");
  assertOnlyMetrics(h, { [M.requests]: 61, [M.deniedUserAgent]: 1, [M.bansUserAgent]: 1 });
});

test("bans a flooding client on the 601st request within a minute, for 5 minutes", async () => {
  const h = await Host.start({ config: exampleConfig() });
  const req = { path: "/", peer: `${ATTACKER}:5000`, headers: { "user-agent": BROWSER_UA } };
  // 600 requests within the same millisecond: the bucket (600/min) has no time to refill.
  for (let i = 1; i <= 600; i++) {
    const r = h.vm(0).send(req);
    if (!r.upstreamReached) assert.fail(`flood request ${i} of the allowed 600 was denied`);
  }
  const reply = assertDenied(h.vm(0).send(req), 403, "601st request");
  assert.equal(reply.header("retry-after"), "300");
  for (let i = 0; i < 99; i++) assertDenied(h.vm(0).send(req), 403, "request during the ban");
  const [ban, ...more] = bans(h);
  assert.deepEqual(more, []);
  assert.deepEqual([ban.address, ban.rule, ban.seconds, ban.limit, ban.strike], [ATTACKER, "rate", 300, 600, 1]);
  assertOnlyMetrics(h, { [M.requests]: 700, [M.deniedRate]: 1, [M.bansRate]: 1, [M.deniedBanned]: 99 });
  assertHostClean(h);
});

test("bans a client probing URLs on its 21st 404 within a minute; that response still reaches it and the next request is blocked", async () => {
  const h = await Host.start({ config: exampleConfig() });
  const probes = ["/db", "/sql", "/.env", "/wp-login.php", "/phpmyadmin/", "/.git/config", "/admin", "/backup.zip", "/config.php", "/server-status"];
  const peer = `${ATTACKER}:6000`;
  for (let i = 0; i < 21; i++) {
    const r = h.vm(0).send({ path: probes[i % probes.length], peer, headers: { "user-agent": BROWSER_UA } }, 404);
    assertPassed(r, `probe ${i + 1}`);
    assert.equal(r.status, 404, `probe ${i + 1} gets the upstream's 404`);
    assert.equal(r.responseAction, 0, "the response goes through");
    assert.equal(bans(h).length, i === 20 ? 1 : 0, `ban starts on the 21st 404, not on probe ${i + 1}`);
    h.clock.advance(20);
  }
  const reply = assertDenied(h.vm(0).send({ path: "/index.php", peer, headers: { "user-agent": BROWSER_UA } }), 403, "request after the 21st 404");
  assert.equal(reply.header("retry-after"), "1800");
  const [ban] = bans(h);
  assert.deepEqual([ban.address, ban.rule, ban.seconds, ban.limit, ban.strike], [ATTACKER, "errors", 1800, 20, 1]);
  assertOnlyMetrics(h, { [M.requests]: 22, [M.bansErrors]: 1, [M.deniedBanned]: 1 });
  assertHostClean(h);
});

test("the filter's own 403 replies never count as 4xx responses for the errors rule", async () => {
  // Plain rate limiting (ban 0s) produces many local 403s; with errors counting 4xx at 2/min, counting
  // them would ban the client for errors.
  const h = await Host.start({
    config: exampleConfig({
      rules: {
        rate: { enabled: true, limit: { requests: 1, per: "1h" }, ban: "0s" },
        errors: { enabled: true, statuses: ["4xx"], limit: { requests: 2, per: "1m" }, ban: "30m" },
        userAgent: { enabled: false },
      },
    }),
  });
  const peer = `${ATTACKER}:7000`;
  assertPassed(h.vm(0).send({ peer }));
  for (let i = 0; i < 20; i++) assertDenied(h.vm(0).send({ peer }), 403, `rate-limited request ${i + 2}`);
  assert.deepEqual(bans(h), []);
  assertOnlyMetrics(h, { [M.requests]: 21, [M.deniedRate]: 20 });
});

test("normal browser traffic at human rates, with a few 404s (favicon, a stale link), is never blocked and logs nothing", async () => {
  const seed = 20240115;
  const rand = prng(seed);
  const h = await Host.start({ config: exampleConfig() });
  const users = ["198.51.100.20:50000", "[2001:db8:aa::5]:50001", "192.0.2.44:50002"];
  let requests = 0;
  let notFound = 0;
  const assets = ["/app.js", "/app.css", "/logo.svg", "/font.woff2", "/api/me", "/api/feed", "/img/1.jpg", "/img/2.jpg", "/img/3.jpg", "/img/4.jpg"];
  const start = h.clock.nowMs;
  let page = 0;
  while (h.clock.nowMs - start < 30 * 60_000) {
    for (const [u, peer] of users.entries()) {
      const send = (path: string, status = 200) => {
        const r = h.vm(0).send({ path, peer, headers: { "user-agent": BROWSER_UA, referer: "https://app.example.com/" } }, status);
        requests++;
        if (status === 404) notFound++;
        assertPassed(r, `user ${u} ${path} (seed ${seed})`);
      };
      send(`/page/${page}`);
      for (const a of assets) send(a);
      if (page === 0) send("/favicon.ico", 404);
      if (rand() < 0.08) send(`/old/link/${page}`, 404); // a stale link now and then
    }
    page++;
    h.clock.advance(5_000 + Math.floor(rand() * 40_000)); // reading time between pages
  }
  assert.ok(requests > 1000 && notFound >= 3, `simulated ${requests} requests, ${notFound} 404s`);
  assert.deepEqual(bans(h), []);
  assertOnlyMetrics(h, { [M.requests]: requests });
  assertMetrics(h, { [M.tracked]: 3 });
  assertNoRequestPathLogs(h);
  assertHostClean(h);
});

test("the ban log line has the contract's exact format: banned <address> for <seconds>s: rule=<rule> limit=<N>/<seconds>s ban=<strike>", async () => {
  const h = await Host.start({ config: exampleConfig() });
  const curl = { peer: `${ATTACKER}:4000`, headers: { "user-agent": "curl/8.5.0" } };
  for (let i = 0; i < 11; i++) h.vm(0).send(curl);
  const lines = h.logs.filter((l) => l.text.startsWith("traffic-guard: banned "));
  assert.deepEqual(lines.map((l) => [l.levelName, l.text]), [["warn", `traffic-guard: banned ${ATTACKER} for 600s: rule=userAgent limit=10/60s ban=1`]]);
  assert.match(lines[0].text, BAN_LINE_EXACT);
});

test("across every kind of denial, in enforce and dry-run, counters are never incremented by zero or less and only ban lines are logged per request", async () => {
  for (const mode of ["enforce", "dry-run"]) {
    const h = await Host.start({
      vms: 2,
      config: exampleConfig({
        mode,
        rules: {
          userAgent: { enabled: true, match: ["curl/*"], limit: { requests: 2, per: "1m" }, ban: "10m" },
          rate: { enabled: true, limit: { requests: 5, per: "1m" }, ban: "5m" },
          errors: { enabled: true, statuses: ["4xx"], limit: { requests: 2, per: "1m" }, ban: "0s" },
        },
      }),
    });
    h.clearLogs();
    // One client per behaviour: a browser flooding (rate), curl (userAgent), a 404 prober (errors with
    // ban 0s), a denied address, an allowed one, and health checks.
    const behaviours: [string, Record<string, string>, number, string][] = [
      ["198.51.100.1:1", { "user-agent": BROWSER_UA }, 200, "/x"],
      ["198.51.100.2:1", { "user-agent": "curl/8" }, 200, "/x"],
      ["198.51.100.3:1", { "user-agent": BROWSER_UA }, 404, "/x"],
      ["203.0.113.5:1", { "user-agent": BROWSER_UA }, 200, "/x"],
      ["10.0.0.1:1", { "user-agent": "curl/8" }, 404, "/x"],
      ["198.51.100.4:1", { "user-agent": "curl/8" }, 200, "/healthz"],
    ];
    for (let i = 0; i < 300; i++) {
      const [peer, headers, status, path] = behaviours[i % behaviours.length];
      h.vm(i % 2).send({ peer, path, headers }, status);
      if (i % 60 === 59) h.clock.advance("30s");
    }
    const m = h.metrics.snapshot();
    for (const name of [M.deniedRate, M.deniedUserAgent, M.deniedErrors, M.deniedBanned, M.deniedDeny]) {
      assert.ok(m[name] > 0, `${mode}: the workload exercises ${name}`);
    }
    assert.deepEqual(h.metrics.violations, [], `${mode}: no counter increment <= 0, no gauge below zero`);
    const nonBan = h.requestPathLogs().filter((l) => !l.text.startsWith("traffic-guard: banned "));
    assert.deepEqual(nonBan.map((l) => l.text), [], `${mode}: nothing but ban lines on the request path`);
    assertHostClean(h);
  }
});

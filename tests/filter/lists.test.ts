// allow, deny and skipPaths, and the order of checks from docs/design.md:
// skipPaths → client address → allow → deny → active ban → rate → userAgent.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  M, start, tableKeys, rateRule, uaRule, assertPassed, assertDenied, assertOnlyMetrics, assertHostClean, assertOnlyBanLogs, bans,
} from "./helpers.ts";

const curl = { "user-agent": "curl/8.5.0" };

test("skipPaths (prefix match) are neither counted nor blocked, even for a banned or denied client", async () => {
  const h = await start({
    skipPaths: ["/healthz", "/readyz"],
    deny: ["203.0.113.0/24"],
    rules: { rate: rateRule(3, "1h", "1h"), userAgent: uaRule(["curl/*"], 1, "1h", "1h") },
  });
  const peer = "198.51.100.7:1";
  // 50 probes of skipped paths take no token...
  for (let i = 0; i < 50; i++) assertPassed(h.vm(0).send({ path: i % 2 ? "/healthz" : "/readyz/deep?x=1", peer, headers: curl }, 404));
  assert.equal(tableKeys(h).length, 0, "skipped requests touch no state");
  // ...so the client still has its full allowance.
  for (let i = 0; i < 3; i++) assertPassed(h.vm(0).send({ path: "/", peer }));
  assertDenied(h.vm(0).send({ path: "/", peer }), 403, "4th counted request");
  // Banned now, but health checks still pass; so do they from a denied address.
  assertPassed(h.vm(0).send({ path: "/healthz", peer }), "banned client's health check");
  assertPassed(h.vm(0).send({ path: "/healthz", peer: "203.0.113.9:1" }), "denied address's health check");
  assertDenied(h.vm(0).send({ path: "/health", peer: "203.0.113.9:1" }), 403, "/health is not under /healthz");
  assertOnlyMetrics(h, { [M.requests]: 57, [M.deniedRate]: 1, [M.bansRate]: 1, [M.deniedDeny]: 1 });
  assertOnlyBanLogs(h);
});

test("skipPaths match on segment boundaries: the path, a trailing slash, a query or a subpath, never a longer segment", async () => {
  const h = await start({ skipPaths: ["/healthz", "/static/"], deny: ["203.0.113.0/24"] });
  const peer = "203.0.113.9:1";
  for (const path of ["/healthz", "/healthz/", "/healthz?x", "/healthz/live", "/healthz#f", "/static/app.js"]) {
    assertPassed(h.vm(0).send({ path, peer }), `${path} is skipped`);
  }
  for (const path of ["/healthzadmin", "/healthz.json", "/health", "/static", "/Healthz"]) {
    assertDenied(h.vm(0).send({ path, peer }), 403, `${path} is not skipped`);
  }
  assertOnlyMetrics(h, { [M.requests]: 11, [M.deniedDeny]: 5 });
});

test("allowed CIDRs are never counted and never blocked, even when they are also denied", async () => {
  const h = await start({
    allow: ["10.0.0.0/8", "fd00::/8"],
    deny: ["10.1.0.0/16", "fd00:1::/32"],
    rules: { rate: rateRule(2, "1h", "1h"), userAgent: uaRule(["curl/*"], 1, "1h", "1h") },
  });
  for (const peer of ["10.1.2.3:1", "[fd00:1::5]:1", "[::ffff:10.9.9.9]:1"]) {
    for (let i = 0; i < 30; i++) assertPassed(h.vm(0).send({ peer, headers: curl }, 404), `allowed ${peer} request ${i + 1}`);
  }
  assert.equal(tableKeys(h).length, 0, "allowed clients touch no state");
  assertPassed(h.vm(0).send({ peer: "11.0.0.1:1" }), "outside the allow list: counted");
  assert.equal(tableKeys(h).length, 1);
  assertOnlyMetrics(h, { [M.requests]: 91 });
  assert.equal(h.metrics.get(M.tracked), 1);
});

test("denied CIDRs are always blocked with reason deny, without touching state or banning", async () => {
  const h = await start({
    deny: ["203.0.113.0/24", "2001:db8:bad::/48"],
    rules: { rate: rateRule(100, "1m", "1h") },
    response: { status: 429, body: "go away\n", headers: { "content-type": "text/plain", "x-guard": "traffic-guard" } },
  });
  for (const peer of ["203.0.113.1:1", "203.0.113.254:65535", "[2001:db8:bad:1::1]:443", "[::ffff:203.0.113.77]:1"]) {
    const reply = assertDenied(h.vm(0).send({ peer }), 429, `denied ${peer}`);
    assert.equal(reply.body, "go away\n");
    assert.equal(reply.header("x-guard"), "traffic-guard");
    assert.equal(reply.header("content-type"), "text/plain");
    assert.equal(reply.header("retry-after"), undefined, "a deny is not a ban: no Retry-After");
  }
  assert.equal(tableKeys(h).length, 0, "denied requests touch no state");
  assertPassed(h.vm(0).send({ peer: "203.0.114.1:1" }), "next /24 is not denied");
  assertPassed(h.vm(0).send({ peer: "[2001:db8:bae::1]:1" }), "next /48 is not denied");
  assert.deepEqual(bans(h), []);
  assert.ok(tableKeys(h).length >= 1 && tableKeys(h).length <= 2, "only the two passing clients' set(s) were written");
  assertOnlyMetrics(h, { [M.requests]: 6, [M.deniedDeny]: 4 });
  assertHostClean(h);
});

test("an active ban is checked before the rules: a banned client is denied as banned, not as rate", async () => {
  const h = await start({ rules: { rate: rateRule(1, "1h", "1h"), userAgent: uaRule(["curl/*"], 1, "1h", "1h") } });
  const peer = "198.51.100.7:1";
  assertPassed(h.vm(0).send({ peer, headers: curl }));
  assertDenied(h.vm(0).send({ peer, headers: curl })); // both buckets empty: one violation
  for (let i = 0; i < 5; i++) assertDenied(h.vm(0).send({ peer, headers: curl }));
  assert.equal(bans(h).length, 1, "one violation, one ban");
  assert.equal(h.metrics.get(M.deniedBanned), 5);
  assert.equal(h.metrics.get(M.deniedRate) + h.metrics.get(M.deniedUserAgent), 1, "the violating request is denied by exactly one rule");
  assert.equal(h.metrics.get(M.deniedRate), 1, "rate is checked before userAgent");
  assert.equal(bans(h)[0].rule, "rate");
});

test("the userAgent rule is judged after rate: a scripted client within its rate allowance is stopped by userAgent", async () => {
  const h = await start({ rules: { rate: rateRule(100, "1h", "1h"), userAgent: uaRule(["python-requests/*"], 3, "1h", "2h") } });
  const peer = "198.51.100.8:1";
  for (let i = 0; i < 3; i++) assertPassed(h.vm(0).send({ peer, headers: { "user-agent": "python-requests/2.31.0" } }));
  const reply = assertDenied(h.vm(0).send({ peer, headers: { "user-agent": "python-requests/2.31.0" } }));
  assert.equal(reply.header("retry-after"), "7200");
  assert.deepEqual(bans(h).map((b) => [b.rule, b.seconds]), [["userAgent", 7200]]);
  assertOnlyMetrics(h, { [M.requests]: 4, [M.deniedUserAgent]: 1, [M.bansUserAgent]: 1 });
});

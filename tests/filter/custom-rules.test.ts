// Custom rules and presets (rules.custom, rules.presets; docs/rules.md): each matcher, take/give arithmetic,
// per-rule metrics and ban lines, and the record layout across rule changes.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Host, type RequestOptions } from "../emulator/emulator.ts";
import { M, start, cfg, rateRule, assertPassed, assertDenied, assertHostClean, bans, ruleMetric as rm } from "./helpers.ts";

const C = { peer: "198.51.100.7:4000" } satisfies RequestOptions;

/** A custom rule that takes on `take`, with a limit of `requests` per hour and no ban (deny while empty). */
function rule(name: string, take: object, requests = 1, extra: object = {}): object {
  return { name, take, limit: { requests, per: "1h" }, ...extra };
}

/** Whether a request with `opts` is taken by a one-token rule: the second such request is denied. */
async function taken(take: object, opts: RequestOptions): Promise<boolean> {
  const h = await start({ rules: { custom: [rule("probe", take)] } });
  h.vm(0).send({ ...C, ...opts });
  const second = h.vm(0).send({ ...C, ...opts });
  assertHostClean(h);
  return second.localReply !== undefined;
}

test("request.method matches exact uppercase methods, any of the list", async () => {
  const take = { request: { method: ["POST", "PUT"] } };
  assert.equal(await taken(take, { method: "POST" }), true);
  assert.equal(await taken(take, { method: "PUT" }), true);
  assert.equal(await taken(take, { method: "GET" }), false);
  assert.equal(await taken(take, { method: "post" }), false, "methods are exact");
});

test("request.path matches exact, prefix and glob patterns case-insensitively, ignoring the query", async () => {
  const take = { request: { path: ["/.env", "/.git/*", "*.bak"] } };
  assert.equal(await taken(take, { path: "/.env" }), true);
  assert.equal(await taken(take, { path: "/.ENV?x=1" }), true, "query ignored, ASCII case folded");
  assert.equal(await taken(take, { path: "/.env.local" }), false, "exact means exact");
  assert.equal(await taken(take, { path: "/.git/config" }), true, "prefix");
  assert.equal(await taken(take, { path: "/site/db.bak" }), true, "glob");
  assert.equal(await taken(take, { path: "/site/db.bak.txt" }), false);
  assert.equal(await taken(take, { path: "/index.html?f=x.bak" }), false, "the query is not part of the path");
});

test("request.query matches on the presence of a query string", async () => {
  assert.equal(await taken({ request: { query: "present" } }, { path: "/a?b" }), true);
  assert.equal(await taken({ request: { query: "present" } }, { path: "/a" }), false);
  assert.equal(await taken({ request: { query: "absent" } }, { path: "/a" }), true);
  assert.equal(await taken({ request: { query: "absent" } }, { path: "/a?" }), false);
});

test("request.header matches present, absent and case-insensitive globs, all of them (AND)", async () => {
  const take = { request: { header: { accept: "text/html*", cookie: "absent", "x-probe": "present" } } };
  const all = { accept: "TEXT/HTML,application/xhtml+xml", "x-probe": "1" };
  assert.equal(await taken(take, { headers: all }), true);
  assert.equal(await taken(take, { headers: { ...all, cookie: "sid=1" } }), false, "cookie present");
  assert.equal(await taken(take, { headers: { ...all, accept: "*/*" } }), false, "accept does not match");
  assert.equal(await taken(take, { headers: { accept: all.accept } }), false, "x-probe absent");
  assert.equal(await taken({ request: { header: { cookie: "absent" } } }, { headers: { cookie: "" } }), true, "an empty header is absent");
});

test("an absent header is matched as the empty value, whether the request's headers are read one by one or picked from the whole map", async () => {
  // One named header: read by itself. Two or more: picked from the whole map in one pass, where a header
  // the pass did not find costs no read (matchers.ts evalSlots).
  assert.equal(await taken({ request: { header: { "x-a": "*" } } }, {}), true, "one header, \"*\" meets absence");
  assert.equal(await taken({ request: { header: { "x-a": "?*" } } }, {}), false, "one header, \"?*\" needs a byte");
  const two = (a: string) => ({ request: { header: { "x-a": a, "x-b": "absent" } } });
  assert.equal(await taken(two("*"), {}), true, "whole map, \"*\" meets absence");
  assert.equal(await taken(two("?*"), {}), false, "whole map, \"?*\" needs a byte");
  assert.equal(await taken(two("present"), {}), false, "whole map, absent is not present");
  assert.equal(await taken(two("?*"), { headers: { "x-a": "1" } }), true, "whole map, a found header is matched");
  assert.equal(await taken(two("*"), { headers: { "x-b": "1" } }), false, "whole map, a found header fails absent");
});

test("request.userAgent matches globs, and a matcher needs every part: method AND path AND User-Agent", async () => {
  const take = { request: { method: ["GET"], path: ["/login"], userAgent: ["*bot*", "curl/*"] } };
  assert.equal(await taken(take, { path: "/login", headers: { "user-agent": "MyBot/1.0" } }), true);
  assert.equal(await taken(take, { path: "/login", headers: { "user-agent": "curl/8.5" } }), true);
  assert.equal(await taken(take, { path: "/login", headers: { "user-agent": "Mozilla/5.0" } }), false);
  assert.equal(await taken(take, { path: "/other", headers: { "user-agent": "curl/8.5" } }), false);
  assert.equal(await taken(take, { method: "POST", path: "/login", headers: { "user-agent": "curl/8.5" } }), false);
});

test("a rule with ban 0s denies while its bucket is empty and counts the denial under its own name", async () => {
  const h = await start({ rules: { custom: [rule("api-writes", { request: { method: ["POST"] } }, 2)] } });
  assertPassed(h.vm(0).send({ ...C, method: "POST" }));
  assertPassed(h.vm(0).send({ ...C, method: "POST" }));
  const reply = assertDenied(h.vm(0).send({ ...C, method: "POST" }));
  assert.equal(reply.details, "traffic_guard_rule");
  assertPassed(h.vm(0).send({ ...C, method: "GET" }), "other requests are not affected");
  h.clock.advance("30m"); // one token back at 2 per hour
  assertPassed(h.vm(0).send({ ...C, method: "POST" }));
  assert.equal(h.metrics.get(rm("api-writes", "denied")), 1);
  assert.equal(h.metrics.get(rm("api-writes", "bans")), 0);
  assert.equal(h.metrics.get(M.deniedRate), 0);
  assert.equal(bans(h).length, 0);
  assertHostClean(h);
});

test("give returns one token up to the capacity, and a request matching take and give does neither", async () => {
  const pages = {
    name: "pages-without-api",
    take: { request: { method: ["GET"], header: { "sec-fetch-mode": "navigate" } } },
    give: { request: { path: ["/api/*"] } },
    limit: { requests: 3, per: "1h" },
    ban: "15m",
  };
  const h = await start({ rules: { custom: [pages] } });
  const page = { ...C, path: "/page", headers: { "sec-fetch-mode": "navigate" } };
  const api = { ...C, path: "/api/items" };
  // A browser: each page is followed by its API call, so it never runs dry.
  for (let i = 0; i < 20; i++) {
    assertPassed(h.vm(0).send(page), `page ${i}`);
    assertPassed(h.vm(0).send(api), `api ${i}`);
  }
  // Giving never raises the bucket above its capacity: after many API calls, still 3 pages then a ban.
  for (let i = 0; i < 10; i++) h.vm(0).send(api);
  // A navigation to an API path matches both take and give: no change.
  for (let i = 0; i < 10; i++) assertPassed(h.vm(0).send({ ...page, path: "/api/x" }), "take and give cancel");
  for (let i = 0; i < 3; i++) assertPassed(h.vm(0).send(page), `crawler page ${i}`);
  assert.equal(assertDenied(h.vm(0).send(page)).header("retry-after"), "900");
  assert.deepEqual(bans(h).map((b) => [b.rule, b.limit, b.per, b.strike]), [["pages-without-api", 3, "3600s", 1]]);
  assert.equal(h.metrics.get(rm("pages-without-api", "bans")), 1);
  assert.equal(h.metrics.get(rm("pages-without-api", "denied")), 1);
  assert.equal(h.metrics.get(M.deniedBanned), 0);
  assertDenied(h.vm(0).send(api), 403, "the ban covers every request");
  assert.equal(h.metrics.get(M.deniedBanned), 1);
  assertHostClean(h);
});

test("response matchers take on status codes and classes and on response headers, and ban", async () => {
  const loop = {
    name: "redirect-loop",
    take: { request: { method: ["GET"] }, response: { status: ["3xx", 401], header: { location: "present" } } },
    limit: { requests: 2, per: "1h" },
    ban: "5m",
  };
  const h = await start({ rules: { custom: [loop] } });
  h.vm(0).request(C).respond(302, { location: "/a" });
  h.vm(0).request(C).respond(302); // no location: not taken
  h.vm(0).request({ ...C, method: "POST" }).respond(302, { location: "/a" }); // the request part fails
  h.vm(0).request(C).respond(200, { location: "/a" }); // the status fails
  h.vm(0).request(C).respond(401, { location: "/a" });
  assert.equal(bans(h).length, 0, "two taken, none over");
  const third = h.vm(0).request(C);
  assertPassed(third, "the third redirect passes: a response rule acts on the response");
  third.respond(307, { location: "/b" });
  assert.deepEqual(bans(h).map((b) => [b.rule, b.seconds]), [["redirect-loop", 300]]);
  assertDenied(h.vm(0).send(C), 403, "the next request is banned");
  assert.equal(h.metrics.get(rm("redirect-loop", "bans")), 1);
  assertHostClean(h);
});

test("custom rules keep their own buckets beside the built-in rules, and dry-run only counts", async () => {
  const h = await start({
    mode: "dry-run",
    rules: { rate: rateRule(100, "1m", "5m"), custom: [rule("env", { request: { path: ["/.env"] } }, 1, { ban: "1h" })] },
  });
  assertPassed(h.vm(0).send({ ...C, path: "/.env" }));
  assertPassed(h.vm(0).send({ ...C, path: "/.env" }), "dry-run lets the violation through");
  assert.equal(h.metrics.get(M.wouldDeny), 1);
  assert.deepEqual(bans(h).map((b) => [b.rule, b.dryRun]), [["env", true]]);
  assertHostClean(h);
});

test("the presets catch what they are named after", async () => {
  const h = await start({ rules: { presets: ["sensitive-files", "scanner-user-agents", "no-cookies", "redirect-loop", "crawl-non-static"] } });
  // sensitive-files: 3 per hour, the 4th probe bans for an hour.
  const probe = { peer: "203.0.113.1:1" };
  for (const path of ["/.env", "/.git/config", "/backup.sql"]) assertPassed(h.vm(0).send({ ...probe, path }), path);
  assertDenied(h.vm(0).send({ ...probe, path: "/wp-config.php.bak" }));
  // scanner-user-agents: 1 per minute.
  const scanner = { peer: "203.0.113.2:1", headers: { "user-agent": "sqlmap/1.7" } };
  assertPassed(h.vm(0).send(scanner));
  assertDenied(h.vm(0).send(scanner));
  // no-cookies: 20 page loads without a cookie per 10 minutes; a browser sending its cookie back is never counted.
  const curl = { peer: "203.0.113.3:1", headers: { accept: "text/html" } };
  const browser = { peer: "203.0.113.4:1", headers: { accept: "text/html,application/xhtml+xml", cookie: "sid=1" } };
  for (let i = 0; i < 20; i++) assertPassed(h.vm(0).send(curl), `cookieless page ${i}`);
  assertDenied(h.vm(0).send(curl));
  for (let i = 0; i < 30; i++) assertPassed(h.vm(0).send(browser), `browser page ${i}`);
  // redirect-loop: 50 redirects a minute; 304 is not a redirect.
  const looper = { peer: "203.0.113.5:1", method: "POST" }; // POST: not counted by crawl-non-static
  for (let i = 0; i < 60; i++) h.vm(0).request(looper).respond(304);
  for (let i = 0; i < 51; i++) h.vm(0).request(looper).respond(302, { location: "/again" });
  assertDenied(h.vm(0).send(looper));
  // crawl-non-static: static files cost nothing, 40 pages in a burst pass, the 41st bans.
  const crawler = { peer: "203.0.113.6:1" };
  for (let i = 0; i < 100; i++) assertPassed(h.vm(0).send({ ...crawler, path: `/static/app${i}.js` }), "static");
  for (let i = 0; i < 40; i++) assertPassed(h.vm(0).send({ ...crawler, path: `/product/${i}` }), `page ${i}`);
  assertDenied(h.vm(0).send({ ...crawler, path: "/product/41" }));
  assert.deepEqual(bans(h).map((b) => b.rule), ["sensitive-files", "scanner-user-agents", "no-cookies", "redirect-loop", "crawl-non-static"]);
  for (const p of ["sensitive-files", "scanner-user-agents", "no-cookies", "redirect-loop", "crawl-non-static"]) {
    assert.equal(h.metrics.get(rm(p, "bans")), 1, p);
  }
  assertHostClean(h);
});

test("adding, removing and reordering rules keeps bans and strikes and carries each bucket over by rule name", async () => {
  const a = rule("rule-a", { request: { path: ["/a"] } }, 3, { ban: "1h" });
  const b = rule("rule-b", { request: { path: ["/b"] } }, 3, { ban: "1h" });
  const c = rule("rule-c", { request: { path: ["/c"] } }, 3, { ban: "1h" });
  const h = await Host.start({ config: cfg({ rules: { rate: rateRule(1, "24h", "1h") } }) });
  const banned = { peer: "203.0.113.9:1" };
  h.vm(0).send(banned);
  assertDenied(h.vm(0).send(banned), 403, "banned by rate, before any custom rule");
  const spender = { peer: "203.0.113.10:1" };
  const conf = (custom: object[]) => cfg({ rules: { custom } });
  // No custom rules -> a and b.
  assert.ok(h.vm(0).configure(conf([a, b])));
  assertDenied(h.vm(0).send(banned), 403, "the ban survives adding rules");
  for (let i = 0; i < 2; i++) assertPassed(h.vm(0).send({ ...spender, path: "/a" }));
  assertPassed(h.vm(0).send({ ...spender, path: "/b" }));
  // Reordered, with c added in front: a has 1 token left, b 2, c 3.
  assert.ok(h.vm(0).configure(conf([c, b, a])));
  assertDenied(h.vm(0).send(banned), 403, "the ban survives a reorder");
  assertPassed(h.vm(0).send({ ...spender, path: "/a" }), "a's last token");
  assertDenied(h.vm(0).send({ ...spender, path: "/a" }), 403, "a's bucket came along by name");
  assert.deepEqual(bans(h).slice(-1).map((x) => [x.rule, x.strike]), [["rule-a", 1]]);
  // b removed while spender is banned; after the ban the strike count is remembered.
  assert.ok(h.vm(0).configure(conf([a])));
  assertDenied(h.vm(0).send({ ...spender, path: "/x" }), 403, "the custom-rule ban survives removing rules");
  h.clock.advance("61m");
  for (let i = 0; i < 3; i++) assertPassed(h.vm(0).send({ ...spender, path: "/a" }));
  assertDenied(h.vm(0).send({ ...spender, path: "/a" }));
  assert.deepEqual(bans(h).slice(-1).map((x) => [x.rule, x.strike, x.seconds]), [["rule-a", 2, 7200]]);
  // Back to no custom rules at all: the 48-byte records of before, bans kept.
  assert.ok(h.vm(0).configure(conf([])));
  assertDenied(h.vm(0).send(spender), 403, "still banned with no custom rules");
  assertHostClean(h);
});

test("two workers with different rule lists convert each other's sets without losing a ban", async () => {
  const a = rule("rule-a", { request: { path: ["/a"] } }, 1, { ban: "1h" });
  const b = rule("rule-b", { request: { path: ["/b"] } }, 1, { ban: "1h" });
  const h = await Host.start({ config: cfg({ rules: { custom: [a] } }), vms: 2 });
  assert.ok(h.vm(1).configure(cfg({ rules: { custom: [b, a] } })));
  const x = { peer: "203.0.113.20:1" };
  assertPassed(h.vm(0).send({ ...x, path: "/a" }));
  assertDenied(h.vm(1).send({ ...x, path: "/a" }), 403, "worker 1 reads worker 0's set: a's token is spent");
  assertDenied(h.vm(0).send({ ...x, path: "/" }), 403, "worker 0 reads worker 1's set: the ban holds");
  assertHostClean(h);
});

test("a capacity change together with a rule change moves every record into the new layout, bans and buckets kept", async () => {
  const a = rule("rule-a", { request: { path: ["/a"] } }, 2, { ban: "1h" });
  const b = rule("rule-b", { request: { path: ["/b"] } }, 2, { ban: "1h" });
  const h = await Host.start({ config: cfg({ capacity: 1024, rules: { custom: [a] } }) });
  const banned = Array.from({ length: 40 }, (_, i) => ({ peer: `198.51.100.${i + 1}:1`, path: "/a" }));
  for (const c of banned) {
    for (let i = 0; i < 2; i++) assertPassed(h.vm(0).send(c));
    assertDenied(h.vm(0).send(c), 403, `ban ${c.peer}`);
  }
  const spender = { peer: "203.0.113.50:1", path: "/a" };
  assertPassed(h.vm(0).send(spender));
  // Twice the capacity and a rule in front of rule-a: the old sets drain into the new geometry and layout.
  assert.ok(h.vm(0).configure(cfg({ capacity: 2048, rules: { custom: [b, a] } })));
  for (let i = 0; !h.logs.some((l) => /capacity change complete/.test(l.text)); i++) {
    h.vm(0).send({ peer: `100.64.${i >> 8}.${i & 255}:1` });
    assert.ok(i < 5_000, "the migration completes");
  }
  for (const c of banned) assertDenied(h.vm(0).send({ ...c, path: "/" }), 403, `${c.peer} still banned after the move`);
  assertPassed(h.vm(0).send(spender), "rule-a's second token came along");
  assertDenied(h.vm(0).send(spender), 403, "and it was the last");
  assertPassed(h.vm(0).send({ ...spender, peer: "203.0.113.51:1", path: "/b" }), "rule-b starts full");
  assertHostClean(h);
});

test("an error response counted by the errors rule does not apply the request's custom matches a second time", async () => {
  const h = await start({ rules: { errors: { enabled: true, statuses: ["4xx"], limit: { requests: 100, per: "1m" }, ban: "1h" }, custom: [rule("posts", { request: { method: ["POST"] } }, 2)] } });
  for (let i = 0; i < 2; i++) {
    const s = h.vm(0).request({ ...C, method: "POST" });
    assertPassed(s, `POST ${i + 1}`);
    s.respond(404);
  }
  assertDenied(h.vm(0).send({ ...C, method: "POST" }), 403, "two POSTs spent two tokens, not four");
  assert.equal(h.metrics.get(rm("posts", "denied")), 1);
  assertHostClean(h);
});

test("beside custom rules that only look at responses, the built-in userAgent rule still reads the request's own User-Agent", async () => {
  const h = await start({
    clientAddress: { source: "peer" },
    rules: {
      rate: { enabled: false },
      errors: { enabled: false },
      userAgent: { match: ["curl/*"], limit: { requests: 2, per: "1m" }, ban: "10m" },
      custom: [{ name: "redirects", take: { response: { status: ["3xx"] } }, limit: { requests: 50, per: "1m" }, ban: "5m" }],
    },
  });
  const curl = { peer: "203.0.113.44:4000", headers: { "user-agent": "curl/8.5.0" } };
  assertPassed(h.vm(0).send(curl));
  assertPassed(h.vm(0).send(curl));
  assertDenied(h.vm(0).send(curl), 403, "the third curl request is over the userAgent limit");
  assert.equal(bans(h)[0]?.rule, "userAgent");
  assertHostClean(h);
});

test("one User-Agent pass serves a custom rule and the built-in rule: each counts only its own patterns, and a disabled built-in rule counts nothing", async () => {
  const scanners = { name: "scanners", take: { request: { userAgent: ["*sqlmap*", "*nikto*"] } }, limit: { requests: 1, per: "1h" }, ban: "1h" };
  const builtIn = { match: ["curl/*", "*sqlmap*"], limit: { requests: 1, per: "1h" }, ban: "1h" };
  const off = { rate: { enabled: false }, errors: { enabled: false } };
  const h = await start({ clientAddress: { source: "peer" }, rules: { ...off, userAgent: builtIn, custom: [scanners] } });
  const as = (peer: string, ua: string) => ({ peer, headers: { "user-agent": ua } });
  const banOf = (peer: string, ua: string) => {
    assertPassed(h.vm(0).send(as(peer, ua)));
    assertDenied(h.vm(0).send(as(peer, ua)), 403, ua);
    return bans(h).at(-1)?.rule;
  };
  assert.equal(banOf("203.0.113.50:1", "curl/8.5.0"), "userAgent", "curl/*: the built-in rule's pattern only");
  assert.equal(banOf("203.0.113.51:1", "Nikto/2.5"), "scanners", "*nikto*: the custom rule's pattern only");
  assert.equal(banOf("203.0.113.52:1", "sqlmap/1.7"), "userAgent", "*sqlmap*: both; the built-in rule is evaluated first");
  assertHostClean(h);

  const g = await start({ clientAddress: { source: "peer" }, rules: { ...off, userAgent: { ...builtIn, enabled: false }, custom: [scanners] } });
  for (let i = 0; i < 3; i++) assertPassed(g.vm(0).send(as("203.0.113.53:1", "curl/8.5.0")), "the built-in rule is off");
  assertPassed(g.vm(0).send(as("203.0.113.54:1", "sqlmap/1.7")));
  assertDenied(g.vm(0).send(as("203.0.113.54:1", "sqlmap/1.7")), 403, "the custom rule still matches");
  assert.equal(bans(g).at(-1)?.rule, "scanners");
  assertHostClean(g);
});

// Token buckets, ban expiry, Retry-After, escalation, forgetAfter, plain rate limiting and dry-run.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Host, type RequestOptions } from "../emulator/emulator.ts";
import {
  M, start, rateRule, errorsRule, uaRule, assertPassed, assertDenied, assertOnlyMetrics, assertMetrics, assertHostClean,
  assertNoRequestPathLogs, bans, BAN_LINE_EXACT, cfg,
} from "./helpers.ts";

const C = { peer: "198.51.100.7:4000" } satisfies RequestOptions;

/** Sends requests until one is denied; returns that reply's Retry-After (or fails after `max`). */
function violate(h: Host, req: RequestOptions, max = 100): string | undefined {
  for (let i = 0; i < max; i++) {
    const r = h.vm(0).send(req);
    if (r.localReply) return r.localReply.header("retry-after");
  }
  assert.fail(`no request was denied within ${max} requests`);
}

test("a bucket of N per T lets N requests through in a burst and refills continuously at N per T", async () => {
  const h = await start({ rules: { rate: rateRule(10, "1m", "0s") } });
  for (let i = 1; i <= 10; i++) assertPassed(h.vm(0).send(C), `burst request ${i}`);
  assertDenied(h.vm(0).send(C), 403, "11th request of the burst");
  h.clock.advance(5_999); // one token takes 6 s at 10/min
  assertDenied(h.vm(0).send(C), 403, "after 5.999 s the bucket still holds < 1 token");
  h.clock.advance(1);
  assertPassed(h.vm(0).send(C), "after 6 s one token is back");
  assertDenied(h.vm(0).send(C), 403, "and only one");
  h.clock.advance("10m");
  for (let i = 1; i <= 10; i++) assertPassed(h.vm(0).send(C), `after a long idle period, burst request ${i}`);
  assertDenied(h.vm(0).send(C), 403, "the bucket never holds more than N tokens");
});

test("a ban expires: Retry-After counts down in whole seconds rounded up, and the client passes once it ends", async () => {
  const h = await start({ rules: { rate: rateRule(2, "1h", "5m") } });
  assertPassed(h.vm(0).send(C));
  assertPassed(h.vm(0).send(C));
  assert.equal(assertDenied(h.vm(0).send(C)).header("retry-after"), "300", "violation: banned for the full 300 s");
  h.clock.advance(1_500);
  assert.equal(assertDenied(h.vm(0).send(C)).header("retry-after"), "299", "298.5 s left rounds up to 299");
  h.clock.advance(300_000 - 1_500 - 1);
  assert.equal(assertDenied(h.vm(0).send(C)).header("retry-after"), "1", "1 ms left is still 1 s");
  h.clock.advance(1);
  // The ban is over. The rate bucket (2/h) refilled only 2*300/3600 tokens, so give it time first.
  h.clock.advance("30m");
  assertPassed(h.vm(0).send(C), "after the ban and a refill the client passes");
  assertOnlyMetrics(h, { [M.requests]: 6, [M.deniedRate]: 1, [M.bansRate]: 1, [M.deniedBanned]: 2 });
});

test("the first request after a ban ends is judged by the buckets, not by the old ban", async () => {
  const h = await start({ rules: { rate: rateRule(60, "1m", "10s") } });
  for (let i = 0; i < 60; i++) h.vm(0).send(C);
  assertDenied(h.vm(0).send(C), 403, "61st request");
  h.clock.advance("10s"); // ban over, 10 tokens back
  for (let i = 1; i <= 10; i++) assertPassed(h.vm(0).send(C), `request ${i} after the ban`);
  assertDenied(h.vm(0).send(C), 403, "bucket empty again: a second violation");
  assert.deepEqual(bans(h).map((b) => [b.seconds, b.strike]), [[10, 1], [20, 2]]);
});

test("repeat offenders get ban × escalation^(n-1), capped at ban.max", async () => {
  const h = await start({ rules: { rate: rateRule(1, "1h", "10s") }, ban: { escalation: 2, max: "35s", forgetAfter: "1h" } });
  const got: (string | undefined)[] = [];
  for (let strike = 1; strike <= 5; strike++) {
    got.push(violate(h, C));
    h.clock.advance("36s"); // every ban is over
  }
  assert.deepEqual(got, ["10", "20", "35", "35", "35"]);
  assert.deepEqual(bans(h).map((b) => [b.seconds, b.strike]), [[10, 1], [20, 2], [35, 3], [35, 4], [35, 5]]);
  assertMetrics(h, { [M.bansRate]: 5, [M.deniedRate]: 5 });
});

test("a non-integer escalation multiplies the ban, and escalation 1 keeps it constant", async () => {
  const h = await start({ rules: { rate: rateRule(1, "1h", "10s") }, ban: { escalation: 1.5, max: "1h", forgetAfter: "1h" } });
  const got: (string | undefined)[] = [];
  for (let i = 0; i < 3; i++) {
    got.push(violate(h, C));
    h.clock.advance("1m");
  }
  assert.deepEqual(got, ["10", "15", "23"], "10 s, 15 s, 22.5 s (whole seconds rounded up)");

  const h1 = await start({ rules: { rate: rateRule(1, "1h", "10s") }, ban: { escalation: 1, max: "1h", forgetAfter: "1h" } });
  const got1: (string | undefined)[] = [];
  for (let i = 0; i < 3; i++) {
    got1.push(violate(h1, C));
    h1.clock.advance("1m");
  }
  assert.deepEqual(got1, ["10", "10", "10"]);
});

test("ban history is kept within ban.forgetAfter and forgotten after it", async () => {
  const h = await start({ rules: { rate: rateRule(1, "1h", "10s") }, ban: { escalation: 2, max: "1h", forgetAfter: "2m" } });
  assert.equal(violate(h, C), "10", "first offence");
  h.clock.advance("40s"); // ban over 30 s ago, well within 2 m of it
  assert.equal(violate(h, C), "20", "second offence within forgetAfter escalates");
  h.clock.advance("20s"); // ban over
  h.clock.advance("2m1s"); // and more than forgetAfter since it ended (and since it started)
  assert.equal(violate(h, C), "10", "after forgetAfter the client starts again at strike 1");
  assert.deepEqual(bans(h).map((b) => b.strike), [1, 2, 1]);
});

test('ban: "0s" is plain rate limiting: only the violating requests are denied, nobody is banned', async () => {
  const h = await start({ rules: { rate: rateRule(3, "1m", "0s") } });
  for (let i = 0; i < 3; i++) assertPassed(h.vm(0).send(C));
  for (let i = 0; i < 5; i++) {
    const reply = assertDenied(h.vm(0).send(C));
    assert.equal(reply.header("retry-after"), undefined, "no ban, so no Retry-After");
  }
  h.clock.advance("20s"); // one token back (3/min)
  assertPassed(h.vm(0).send(C), "the next token lets a request through: no ban");
  assert.deepEqual(bans(h), []);
  assertOnlyMetrics(h, { [M.requests]: 9, [M.deniedRate]: 5 });
  assertNoRequestPathLogs(h);
});

test('errors with ban: "0s" blocks requests (reason errors) only while the errors bucket holds < 1 token', async () => {
  const h = await start({ rules: { errors: errorsRule([404], 3, "1m", "0s") } });
  for (let i = 0; i < 3; i++) assertPassed(h.vm(0).send({ ...C, path: `/missing/${i}` }, 404), `404 number ${i + 1}`);
  for (let i = 0; i < 3; i++) {
    const reply = assertDenied(h.vm(0).send({ ...C, path: "/ok" }), 403, "request while the errors bucket is empty");
    assert.equal(reply.header("retry-after"), undefined, "no ban, so no Retry-After");
  }
  h.clock.advance("20s"); // one token back (3/min)
  assertPassed(h.vm(0).send({ ...C, path: "/ok" }, 200), "with a token back the client passes again");
  assertPassed(h.vm(0).send({ ...C, path: "/ok" }, 200), "a 200 takes no errors token");
  assert.deepEqual(bans(h), []);
  assertOnlyMetrics(h, { [M.requests]: 8, [M.deniedErrors]: 3 });
  assertNoRequestPathLogs(h);
});

test("errors counts exact codes and classes as configured, and ignores other statuses", async () => {
  const h = await start({ rules: { errors: errorsRule([429, "5xx"], 2, "1h", "1h") } });
  for (const s of [200, 301, 404, 403, 499, 404]) assertPassed(h.vm(0).send(C, s), `status ${s} does not count`);
  assertPassed(h.vm(0).send(C, 429));
  assertPassed(h.vm(0).send(C, 503));
  assert.equal(bans(h).length, 0);
  assertPassed(h.vm(0).send(C, 500), "the third counted status still reaches the client");
  assert.equal(bans(h).length, 1, "and starts the ban");
  assertDenied(h.vm(0).send(C));
});

test("dry-run blocks nothing but counts, bans, logs and measures exactly like enforce", async () => {
  const rules = { rate: rateRule(5, "1h", "10m"), userAgent: uaRule(["curl/*"], 2, "1h", "10m"), errors: errorsRule(["4xx"], 2, "1h", "10m") };
  const run = async (mode: string) => {
    const h = await start({ mode, rules });
    const outcomes: boolean[] = [];
    const send = (req: RequestOptions, status = 200) => outcomes.push(h.vm(0).send(req, status).upstreamReached);
    for (let i = 0; i < 8; i++) send({ peer: "198.51.100.1:1" }); // rate: 5 pass, 6th bans, 2 banned
    for (let i = 0; i < 4; i++) send({ peer: "198.51.100.2:1", headers: { "user-agent": "curl/8" } }); // ua: 2 pass, 3rd bans, 1 banned
    for (let i = 0; i < 4; i++) send({ peer: "198.51.100.3:1" }, 404); // errors: 3rd 404 bans, 4th banned
    return { h, outcomes };
  };
  const enforce = await run("enforce");
  const dry = await run("dry-run");

  assert.ok(dry.outcomes.every(Boolean), "dry-run lets every request through");
  assert.equal(enforce.outcomes.filter((o) => !o).length, 6, "enforce blocks 6 of them");
  const wouldDeny = dry.h.metrics.get(M.wouldDeny);
  assert.equal(wouldDeny, 6, "dry-run counts every request enforce mode blocked");
  assert.equal(enforce.h.metrics.get(M.wouldDeny), 0);

  const strip = (b: ReturnType<typeof bans>) => b.map(({ dryRun, ...rest }) => rest);
  assert.deepEqual(strip(bans(dry.h)), strip(bans(enforce.h)), "same bans");
  assert.ok(bans(dry.h).every((b) => b.dryRun), "dry-run ban lines end with (dry-run)");
  assert.ok(bans(enforce.h).every((b) => !b.dryRun));
  for (const l of dry.h.logs.filter((x) => x.text.includes("banned"))) assert.match(l.text, / \(dry-run\)$/);
  assert.equal(bans(dry.h).length, 3);

  const { [M.wouldDeny]: _a, ...e } = enforce.h.metrics.snapshot();
  const { [M.wouldDeny]: _b, ...d } = dry.h.metrics.snapshot();
  assert.deepEqual(d, e, "every other metric is identical");
  assertHostClean(dry.h);
});

test("dry-run ban lines match the exact contract format with the (dry-run) suffix", async () => {
  const h = await start({ mode: "dry-run", rules: { rate: rateRule(1, "1h", "10m") } });
  h.vm(0).send(C);
  h.vm(0).send(C);
  const lines = h.logs.filter((l) => l.text.startsWith("traffic-guard: banned ")).map((l) => l.text);
  assert.deepEqual(lines, ["traffic-guard: banned 198.51.100.7 for 600s: rule=rate limit=1/3600s ban=1 (dry-run)"]);
  assert.match(lines[0], BAN_LINE_EXACT);
});

test("a wall clock stepping backwards neither lifts a ban nor refills a bucket", async () => {
  const h = await start({ rules: { rate: rateRule(3, "1h", "1h") } });
  const D = { peer: "198.51.100.9:1" };
  for (let i = 0; i < 3; i++) assertPassed(h.vm(0).send(D));
  h.clock.set(h.clock.nowMs - 3_600_000);
  assertDenied(h.vm(0).send(D), 403, "an empty bucket stays empty when time goes back");
  const banned = assertDenied(h.vm(0).send(D), 403, "and the client stays banned");
  assert.ok(Number(banned.header("retry-after")) >= 3600, `Retry-After ${banned.header("retry-after")} covers at least the ban`);
  assertHostClean(h);
});

test("bans found in dry-run are enforced once the mode is switched to enforce", async () => {
  const h = await start({ mode: "dry-run", rules: { rate: rateRule(1, "1h", "1h") } });
  assertPassed(h.vm(0).send(C));
  assertPassed(h.vm(0).send(C), "dry-run: the violation passes");
  assert.equal(bans(h).length, 1);
  assert.ok(h.configure(JSON.parse(JSON.stringify({ mode: "enforce", clientAddress: { source: "peer" }, rules: { rate: rateRule(1, "1h", "1h") } }))));
  assert.equal(assertDenied(h.vm(0).send(C)).header("retry-after"), "3600");
});

test("an extreme escalation saturates at ban.max instead of overflowing, over hundreds of repeat offences", async () => {
  const h = await start({ rules: { rate: rateRule(1, "1d", "1d") }, ban: { escalation: 100, max: "365d", forgetAfter: "365d" } });
  const seen: string[] = [];
  for (let i = 0; i < 300; i++) {
    const ra = violate(h, C);
    seen.push(ra!);
    h.clock.advance(Number(ra) * 1000 + 86_400_000);
  }
  assert.deepEqual(seen.slice(0, 3), ["86400", "8640000", "31536000"]);
  assert.ok(seen.slice(2).every((s) => s === "31536000"), "capped at 365 days for every later offence");
  assert.equal(h.metrics.get(M.internalErrors), 0);
  assertHostClean(h);
});

test("a wall clock stepping forwards by an hour ends no ban early and refills nothing, while the monotonic clock refills on time", async () => {
  const h = await start({ rules: { rate: rateRule(3, "1h", "30m") } });
  const D = { peer: "198.51.100.9:1" };
  for (let i = 0; i < 3; i++) assertPassed(h.vm(0).send(D));
  assert.equal(assertDenied(h.vm(0).send(D), 403).header("retry-after"), "1800");
  h.clock.set(h.clock.nowMs + 3_600_000);
  assert.equal(assertDenied(h.vm(0).send(D), 403, "still banned after the wall clock jumped an hour").header("retry-after"), "1800");
  // The ban ends after 30 real minutes, and the bucket has refilled half of its 3 tokens by then.
  h.clock.advance("30m");
  assertPassed(h.vm(0).send(D), "the ban ends on the monotonic clock");
  assertHostClean(h);
});

test("a wall clock stepping backwards by an hour does not freeze refills", async () => {
  const h = await start({ rules: { rate: rateRule(2, "1m", "1m") } });
  const D = { peer: "198.51.100.9:1" };
  for (let i = 0; i < 2; i++) assertPassed(h.vm(0).send(D));
  h.clock.set(h.clock.nowMs - 3_600_000);
  h.clock.advance("1m");
  for (let i = 0; i < 2; i++) assertPassed(h.vm(0).send(D), `request ${i + 1} after a minute: the bucket refilled although the wall clock is an hour behind`);
  assertHostClean(h);
});

test("every worker reads one clock offset, so a worker started after a wall-clock step agrees on bans", async () => {
  const h = await start({ rules: { rate: rateRule(1, "1h", "10m") } });
  const D = { peer: "198.51.100.9:1" };
  assertPassed(h.vm(0).send(D));
  assertDenied(h.vm(0).send(D), 403);
  h.clock.set(h.clock.nowMs + 3_600_000);
  const late = h.addVm();
  assert.ok(late.configure(cfg({ rules: { rate: rateRule(1, "1h", "10m") } })));
  assert.equal(assertDenied(late.send(D), 403, "the new worker sees the ban").header("retry-after"), "600");
  assertHostClean(h);
});

test("without a monotonic clock on the host, the wall clock is used and never goes backwards", async () => {
  const h = await Host.load({});
  h.clock.monotonic = false;
  assert.ok(h.vm(0).configure(cfg({ rules: { rate: rateRule(1, "1h", "10m") } })));
  const D = { peer: "198.51.100.9:1" };
  assertPassed(h.vm(0).send(D));
  h.clock.set(h.clock.nowMs - 3_600_000);
  assertDenied(h.vm(0).send(D), 403, "a step back refills nothing");
  assertHostClean(h);
});

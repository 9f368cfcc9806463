// Range escalation (ban.range): bans of distinct clients inside one /48 (IPv6) or /24 (IPv4, when
// enabled) within the window ban the whole range; NAT64 addresses count as the IPv4 they embed.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Host } from "../emulator/emulator.ts";
import { M, cfg, rateRule, assertDenied, assertPassed, assertHostClean, bans } from "./helpers.ts";

const RANGE_LINE = /^traffic-guard: banned range (\S+) for (\d+)s: (\d+) clients banned within (\d+)s( \(dry-run\))?$/;

function rangeLines(h: Host): string[] {
  return h.logs.filter((l) => RANGE_LINE.test(l.text)).map((l) => l.text);
}

/** Bans `peer` with a 1-per-day rate rule: one request passes, the second starts the ban. */
function ban(h: Host, peer: string, vm = 0): void {
  assertPassed(h.vm(vm).send({ peer }), `${peer} first request`);
  assertDenied(h.vm(vm).send({ peer }), 403, `${peer} banned`);
}

const conf = (range: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
  cfg({ rules: { rate: rateRule(1, "24h", "1m") }, ban: { escalation: 2, max: "24h", forgetAfter: "24h", range }, ...extra });

test("three banned /64s inside one /48 within the window ban the /48 on every worker; other /48s are untouched", async () => {
  const h = await Host.start({ vms: 2, config: conf({ threshold: 3, window: "10m", ban: "1h" }) });
  ban(h, "[2001:db8:1:1::1]:1");
  h.clock.advance("2m");
  ban(h, "[2001:db8:1:2::1]:1");
  assert.deepEqual(rangeLines(h), [], "two clients are below the threshold");
  assertPassed(h.vm(0).send({ peer: "[2001:db8:1:99::1]:1" }), "the range is not banned yet");
  ban(h, "[2001:db8:1:3::1]:1", 1);
  assert.deepEqual(rangeLines(h), ["traffic-guard: banned range 2001:db8:1::/48 for 3600s: 3 clients banned within 600s"]);
  assert.equal(h.metrics.get(M.rangeBans), 1);
  const r = assertDenied(h.vm(1).send({ peer: "[2001:db8:1:ffff::7]:1" }), 403, "a fresh /64 of the range, on the worker that banned it");
  assert.equal(r.header("retry-after"), "3600");
  h.clock.advance("1s"); // the other worker reads the range bans at most once a second
  assertDenied(h.vm(0).send({ peer: "[2001:db8:1:abcd::1]:1" }), 403, "and on the other worker");
  assertPassed(h.vm(0).send({ peer: "[2001:db8:2:1::1]:1" }), "another /48");
  h.clock.advance("1h");
  assertPassed(h.vm(0).send({ peer: "[2001:db8:1:abcd::2]:1" }), "the range ban ends");
  assertHostClean(h);
});

test("the same client banned again, and bans spread over more than the window, do not escalate", async () => {
  const h = await Host.start({ config: conf({ threshold: 3, window: "10m" }) });
  ban(h, "[2001:db8:5:1::1]:1");
  h.clock.advance("2m"); // its 1-minute ban is over; its bucket is still empty, so the next request bans again
  assertDenied(h.vm(0).send({ peer: "[2001:db8:5:1::1]:1" }), 403, "second ban of the same client");
  ban(h, "[2001:db8:5:2::1]:1");
  assert.equal(bans(h).length, 3);
  assert.deepEqual(rangeLines(h), [], "two distinct clients, not three");
  h.clock.advance("11m");
  ban(h, "[2001:db8:5:3::1]:1");
  assert.deepEqual(rangeLines(h), [], "the first bans fell out of the window");
  assert.equal(h.metrics.get(M.rangeBans), 0);
});

test("IPv4 ranges are off by default; with prefixes.ipv4 24 five banned addresses of a /24 ban it", async () => {
  const off = await Host.start({ config: conf({}) });
  for (let i = 1; i <= 6; i++) ban(off, `198.51.100.${i}:1`);
  assert.deepEqual(rangeLines(off), [], "CGNAT: no IPv4 range bans unless asked for");
  assertPassed(off.vm(0).send({ peer: "198.51.100.77:1" }));

  const on = await Host.start({ config: conf({ prefixes: { ipv4: 24 } }) });
  for (let i = 1; i <= 5; i++) ban(on, `198.51.100.${i}:1`);
  assert.deepEqual(rangeLines(on), ["traffic-guard: banned range 198.51.100.0/24 for 3600s: 5 clients banned within 600s"]);
  assertDenied(on.vm(0).send({ peer: "198.51.100.77:1" }), 403);
  assertPassed(on.vm(0).send({ peer: "198.51.101.1:1" }));
});

test("a NAT64 address (64:ff9b::/96) is the IPv4 client it embeds", async () => {
  const h = await Host.start({ config: conf({ prefixes: { ipv4: 24 } }) });
  assertPassed(h.vm(0).send({ peer: "[64:ff9b::c633:6407]:1" }));
  assertDenied(h.vm(0).send({ peer: "198.51.100.7:1" }), 403, "the same client as 64:ff9b::198.51.100.7");
  assert.equal(bans(h)[0].address, "198.51.100.7");
  assertDenied(h.vm(0).send({ peer: "[64:ff9b::198.51.100.7]:1" }), 403, "banned in either notation");
});

test("in dry-run a range ban is logged and counted as would-deny, and nothing is blocked", async () => {
  const h = await Host.start({ config: conf({ threshold: 2 }, { mode: "dry-run" }) });
  for (const p of ["[2001:db8:7:1::1]:1", "[2001:db8:7:2::1]:1"]) {
    assertPassed(h.vm(0).send({ peer: p }));
    assertPassed(h.vm(0).send({ peer: p }));
  }
  assert.deepEqual(rangeLines(h), ["traffic-guard: banned range 2001:db8:7::/48 for 3600s: 2 clients banned within 600s (dry-run)"]);
  const before = h.metrics.get(M.wouldDeny);
  assertPassed(h.vm(0).send({ peer: "[2001:db8:7:3::1]:1" }));
  assert.equal(h.metrics.get(M.wouldDeny), before + 1);
});

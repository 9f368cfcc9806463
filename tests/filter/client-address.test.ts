// Which address a request is accounted to (clientAddress), normalisation and aggregation.
// The address the filter decided on is observed through its ban line (`banned <address> ...`):
// with a 1-per-hour rate limit the second identical request bans exactly that address.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { Host, RequestOptions } from "../emulator/emulator.ts";
import { M, start, tableKeys, rateRule, assertPassed, assertDenied, bans, assertHostClean } from "./helpers.ts";

const PEER = "192.0.2.50:34567";
/** The test peer's network: address headers are believed only from a peer in clientAddress.trustedPeers. */
const TRUSTED = "192.0.2.0/24";

/** Sends `req` twice under `clientAddress` (the test peer trusted, +extra config) and returns the banned address and counters. */
async function resolve(clientAddress: Record<string, unknown>, req: RequestOptions, extra: Record<string, unknown> = {}) {
  const h = await start({ clientAddress: { trustedPeers: [TRUSTED], ...clientAddress }, ...extra, rules: { rate: rateRule(1, "1h", "1h") } });
  h.vm(0).send(req);
  h.vm(0).send(req);
  const b = bans(h);
  assert.ok(b.length <= 1, "at most one ban for one client");
  return { address: b[0]?.address, fallbacks: h.metrics.get(M.fallbacks), internalErrors: h.metrics.get(M.internalErrors), h };
}

function xff(value: string, peer = PEER): RequestOptions {
  return { peer, headers: { "x-forwarded-for": value } };
}

test("peer mode uses source.address and ignores forwarding headers", async () => {
  const r = await resolve({ source: "peer" }, { peer: "203.0.113.7:4000", headers: { "x-forwarded-for": "1.2.3.4", "x-envoy-external-address": "5.6.7.8" } });
  assert.equal(r.address, "203.0.113.7");
  assert.equal(r.fallbacks, 0);
  assert.equal((await resolve({ source: "peer" }, { peer: "[2001:db8:1:2::99]:443" })).address, "2001:db8:1:2::/64");
});

test("IPv4-mapped IPv6 addresses are accounted as the IPv4 address, from the peer and from headers", async () => {
  assert.equal((await resolve({ source: "peer" }, { peer: "[::ffff:203.0.113.7]:4000" })).address, "203.0.113.7");
  assert.equal((await resolve({ source: "xff", trustedHops: 0 }, xff("::ffff:198.51.100.9"))).address, "198.51.100.9");
  // ...and share one bucket with the plain IPv4 form.
  const h = await start({ clientAddress: { source: "peer" }, rules: { rate: rateRule(2, "1h", "1h") } });
  assertPassed(h.vm(0).send({ peer: "203.0.113.7:1" }));
  assertPassed(h.vm(0).send({ peer: "[::ffff:203.0.113.7]:2" }));
  assertDenied(h.vm(0).send({ peer: "[::ffff:cb00:7107]:3" }), 403, "third request of the same client in hex-mapped form");
});

test("xff mode takes the entry trustedHops places from the right, like Envoy's xff_num_trusted_hops", async () => {
  const chain = "192.0.2.1, 198.51.100.2,198.51.100.3 , 198.51.100.4";
  assert.equal((await resolve({ source: "xff", trustedHops: 0 }, xff(chain))).address, "198.51.100.4");
  assert.equal((await resolve({ source: "xff", trustedHops: 1 }, xff(chain))).address, "198.51.100.3");
  assert.equal((await resolve({ source: "xff", trustedHops: 2 }, xff(chain))).address, "198.51.100.2");
  assert.equal((await resolve({ source: "xff" }, xff("198.51.100.4"))).address, "198.51.100.4", "trustedHops defaults to 0");
  const v6 = await resolve({ source: "xff", trustedHops: 0 }, xff("198.51.100.4, 2001:db8:7:8::1"));
  assert.equal(v6.address, "2001:db8:7:8::/64");
  assert.equal(v6.fallbacks, 0);
});

test("xff mode falls back to the peer, and counts it, when the header is missing or has too few entries", async () => {
  const missing = await resolve({ source: "xff", trustedHops: 0 }, { peer: PEER });
  assert.equal(missing.address, "192.0.2.50");
  assert.equal(missing.fallbacks, 2, "both requests fell back");
  const short = await resolve({ source: "xff", trustedHops: 2 }, xff("198.51.100.3, 198.51.100.4"));
  assert.equal(short.address, "192.0.2.50");
  assert.equal(short.fallbacks, 2);
});

for (const hops of [0, 1, 2]) {
  test(`spoofed leftmost x-forwarded-for entries neither let a client escape nor frame someone else (trustedHops ${hops})`, async () => {
    const h = await start({ clientAddress: { source: "xff", trustedHops: hops, trustedPeers: [TRUSTED] }, rules: { rate: rateRule(5, "1h", "1h") } });
    const proxies = ["10.0.0.1", "10.0.0.2"].slice(0, hops); // appended by proxies we trust
    const attacker = "198.51.100.66";
    const victim = "203.0.113.10";
    const chain = (client: string, spoofed: string[]) => [...spoofed, client, ...proxies].join(", ");
    // The attacker prepends a different fake chain every time, including the victim's address.
    const spoofs = [[victim], ["1.1.1.1"], [victim, "2.2.2.2"], ["3.3.3.3", victim], ["garbage"], [], ["999.1.1.1"]];
    for (let i = 0; i < 5; i++) assertPassed(h.vm(0).send(xff(chain(attacker, spoofs[i % spoofs.length]))), `attacker request ${i + 1}`);
    assertDenied(h.vm(0).send(xff(chain(attacker, spoofs[5]))), 403, "6th attacker request, spoofed chain or not");
    assertDenied(h.vm(0).send(xff(chain(attacker, spoofs[6]))), 403, "still banned with another spoofed chain");
    assert.deepEqual(bans(h).map((b) => b.address), [attacker]);
    for (let i = 0; i < 5; i++) assertPassed(h.vm(0).send(xff(chain(victim, []))), `victim request ${i + 1} (never framed)`);
    assert.equal(h.metrics.get(M.fallbacks), 0, "a garbage entry left of the trusted one is not a fallback");
  });
}

test("header:<name> mode uses that header, case-insensitively, and falls back to the peer when it is missing or garbage", async () => {
  const ok = await resolve({ source: "header:X-Real-IP" }, { peer: PEER, headers: { "x-real-ip": "198.51.100.9", "x-forwarded-for": "1.2.3.4" } });
  assert.equal(ok.address, "198.51.100.9");
  assert.equal(ok.fallbacks, 0);
  const missing = await resolve({ source: "header:x-real-ip" }, { peer: PEER });
  assert.deepEqual([missing.address, missing.fallbacks], ["192.0.2.50", 2]);
  const garbage = await resolve({ source: "header:x-real-ip" }, { peer: PEER, headers: { "x-real-ip": "not-an-ip" } });
  assert.deepEqual([garbage.address, garbage.fallbacks], ["192.0.2.50", 2]);
});

test("auto mode prefers x-envoy-external-address, then the XFF rule, then the peer", async () => {
  const both = await resolve({ source: "auto", trustedHops: 0 }, { peer: PEER, headers: { "x-envoy-external-address": "198.51.100.1", "x-forwarded-for": "198.51.100.2" } });
  assert.deepEqual([both.address, both.fallbacks], ["198.51.100.1", 0]);
  const xffOnly = await resolve({ source: "auto", trustedHops: 1 }, xff("198.51.100.2, 10.0.0.1"));
  assert.deepEqual([xffOnly.address, xffOnly.fallbacks], ["198.51.100.2", 0]);
  const none = await resolve({ source: "auto" }, { peer: PEER });
  assert.equal(none.address, "192.0.2.50");
  assert.equal(none.fallbacks, 0, "no forwarding header at all is auto's documented last step, not a fallback");
  const badExternal = await resolve({ source: "auto" }, { peer: PEER, headers: { "x-envoy-external-address": "999.9.9.9" } });
  assert.equal(badExternal.address, "192.0.2.50", "garbage x-envoy-external-address is never used");
  assert.equal(badExternal.fallbacks, 2);
});

const GARBAGE = ["999.1.1.1", "::ffff:", "[::1", "1.2.3.4:99999", "", " ", ",", "unknown", "1.2.3", "1.2.3.4.5", "1.2.3.4 5.6.7.8", "::1::1", "2001:db8::g", "256.0.0.1", "-1.0.0.0", "1.2.3.4/24", "\u00e9\u00e9", "0x7f.0.0.1"];

test("garbage in x-forwarded-for falls back to the peer address and is counted", async () => {
  for (const g of GARBAGE) {
    const r = await resolve({ source: "xff", trustedHops: 0 }, xff(g));
    assert.equal(r.address, "192.0.2.50", `XFF ${JSON.stringify(g)} must fall back to the peer`);
    assert.equal(r.fallbacks, 2, `XFF ${JSON.stringify(g)} must count a fallback per request`);
    assert.equal(r.internalErrors, 0);
    assertHostClean(r.h);
  }
});

test("without any usable address (missing or garbage peer) the request passes and counts an internal error", async () => {
  for (const peer of [null, "garbage", "", "[::1"]) {
    const h = await start({ clientAddress: { source: "peer" }, rules: { rate: rateRule(1, "1h", "1h") } });
    for (let i = 0; i < 3; i++) assertPassed(h.vm(0).send({ peer }), `peer ${JSON.stringify(peer)} request ${i + 1}`);
    assert.equal(h.metrics.get(M.internalErrors), 3, `peer ${JSON.stringify(peer)}`);
    assert.equal(tableKeys(h).length, 0);
  }
});

test("IPv6 clients are aggregated to /64 by default: one /64 shares a bucket, the next /64 does not", async () => {
  const h = await start({ clientAddress: { source: "peer" }, rules: { rate: rateRule(10, "1h", "1h") } });
  for (let i = 0; i < 5; i++) assertPassed(h.vm(0).send({ peer: "[2001:db8:1:2::5]:1000" }));
  for (let i = 0; i < 5; i++) assertPassed(h.vm(0).send({ peer: "[2001:db8:1:2:ffff:ffff:ffff:ffff]:1001" }));
  assertDenied(h.vm(0).send({ peer: "[2001:db8:1:2:abcd::1]:1002" }), 403, "11th request from the same /64");
  assert.equal(bans(h)[0].address, "2001:db8:1:2::/64");
  for (let i = 0; i < 10; i++) assertPassed(h.vm(0).send({ peer: "[2001:db8:1:3::5]:1000" }), "another /64 has its own bucket");
});

test("prefixes are configurable: /24 for IPv4 aggregates a subnet, /128 for IPv6 separates hosts", async () => {
  const h = await start({ clientAddress: { source: "peer" }, prefixes: { ipv4: 24, ipv6: 128 }, rules: { rate: rateRule(2, "1h", "1h") } });
  assertPassed(h.vm(0).send({ peer: "198.51.100.7:1" }));
  assertPassed(h.vm(0).send({ peer: "198.51.100.200:1" }));
  assertDenied(h.vm(0).send({ peer: "198.51.100.1:1" }), 403, "third request from the same /24");
  assertPassed(h.vm(0).send({ peer: "198.51.101.1:1" }), "next /24");
  for (const peer of ["[2001:db8::1]:1", "[2001:db8::1]:1", "[2001:db8::2]:1", "[2001:db8::2]:1"]) assertPassed(h.vm(0).send({ peer }));
  assertDenied(h.vm(0).send({ peer: "[2001:db8::1]:1" }), 403, "third request from 2001:db8::1 alone");
});

test("a port in the peer address never changes the client", async () => {
  const h = await start({ clientAddress: { source: "peer" }, rules: { rate: rateRule(3, "1h", "1h") } });
  for (const port of [1, 65535, 40000]) assertPassed(h.vm(0).send({ peer: `198.51.100.7:${port}` }));
  assertDenied(h.vm(0).send({ peer: "198.51.100.7:2" }));
});

// Range escalation in real Envoy. Loopback has one IPv6 address, so IPv6 clients come through
// x-forwarded-for: the test client is a trusted peer (trustedPeers 127.0.0.0/8, a real TCP peer since
// the edge keeps use_remote_address true), its XFF entry names the client, the edge appends the peer,
// and the filter takes the entry one hop from the right (clientAddress xff, trustedHops 1).
import assert from "node:assert/strict";
import { edgeSpec } from "../../dev/envoy-topologies.ts";
import { assertMetrics, banLines, e2e, get, guardFilter, portOf } from "./harness.ts";

e2e("three banned IPv6 /64s of one /48, named by a trusted peer's x-forwarded-for, ban the whole /48", async (s) => {
  const app = await s.app();
  const filter = guardFilter({
    clientAddress: { source: "xff", trustedHops: 1, trustedPeers: ["127.0.0.0/8"] },
    rules: { rate: { limit: { requests: 1, per: "24h" }, ban: "1m" }, userAgent: { enabled: false }, errors: { enabled: false } },
    ban: { range: { threshold: 3, window: "10m", ban: "1h" } },
  });
  const edge = await s.envoy({ label: "range-edge", concurrency: 2, spec: edgeSpec({ upstreamPort: app.port, filters: [filter] }) });
  const port = portOf(edge, "edge");
  const as = async (client: string) => (await get("127.0.0.1", port, "/", { headers: { "x-forwarded-for": client } })).status;

  for (const c of ["2001:db8:1:1::1", "2001:db8:1:2::1", "2001:db8:1:3::1"]) {
    assert.equal(await as(c), 200, `${c} first request`);
    assert.equal(await as(c), 403, `${c} banned`);
  }
  const lines = edge.log().split("\n").filter((l) => /traffic-guard: banned range/.test(l));
  assert.equal(lines.length, 1, "one range ban logged");
  assert.match(lines[0], /traffic-guard: banned range 2001:db8:1::\/48 for 3600s: 3 clients banned within 600s$/);
  // A worker that did not start the range ban reads it within a second: wait that long, then every
  // /64 of the range is denied on both workers (new connections spread over them).
  await new Promise((r) => setTimeout(r, 1100));
  const fresh: number[] = [];
  for (let i = 0; i < 6; i++) fresh.push(await as(`2001:db8:1:${(0x100 + i).toString(16)}::1`));
  assert.deepEqual(fresh, [403, 403, 403, 403, 403, 403], "fresh /64s of the banned /48");
  assert.equal(await as("2001:db8:2:1::1"), 200, "another /48");
  assert.equal(banLines(edge.log()).length, 3, "three client bans");
  await assertMetrics(edge, {
    traffic_guard_requests_total: 13,
    traffic_guard_range_bans_total: 1,
    traffic_guard_bans_rate_total: 3,
    traffic_guard_denied_rate_total: 3,
    traffic_guard_denied_banned_total: 6,
    traffic_guard_tracked_clients: 4,
  });
});

e2e("an IPv4 /24 is banned only when ban.range.prefixes.ipv4 asks for it", async (s) => {
  const app = await s.app();
  const filter = (ipv4: number) =>
    guardFilter({
      clientAddress: { source: "xff", trustedHops: 1, trustedPeers: ["127.0.0.0/8"] },
      rules: { rate: { limit: { requests: 1, per: "24h" }, ban: "1m" }, userAgent: { enabled: false }, errors: { enabled: false } },
      ban: { range: { threshold: 2, prefixes: { ipv4 } } },
    });
  for (const ipv4 of [0, 24]) {
    const edge = await s.envoy({ label: `range4-edge-${ipv4}`, concurrency: 1, spec: edgeSpec({ upstreamPort: app.port, filters: [filter(ipv4)] }) });
    const port = portOf(edge, "edge");
    const as = async (client: string) => (await get("127.0.0.1", port, "/", { headers: { "x-forwarded-for": client } })).status;
    for (const c of ["198.51.100.1", "198.51.100.2"]) {
      await as(c);
      assert.equal(await as(c), 403);
    }
    assert.equal(await as("198.51.100.3"), ipv4 === 24 ? 403 : 200, `prefixes.ipv4 ${ipv4}`);
  }
});

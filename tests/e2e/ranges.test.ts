// Range escalation in real Envoy. Loopback has one IPv6 address, so IPv6 clients come through
// x-forwarded-for: client -> edge ("gateway", appends the peer to XFF) -> sidecar carrying the filter
// (clientAddress xff with one trusted hop, the edge) -> sample app.
import assert from "node:assert/strict";
import { gatewaySpec, sidecarSpec } from "../../dev/envoy-topologies.ts";
import { assertMetrics, banLines, e2e, get, guardFilter, portOf } from "./harness.ts";

e2e("behind an edge Envoy, three banned IPv6 /64s of one /48 ban the whole /48 in the sidecar's filter", async (s) => {
  const app = await s.app();
  const filter = guardFilter({
    clientAddress: { source: "xff", trustedHops: 1 },
    rules: { rate: { limit: { requests: 1, per: "24h" }, ban: "1m" }, userAgent: { enabled: false }, errors: { enabled: false } },
    ban: { range: { threshold: 3, window: "10m", ban: "1h" } },
  });
  const sidecar = await s.envoy({ label: "range-sidecar", concurrency: 2, spec: sidecarSpec({ upstreamPort: app.port, filters: [filter] }) });
  const edge = await s.envoy({ label: "range-edge", concurrency: 2, spec: gatewaySpec({ sidecarPort: portOf(sidecar, "sidecar") }) });
  const port = portOf(edge, "gateway");
  const as = async (client: string) => (await get("127.0.0.1", port, "/", { headers: { "x-forwarded-for": client } })).status;

  for (const c of ["2001:db8:1:1::1", "2001:db8:1:2::1", "2001:db8:1:3::1"]) {
    assert.equal(await as(c), 200, `${c} first request`);
    assert.equal(await as(c), 403, `${c} banned`);
  }
  const lines = sidecar.log().split("\n").filter((l) => /traffic-guard: banned range/.test(l));
  assert.equal(lines.length, 1, "one range ban logged");
  assert.match(lines[0], /traffic-guard: banned range 2001:db8:1::\/48 for 3600s: 3 clients banned within 600s$/);
  // A worker that did not start the range ban reads it within a second: wait that long, then every
  // /64 of the range is denied on both workers (new connections spread over them).
  await new Promise((r) => setTimeout(r, 1100));
  const fresh: number[] = [];
  for (let i = 0; i < 6; i++) fresh.push(await as(`2001:db8:1:${(0x100 + i).toString(16)}::1`));
  assert.deepEqual(fresh, [403, 403, 403, 403, 403, 403], "fresh /64s of the banned /48");
  assert.equal(await as("2001:db8:2:1::1"), 200, "another /48");
  assert.equal(banLines(sidecar.log()).length, 3, "three client bans");
  await assertMetrics(sidecar, {
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
      clientAddress: { source: "xff", trustedHops: 1 },
      rules: { rate: { limit: { requests: 1, per: "24h" }, ban: "1m" }, userAgent: { enabled: false }, errors: { enabled: false } },
      ban: { range: { threshold: 2, prefixes: { ipv4 } } },
    });
  for (const ipv4 of [0, 24]) {
    const sidecar = await s.envoy({ label: `range4-${ipv4}`, concurrency: 1, spec: sidecarSpec({ upstreamPort: app.port, filters: [filter(ipv4)] }) });
    const edge = await s.envoy({ label: `range4-edge-${ipv4}`, concurrency: 1, spec: gatewaySpec({ sidecarPort: portOf(sidecar, "sidecar") }) });
    const port = portOf(edge, "gateway");
    const as = async (client: string) => (await get("127.0.0.1", port, "/", { headers: { "x-forwarded-for": client } })).status;
    for (const c of ["198.51.100.1", "198.51.100.2"]) {
      await as(c);
      assert.equal(await as(c), 403);
    }
    assert.equal(await as("198.51.100.3"), ipv4 === 24 ? 403 : 200, `prefixes.ipv4 ${ipv4}`);
  }
});

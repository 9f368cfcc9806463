// Mesh identity (assembly/identity.ts, assembly/client.ts): who a request is accounted to, decided from
// the peer's verified SPIFFE ID (`connection.uri_san_peer_certificate`), clientAddress.trustedPeers,
// clientAddress.meshCallers and the address headers. Observed through the ban line and the counters:
// with a one-per-hour rate limit the second identical request bans exactly the key the filter chose.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { RequestOptions } from "../emulator/emulator.ts";
import { M, start, rateRule, uaRule, errorsRule, assertPassed, assertDenied, bans, assertOnlyMetrics, assertHostClean } from "./helpers.ts";

const GATEWAY = "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account";
const FRONTEND = "spiffe://cluster.local/ns/shop/sa/frontend";
const CRAWLER = "spiffe://cluster.local/ns/shop/sa/crawler";
const HIDDEN = "plaintext-peer-behind-x-forwarded-for";

/** One request as a sidecar's filter sees it: the peer certificate's URI SAN (or none), source.address, headers. */
function req(identity: string | null, peer: string, headers: Record<string, string> = {}): RequestOptions {
  return { peer, headers, properties: { "connection.uri_san_peer_certificate": identity } };
}

const FORGED = { "x-envoy-external-address": "203.0.113.77", "x-forwarded-for": "203.0.113.77" };

interface Row {
  name: string;
  request: RequestOptions;
  clientAddress?: Record<string, unknown>;
  /** The banned key (the ban line's subject), or null when the caller is never counted. */
  key: string | null;
  /** traffic_guard_untrusted_address_headers_total after the two requests. */
  untrusted: number;
}

// Behind a sidecar (use_remote_address false) Envoy reports the rightmost XFF entry as source.address,
// with port 0; without XFF, source.address is the TCP peer with its real port.
const ROWS: Row[] = [
  { name: "the ingress gateway (default trusted peer) forwarding a client", request: req(GATEWAY, "198.51.100.1:0", { "x-envoy-external-address": "198.51.100.1", "x-forwarded-for": "198.51.100.1" }), key: "198.51.100.1", untrusted: 0 },
  { name: "the ingress gateway's own request without address headers", request: req(GATEWAY, "10.9.9.9:5000"), key: GATEWAY, untrusted: 0 },
  { name: "a mesh caller with forged headers", request: req(CRAWLER, "203.0.113.77:0", FORGED), key: CRAWLER, untrusted: 2 },
  { name: "a mesh caller without headers", request: req(CRAWLER, "10.1.2.3:41000"), key: CRAWLER, untrusted: 0 },
  { name: "a mesh caller under meshCallers address (the previous behaviour)", request: req(CRAWLER, "10.1.2.3:41000", { "x-envoy-external-address": "203.0.113.77" }), clientAddress: { meshCallers: "address" }, key: "10.1.2.3", untrusted: 2 },
  { name: "a mesh caller under meshCallers exempt", request: req(CRAWLER, "203.0.113.77:0", FORGED), clientAddress: { meshCallers: "exempt" }, key: null, untrusted: 2 },
  { name: "a mesh caller named in trustedPeers", request: req(FRONTEND, "203.0.113.77:0", FORGED), clientAddress: { trustedPeers: ["spiffe://cluster.local/ns/shop/sa/*"] }, key: "203.0.113.77", untrusted: 0 },
  { name: "a plaintext caller (TCP peer known) with a forged x-envoy-external-address", request: req(null, "10.1.2.3:41000", { "x-envoy-external-address": "203.0.113.77" }), key: "10.1.2.3", untrusted: 2 },
  { name: "a plaintext caller inside a trustedPeers CIDR", request: req(null, "10.1.2.3:41000", { "x-envoy-external-address": "203.0.113.77" }), clientAddress: { trustedPeers: ["10.0.0.0/8"] }, key: "203.0.113.77", untrusted: 0 },
  { name: "a plaintext caller whose address Envoy took from XFF (port 0)", request: req(null, "203.0.113.77:0", FORGED), key: HIDDEN, untrusted: 2 },
  { name: "a plaintext caller behind XFF, even with every address trusted", request: req(null, "203.0.113.77:0", FORGED), clientAddress: { trustedPeers: ["0.0.0.0/0", "::/0"] }, key: HIDDEN, untrusted: 2 },
  { name: "a client at an edge proxy, whose own headers name the peer", request: req(null, "198.51.100.4:5555", { "x-envoy-external-address": "198.51.100.4", "x-forwarded-for": "198.51.100.4" }), key: "198.51.100.4", untrusted: 0 },
];

for (const row of ROWS) {
  test(`clientAddress auto: ${row.name} is keyed on ${row.key ?? "nothing (not counted)"}`, async () => {
    const h = await start({ clientAddress: { source: "auto", ...row.clientAddress }, rules: { rate: rateRule(1, "1h", "1h") } });
    assertPassed(h.vm(0).send(row.request), "first request");
    if (row.key === null) {
      assertPassed(h.vm(0).send(row.request), "second request (never counted)");
      assert.deepEqual(bans(h), []);
      assertOnlyMetrics(h, { [M.requests]: 2, [M.untrusted]: row.untrusted });
    } else {
      assertDenied(h.vm(0).send(row.request), 403, "second request");
      assert.deepEqual(bans(h).map((b) => b.address), [row.key]);
      assertOnlyMetrics(h, { [M.requests]: 2, [M.deniedRate]: 1, [M.bansRate]: 1, [M.untrusted]: row.untrusted });
    }
    assertHostClean(h);
  });
}

test("a mesh caller rotating forged address headers on every request is banned at the limit under its identity", async () => {
  const h = await start({ clientAddress: { source: "auto" }, rules: { rate: rateRule(5, "1h", "1h") } }, { vms: 2 });
  const statuses: number[] = [];
  for (let i = 0; i < 8; i++) {
    const forged = `198.51.100.${i + 1}`;
    const r = h.vm(i % 2).send(req(CRAWLER, `${forged}:0`, { "x-envoy-external-address": forged, "x-forwarded-for": `${forged}, ${forged}` }));
    statuses.push(r.localReply?.status ?? 200);
  }
  assert.deepEqual(statuses, [200, 200, 200, 200, 200, 403, 403, 403]);
  assert.equal(h.logs.find((l) => l.text.includes("banned"))?.text, `traffic-guard: banned ${CRAWLER} for 3600s: rule=rate limit=5/3600s ban=1`);
  assertOnlyMetrics(h, { [M.requests]: 8, [M.deniedRate]: 1, [M.deniedBanned]: 2, [M.bansRate]: 1, [M.untrusted]: 8 });
});

test("a ban follows the workload's identity to a new pod address", async () => {
  const h = await start({ rules: { rate: rateRule(2, "1h", "1h") } }, { vms: 2 });
  assertPassed(h.vm(0).send(req(CRAWLER, "10.1.2.3:40000")));
  assertPassed(h.vm(0).send(req(CRAWLER, "10.1.2.3:40001")));
  assertDenied(h.vm(0).send(req(CRAWLER, "10.1.2.3:40002")));
  assertDenied(h.vm(1).send(req(CRAWLER, "10.7.7.7:50000")), 403, "the rescheduled pod, new address");
  assertPassed(h.vm(1).send(req(null, "10.1.2.3:40003")), "another workload reusing the old pod address");
});

test("by default the userAgent rule skips mesh callers (Go-http-client under the default policy) but not plaintext callers", async () => {
  const h = await start({ rules: { rate: rateRule(600, "1m", "5m"), userAgent: uaRule(["go-http-client/*"], 10, "1m", "10m") } }, { vms: 2 });
  const ua = { "user-agent": "Go-http-client/1.1" };
  for (let i = 0; i < 30; i++) assertPassed(h.vm(i % 2).send(req(FRONTEND, "10.1.2.3:40000", ua)), `mesh request ${i + 1}`);
  for (let i = 0; i < 10; i++) assertPassed(h.vm(0).send(req(null, "10.4.4.4:40000", ua)));
  assertDenied(h.vm(0).send(req(null, "10.4.4.4:40000", ua)), 403, "11th plaintext Go request");
  assertOnlyMetrics(h, { [M.requests]: 41, [M.deniedUserAgent]: 1, [M.bansUserAgent]: 1 });
});

test("rules.userAgent.applyToMesh turns the userAgent rule on for mesh callers", async () => {
  const h = await start({ rules: { userAgent: { ...uaRule(["go-http-client/*"], 3, "1m", "10m"), applyToMesh: true } } });
  const ua = { "user-agent": "Go-http-client/1.1" };
  for (let i = 0; i < 3; i++) assertPassed(h.vm(0).send(req(FRONTEND, "10.1.2.3:40000", ua)));
  assertDenied(h.vm(0).send(req(FRONTEND, "10.1.2.3:40000", ua)));
  assert.equal(bans(h)[0].address, FRONTEND);
});

test("rules.rate.meshLimit limits mesh callers separately from address-keyed clients", async () => {
  const h = await start({ rules: { rate: { ...rateRule(100, "1m", "1m"), meshLimit: { requests: 3, per: "1m" } } } });
  for (let i = 0; i < 3; i++) assertPassed(h.vm(0).send(req(CRAWLER, "10.1.2.3:40000")));
  assertDenied(h.vm(0).send(req(CRAWLER, "10.1.2.3:40000")), 403, "4th mesh request");
  for (let i = 0; i < 10; i++) assertPassed(h.vm(0).send(req(null, "10.4.4.4:40000")), "plaintext client under the 100/min limit");
  assert.equal(h.logs.find((l) => l.text.includes("banned"))?.text, `traffic-guard: banned ${CRAWLER} for 60s: rule=rate limit=3/60s ban=1`);
});

test("the errors rule counts a mesh caller's error responses per identity", async () => {
  const h = await start({ rules: { errors: errorsRule(["4xx"], 2, "1h", "1h") } });
  for (let i = 0; i < 3; i++) assertPassed(h.vm(0).send(req(CRAWLER, `10.1.2.${i}:40000`), 404), `404 ${i + 1}`);
  assertDenied(h.vm(0).send(req(CRAWLER, "10.1.2.9:40000")), 403, "banned after the third 404, at any address");
  assert.deepEqual(bans(h).map((b) => `${b.address} ${b.rule}`), [`${CRAWLER} errors`]);
});

test("allow and deny accept SPIFFE ID patterns, matched against a mesh caller's identity", async () => {
  const h = await start({ allow: ["spiffe://cluster.local/ns/monitoring/sa/*"], deny: ["spiffe://*/ns/shop/sa/crawler"], rules: { rate: rateRule(1, "1h", "1h") } });
  for (let i = 0; i < 3; i++) assertPassed(h.vm(0).send(req("spiffe://cluster.local/ns/monitoring/sa/prometheus", "10.1.2.3:40000")));
  assertDenied(h.vm(0).send(req(CRAWLER, "10.1.2.4:40000")), 403, "denied by identity");
  assertPassed(h.vm(0).send(req(FRONTEND, "10.1.2.5:40000")));
  assertOnlyMetrics(h, { [M.requests]: 5, [M.deniedDeny]: 1 });
});

test("meshCallers exempt never counts a workload, but a deny pattern naming it still applies", async () => {
  const h = await start({ clientAddress: { meshCallers: "exempt" }, deny: ["spiffe://cluster.local/ns/shop/sa/crawler"], rules: { rate: rateRule(1, "1h", "1h") } });
  for (let i = 0; i < 3; i++) assertPassed(h.vm(0).send(req(FRONTEND, "10.1.2.3:40000")));
  assertDenied(h.vm(0).send(req(CRAWLER, "10.1.2.4:40000")));
  assertOnlyMetrics(h, { [M.requests]: 4, [M.deniedDeny]: 1 });
});

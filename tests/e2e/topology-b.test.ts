// Topology B: client -> "ingress gateway" Envoy (use_remote_address true, xff_num_trusted_hops 0,
// as istiod renders a gateway) -> "sidecar" Envoy (use_remote_address false) carrying the filter ->
// the sample app. First a probe filter in the sidecar records what a filter there actually sees
// (x-forwarded-for, x-envoy-external-address, source.address); then what traffic-guard does with a
// plaintext gateway, which is no trusted peer. The same chain with mTLS is in tests/e2e/mtls.test.ts.
import assert from "node:assert/strict";
import { edgeSpec, gatewaySpec, sidecarSpec } from "../../dev/envoy-topologies.ts";
import type { RunningEnvoy } from "../../dev/envoy-process.ts";
import type { WasmFilterSpec } from "../../dev/envoy-config.ts";
import { assertMetrics, banLines, compileModule, e2e, get, guardFilter, portOf, type Stack } from "./harness.ts";

/** What the probe filter in the sidecar reported for one request. */
interface Seen {
  xff: string;
  externalAddress: string;
  sourceAddress: string;
}

async function chain(s: Stack, filter: WasmFilterSpec, internalCidrs?: string[]): Promise<{ gateway: RunningEnvoy; sidecar: RunningEnvoy }> {
  const app = await s.app();
  const sidecar = await s.envoy({ label: "sidecar", concurrency: 2, spec: sidecarSpec({ upstreamPort: app.port, filters: [filter] }) });
  const gateway = await s.envoy({ label: "gateway", concurrency: 2, spec: gatewaySpec({ sidecarPort: portOf(sidecar, "sidecar"), internalCidrs }) });
  return { gateway, sidecar };
}

function probeFilter(): WasmFilterSpec {
  return {
    kind: "wasm",
    namespace: "default",
    name: "probe",
    pluginName: "probe",
    pluginConfig: "",
    wasmPath: compileModule("tests/e2e/probe/index.ts", "probe.wasm"),
  };
}

async function observe(port: number, from: string, headers: Record<string, string>): Promise<Seen> {
  const r = await get("127.0.0.1", port, "/api/echo", { from, headers });
  assert.equal(r.status, 200);
  const h = (JSON.parse(r.body) as { headers: Record<string, string> }).headers;
  return { xff: h["x-probe-xff"], externalAddress: h["x-probe-external-address"], sourceAddress: h["x-probe-source-address"] };
}

const FORGERIES: [string, Record<string, string>][] = [
  ["no forged header", {}],
  ["forged x-forwarded-for", { "x-forwarded-for": "203.0.113.9" }],
  ["forged x-envoy-external-address", { "x-envoy-external-address": "203.0.113.10" }],
  ["both forged", { "x-forwarded-for": "203.0.113.9", "x-envoy-external-address": "203.0.113.10" }],
];

e2e("behind a default Istio gateway the sidecar's filter sees the real client in x-envoy-external-address, XFF and source.address", async (s, t) => {
  const { gateway } = await chain(s, probeFilter());
  const port = portOf(gateway, "gateway");
  const seen: Record<string, Seen> = {};
  for (const [name, headers] of FORGERIES) seen[name] = await observe(port, "127.0.0.20", headers);
  t.diagnostic(`sidecar saw (client 127.0.0.20, gateway without internal_address_config): ${JSON.stringify(seen)}`);
  assert.deepEqual(seen, {
    // Envoy 1.40 counts no address as internal unless internal_address_config says so: the
    // gateway treats the loopback client as external, overwrites x-envoy-external-address with the
    // address it saw and appends that address to XFF.
    "no forged header": { xff: "127.0.0.20", externalAddress: "127.0.0.20", sourceAddress: "127.0.0.20:0" },
    "forged x-forwarded-for": { xff: "203.0.113.9,127.0.0.20", externalAddress: "127.0.0.20", sourceAddress: "127.0.0.20:0" },
    "forged x-envoy-external-address": { xff: "127.0.0.20", externalAddress: "127.0.0.20", sourceAddress: "127.0.0.20:0" },
    "both forged": { xff: "203.0.113.9,127.0.0.20", externalAddress: "127.0.0.20", sourceAddress: "127.0.0.20:0" },
  });
});

e2e("behind a gateway that counts the client as internal (meshNetworks), a forged x-envoy-external-address reaches the sidecar", async (s, t) => {
  const { gateway } = await chain(s, probeFilter(), ["127.0.0.0/8"]);
  const port = portOf(gateway, "gateway");
  const seen: Record<string, Seen> = {};
  for (const [name, headers] of FORGERIES) seen[name] = await observe(port, "127.0.0.20", headers);
  t.diagnostic(`sidecar saw (client 127.0.0.20, gateway internal_address_config 127.0.0.0/8): ${JSON.stringify(seen)}`);
  assert.deepEqual(seen, {
    // An internal client gets no x-envoy-external-address, and one it sends itself is kept as long as
    // XFF holds only the address the gateway appended. A forged XFF makes the request external again,
    // and then the gateway sets the header itself.
    "no forged header": { xff: "127.0.0.20", externalAddress: "-", sourceAddress: "127.0.0.20:0" },
    "forged x-forwarded-for": { xff: "203.0.113.9,127.0.0.20", externalAddress: "127.0.0.20", sourceAddress: "127.0.0.20:0" },
    "forged x-envoy-external-address": { xff: "127.0.0.20", externalAddress: "203.0.113.10", sourceAddress: "127.0.0.20:0" },
    "both forged": { xff: "203.0.113.9,127.0.0.20", externalAddress: "127.0.0.20", sourceAddress: "127.0.0.20:0" },
  });
});

e2e("a sidecar reached directly (no gateway) reports the rightmost x-forwarded-for entry as source.address", async (s, t) => {
  const app = await s.app();
  const sidecar = await s.envoy({ label: "sidecar-direct", concurrency: 1, spec: sidecarSpec({ upstreamPort: app.port, filters: [probeFilter()] }) });
  const port = portOf(sidecar, "sidecar");
  const plain = await observe(port, "127.0.0.25", {});
  const forged = await observe(port, "127.0.0.25", { "x-forwarded-for": "198.51.100.1, 198.51.100.2" });
  t.diagnostic(`sidecar reached directly from 127.0.0.25 saw: plain ${JSON.stringify(plain)}, forged XFF ${JSON.stringify(forged)}`);
  // With use_remote_address false, Envoy replaces the downstream remote address with the XFF
  // address (xff_num_trusted_hops 0: the rightmost entry) before any filter runs.
  assert.equal(plain.xff, "-");
  assert.equal(plain.externalAddress, "-");
  assert.match(plain.sourceAddress, /^127\.0\.0\.25:[1-9]\d*$/, "without XFF: the TCP peer");
  assert.deepEqual(forged, { xff: "198.51.100.1, 198.51.100.2", externalAddress: "-", sourceAddress: "198.51.100.2:0" });
});

e2e("an edge proxy (use_remote_address true) reports the TCP peer as source.address whatever XFF says", async (s, t) => {
  const app = await s.app();
  const edge = await s.envoy({ label: "edge-probe", concurrency: 1, spec: edgeSpec({ upstreamPort: app.port, filters: [probeFilter()] }) });
  const port = portOf(edge, "edge");
  const forged = await observe(port, "127.0.0.28", { "x-forwarded-for": "198.51.100.1", "x-envoy-external-address": "198.51.100.2" });
  t.diagnostic(`edge proxy reached from 127.0.0.28 with forged XFF and x-envoy-external-address saw: ${JSON.stringify(forged)}`);
  // The edge appends the peer to XFF and overwrites x-envoy-external-address before filters run.
  assert.equal(forged.xff, "198.51.100.1,127.0.0.28");
  assert.equal(forged.externalAddress, "127.0.0.28");
  assert.match(forged.sourceAddress, /^127\.0\.0\.28:\d+$/);
  assert.notEqual(forged.sourceAddress, "127.0.0.28:0", "the real TCP peer, with its port");
});

const LIMIT = { rules: { rate: { limit: { requests: 5, per: "1m" }, ban: "1m" } } };

e2e("behind a plaintext gateway the sidecar believes none of its headers: every client shares the hidden-peer key", async (s) => {
  // The gateway presents no certificate, so it is no trusted peer, and with use_remote_address false
  // Envoy replaced the TCP peer by the XFF entry (port 0): the filter cannot tell the gateway's clients
  // apart and keys them all as one plaintext peer. tests/e2e/mtls.test.ts runs this chain with mTLS,
  // the way Istio runs it, where the real client is keyed.
  const { gateway, sidecar } = await chain(s, guardFilter({ clientAddress: { source: "auto" }, ...LIMIT }));
  const port = portOf(gateway, "gateway");
  const send = async (from: string, n: number) => {
    const out: number[] = [];
    for (let i = 0; i < n; i++) out.push((await get("127.0.0.1", port, "/api/items", { from })).status);
    return out;
  };
  assert.deepEqual(await send("127.0.0.21", 5), [200, 200, 200, 200, 200]);
  assert.deepEqual(await send("127.0.0.22", 2), [403, 403], "another client of the same plaintext gateway shares the key");
  assert.deepEqual(banLines(sidecar.log()).map((b) => `${b.address} ${b.rule}`), ["plaintext-peer-behind-x-forwarded-for rate"]);
  await assertMetrics(sidecar, {
    traffic_guard_requests_total: 7,
    traffic_guard_denied_rate_total: 1,
    traffic_guard_denied_banned_total: 1,
    traffic_guard_bans_rate_total: 1,
    traffic_guard_untrusted_address_headers_total: 7,
    traffic_guard_tracked_clients: 1,
  });
});

// Mesh identity in real Envoy with real mTLS. A CA and workload certificates with SPIFFE URI SANs are
// made with openssl for each run: Istio's ingress gateway, a client workload (frontend), an attacker
// workload (crawler) and the sidecar's server certificate. The "sidecar" Envoy is configured like
// Istio's inbound listener (client certificates required and validated, use_remote_address false, XFCC
// APPEND_FORWARD); the "gateway" Envoy originates mTLS to it with the gateway certificate. First a probe
// filter records what a filter in the sidecar sees; then traffic-guard's decisions, each with every metric.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gatewaySpec, sidecarSpec } from "../../dev/envoy-topologies.ts";
import type { DownstreamTlsSpec, TlsFiles, WasmFilterSpec } from "../../dev/envoy-config.ts";
import type { RunningEnvoy } from "../../dev/envoy-process.ts";
import { assertMetrics, banLines, compileModule, e2e, get, guardFilter, portOf, type Reply, type Stack } from "./harness.ts";

const GATEWAY_ID = "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account";
const FRONTEND_ID = "spiffe://cluster.local/ns/shop/sa/frontend";
const CRAWLER_ID = "spiffe://cluster.local/ns/shop/sa/crawler";
const SIDECAR_ID = "spiffe://cluster.local/ns/shop/sa/app";

/** The PEM files of one workload. */
interface Workload extends TlsFiles {
  cert: Buffer;
  key: Buffer;
  ca: Buffer;
}

/** A throw-away mesh CA and the workload certificates of this file's scenarios. */
interface Mesh {
  dir: string;
  gateway: Workload;
  frontend: Workload;
  crawler: Workload;
  sidecar: Workload;
}

function openssl(dir: string, args: string[]): void {
  execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
}

// A P-256 key and a certificate signed by the mesh CA carrying `uri` (and, for servers, 127.0.0.1) as SANs.
function issue(dir: string, name: string, uri: string): Workload {
  writeFileSync(join(dir, `${name}.ext`), [
    "basicConstraints=critical,CA:FALSE",
    "keyUsage=critical,digitalSignature,keyEncipherment",
    "extendedKeyUsage=serverAuth,clientAuth",
    `subjectAltName=critical,URI:${uri},IP:127.0.0.1`,
  ].join("\n") + "\n");
  openssl(dir, ["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", "/O=cluster.local"]);
  openssl(dir, ["x509", "-req", "-in", `${name}.csr`, "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1", "-out", `${name}.crt`, "-extfile", `${name}.ext`]);
  const files = { certChain: join(dir, `${name}.crt`), privateKey: join(dir, `${name}.key`), caCert: join(dir, "ca.crt") };
  return { ...files, cert: readFileSync(files.certChain), key: readFileSync(files.privateKey), ca: readFileSync(files.caCert) };
}

/** Makes the CA and the four workload certificates in a fresh directory (removed by the caller). */
function makeMesh(): Mesh {
  const dir = mkdtempSync(join(tmpdir(), "traffic-guard-mtls-"));
  openssl(dir, ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
    "-days", "1", "-subj", "/O=cluster.local/CN=traffic-guard test mesh CA",
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
  return {
    dir,
    gateway: issue(dir, "gateway", GATEWAY_ID),
    frontend: issue(dir, "frontend", FRONTEND_ID),
    crawler: issue(dir, "crawler", CRAWLER_ID),
    sidecar: issue(dir, "sidecar", SIDECAR_ID),
  };
}

/** Runs `body` with a fresh mesh CA, always removing the key material afterwards. */
function mtls(name: string, body: (s: Stack, mesh: Mesh) => Promise<void>): void {
  e2e(name, async (s) => {
    const mesh = makeMesh();
    try {
      await body(s, mesh);
    } finally {
      rmSync(mesh.dir, { recursive: true, force: true });
    }
  }, ["openssl"]);
}

/** One HTTPS request to the sidecar from `from`, presenting `workload`'s certificate (none = no client certificate). */
function tlsGet(port: number, path: string, opts: { from: string; workload?: Workload; ca: Buffer; headers?: Record<string, string> }): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: "127.0.0.1",
        port,
        path,
        method: "GET",
        headers: { "user-agent": "Go-http-client/1.1", ...opts.headers },
        localAddress: opts.from,
        agent: false,
        ca: opts.ca,
        cert: opts.workload?.cert,
        key: opts.workload?.key,
        timeout: 10_000,
      },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (d) => (body += d));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      },
    );
    req.on("timeout", () => req.destroy(new Error(`GET ${path} timed out`)));
    req.on("error", reject);
    req.end();
  });
}

function sidecarTls(mesh: Mesh, mode: DownstreamTlsSpec["mode"]): DownstreamTlsSpec {
  return { mode, certChain: mesh.sidecar.certChain, privateKey: mesh.sidecar.privateKey, caCert: mesh.sidecar.caCert };
}

/** Gateway (mTLS to the sidecar with the gateway certificate) -> sidecar (mTLS required) -> sample app. */
async function meshChain(s: Stack, mesh: Mesh, filter: WasmFilterSpec, mode: DownstreamTlsSpec["mode"] = "STRICT", internalCidrs?: string[]): Promise<{ gateway: RunningEnvoy; sidecar: RunningEnvoy; gatewayPort: number; sidecarPort: number }> {
  const app = await s.app();
  const sidecar = await s.envoy({ label: "sidecar-mtls", concurrency: 2, spec: sidecarSpec({ upstreamPort: app.port, filters: [filter], tls: sidecarTls(mesh, mode) }) });
  const sidecarPort = portOf(sidecar, "sidecar");
  const gateway = await s.envoy({ label: "gateway-mtls", concurrency: 2, spec: gatewaySpec({ sidecarPort, sidecarTls: mesh.gateway, internalCidrs }) });
  return { gateway, sidecar, gatewayPort: portOf(gateway, "gateway"), sidecarPort };
}

function probeFilter(): WasmFilterSpec {
  return { kind: "wasm", namespace: "shop", name: "probe", pluginName: "probe", pluginConfig: "", wasmPath: compileModule("tests/e2e/probe/index.ts", "probe.wasm") };
}

/** What the probe in the sidecar reported. */
interface Seen {
  sourceAddress: string;
  mtls: string;
  uriSan: string;
  uriSanResult: string;
  xfcc: string;
}

function seen(r: Reply): Seen {
  assert.equal(r.status, 200, r.body);
  const h = (JSON.parse(r.body) as { headers: Record<string, string> }).headers;
  return { sourceAddress: h["x-probe-source-address"], mtls: h["x-probe-mtls"], uriSan: h["x-probe-uri-san"], uriSanResult: h["x-probe-uri-san-result"], xfcc: h["x-probe-xfcc"] };
}

const FORGED = { "x-forwarded-for": "198.51.100.50", "x-envoy-external-address": "198.51.100.51" };

mtls("a filter in an mTLS sidecar sees the peer's verified URI SAN, and source.address taken from XFF with port 0", async (s, mesh) => {
  const { gatewayPort, sidecarPort } = await meshChain(s, mesh, probeFilter(), "PERMISSIVE");
  const viaGateway = seen(await get("127.0.0.1", gatewayPort, "/api/echo", { from: "127.0.0.30", headers: FORGED }));
  const crawler = seen(await tlsGet(sidecarPort, "/api/echo", { from: "127.0.0.31", workload: mesh.crawler, ca: mesh.sidecar.ca, headers: FORGED }));
  const crawlerNoXff = seen(await tlsGet(sidecarPort, "/api/echo", { from: "127.0.0.31", workload: mesh.crawler, ca: mesh.sidecar.ca }));
  const plaintextXff = seen(await get("127.0.0.1", sidecarPort, "/api/echo", { from: "127.0.0.32", headers: FORGED }));
  const plaintext = seen(await get("127.0.0.1", sidecarPort, "/api/echo", { from: "127.0.0.33" }));
  const xfcc = (by: string, uri: string) => new RegExp(`^By=${by};Hash=[0-9a-f]{64};URI=${uri}$`);
  // Through the gateway: the peer is the gateway's certificate; source.address is the client the
  // gateway appended to XFF, with port 0 (Envoy replaced the TCP peer from XFF before any filter ran).
  assert.deepEqual({ ...viaGateway, xfcc: "" }, { sourceAddress: "127.0.0.30:0", mtls: "true", uriSan: GATEWAY_ID, uriSanResult: "0", xfcc: "" });
  assert.match(viaGateway.xfcc, xfcc(SIDECAR_ID, GATEWAY_ID));
  // A workload calling directly: its own identity, and whatever XFF it sends becomes source.address.
  assert.deepEqual({ ...crawler, xfcc: "" }, { sourceAddress: "198.51.100.50:0", mtls: "true", uriSan: CRAWLER_ID, uriSanResult: "0", xfcc: "" });
  assert.match(crawler.xfcc, xfcc(SIDECAR_ID, CRAWLER_ID));
  assert.match(crawlerNoXff.sourceAddress, /^127\.0\.0\.31:[1-9]\d*$/, "without XFF: the TCP peer with its real port");
  assert.equal(crawlerNoXff.uriSan, CRAWLER_ID);
  // Plaintext (PERMISSIVE chain): no identity (the lookup answers NotFound = 1), no XFCC; with XFF the
  // TCP peer is hidden the same way, and no attribute exposes it.
  assert.deepEqual(plaintextXff, { sourceAddress: "198.51.100.50:0", mtls: "false", uriSan: "-", uriSanResult: "1", xfcc: "-" });
  assert.match(plaintext.sourceAddress, /^127\.0\.0\.33:[1-9]\d*$/);
  assert.deepEqual({ ...plaintext, sourceAddress: "" }, { sourceAddress: "", mtls: "false", uriSan: "-", uriSanResult: "1", xfcc: "-" });
});

const LIMIT = { rules: { rate: { limit: { requests: 5, per: "1m" }, ban: "1m" } } };

/** Statuses of `n` sequential requests made by `send(i)`. */
async function statuses(n: number, send: (i: number) => Promise<Reply>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push((await send(i)).status);
  return out;
}

const BANNED_AT_5 = [200, 200, 200, 200, 200, 403, 403];

mtls("scenario 1: an external client through the gateway is keyed on its real address and banned at the limit; forged headers change nothing", async (s, mesh) => {
  const { gatewayPort, sidecar } = await meshChain(s, mesh, guardFilter({ clientAddress: { source: "auto" }, ...LIMIT }));
  const viaGateway = (from: string, headers: Record<string, string> = {}) => get("127.0.0.1", gatewayPort, "/api/items", { from, headers });
  assert.deepEqual(await statuses(7, () => viaGateway("127.0.0.21")), BANNED_AT_5);
  assert.deepEqual(await statuses(3, () => viaGateway("127.0.0.22")), [200, 200, 200], "another client behind the same gateway");
  assert.deepEqual(await statuses(2, (i) => viaGateway("127.0.0.21", { "x-forwarded-for": `198.51.100.${i}`, "x-envoy-external-address": `198.51.100.${i + 10}` })), [403, 403], "forged headers do not escape");
  assert.deepEqual(await statuses(3, () => viaGateway("127.0.0.23", { "x-forwarded-for": "127.0.0.22", "x-envoy-external-address": "127.0.0.22" })), [200, 200, 200]);
  assert.deepEqual(await statuses(2, () => viaGateway("127.0.0.22")), [200, 200], "framing attempt left 127.0.0.22 under its limit");
  assert.deepEqual(banLines(sidecar.log()).map((b) => `${b.address} ${b.rule}`), ["127.0.0.21 rate"]);
  await assertMetrics(sidecar, {
    traffic_guard_requests_total: 17,
    traffic_guard_denied_rate_total: 1,
    traffic_guard_denied_banned_total: 3,
    traffic_guard_bans_rate_total: 1,
    traffic_guard_tracked_clients: 3,
  });
});

mtls("scenario 2: a workload calling the sidecar directly with rotating forged headers is banned at the limit under its identity", async (s, mesh) => {
  const { sidecar, sidecarPort } = await meshChain(s, mesh, guardFilter({ clientAddress: { source: "auto" }, ...LIMIT }));
  const got = await statuses(7, (i) => tlsGet(sidecarPort, "/api/items", {
    from: "127.0.0.40", workload: mesh.crawler, ca: mesh.sidecar.ca,
    headers: { "x-forwarded-for": `203.0.113.${i + 1}`, "x-envoy-external-address": `203.0.113.${i + 101}` },
  }));
  assert.deepEqual(got, BANNED_AT_5);
  const bans = banLines(sidecar.log());
  assert.deepEqual(bans.map((b) => `${b.address} ${b.rule} ${b.limit} ${b.strike}`), [`${CRAWLER_ID} rate 5/60s 1`]);
  await assertMetrics(sidecar, {
    traffic_guard_requests_total: 7,
    traffic_guard_denied_rate_total: 1,
    traffic_guard_denied_banned_total: 1,
    traffic_guard_bans_rate_total: 1,
    traffic_guard_untrusted_address_headers_total: 7,
    traffic_guard_tracked_clients: 1,
  });
});

mtls("scenario 3: a workload naming a customer's address in forged headers for hundreds of requests never gets that customer banned", async (s, mesh) => {
  const { gatewayPort, sidecar, sidecarPort } = await meshChain(s, mesh, guardFilter({ clientAddress: { source: "auto" }, ...LIMIT }));
  const customer = "127.0.0.50";
  const framing = { "x-forwarded-for": customer, "x-envoy-external-address": customer };
  const got = await statuses(200, () => tlsGet(sidecarPort, "/api/items", { from: "127.0.0.41", workload: mesh.crawler, ca: mesh.sidecar.ca, headers: framing }));
  assert.deepEqual({ 200: got.filter((c) => c === 200).length, 403: got.filter((c) => c === 403).length }, { 200: 5, 403: 195 });
  assert.deepEqual(await statuses(5, () => get("127.0.0.1", gatewayPort, "/api/items", { from: customer })), [200, 200, 200, 200, 200], "the customer keeps its own full limit");
  assert.deepEqual(banLines(sidecar.log()).map((b) => b.address), [CRAWLER_ID]);
  await assertMetrics(sidecar, {
    traffic_guard_requests_total: 205,
    traffic_guard_denied_rate_total: 1,
    traffic_guard_denied_banned_total: 194,
    traffic_guard_bans_rate_total: 1,
    traffic_guard_untrusted_address_headers_total: 200,
    traffic_guard_tracked_clients: 2,
  });
});

mtls("scenario 4: a client workload using Go-http-client at 3 requests a second for 30 s is never blocked under the default policy", async (s, mesh) => {
  const { sidecar, sidecarPort } = await meshChain(s, mesh, guardFilter(""));
  const got: number[] = [];
  const start = Date.now();
  for (let i = 0; i < 90; i++) {
    const due = start + (i * 1000) / 3;
    if (due > Date.now()) await new Promise((r) => setTimeout(r, due - Date.now()));
    got.push((await tlsGet(sidecarPort, "/api/items", { from: "127.0.0.42", workload: mesh.frontend, ca: mesh.sidecar.ca, headers: { "user-agent": "Go-http-client/1.1" } })).status);
  }
  assert.ok(Date.now() - start >= 29_000, "the requests spanned 30 s");
  assert.deepEqual(got, new Array(90).fill(200));
  assert.deepEqual(banLines(sidecar.log()), []);
  await assertMetrics(sidecar, { traffic_guard_requests_total: 90, traffic_guard_tracked_clients: 1 });
});

mtls("scenario 5: a plaintext caller on a PERMISSIVE listener has its address headers ignored and counted", async (s, mesh) => {
  const { sidecar, sidecarPort } = await meshChain(s, mesh, guardFilter({ clientAddress: { source: "auto" }, ...LIMIT }), "PERMISSIVE");
  const plain = (from: string, headers: Record<string, string>) => get("127.0.0.1", sidecarPort, "/api/items", { from, headers });
  // x-envoy-external-address alone: Envoy leaves source.address the TCP peer, which is the key.
  assert.deepEqual(await statuses(7, (i) => plain("127.0.0.60", { "x-envoy-external-address": `198.51.100.${i + 1}` })), BANNED_AT_5);
  // With XFF, Envoy replaces source.address (port 0) and hides the TCP peer: every such caller shares one key.
  assert.deepEqual(await statuses(7, (i) => plain(`127.0.0.${61 + (i % 2)}`, { "x-forwarded-for": `198.51.100.${i + 20}` })), BANNED_AT_5);
  assert.deepEqual(banLines(sidecar.log()).map((b) => b.address), ["127.0.0.60", "plaintext-peer-behind-x-forwarded-for"]);
  await assertMetrics(sidecar, {
    traffic_guard_requests_total: 14,
    traffic_guard_denied_rate_total: 2,
    traffic_guard_denied_banned_total: 2,
    traffic_guard_bans_rate_total: 2,
    traffic_guard_untrusted_address_headers_total: 14,
    traffic_guard_tracked_clients: 2,
  });
});

mtls("scenario 6: meshCallers exempt never counts a workload; meshCallers address keys it on its address", async (s, mesh) => {
  const exempt = await meshChain(s, mesh, guardFilter({ clientAddress: { source: "auto", meshCallers: "exempt" }, ...LIMIT }));
  const crawler = (port: number, from: string) => tlsGet(port, "/api/items", { from, workload: mesh.crawler, ca: mesh.sidecar.ca });
  assert.deepEqual(await statuses(8, () => crawler(exempt.sidecarPort, "127.0.0.70")), new Array(8).fill(200));
  await assertMetrics(exempt.sidecar, { traffic_guard_requests_total: 8 });

  const byAddress = await meshChain(s, mesh, guardFilter({ clientAddress: { source: "auto", meshCallers: "address" }, ...LIMIT }));
  assert.deepEqual(await statuses(7, () => crawler(byAddress.sidecarPort, "127.0.0.71")), BANNED_AT_5);
  assert.deepEqual(await statuses(2, () => crawler(byAddress.sidecarPort, "127.0.0.72")), [200, 200], "the same workload from another address is another client");
  assert.deepEqual(banLines(byAddress.sidecar.log()).map((b) => b.address), ["127.0.0.71"]);
  await assertMetrics(byAddress.sidecar, {
    traffic_guard_requests_total: 9,
    traffic_guard_denied_rate_total: 1,
    traffic_guard_denied_banned_total: 1,
    traffic_guard_bans_rate_total: 1,
    traffic_guard_tracked_clients: 2,
  });
});

mtls("behind an mTLS gateway that counts clients as internal (meshNetworks), the xff source still keys on the real client", async (s, mesh) => {
  // Such a gateway lets an internal client's own x-envoy-external-address through (see topology-b's
  // probe), so `auto` would believe it; `xff` takes the entry the gateway appended.
  const { gatewayPort, sidecar } = await meshChain(s, mesh, guardFilter({ clientAddress: { source: "xff", trustedHops: 0 }, ...LIMIT }), "STRICT", ["127.0.0.0/8"]);
  const send = (from: string, n: number, headers: Record<string, string> = {}) => statuses(n, () => get("127.0.0.1", gatewayPort, "/api/items", { from, headers }));
  assert.deepEqual(await send("127.0.0.26", 7, { "x-envoy-external-address": "127.0.0.27" }), BANNED_AT_5);
  assert.deepEqual(await send("127.0.0.26", 1, { "x-envoy-external-address": "198.51.100.3" }), [403]);
  assert.deepEqual(await send("127.0.0.27", 3), [200, 200, 200]);
  assert.deepEqual(banLines(sidecar.log()).map((b) => b.address), ["127.0.0.26"]);
  await assertMetrics(sidecar, {
    traffic_guard_requests_total: 11,
    traffic_guard_denied_rate_total: 1,
    traffic_guard_denied_banned_total: 2,
    traffic_guard_bans_rate_total: 1,
    traffic_guard_tracked_clients: 2,
  });
});

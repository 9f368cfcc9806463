// Hostile headers against a real Envoy: thousands of requests whose User-Agent and x-forwarded-for
// together come close to Envoy's 60 KiB request-header limit, some streams held open, must not grow
// Envoy's resident memory beyond a bound (Wasm memory never shrinks), must all succeed, and a normal
// request afterwards still gets 200.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createServer, request, Agent, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { edgeSpec } from "../../dev/envoy-topologies.ts";
import { e2e, get, guardFilter, assertMetrics } from "./harness.ts";

const MiB = 1 << 20;
/** Bound on Envoy's RSS growth over the run (the filter's budget); Envoy itself grows by about 4-5 MiB on this traffic without any filter. */
const RSS_BOUND_MIB = 16;
const REQUESTS = 6000;
const HELD = 30;

/** A request held open by the upstream until released: no client-side timeout. Resolves to its status. */
function held(port: number, path: string, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path, headers, agent: false }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
    });
    req.on("error", reject);
    req.end();
  });
}

function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  if (!m) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(m[1]) * 1024;
}

e2e("thousands of requests with headers near Envoy's 60 KiB limit, 30 held open, grow Envoy's RSS by a bounded amount and all succeed", async (s, t) => {
  // An upstream that accepts large request headers and holds /hold requests until released.
  const parked: ServerResponse[] = [];
  const upstream = createServer({ maxHeaderSize: 256 * 1024 }, (req, res) => {
    if (req.url?.startsWith("/hold")) parked.push(res);
    else res.end("ok");
  });
  await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", r));
  try {
    const port = (upstream.address() as AddressInfo).port;
    const spec = edgeSpec({
      upstreamPort: port,
      filters: [guardFilter({
        clientAddress: { source: "xff", trustedHops: 1 },
        rules: {
          userAgent: { enabled: true, match: ["*sqlmap*", "curl/*", "*nikto*"], limit: { requests: 1000000, per: "60s" }, ban: "1m" },
          rate: { enabled: true, limit: { requests: 1000000, per: "60s" }, ban: "1m" },
          errors: { enabled: true, statuses: [404], limit: { requests: 1000000, per: "60s" }, ban: "1m" },
        },
      })],
    });
    // Held requests outlive Envoy's default 15 s route timeout on a loaded machine.
    const route = spec.listeners[0].route;
    if (route.kind === "cluster") route.timeoutSeconds = 300;
    const envoy = await s.envoy({ label: "memory", concurrency: 1, spec });
    const pid = envoy.child.pid!;
    const envoyPort = envoy.ports.get("edge")!.ipv4!;
    const ua = "Mozilla/5.0 " + "x".repeat(28_000);
    const xffOf = (i: number) => "198.51.100.77, ".repeat(1850) + `203.0.${(i >> 8) & 255}.${i & 255}`;
    const agent = new Agent({ keepAlive: true, maxSockets: 16 });
    const one = async (i: number, path = "/") => {
      const r = await get("127.0.0.1", envoyPort, path, { agent, headers: { "user-agent": ua, "x-forwarded-for": xffOf(i) } });
      assert.equal(r.status, 200, `request ${i} got ${r.status}: ${r.body.slice(0, 200)}`);
    };
    // Warm up: Envoy's own pools, the VM, the connection set.
    for (let i = 0; i < 200; i += 16) await Promise.all(Array.from({ length: 16 }, (_, k) => one(i + k)));
    const before = rssBytes(pid);
    const holds: Promise<number>[] = [];
    for (let i = 0; i < REQUESTS; i += 16) {
      if (holds.length < HELD && i % 160 === 0) {
        holds.push(held(envoyPort, `/hold/${i}`, { "user-agent": ua, "x-forwarded-for": xffOf(i) }));
      }
      await Promise.all(Array.from({ length: 16 }, (_, k) => one(i + k)));
    }
    const during = rssBytes(pid);
    while (parked.length < holds.length) await new Promise((r) => setTimeout(r, 20));
    for (const res of parked) res.end("released");
    for (const status of await Promise.all(holds)) assert.equal(status, 200, "a held request");
    const after = rssBytes(pid);
    agent.destroy();
    const grown = Math.max(during, after) - before;
    t.diagnostic(`Envoy VmRSS ${(before / MiB).toFixed(1)} MiB -> ${(during / MiB).toFixed(1)} MiB with ${HELD} held open -> ${(after / MiB).toFixed(1)} MiB; grown ${(grown / MiB).toFixed(1)} MiB`);
    console.log(`memory e2e: Envoy VmRSS before ${(before / MiB).toFixed(1)} MiB, during ${(during / MiB).toFixed(1)} MiB, after ${(after / MiB).toFixed(1)} MiB, grown ${(grown / MiB).toFixed(1)} MiB`);
    assert.ok(grown < RSS_BOUND_MIB * MiB, `Envoy's RSS grew by ${(grown / MiB).toFixed(1)} MiB (bound ${RSS_BOUND_MIB} MiB)`);
    const normal = await get("127.0.0.1", envoyPort, "/", {});
    assert.equal(normal.status, 200);
    // 6000 distinct forwarded addresses, plus the normal request's peer (it has no forwarded entry
    // beyond the trusted hop, so it falls back to the peer address).
    await assertMetrics(envoy, {
      traffic_guard_requests_total: 208 + REQUESTS + holds.length + 1,
      traffic_guard_tracked_clients: REQUESTS + 1,
      traffic_guard_client_address_fallbacks_total: 1,
    });
  } finally {
    await new Promise<void>((r) => upstream.close(() => r()));
  }
});

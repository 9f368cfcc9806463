// gRPC errors through a real Envoy: an HTTP/2 upstream (node:http2, speaking the gRPC framing of
// statuses only) answers NOT_FOUND in the grpc-status trailer, or UNAVAILABLE in a trailers-only
// response; with rules.errors.statuses ["grpc:5", "grpc:16"] each such prober is banned like an HTTP
// prober, while OK calls never count.
import assert from "node:assert/strict";
import { connect, createServer, constants, type ClientHttp2Session } from "node:http2";
import type { AddressInfo } from "node:net";
import { edgeSpec } from "../../dev/envoy-topologies.ts";
import { e2e, guardFilter, guardMetrics, banLines, portOf } from "./harness.ts";

/** What the client saw of one gRPC call. */
interface Call {
  status: number;
  grpcStatus?: string;
}

/** One unary call with an empty body over an existing h2c session. */
function call(session: ClientHttp2Session, path: string): Promise<Call> {
  return new Promise((resolve, reject) => {
    const req = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers" });
    let status = 0;
    let grpcStatus: string | undefined;
    req.on("response", (h) => {
      status = Number(h[":status"]);
      if (h["grpc-status"] !== undefined) grpcStatus = String(h["grpc-status"]);
    });
    req.on("trailers", (t) => {
      if (t["grpc-status"] !== undefined) grpcStatus = String(t["grpc-status"]);
    });
    req.on("data", () => {});
    req.on("end", () => {});
    req.on("close", () => (status === 0 ? reject(new Error(`${path}: stream closed without a response (code ${req.rstCode})`)) : resolve({ status, grpcStatus })));
    req.on("error", reject);
    req.setTimeout(10_000, () => req.close(constants.NGHTTP2_CANCEL));
    req.end();
  });
}

e2e("gRPC probers answered NOT_FOUND in trailers or UNAVAILABLE trailers-only are banned; OK calls never count", async (s) => {
  let reached = 0;
  const upstream = createServer();
  // Envoy keeps its HTTP/2 connection to the upstream open; close() waits for it, so it is destroyed.
  const upstreamSessions = new Set<import("node:http2").ServerHttp2Session>();
  upstream.on("session", (sess) => upstreamSessions.add(sess));
  upstream.on("stream", (stream, headers) => {
    reached++;
    const path = String(headers[":path"]);
    stream.on("data", () => {});
    if (path.endsWith("/Unavailable")) {
      // Trailers-only: grpc-status in the only header block, which ends the stream.
      stream.respond({ ":status": 200, "content-type": "application/grpc", "grpc-status": "14" }, { endStream: true });
      return;
    }
    stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
    stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": path.endsWith("/Missing") ? "5" : "0" }));
    stream.end();
  });
  await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", r));
  const sessions: ClientHttp2Session[] = [];
  try {
    const spec = edgeSpec({
      upstreamPort: (upstream.address() as AddressInfo).port,
      filters: [guardFilter({
        clientAddress: { source: "peer" },
        rules: {
          rate: { enabled: false },
          userAgent: { enabled: false },
          errors: { enabled: true, statuses: ["grpc:5", "grpc:14"], limit: { requests: 3, per: "1m" }, ban: "10m" },
        },
      })],
    });
    const route = spec.listeners[0].route;
    assert.equal(route.kind, "cluster");
    if (route.kind === "cluster") route.http2 = true;
    const envoy = await s.envoy({ label: "grpc", concurrency: 1, spec });
    const url = `http://127.0.0.1:${portOf(envoy, "edge")}`;
    const session = (from: string) => {
      const c = connect(url, { localAddress: from } as object);
      c.on("error", () => {});
      sessions.push(c);
      return c;
    };
    const a = session("127.0.0.2");
    const b = session("127.0.0.3");

    for (let i = 0; i < 10; i++) assert.deepEqual(await call(a, "/pkg.Store/Get"), { status: 200, grpcStatus: "0" }, `OK call ${i + 1}`);
    for (let i = 0; i < 4; i++) assert.deepEqual(await call(a, "/pkg.Store/Missing"), { status: 200, grpcStatus: "5" }, `NOT_FOUND ${i + 1}`);
    for (let i = 0; i < 4; i++) assert.deepEqual(await call(b, "/pkg.Store/Unavailable"), { status: 200, grpcStatus: "14" }, `UNAVAILABLE ${i + 1}`);
    const before = reached;
    // Envoy turns the filter's 403 local reply to a gRPC request into a trailers-only response with
    // grpc-status 7 (PERMISSION_DENIED), the mapping of HTTP 403.
    for (const c of [a, b]) {
      const denied = await call(c, "/pkg.Store/Get");
      assert.ok(denied.status === 403 || denied.grpcStatus === "7", `banned client denied, got ${JSON.stringify(denied)}`);
    }
    assert.equal(reached, before, "denied calls never reached the upstream");

    const bans = banLines(envoy.log());
    assert.deepEqual(bans.map((l) => `${l.address} ${l.rule} ${l.limit}`).sort(), ["127.0.0.2 errors 3/60s", "127.0.0.3 errors 3/60s"]);
    const { values } = await guardMetrics(envoy);
    assert.equal(values.get("traffic_guard_requests_total"), 20);
    assert.equal(values.get("traffic_guard_bans_errors_total"), 2);
    assert.equal(values.get("traffic_guard_internal_errors_total"), 0);
  } finally {
    for (const c of sessions) c.destroy();
    for (const sess of upstreamSessions) sess.destroy();
    await new Promise<void>((r) => upstream.close(() => r()));
  }
});

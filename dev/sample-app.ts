/**
 * The small upstream application that Envoy fronts in the end-to-end tests and the demo: a real
 * Node `http` server on loopback that answers 200 on `/`, `/api/*` and static paths
 * (`/static/*`, `/assets/*`, `/index.html`, `/robots.txt`) and 404 everywhere else.
 * `/api/echo` answers with the request headers it received (how the tests observe what a proxy
 * forwarded). It counts what reached it, so tests can prove that blocked requests never did.
 */
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";

/** A running sample app. */
export interface SampleApp {
  /** Bound port on 127.0.0.1. */
  port: number;
  /** Requests that reached the app, in arrival order (path and the forwarded headers). */
  seen: { path: string; headers: IncomingHttpHeaders }[];
  /** Stops accepting and closes idle keep-alive connections. */
  close(): Promise<void>;
}

/** True for the paths the sample app serves with 200. */
export function servesPath(path: string): boolean {
  const p = path.split("?")[0];
  return (
    p === "/" ||
    p === "/index.html" ||
    p === "/robots.txt" ||
    p.startsWith("/api/") ||
    p === "/api" ||
    p.startsWith("/static/") ||
    p.startsWith("/assets/")
  );
}

const PAGE = `<!doctype html>
<html><head><title>traffic-guard demo</title><link rel="stylesheet" href="/static/site.css"></head>
<body><h1>traffic-guard demo app</h1><p>This page is served through Envoy with the traffic-guard filter.</p>
<script src="/static/app.js"></script></body></html>
`;

/** Starts the sample app on 127.0.0.1 (port 0 = ephemeral). */
export async function startSampleApp(port = 0): Promise<SampleApp> {
  const seen: SampleApp["seen"] = [];
  const server: Server = createServer((req, res) => {
    const path = req.url ?? "/";
    seen.push({ path, headers: req.headers });
    if (path.startsWith("/api/echo")) {
      const body = JSON.stringify({ path, headers: req.headers, peer: req.socket.remoteAddress });
      res.writeHead(200, { "content-type": "application/json" }).end(body);
    } else if (!servesPath(path)) {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
    } else if (path.startsWith("/api")) {
      res.writeHead(200, { "content-type": "application/json" }).end(`{"ok":true,"path":${JSON.stringify(path)}}\n`);
    } else if (path === "/" || path === "/index.html") {
      res.writeHead(200, { "content-type": "text/html" }).end(PAGE);
    } else {
      res.writeHead(200, { "content-type": "text/plain" }).end(`static ${path}\n`);
    }
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

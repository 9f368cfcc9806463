/**
 * The small upstream application that Envoy fronts in the end-to-end tests and the demo: a real
 * Node `http` server on loopback that answers 200 on `/`, `/api/*` and static paths
 * (`/static/*`, `/assets/*`, `/index.html`, `/robots.txt`) and 404 everywhere else.
 * `/api/echo` answers with the request headers it received (how the tests observe what a proxy
 * forwarded). It counts what reached it, so tests can prove that blocked requests never did.
 *
 * The shop behaves like a real site for the behaviour rules: `/shop` and `/shop/item/<n>` are HTML
 * pages that set a `session` cookie when the request carries none, link to other items, load
 * `/static/shop.css` and `/static/shop.js`, and whose script then calls `/api/shop/item/<n>` and
 * `/api/shop/cart` (a browser makes those calls, a page crawler does not); the API answers say
 * whether the session cookie came back. `/loop` redirects to
 * itself (302) forever.
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

/** True for the plain paths the sample app serves with 200 (the shop and `/loop` are answered before). */
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

/** Name of the session cookie the shop pages set. */
export const SESSION_COOKIE = "session";

/** How many items the shop lists; `/shop/item/1` to `/shop/item/<SHOP_ITEMS>` exist, each linking to the next. */
export const SHOP_ITEMS = 50;

/**
 * A shop page, with a stylesheet and a script as a real site has. The script fetches the item's API
 * resource and the cart, then marks the document `data-api="done"` (or `"failed"`), so a browser test
 * can wait for the follow-up calls to finish. `rel=icon` is inline so a browser asks for no
 * /favicon.ico (a 404 the errors rule would count).
 */
function shopPage(item: number): string {
  const next = (item % SHOP_ITEMS) + 1;
  return `<!doctype html>
<html><head><title>shop item ${item}</title><link rel="icon" href="data:,"><link rel="stylesheet" href="/static/shop.css"></head>
<body data-item="${item}"><h1>Item ${item}</h1><p id="price">loading</p>
<a id="next" href="/shop/item/${next}">next item</a> <a href="/shop">all items</a>
<script src="/static/shop.js"></script></body></html>
`;
}

/** The shop pages' script: their follow-up API calls. */
const SHOP_JS = `const item = document.body.dataset.item;
Promise.all([fetch("/api/shop/item/" + item).then((r) => r.json()), fetch("/api/shop/cart").then((r) => r.json())])
  .then(([it, cart]) => { document.getElementById("price").textContent = it.path + " session=" + it.session + " cart=" + cart.session; document.documentElement.dataset.api = "done"; })
  .catch(() => { document.documentElement.dataset.api = "failed"; });
`;

/** The shop pages' stylesheet. */
const SHOP_CSS = "body { font-family: sans-serif; }\n";

/** The value of the session cookie a request carries, or undefined. */
function sessionOf(headers: IncomingHttpHeaders): string | undefined {
  for (const part of (headers.cookie ?? "").split(";")) {
    const [name, value] = part.trim().split("=");
    if (name === SESSION_COOKIE && value) return value;
  }
  return undefined;
}

let sessions = 0;

/** Starts the sample app on 127.0.0.1 (port 0 = ephemeral). */
export async function startSampleApp(port = 0): Promise<SampleApp> {
  const seen: SampleApp["seen"] = [];
  const server: Server = createServer((req, res) => {
    const path = req.url ?? "/";
    seen.push({ path, headers: req.headers });
    if (path === "/loop" || path.startsWith("/loop?")) {
      res.writeHead(302, { location: "/loop", "content-type": "text/plain" }).end("redirecting\n");
    } else if (path.startsWith("/api/shop/")) {
      const body = JSON.stringify({ ok: true, path, session: sessionOf(req.headers) !== undefined });
      res.writeHead(200, { "content-type": "application/json" }).end(body);
    } else if (path === "/shop" || path.startsWith("/shop/")) {
      const m = /^\/shop(?:\/item\/(\d+))?\/?(?:\?.*)?$/.exec(path);
      const item = m ? Number(m[1] ?? 1) : 0;
      if (item < 1 || item > SHOP_ITEMS) {
        res.writeHead(404, { "content-type": "text/plain" }).end("no such item\n");
        return;
      }
      const headers: Record<string, string> = { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" };
      if (!sessionOf(req.headers)) headers["set-cookie"] = `${SESSION_COOKIE}=s${++sessions}.${Date.now().toString(36)}; Path=/; HttpOnly; SameSite=Lax`;
      res.writeHead(200, headers).end(shopPage(item));
    } else if (path === "/static/shop.js") {
      res.writeHead(200, { "content-type": "text/javascript", "cache-control": "no-cache" }).end(SHOP_JS);
    } else if (path === "/static/shop.css") {
      res.writeHead(200, { "content-type": "text/css", "cache-control": "no-cache" }).end(SHOP_CSS);
    } else if (path.startsWith("/api/echo")) {
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

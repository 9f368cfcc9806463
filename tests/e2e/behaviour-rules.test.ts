// The behaviour rules in real Envoy against real clients: headless Chromium browsing the sample app's
// shop (cookies kept, page scripts run) next to scripted clients that behave the way each rule targets.
// Chromium always comes from 127.0.0.1; the scripted clients from 127.0.0.2 and above.
import assert from "node:assert/strict";
import { edgeSpec } from "../../dev/envoy-topologies.ts";
import { SESSION_COOKIE, SHOP_ITEMS } from "../../dev/sample-app.ts";
import { follow, launchChromium, visit } from "./browser.ts";
import { assertMetrics, banLines, e2e, guardFilter, portOf } from "./harness.ts";

e2e(
  "Chromium through Envoy with the default configuration loads the shop pages, runs their script and sends the session cookie back",
  async (s, t) => {
    const app = await s.app();
    const envoy = await s.envoy({
      label: "chromium-default",
      concurrency: 2,
      spec: edgeSpec({ upstreamPort: app.port, filters: [guardFilter({ clientAddress: { source: "peer" } })] }),
    });
    const base = `http://127.0.0.1:${portOf(envoy, "edge")}`;
    const browser = await launchChromium(s);
    t.diagnostic(`browser: ${await browser.version()}`);
    const page = await browser.newPage();
    const first = await visit(page, `${base}/shop/item/1`);
    assert.deepEqual(first, { status: 200, api: "done", text: "/api/shop/item/1 session=true cart=true" }, "the first page's own API calls already carry the cookie it set");
    for (let i = 2; i <= 5; i++) {
      assert.deepEqual(await follow(page, "#next"), { status: 200, api: "done", text: `/api/shop/item/${i} session=true cart=true` });
    }

    // What reached the app: five navigations, each followed by its two API calls, all from one session.
    const paths = app.seen.map((r) => r.path);
    assert.deepEqual(paths.filter((p) => p.startsWith("/shop")), ["/shop/item/1", "/shop/item/2", "/shop/item/3", "/shop/item/4", "/shop/item/5"]);
    assert.equal(paths.filter((p) => p.startsWith("/api/shop/")).length, 10);
    assert.equal(paths.length, 15, `nothing else was requested: ${paths.join(" ")}`);
    const navigations = app.seen.filter((r) => r.path.startsWith("/shop"));
    assert.equal(navigations[0].headers.cookie, undefined, "the first page load has no cookie yet");
    const cookies = new Set(app.seen.slice(1).map((r) => r.headers.cookie));
    assert.equal(cookies.size, 1, "one session for the whole visit");
    assert.match([...cookies][0] ?? "", new RegExp(`^${SESSION_COOKIE}=s\\d+\\.`));
    // The headers the behaviour rules match on, as a real browser sends them.
    assert.equal(navigations[1].headers["sec-fetch-mode"], "navigate");
    assert.match(navigations[1].headers.accept ?? "", /^text\/html/);
    const api = app.seen.find((r) => r.path.startsWith("/api/shop/"));
    assert.equal(api?.headers["sec-fetch-mode"], "cors");
    assert.ok(SHOP_ITEMS >= 30, "the shop has enough items for the crawler tests");

    assert.deepEqual(banLines(envoy.log()), []);
    await assertMetrics(envoy, { traffic_guard_requests_total: 15, traffic_guard_tracked_clients: 1 });
  },
  ["chromium"],
);

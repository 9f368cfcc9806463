// The behaviour rules in real Envoy against real clients: headless Chromium browsing the sample app's
// shop (cookies kept, page scripts run) next to scripted clients that behave the way each rule targets.
// Chromium always comes from 127.0.0.1; the scripted clients from 127.0.0.2 and above.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { setTimeout as sleep } from "node:timers/promises";
import { edgeSpec } from "../../dev/envoy-topologies.ts";
import { SESSION_COOKIE, SHOP_ITEMS } from "../../dev/sample-app.ts";
import type { Page } from "puppeteer-core";
import { follow, launchChromium, visit } from "./browser.ts";
import { assertMetrics, banLines, BROWSER_UA, curl, e2e, get, guardFilter, portOf, guardMetrics, ruleCounters, statusCounts } from "./harness.ts";

const execFileAsync = promisify(execFile);

/** The presets' limits, as docs/rules.md documents them (`limit.requests`: that many pass, the next is the violation). */
const PRESET = {
  noCookies: { requests: 20 },
  redirectLoop: { requests: 50 },
  sensitiveFiles: { requests: 3 },
  crawlNonStatic: { requests: 40 },
};

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

    // What reached the app: five navigations, each followed by its stylesheet, its script and the
    // script's two API calls, all in one session.
    const paths = app.seen.map((r) => r.path);
    assert.deepEqual(paths.filter((p) => p.startsWith("/shop")), ["/shop/item/1", "/shop/item/2", "/shop/item/3", "/shop/item/4", "/shop/item/5"]);
    assert.equal(paths.filter((p) => p.startsWith("/static/shop.")).length, 10, "no-cache assets are fetched on every page");
    assert.equal(paths.filter((p) => p.startsWith("/api/shop/")).length, 10);
    assert.equal(paths.length, 25, `nothing else was requested: ${paths.join(" ")}`);
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

    assert.deepEqual(banLines(envoy.log()), []);
    await assertMetrics(envoy, { traffic_guard_requests_total: 25, traffic_guard_tracked_clients: 1 });
  },
  ["chromium"],
);

/** The headers a browser sends on a top-level page load, which a disguised crawler copies. */
const NAVIGATION = { accept: "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "sec-fetch-mode": "navigate", "sec-fetch-dest": "document" };

/**
 * A page crawler: loads `/shop/item/1` and follows each page's "next item" link, sending a browser's
 * navigation headers but never the API calls the page's script would make. Returns each page's status.
 */
async function crawl(port: number, from: string, pages: number, headers: Record<string, string> = NAVIGATION): Promise<number[]> {
  const statuses: number[] = [];
  let path = "/shop/item/1";
  for (let i = 0; i < pages; i++) {
    const r = await get("127.0.0.1", port, path, { from, headers });
    statuses.push(r.status);
    path = /id="next" href="([^"]+)"/.exec(r.body)?.[1] ?? `/shop/item/${(i % SHOP_ITEMS) + 2}`;
  }
  return statuses;
}

/** Reads Chromium through `pages` shop pages, clicking "next item" each time; every visit must fully succeed. */
async function browseShop(page: Page, base: string, pages: number): Promise<void> {
  assert.deepEqual(await visit(page, `${base}/shop/item/1`), { status: 200, api: "done", text: "/api/shop/item/1 session=true cart=true" });
  for (let i = 2; i <= pages; i++) {
    const item = ((i - 1) % SHOP_ITEMS) + 1;
    assert.deepEqual(await follow(page, "#next"), { status: 200, api: "done", text: `/api/shop/item/${item} session=true cart=true` }, `Chromium's page ${i}`);
  }
}

e2e(
  "a crawler that loads pages without their API calls is banned by a pages-without-api rule while Chromium reading more pages never is",
  async (s) => {
    const app = await s.app();
    const rule = {
      name: "pages-without-api",
      take: { request: { method: ["GET"], header: { "sec-fetch-mode": "navigate" } } },
      give: { request: { path: ["/api/*"] } },
      limit: { requests: 10, per: "5m" },
      ban: "15m",
    };
    const envoy = await s.envoy({
      label: "pages-without-api",
      concurrency: 2,
      spec: edgeSpec({ upstreamPort: app.port, filters: [guardFilter({ clientAddress: { source: "peer" }, rules: { custom: [rule] } })] }),
    });
    const port = portOf(envoy, "edge");
    // Ten page loads fill the bucket; the eleventh is the violation and bans; the rest hit the ban.
    assert.deepEqual(await crawl(port, "127.0.0.2", 14), [...Array(10).fill(200), 403, 403, 403, 403]);
    const browser = await launchChromium(s);
    await browseShop(await browser.newPage(), `http://127.0.0.1:${port}`, 25);
    assert.deepEqual(
      banLines(envoy.log()).map((b) => [b.address, b.rule, b.seconds]),
      [["127.0.0.2", "pages-without-api", 900]],
      "only the crawler is banned, by the custom rule, for its ban",
    );
    // The eleventh page is the rule's denial; the three after it are denied as banned.
    assert.deepEqual(await ruleCounters(envoy, "pages-without-api"), { denied: 1, bans: 1 });
    await assertMetrics(envoy, { traffic_guard_requests_total: app.seen.length + 4, traffic_guard_denied_banned_total: 3, traffic_guard_tracked_clients: 2 });
  },
  ["chromium"],
);

/** curl as a scripted client in disguise: a browser's User-Agent and page Accept header, but no cookie jar. */
const DISGUISED_CURL = ["-A", BROWSER_UA, "-H", `accept: ${NAVIGATION.accept}`];

e2e(
  "curl without a cookie jar, loading the page that sets a session cookie, is banned by the no-cookies preset while Chromium with its cookies passes",
  async (s) => {
    const app = await s.app();
    const envoy = await s.envoy({
      label: "no-cookies",
      concurrency: 2,
      spec: edgeSpec({ upstreamPort: app.port, filters: [guardFilter({ clientAddress: { source: "peer" }, rules: { presets: ["no-cookies"] } })] }),
    });
    const port = portOf(envoy, "edge");
    const statuses: number[] = [];
    for (let i = 1; i <= PRESET.noCookies.requests + 3; i++) {
      statuses.push((await curl(`http://127.0.0.1:${port}/shop/item/${i}`, "127.0.0.3", DISGUISED_CURL)).status);
    }
    assert.deepEqual(statuses, [...Array(PRESET.noCookies.requests).fill(200), 403, 403, 403]);
    assert.ok(app.seen.every((r) => r.headers.cookie === undefined), "curl never sent a cookie back");
    assert.ok(app.seen.every((r) => r.path.startsWith("/shop/item/")), "and never made the pages' API calls");
    // Chromium reads more pages than curl could: only its very first load comes without the cookie.
    const browser = await launchChromium(s);
    await browseShop(await browser.newPage(), `http://127.0.0.1:${port}`, PRESET.noCookies.requests + 5);
    assert.deepEqual(banLines(envoy.log()).map((b) => [b.address, b.rule]), [["127.0.0.3", "no-cookies"]]);
    assert.deepEqual(await ruleCounters(envoy, "no-cookies"), { denied: 1, bans: 1 });
    await assertMetrics(envoy, { traffic_guard_requests_total: app.seen.length + 3, traffic_guard_denied_banned_total: 2, traffic_guard_tracked_clients: 2 });
  },
  ["curl", "chromium"],
);

e2e(
  "curl following a redirect loop is banned by the redirect-loop preset, while Chromium giving up on the loop and browsing on is not",
  async (s) => {
    const app = await s.app();
    const envoy = await s.envoy({
      label: "redirect-loop",
      concurrency: 2,
      spec: edgeSpec({ upstreamPort: app.port, filters: [guardFilter({ clientAddress: { source: "peer" }, rules: { presets: ["redirect-loop"] } })] }),
    });
    const port = portOf(envoy, "edge");
    const browser = await launchChromium(s);
    const page = await browser.newPage();
    // Chromium follows at most 20 redirects, then shows an error page; a reader then goes elsewhere.
    await assert.rejects(page.goto(`http://127.0.0.1:${port}/loop`, { timeout: 30_000 }), /ERR_TOO_MANY_REDIRECTS/);
    const chromiumRedirects = app.seen.length;
    assert.ok(chromiumRedirects >= 20 && chromiumRedirects < PRESET.redirectLoop.requests, `Chromium made ${chromiumRedirects} requests to /loop`);
    await browseShop(page, `http://127.0.0.1:${port}`, 5);

    const { stdout } = await execFileAsync(
      "curl",
      ["-sS", "-o", "/dev/null", "-L", "--max-redirs", "1000", "--interface", "127.0.0.4", "-A", BROWSER_UA, "-w", "%{http_code} %{num_redirects}", `http://127.0.0.1:${port}/loop`],
      { encoding: "utf8", timeout: 30_000 },
    );
    const [status, redirects] = stdout.trim().split(" ").map(Number);
    assert.equal(status, 403, "curl's loop ends on the ban");
    // The (N+1)-th redirect response is the violation; the request after it is refused.
    assert.equal(redirects, PRESET.redirectLoop.requests + 1, "redirects curl followed before it was refused");
    assert.deepEqual(banLines(envoy.log()).map((b) => [b.address, b.rule]), [["127.0.0.4", "redirect-loop"]]);
    // A response rule acts by banning: it denies nothing itself, the request after the ban is denied as banned.
    assert.deepEqual(await ruleCounters(envoy, "redirect-loop"), { denied: 0, bans: 1 });
    await assertMetrics(envoy, { traffic_guard_requests_total: app.seen.length + 1, traffic_guard_denied_banned_total: 1, traffic_guard_tracked_clients: 2 });
  },
  ["curl", "chromium"],
);

e2e(
  "curl probing for .env and .git files is banned by the sensitive-files preset and then refused everywhere, while Chromium reading pages is not",
  async (s) => {
    const app = await s.app();
    const envoy = await s.envoy({
      label: "sensitive-files",
      concurrency: 2,
      spec: edgeSpec({ upstreamPort: app.port, filters: [guardFilter({ clientAddress: { source: "peer" }, rules: { presets: ["sensitive-files"] } })] }),
    });
    const port = portOf(envoy, "edge");
    const probes = ["/.env", "/.git/config", "/.git/HEAD", "/app/.env", "/wp-config.php.bak"];
    const statuses: number[] = [];
    for (const p of probes) statuses.push((await curl(`http://127.0.0.1:${port}${p}`, "127.0.0.5")).status);
    const allowed = PRESET.sensitiveFiles.requests;
    assert.deepEqual(statuses, [...Array(allowed).fill(404), ...Array(probes.length - allowed).fill(403)], "probes reach the app (404) until the ban");
    const after = await curl(`http://127.0.0.1:${port}/shop/item/1`, "127.0.0.5");
    assert.equal(after.status, 403, "a banned prober gets no page either");
    assert.ok(Number(after.retryAfter) > 0, `retry-after ${after.retryAfter}`);
    assert.deepEqual(app.seen.map((r) => r.path), probes.slice(0, allowed));

    const browser = await launchChromium(s);
    await browseShop(await browser.newPage(), `http://127.0.0.1:${port}`, 5);
    assert.deepEqual(banLines(envoy.log()).map((b) => [b.address, b.rule]), [["127.0.0.5", "sensitive-files"]]);
    assert.deepEqual(await ruleCounters(envoy, "sensitive-files"), { denied: 1, bans: 1 });
    const denied = probes.length - allowed + 1;
    await assertMetrics(envoy, { traffic_guard_requests_total: app.seen.length + denied, traffic_guard_denied_banned_total: denied - 1, traffic_guard_tracked_clients: 2 });
  },
  ["curl", "chromium"],
);

e2e(
  "a client 20 % over a delay rule is held and spaced to the rule's rate with nothing denied, and past the hard limit it is banned with the configured 429",
  async (s, t) => {
    const app = await s.app();
    // 5 requests a second in bursts of 2, held for at most 2 s; the hard limit is 10 a second.
    const rule = {
      name: "slow-down",
      take: { request: {} },
      limit: { requests: 2, per: "400ms" },
      delay: { max: "2s" },
      then: { limit: { requests: 10, per: "1s" }, ban: "1m" },
    };
    const envoy = await s.envoy({
      label: "slow-down",
      concurrency: 2,
      spec: edgeSpec({
        upstreamPort: app.port,
        filters: [guardFilter({ clientAddress: { source: "peer" }, rules: { custom: [rule] }, response: { status: 429, body: "Too Many Requests\n" } })],
      }),
    });
    const port = portOf(envoy, "edge");
    const from = "127.0.0.6";
    const spacing = 200; // ms between requests at the rule's rate

    // Phase 1: an open-loop client sending 6 requests a second (20 % over) for 8 s. With the bucket full
    // at the first request, request i (from 0) may pass at (i - 1) × 200 ms; from i = 7 on that is later
    // than it was sent (i / 6 s), so it is held, for at most 1.4 s by the last one: below delay.max.
    const sendEvery = 1000 / 6;
    const n = 48;
    const start = performance.now();
    const results = await Promise.all(
      Array.from({ length: n }, async (_, i) => {
        await sleep(Math.max(0, start + i * sendEvery - performance.now()));
        const sent = performance.now() - start;
        const r = await get("127.0.0.1", port, `/api/poll/${i}`, { from });
        return { i, sent, done: performance.now() - start, status: r.status };
      }),
    );
    assert.deepEqual(statusCounts(results.map((r) => r.status)), { 200: n }, "nothing is denied below the hard limit");
    const held = results.filter((r) => r.i >= 12);
    const measured = (held[held.length - 1].done - held[0].done) / (held.length - 1);
    t.diagnostic(`response spacing while held: ${measured.toFixed(1)} ms (rule: ${spacing} ms, sent every ${sendEvery.toFixed(1)} ms)`);
    t.diagnostic(`held: ${results.map((r) => Math.round(r.done - r.sent)).join(" ")} ms`);
    assert.ok(measured >= spacing * 0.95 && measured <= spacing * 1.15, `responses spaced ${measured.toFixed(1)} ms apart, the rule's rate is one per ${spacing} ms`);
    for (const r of results.filter((x) => x.i >= 2)) {
      // Never released before its token is due (a little slack: the bucket starts at the first request's arrival).
      assert.ok(r.done >= (r.i - 1) * spacing - 50, `request ${r.i} answered at ${r.done.toFixed(0)} ms, before ${(r.i - 1) * spacing} ms`);
    }
    const lastHold = results[n - 1].done - results[n - 1].sent;
    assert.ok(lastHold > 900 && lastHold < 2_000 + 500, `the last request was held ${lastHold.toFixed(0)} ms (expected about 1 400)`);
    assert.deepEqual(banLines(envoy.log()), [], "no ban while only slowed down");
    // Requests 7 and later find the bucket empty and are held; request 6's token is due the moment it
    // is sent, so it may be held for a few ms too (and a late send may find its token already due).
    const slowed = await ruleCounters(envoy, "slow-down");
    const heldByClient = results.filter((r) => r.i >= 6).reduce((sum, r) => sum + (r.done - r.sent), 0);
    t.diagnostic(`counters after phase 1: ${JSON.stringify(slowed)}; time held as the client saw it: ${heldByClient.toFixed(0)} ms`);
    assert.equal(slowed.denied, 0);
    assert.equal(slowed.bans, 0);
    assert.ok(slowed.delayed !== undefined && slowed.delayed >= 36 && slowed.delayed <= n - 6, `held requests: ${slowed.delayed}`);
    assert.ok(
      slowed.delayed_ms !== undefined && Math.abs(slowed.delayed_ms - heldByClient) <= heldByClient * 0.15,
      `time held: ${slowed.delayed_ms} ms counted, about ${heldByClient.toFixed(0)} ms seen by the client`,
    );

    // Phase 2: the same client far over: 30 requests at once. Past the hard limit it is banned; every
    // refusal carries the configured status.
    const burst = await Promise.all(Array.from({ length: 30 }, (_, i) => get("127.0.0.1", port, `/api/burst/${i}`, { from })));
    const counts = statusCounts(burst.map((r) => r.status));
    t.diagnostic(`burst: ${JSON.stringify(counts)}`);
    assert.deepEqual(Object.keys(counts).filter((c) => c !== "200" && c !== "429"), [], "only 200 and the configured 429");
    assert.ok((counts[429] ?? 0) >= 20, `at most the hard limit's 10 pass: ${JSON.stringify(counts)}`);
    assert.ok(burst.filter((r) => r.status === 429).every((r) => r.body === "Too Many Requests\n"));
    const after = await get("127.0.0.1", port, "/", { from });
    assert.equal(after.status, 429, "the client is banned");
    assert.ok(Number(after.headers["retry-after"]) > 0, `retry-after ${after.headers["retry-after"]}`);
    assert.deepEqual(banLines(envoy.log()).map((b) => [b.address, b.rule, b.seconds]), [[from, "slow-down", 60]]);
    // Every refusal is the rule's own or one of a banned client; the hard limit started one ban.
    const final = await ruleCounters(envoy, "slow-down");
    assert.equal(final.bans, 1);
    const { values } = await guardMetrics(envoy);
    assert.equal(final.denied + (values.get("traffic_guard_denied_banned_total") ?? 0), (counts[429] ?? 0) + 1, "every 429 counted once");
    assert.equal(values.get("traffic_guard_requests_total"), n + 30 + 1);
  },
);

e2e(
  "a crawler fetching page after page without their assets is banned by the crawl-non-static preset while Chromium reading ten pages is not",
  async (s, t) => {
    const app = await s.app();
    const envoy = await s.envoy({
      label: "crawl-non-static",
      concurrency: 2,
      spec: edgeSpec({ upstreamPort: app.port, filters: [guardFilter({ clientAddress: { source: "peer" }, rules: { presets: ["crawl-non-static"] } })] }),
    });
    const port = portOf(envoy, "edge");
    // Chromium first: ten pages, each a navigation and two API calls (non-static) plus its stylesheet
    // and script (static, not counted): 30 of the bucket's 40.
    const browser = await launchChromium(s);
    await browseShop(await browser.newPage(), `http://127.0.0.1:${port}`, 10);
    const started = performance.now();
    const statuses = await crawl(port, "127.0.0.7", 60);
    const seconds = (performance.now() - started) / 1000;
    const passed = statuses.indexOf(403);
    t.diagnostic(`crawler: ${passed} pages in ${seconds.toFixed(2)} s before the ban`);
    // 40 in a burst, plus what refilled (40 per 20 s) while the crawler ran.
    assert.ok(passed >= PRESET.crawlNonStatic.requests && passed <= PRESET.crawlNonStatic.requests + Math.ceil(seconds * 2) + 1, `${passed} pages passed`);
    assert.deepEqual(statuses.slice(passed), Array(60 - passed).fill(403), "once refused, always refused");
    assert.deepEqual(banLines(envoy.log()).map((b) => [b.address, b.rule]), [["127.0.0.7", "crawl-non-static"]]);
    assert.deepEqual(await ruleCounters(envoy, "crawl-non-static"), { denied: 1, bans: 1 });
    await assertMetrics(envoy, { traffic_guard_requests_total: app.seen.length + 60 - passed, traffic_guard_denied_banned_total: 60 - passed - 1, traffic_guard_tracked_clients: 2 });
  },
  ["chromium"],
);

e2e(
  "sqlmap's User-Agent is banned by the scanner-user-agents preset on its second request while Chromium is not",
  async (s) => {
    const app = await s.app();
    const envoy = await s.envoy({
      label: "scanner-user-agents",
      concurrency: 2,
      spec: edgeSpec({ upstreamPort: app.port, filters: [guardFilter({ clientAddress: { source: "peer" }, rules: { presets: ["scanner-user-agents"] } })] }),
    });
    const port = portOf(envoy, "edge");
    const sqlmap = ["-A", "sqlmap/1.8.2#stable (https://sqlmap.org)"];
    const statuses: number[] = [];
    for (const q of ["?id=1", "?id=1'", "?id=1%20AND%201=1"]) statuses.push((await curl(`http://127.0.0.1:${port}/shop/item/1${q}`, "127.0.0.8", sqlmap)).status);
    assert.deepEqual(statuses, [200, 403, 403]);
    const browser = await launchChromium(s);
    await browseShop(await browser.newPage(), `http://127.0.0.1:${port}`, 3);
    assert.deepEqual(banLines(envoy.log()).map((b) => [b.address, b.rule, b.seconds]), [["127.0.0.8", "scanner-user-agents", 3600]]);
    assert.deepEqual(await ruleCounters(envoy, "scanner-user-agents"), { denied: 1, bans: 1 });
    await assertMetrics(envoy, { traffic_guard_requests_total: app.seen.length + 2, traffic_guard_denied_banned_total: 1, traffic_guard_tracked_clients: 2 });
  },
  ["curl", "chromium"],
);

/**
 * A real browser for the end-to-end tests: Debian's headless Chromium driven over the DevTools
 * protocol by puppeteer-core. One browser context keeps its cookies across page loads and runs each
 * page's script, so the follow-up API calls and the returned session cookie are the browser's own.
 * Chromium reaches Envoy from 127.0.0.1 (it cannot choose its source address), so tests put the
 * scripted clients they compare it with on 127.0.0.2 and above.
 */
import { spawnSync } from "node:child_process";
import puppeteer, { type Browser, type Page } from "puppeteer-core";
import type { Stack } from "./harness.ts";

/**
 * Where the Chromium binary is: `chromium` on PATH (Debian's /usr/bin/chromium). Tests declare it with
 * `e2e(name, body, ["chromium"])`, which skips without it locally and fails under CI=true.
 */
export function chromiumPath(): string | undefined {
  const found = spawnSync("sh", ["-c", "command -v chromium"], { encoding: "utf8" });
  return found.status === 0 ? found.stdout.trim() : undefined;
}

/**
 * Launches headless Chromium and registers it for teardown on the stack. `--no-sandbox` because the
 * tests may run as root (CI containers), where Chromium's sandbox refuses to start.
 */
export async function launchChromium(s: Stack): Promise<Browser> {
  const executablePath = chromiumPath();
  if (!executablePath) throw new Error("chromium is not installed (apt-get install chromium)");
  const browser = await puppeteer.launch({
    executablePath,
    headless: true,
    timeout: 60_000,
    protocolTimeout: 60_000,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--disable-background-networking", "--disable-component-update"],
  });
  s.defer(() => browser.close());
  return browser;
}

/** What a browser saw of one shop page. */
export interface PageVisit {
  /** HTTP status of the page itself. */
  status: number;
  /** The page's `data-api` mark after its script ran: `"done"` when both API calls answered, `"failed"` otherwise. */
  api: string | null;
  /** The text the page's script wrote (the API path and whether each call carried the session cookie). */
  text: string;
}

/**
 * Navigates to a URL (a top-level navigation, as typing it or following a link) and, when the page
 * loaded, waits until its script has finished the API calls.
 */
export async function visit(page: Page, url: string): Promise<PageVisit> {
  const res = await page.goto(url, { waitUntil: "load", timeout: 30_000 });
  return settle(page, res?.status() ?? 0);
}

/** Clicks a link on the current page and waits for the next page and its API calls, as a reader does. */
export async function follow(page: Page, selector: string): Promise<PageVisit> {
  const [res] = await Promise.all([page.waitForNavigation({ waitUntil: "load", timeout: 30_000 }), page.click(selector)]);
  return settle(page, res?.status() ?? 0);
}

async function settle(page: Page, status: number): Promise<PageVisit> {
  if (status !== 200) return { status, api: null, text: "" };
  await page.waitForSelector("html[data-api]", { timeout: 30_000 });
  const api = (await page.evaluate("document.documentElement.dataset.api")) as string | null;
  const text = (await page.evaluate("document.getElementById('price').textContent")) as string;
  return { status, api, text };
}

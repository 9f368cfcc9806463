/**
 * `npm run demo`: real Envoy with traffic-guard in front of a small sample app on localhost.
 *
 *   npm run demo                 build if needed, start, print where to point a browser or curl,
 *                                run until Ctrl-C
 *   npm run demo -- --attack     the same, then run the three attacks (a scripted client, a flood,
 *                                a probe for non-existent paths) and let a normal visitor browse,
 *                                print which requests were blocked and why as it happens, print the
 *                                traffic_guard_* metrics, and stop (add --keep to stay up)
 *   --port <n>                   listener port (default 10000; 0 picks a free one)
 */
import { execFile, spawnSync } from "node:child_process";
import { promisify } from "node:util";
import { Agent, request } from "node:http";
import { setTimeout as sleep } from "node:timers/promises";
import { ensureEnvoy } from "./envoy.ts";
import { startEnvoy, type RunningEnvoy } from "./envoy-process.ts";
import { edgeSpec } from "./envoy-topologies.ts";
import { startSampleApp, type SampleApp } from "./sample-app.ts";
import { ensureFilterBuilt } from "./wasm-build.ts";

/** The pluginConfig the demo runs with: short windows and bans so each attack trips within seconds. */
export const DEMO_CONFIG = {
  mode: "enforce",
  rules: {
    userAgent: { limit: { requests: 5, per: "1m" }, ban: "30s" },
    rate: { limit: { requests: 50, per: "10s" }, ban: "30s" },
    errors: { limit: { requests: 10, per: "1m" }, ban: "30s" },
  },
};

const BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

interface Args {
  attack: boolean;
  keep: boolean;
  port: number;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { attack: false, keep: false, port: 10000 };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--attack") a.attack = true;
    else if (argv[i] === "--keep") a.keep = true;
    else if (argv[i] === "--port") {
      const n = Number(argv[++i]);
      if (!Number.isInteger(n) || n < 0 || n > 65535) throw new Error(`--port: expected a port number 0-65535, got "${argv[i] ?? ""}"`);
      a.port = n;
    } else throw new Error(`unknown option "${argv[i]}" (options: --attack, --keep, --port <n>)`);
  }
  return a;
}

/** A reply as the demo prints it. */
interface Hit {
  status: number;
  retryAfter?: string;
}

function hit(port: number, path: string, from: string, userAgent: string, agent?: Agent): Promise<Hit> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: "127.0.0.1", port, path, localAddress: from, agent: agent ?? false, headers: { "user-agent": userAgent } },
      (res) => {
        res.resume();
        res.on("end", () => resolve({ status: res.statusCode ?? 0, retryAfter: res.headers["retry-after"] as string | undefined }));
      },
    );
    req.on("error", reject);
    req.end();
  });
}

/** Follows the filter's ban lines in Envoy's log, to say why a client was blocked. */
class BanWatcher {
  private seen = 0;
  constructor(private envoy: RunningEnvoy) {}

  /** New ban lines since the last call, as `banned <addr> for <n>s: rule=... limit=... ban=<n>`. */
  fresh(): string[] {
    const lines = this.envoy
      .log()
      .split("\n")
      .filter((l) => l.includes("traffic-guard: banned "))
      .map((l) => l.slice(l.indexOf("traffic-guard: banned ") + "traffic-guard: ".length));
    const out = lines.slice(this.seen);
    this.seen = lines.length;
    return out;
  }
}

function say(line: string): void {
  console.log(line);
}

function explain(h: Hit, bans: string[]): string {
  // The errors rule bans on a response: that response itself still reaches the client.
  if (h.status !== 403) return bans.length > 0 ? `${h.status}  <- ${bans.join("; ")} (this response still goes through)` : String(h.status);
  const why = bans.length > 0 ? `  <- ${bans.join("; ")}` : "  (still banned)";
  return `403 Forbidden, Retry-After ${h.retryAfter ?? "-"}s${why}`;
}

async function scriptedClient(port: number, bans: BanWatcher): Promise<void> {
  say("\n== attack 1: a scripted client (the real curl binary, from 127.0.0.2) calls / in a loop");
  const hasCurl = spawnSync("sh", ["-c", "command -v curl"]).status === 0;
  for (let i = 1; i <= 8; i++) {
    let h: Hit;
    if (hasCurl) {
      // Asynchronously: the sample app answering through Envoy lives in this process's event loop.
      const r = await promisify(execFile)("curl", ["-s", "-o", "/dev/null", "--interface", "127.0.0.2", "-w", "%{http_code} %header{retry-after}", `http://127.0.0.1:${port}/`], { encoding: "utf8" });
      const [code, retry] = r.stdout.trim().split(" ");
      h = { status: Number(code), retryAfter: retry || undefined };
    } else {
      h = await hit(port, "/", "127.0.0.2", "curl/8.0.0");
    }
    await sleep(30);
    say(`  curl #${i}  GET /  -> ${explain(h, bans.fresh())}`);
  }
}

async function flood(port: number, bans: BanWatcher): Promise<void> {
  say("\n== attack 2: a flood (300 requests, 20 at a time, browser User-Agent, from 127.0.0.3)");
  const agent = new Agent({ keepAlive: true, maxSockets: 20, localAddress: "127.0.0.3" });
  let passed = 0;
  let blocked = 0;
  let firstBlocked = 0;
  for (let sent = 0; sent < 300; sent += 20) {
    const batch = await Promise.all(Array.from({ length: 20 }, () => hit(port, "/api/items", "127.0.0.3", BROWSER_UA, agent)));
    for (const h of batch) {
      if (h.status === 403) {
        blocked++;
        if (!firstBlocked) firstBlocked = passed + blocked;
      } else passed++;
    }
    const fresh = bans.fresh();
    if (fresh.length > 0) say(`  request #${firstBlocked} -> 403 Forbidden  <- ${fresh.join("; ")}`);
  }
  agent.destroy();
  say(`  flood done: ${passed} passed, ${blocked} got 403 Forbidden`);
}

async function probe(port: number, bans: BanWatcher): Promise<void> {
  say("\n== attack 3: a probe for non-existent paths (browser User-Agent, from 127.0.0.4)");
  const paths = ["/.env", "/wp-login.php", "/db", "/sql", "/.git/config", "/phpmyadmin/", "/admin.php", "/backup.zip", "/config.json", "/server-status", "/.aws/credentials", "/debug", "/shell.php", "/api/v1/users.json.bak"];
  for (const p of paths) {
    const h = await hit(port, p, "127.0.0.4", BROWSER_UA);
    await sleep(20);
    say(`  GET ${p.padEnd(22)} -> ${explain(h, bans.fresh())}`);
  }
}

async function visitor(port: number): Promise<void> {
  say("\n== a normal visitor (127.0.0.5) browses the same site, with a stale link and no favicon");
  const pages = ["/", "/static/site.css", "/static/app.js", "/favicon.ico", "/api/items", "/old-page", "/api/cart"];
  const got = [];
  for (const p of pages) got.push(`${p} ${(await hit(port, p, "127.0.0.5", BROWSER_UA)).status}`);
  say(`  ${got.join(", ")}`);
}

async function printMetrics(envoy: RunningEnvoy): Promise<void> {
  const text = await envoy.admin("/stats/prometheus");
  say(`\n== traffic_guard_* metrics (${envoy.adminUrl}/stats/prometheus)`);
  for (const line of text.split("\n")) if (line.startsWith("traffic_guard_")) say(`  ${line}`);
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const envoyBin = ensureEnvoy((l) => say(l));
  const { path: wasm, built } = ensureFilterBuilt((l) => say(l));
  let app: SampleApp | undefined;
  let stopping = false;
  let envoy: RunningEnvoy | undefined;
  const shutdown = async (code: number) => {
    stopping = true;
    await envoy?.stop();
    await app?.close();
    process.exit(code);
  };
  process.on("SIGINT", () => {
    say("\nstopping Envoy and the sample app");
    void shutdown(0);
  });
  process.on("SIGTERM", () => void shutdown(0));

  app = await startSampleApp();
  envoy = await startEnvoy({
    label: "demo",
    concurrency: 2,
    spec: edgeSpec({
      upstreamPort: app.port,
      port: args.port,
      filters: [
        {
          kind: "wasm",
          namespace: "demo",
          name: "traffic-guard",
          pluginName: "traffic-guard",
          pluginConfig: JSON.stringify(DEMO_CONFIG),
          wasmPath: wasm,
        },
      ],
    }),
  });
  const port = envoy.ports.get("edge")!.ipv4;
  envoy.child.on("exit", (code) => {
    if (stopping) return;
    console.error(`Envoy exited unexpectedly (code ${code}); its log is ${envoy!.logPath}`);
    void shutdown(1);
  });
  const bans = new BanWatcher(envoy);
  say(`traffic-guard demo: Envoy ${envoyBin.version} (${envoyBin.bin}), filter ${wasm}${built ? " (just built)" : ""}`);
  say(`pluginConfig: ${JSON.stringify(DEMO_CONFIG)}`);
  say(`\n  sample app through Envoy:  http://127.0.0.1:${port}/   (browser, or: curl -i http://127.0.0.1:${port}/)`);
  say(`  metrics:                   curl -s ${envoy.adminUrl}/stats/prometheus | grep traffic_guard_`);
  say(`  Envoy log:                 ${envoy.logPath}`);

  if (!args.attack) {
    say("\nPress Ctrl-C to stop. (npm run demo -- --attack runs the three attacks.)");
    return;
  }
  await scriptedClient(port, bans);
  await flood(port, bans);
  await probe(port, bans);
  await visitor(port);
  await printMetrics(envoy);
  if (args.keep) {
    say("\nStill running (--keep). Press Ctrl-C to stop.");
    return;
  }
  await shutdown(0);
}

main().catch((e) => {
  console.error(`demo: ${(e as Error).message}`);
  process.exit(1);
});

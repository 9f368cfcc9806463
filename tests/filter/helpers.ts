/**
 * Helpers shared by the filter tests: config builders, metric names from docs/metrics-and-logs.md, the ban
 * log line parser and assertions on what a stream's outcome was.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { Host, type HostOptions, type HttpStream, type RequestOptions, type LogEntry } from "../emulator/emulator.ts";

// The per-rule counter naming of assembly/metrics.ts (ruleMetricName), read from its source: the one place it is defined.
const METRICS_SOURCE = readFileSync(new URL("../../assembly/metrics.ts", import.meta.url), "utf8");
const RULE_PREFIX = /RULE_METRIC_PREFIX = "([a-z_]+)"/.exec(METRICS_SOURCE)?.[1];
const RULE_SUFFIXES = [.../RULE_COUNTER_SUFFIXES: string\[\] = \[([^\]]*)\]/.exec(METRICS_SOURCE)?.[1].matchAll(/"([a-z_]+)"/g) ?? []].map((m) => m[1]);
assert.ok(RULE_PREFIX && RULE_SUFFIXES.length === 4, "could not read the per-rule metric names of assembly/metrics.ts");

/** The counter of custom rule `rule` of one kind, as assembly/metrics.ts ruleMetricName names it. */
export function ruleMetric(rule: string, kind: "denied" | "bans" | "delayed" | "delayed_ms"): string {
  const suffix = RULE_SUFFIXES[["denied", "bans", "delayed", "delayed_ms"].indexOf(kind)];
  return RULE_PREFIX + rule.replaceAll("-", "_") + suffix;
}

/** Metric names from the contract (docs/metrics-and-logs.md). */
export const M = {
  requests: "traffic_guard_requests_total",
  deniedRate: "traffic_guard_denied_rate_total",
  deniedUserAgent: "traffic_guard_denied_user_agent_total",
  deniedErrors: "traffic_guard_denied_errors_total",
  deniedBanned: "traffic_guard_denied_banned_total",
  deniedDeny: "traffic_guard_denied_deny_total",
  bansRate: "traffic_guard_bans_rate_total",
  bansUserAgent: "traffic_guard_bans_user_agent_total",
  bansErrors: "traffic_guard_bans_errors_total",
  wouldDeny: "traffic_guard_dry_run_would_deny_total",
  evictions: "traffic_guard_evictions_total",
  internalErrors: "traffic_guard_internal_errors_total",
  fallbacks: "traffic_guard_client_address_fallbacks_total",
  untrusted: "traffic_guard_untrusted_address_headers_total",
  admissionsRefused: "traffic_guard_admissions_refused_total",
  rangeBans: "traffic_guard_range_bans_total",
  decisionsPublished: "traffic_guard_decisions_published_total",
  decisionsApplied: "traffic_guard_decisions_applied_total",
  decisionsLifted: "traffic_guard_decisions_lifted_total",
  decisionsSyncErrors: "traffic_guard_decisions_sync_errors_total",
  tracked: "traffic_guard_tracked_clients",
  decisionsActive: "traffic_guard_decisions_active",
} as const;

/** Every counter name of the contract. */
export const COUNTERS = Object.values(M).filter((n) => n !== M.tracked && n !== M.decisionsActive);

/** A current desktop browser User-Agent (matches none of the scripted-client patterns). */
export const BROWSER_UA =
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";

/** A rule that is switched off. */
export const OFF = { enabled: false };

/** Rules that are all switched off, to be overridden one at a time. */
export function rulesOff(): Record<string, unknown> {
  return { userAgent: { ...OFF }, rate: { ...OFF }, errors: { ...OFF } };
}

/** A rate rule with `requests` per `per` and ban `ban`. */
export function rateRule(requests: number, per: string, ban: string): Record<string, unknown> {
  return { enabled: true, limit: { requests, per }, ban };
}

/** A userAgent rule matching `match`. */
export function uaRule(match: string[], requests: number, per: string, ban: string): Record<string, unknown> {
  return { enabled: true, match, limit: { requests, per }, ban };
}

/** An errors rule counting `statuses`. */
export function errorsRule(statuses: (string | number)[], requests: number, per: string, ban: string): Record<string, unknown> {
  return { enabled: true, statuses, limit: { requests, per }, ban };
}

/**
 * A full config with every rule off, client address from the peer, enforce mode, and `extra`
 * merged on top (top-level keys replace; `rules` entries replace per rule).
 */
export function cfg(extra: Record<string, any> = {}): string {
  const base: Record<string, any> = {
    mode: "enforce",
    clientAddress: { source: "peer" },
    rules: rulesOff(),
    ban: { escalation: 2, max: "24h", forgetAfter: "24h" },
  };
  const { rules, ...rest } = extra;
  return JSON.stringify({ ...base, ...rest, rules: { ...base.rules, ...(rules ?? {}) } });
}

/** Host.start with a config built by cfg(). */
export function start(extra: Record<string, any> = {}, opts: Omit<HostOptions, "config"> = {}): Promise<Host> {
  return Host.start({ ...opts, config: cfg(extra) });
}

/** A parsed ban log line. */
export interface BanLine {
  address: string;
  seconds: number;
  rule: string;
  limit: number;
  /** The window as printed after the slash ("60s" per the contract). */
  per: string;
  strike: number;
  dryRun: boolean;
  level: number;
}

// Deliberately lenient about the window's spelling so that one formatting mistake fails only the
// test dedicated to the exact line format (ban-log format test), not every test that reads bans.
const BAN_RE = /^traffic-guard: banned (\S+) for (\d+)s: rule=([\w-]+) limit=(\d+)\/(\S+) ban=(\d+)( \(dry-run\))?$/;

/** The exact ban line of docs/metrics-and-logs.md. */
export const BAN_LINE_EXACT = /^traffic-guard: banned \S+ for \d+s: rule=(rate|userAgent|errors) limit=\d+\/\d+s ban=\d+( \(dry-run\))?$/;

/** Parses a ban line; returns undefined for any other line. */
export function parseBan(l: LogEntry): BanLine | undefined {
  const m = BAN_RE.exec(l.text);
  if (!m) return undefined;
  return {
    address: m[1],
    seconds: Number(m[2]),
    rule: m[3],
    limit: Number(m[4]),
    per: m[5],
    strike: Number(m[6]),
    dryRun: m[7] !== undefined,
    level: l.level,
  };
}

/** Every ban line the host logged so far. */
export function bans(h: Host): BanLine[] {
  return h.logs.map(parseBan).filter((b): b is BanLine => b !== undefined);
}

/** Asserts the stream reached the upstream with no local reply. */
export function assertPassed(r: HttpStream, what = "request"): void {
  assert.ok(!r.localReply, `${what}: expected to pass, got local reply ${r.localReply?.status} (${r.localReply?.details}) ${JSON.stringify(r.localReply?.body)}`);
  assert.equal(r.requestAction, 0, `${what}: proxy_on_request_headers should return Continue`);
  assert.equal(r.upstreamReached, true, `${what}: should reach the upstream`);
}

/** Asserts the stream got a local reply with `status` (default 403) and never reached the upstream. */
export function assertDenied(r: HttpStream, status = 403, what = "request"): NonNullable<HttpStream["localReply"]> {
  assert.ok(r.localReply, `${what}: expected a ${status} local reply, but the request passed`);
  assert.equal(r.localReply.status, status, `${what}: local reply status`);
  assert.equal(r.upstreamReached, false, `${what}: must not reach the upstream`);
  return r.localReply;
}

/** Sends `n` identical requests on `vm` (responding `status`), returning the streams. */
export function sendN(h: Host, n: number, opts: RequestOptions, status = 200, vm = 0): HttpStream[] {
  const out: HttpStream[] = [];
  for (let i = 0; i < n; i++) out.push(h.vm(vm).send(opts, status));
  return out;
}

/** Counts how many streams passed. */
export function passedCount(rs: HttpStream[]): number {
  return rs.filter((r) => r.upstreamReached).length;
}

/** Asserts that every stat named in `expected` has that value (others are not checked). */
export function assertMetrics(h: Host, expected: Partial<Record<string, number>>): void {
  const actual: Record<string, number> = {};
  for (const k of Object.keys(expected)) actual[k] = h.metrics.get(k);
  assert.deepEqual(actual, expected, "metric values");
}

/** Asserts every counter not listed in `nonZero` is 0, and the listed ones have those values. */
export function assertOnlyMetrics(h: Host, nonZero: Partial<Record<string, number>>): void {
  const expected: Record<string, number> = {};
  const actual: Record<string, number> = {};
  for (const k of COUNTERS) {
    expected[k] = nonZero[k] ?? 0;
    actual[k] = h.metrics.get(k);
  }
  assert.deepEqual(actual, expected, "counter values");
}

/** Asserts no ABI misuse, no unimplemented call, no counter increment <= 0 happened. */
export function assertHostClean(h: Host): void {
  h.assertClean();
}

/** Asserts nothing was logged by stream callbacks (only root-context lines such as "configured"). */
export function assertNoRequestPathLogs(h: Host): void {
  const lines = h.requestPathLogs();
  assert.deepEqual(
    lines.map((l) => `[${l.levelName}] ${l.text}`),
    [],
    "no log lines expected on the normal request path",
  );
}

/** Asserts the only lines logged by stream callbacks are ban lines. */
export function assertOnlyBanLogs(h: Host): void {
  const lines = h.requestPathLogs().filter((l) => parseBan(l) === undefined);
  assert.deepEqual(lines.map((l) => `[${l.levelName}] ${l.text}`), [], "only ban lines expected on the request path");
}

/** A deterministic PRNG (mulberry32) so failures are reproducible from the printed seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The example with every field from docs/configuration.md, with the client address taken from the peer. */
export function exampleConfig(overrides: Record<string, any> = {}): string {
  const base: Record<string, any> = {
    mode: "enforce",
    clientAddress: { source: "peer", trustedHops: 0 },
    prefixes: { ipv4: 32, ipv6: 64 },
    allow: ["10.0.0.0/8", "fd00::/8"],
    deny: ["203.0.113.0/24"],
    skipPaths: ["/healthz", "/readyz"],
    rules: {
      userAgent: { enabled: true, match: ["curl/*", "wget/*", "python-requests/*"], limit: { requests: 10, per: "1m" }, ban: "10m" },
      rate: { enabled: true, limit: { requests: 600, per: "1m" }, ban: "5m" },
      errors: { enabled: true, statuses: ["4xx"], limit: { requests: 20, per: "1m" }, ban: "30m" },
    },
    ban: { escalation: 2, max: "24h", forgetAfter: "24h" },
    response: { status: 403, body: "Forbidden\n", headers: { "content-type": "text/plain" } },
    capacity: 65536,
  };
  return JSON.stringify({ ...base, ...overrides });
}

/** The plugin name the emulator passes by default (its root id), which prefixes every shared-data key. */
export const PLUGIN = "traffic-guard";
/** A client-table key: "traffic-guard/<plugin>/t/<set count, 5 hex>/<set index, 5 hex>". */
export const TABLE_KEY = /^traffic-guard\/traffic-guard\/t\/[0-9a-f]{5}\/[0-9a-f]{5}$/;
/** The one other key the filter writes: the table geometry and hash secret, for every worker. */
export const META_KEY = "traffic-guard/traffic-guard/meta";

/** The key prefix of a plugin named `plugin` ("traffic-guard/" when the host passes no name). */
export function keyPrefixOf(plugin: string): string {
  return plugin === "" ? "traffic-guard/" : `traffic-guard/${plugin}/`;
}

/** Whether `key` is a client-table key of plugin `plugin`. */
export function isTableKeyOf(plugin: string, key: string): boolean {
  const p = keyPrefixOf(plugin) + "t/";
  return key.startsWith(p) && /^[0-9a-f]{5}\/[0-9a-f]{5}$/.test(key.slice(p.length));
}
/** The shared-data key of the clock offset (assembly/clock.ts): one per Envoy process, shared by every plugin. */
export const CLOCK_KEY = "traffic-guard/clock";

/** The client-table keys in the store (excluding the geometry key). */
export function tableKeys(h: Host): string[] {
  return h.store.keys().filter((k) => TABLE_KEY.test(k));
}

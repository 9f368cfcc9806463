// The pluginConfig contract. parseConfig is a pure function: text in, a Config or a list of problems out,
// each naming the field path and the expected shape. An empty string or {} gives the documented
// defaults; unknown fields are errors. The same rules are enforced by `traffic-guard validate`, which runs
// this very code through the compiled module.

import { JKind, JValue, parseJson } from "./json";
import { Cidr, parseCidr } from "./address";
import { spiffePatternProblem } from "./identity";
import { CustomRules, parseCustomRules } from "./rule-config";

/** Where the client address comes from. */
export const enum Source { Peer, Xff, Header, Auto }

/** clientAddress.meshCallers: how a caller with a verified mesh identity (not a trusted peer) is keyed. */
export const enum MeshCallers { Identity, Address, Exempt }

/** The default clientAddress.trustedPeers: Istio's default ingress gateway, in any trust domain. */
export const DEFAULT_TRUSTED_PEERS: string[] = ["spiffe://*/ns/istio-system/sa/istio-ingressgateway-service-account"];

/** Rule indexes, also the bucket order inside a state record. */
export const RULE_RATE: i32 = 0;
/** The userAgent rule's index. */
export const RULE_UA: i32 = 1;
/** The errors rule's index. */
export const RULE_ERRORS: i32 = 2;
/** Rule names as they appear in config, logs and metrics. */
export const RULE_NAMES: string[] = ["rate", "userAgent", "errors"];

/** One rule's limit and ban. */
export class Rule {
  enabled: bool = true;
  requests: u32 = 0;
  perMs: u64 = 0;
  banMs: u64 = 0;
  /** Tokens refilled per millisecond (requests / per). */
  refillPerMs: f64 = 0;
  /** Whether the rule applies to callers keyed by their mesh identity (`applyToMesh`). */
  mesh: bool = true;
  /** `meshLimit`: the limit for mesh callers; 0 = the same as `limit`. */
  meshRequests: u32 = 0;
  /** `meshLimit.per` in milliseconds (with meshRequests). */
  meshPerMs: u64 = 0;

  constructor(requests: u32, perMs: u64, banMs: u64) {
    this.requests = requests;
    this.perMs = perMs;
    this.banMs = banMs;
    this.update();
  }

  /** Recomputes derived values after requests/per change. */
  update(): void {
    this.refillPerMs = <f64>this.requests / <f64>this.perMs;
  }
}

/** The default User-Agent patterns: common HTTP libraries, command-line clients and scanners. */
export const DEFAULT_UA_PATTERNS: string[] = [
  "curl/*", "wget/*", "python-requests/*", "python-urllib/*", "python-httpx/*", "go-http-client/*",
  "libwww-perl/*", "java/*", "okhttp/*", "httpie/*",
  "*sqlmap*", "*nikto*", "*nmap*", "*masscan*", "*zgrab*", "*nuclei*",
];

/** A validated configuration with derived, ready-to-use values. */
export class Config {
  dryRun: bool = false;
  source: Source = Source.Auto;
  /** Lowercased header name for `header:<name>`, as UTF-8 bytes. */
  headerName: ArrayBuffer = new ArrayBuffer(0);
  trustedHops: i32 = 0;
  prefixV4: i32 = 32;
  prefixV6: i32 = 64;
  allow: Cidr[] = [];
  deny: Cidr[] = [];
  /** SPIFFE ID patterns of `allow` and `deny` (UTF-8 bytes), matched against a mesh caller's identity. */
  allowIds: ArrayBuffer[] = [];
  denyIds: ArrayBuffer[] = [];
  /** clientAddress.trustedPeers: SPIFFE ID patterns (UTF-8 bytes) and networks of the plaintext peers. */
  trustedPeerIds: ArrayBuffer[] = [];
  trustedPeerCidrs: Cidr[] = [];
  meshCallers: MeshCallers = MeshCallers.Identity;
  /** The rules as they apply to mesh callers (applyToMesh, meshLimit); derived by parseConfig. */
  meshRules: Rule[] = [];
  skipPaths: ArrayBuffer[] = [];
  rules: Rule[] = [
    new Rule(600, 60_000, 300_000),
    new Rule(10, 60_000, 600_000),
    new Rule(20, 60_000, 1_800_000),
  ];
  /** Lowercased User-Agent globs as UTF-8 bytes. */
  uaPatterns: ArrayBuffer[] = [];
  /** statusMatch[code] is true when a response with that status counts for the errors rule. */
  statusMatch: StaticArray<bool> = new StaticArray<bool>(600);
  /** Bit n is set when gRPC status n ("grpc:n" in rules.errors.statuses) counts for the errors rule; 0 = none. */
  grpcMatch: u32 = 0;
  escalation: f64 = 2;
  banMaxMs: u64 = 86_400_000;
  forgetAfterMs: u64 = 86_400_000;
  /** ban.range: distinct banned clients in one range within the window that ban the range (0 = off). */
  rangeThreshold: i32 = 5;
  /** ban.range.window in ms. */
  rangeWindowMs: u64 = 600_000;
  /** ban.range.ban: how long a range ban lasts, in ms. */
  rangeBanMs: u64 = 3_600_000;
  /** ban.range.prefixes.ipv4 (0 = no IPv4 range bans, the default: carrier-grade NAT shares /24s). */
  rangePrefixV4: i32 = 0;
  /** ban.range.prefixes.ipv6 (0 = no IPv6 range bans). */
  rangePrefixV6: i32 = 48;
  responseStatus: u32 = 403;
  responseBody: ArrayBuffer = String.UTF8.encode("Forbidden\n");
  responseHeaderNames: string[] = ["content-type"];
  responseHeaderValues: string[] = ["text/plain"];
  capacity: u32 = 65536;
  /** rules.custom and rules.presets (rule-config.ts); none by default. */
  custom: CustomRules = new CustomRules();
  /** `decisions`: bans shared through etcd (see decisions.ts); null = local-only. */
  decisions: DecisionsConfig | null = null;

  constructor() {
    for (let i = 0; i < DEFAULT_UA_PATTERNS.length; i++) this.uaPatterns.push(String.UTF8.encode(DEFAULT_UA_PATTERNS[i]));
    for (let s = 400; s < 500; s++) this.statusMatch[s] = true;
    for (let i = 0; i < DEFAULT_TRUSTED_PEERS.length; i++) this.trustedPeerIds.push(String.UTF8.encode(DEFAULT_TRUSTED_PEERS[i]));
    // Service clients legitimately use HTTP libraries: the userAgent rule skips mesh callers by default.
    this.rules[RULE_UA].mesh = false;
    this.deriveMeshRules();
  }

  /** Builds meshRules from rules (each rule's applyToMesh and meshLimit). */
  deriveMeshRules(): void {
    let out: Rule[] = [];
    for (let i = 0; i < this.rules.length; i++) {
      let r = this.rules[i];
      let m = r.meshRequests > 0 ? new Rule(r.meshRequests, r.meshPerMs, r.banMs) : new Rule(r.requests, r.perMs, r.banMs);
      m.enabled = r.enabled && r.mesh;
      out.push(m);
    }
    this.meshRules = out;
  }

  /** Names of the enabled rules, comma separated, for the configure log line. */
  enabledRules(): string {
    let out = "";
    for (let i = 0; i < 3; i++) {
      if (this.rules[i].enabled) out += (out.length > 0 ? "," : "") + RULE_NAMES[i];
    }
    for (let i = 0; i < this.custom.rules.length; i++) out += (out.length > 0 ? "," : "") + this.custom.rules[i].name;
    return out.length > 0 ? out : "none";
  }
}

/** The `decisions` block: where the shared decisions live in etcd and how often they are synced. */
export class DecisionsConfig {
  /** The Envoy cluster that reaches etcd's JSON gateway. */
  cluster: string = "";
  /** The Host header of the calls (default: the host part of an Istio cluster name, else the cluster name). */
  authority: string = "";
  /** The key space; records live under <prefix>bans/. */
  prefix: string = "traffic-guard/default/";
  /** Poll period in ms. */
  intervalMs: u64 = 1000;
  /** Timeout of one call in ms. */
  timeoutMs: u64 = 500;
  /** Whether this proxy publishes the bans it starts. */
  publish: bool = true;
}

/** The authority derived from a cluster name: the host of Istio's "outbound|<port>|<subset>|<host>", else the name. */
export function clusterAuthority(cluster: string): string {
  let parts = cluster.split("|");
  if (parts.length == 4 && parts[3].length > 0) return parts[3];
  return cluster;
}

// A string of 1 to `max` printable ASCII characters without spaces (cluster names, hosts, key prefixes).
function isPlainText(s: string, max: i32): bool {
  if (s.length == 0 || s.length > max) return false;
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    if (c <= 0x20 || c >= 0x7f) return false;
  }
  return true;
}

// A duration from min to max ms (`expected` says so); `fallback` (in range) when it is not one.
function boundedDuration(ck: Checker, v: JValue, path: string, min: u64, max: u64, expected: string, fallback: u64): u64 {
  let ms = ck.duration(v, path, false, fallback);
  if (ms >= min && ms <= max) return ms;
  ck.bad(path, expected, v);
  return fallback;
}

// decisions: { cluster (required), authority, prefix, interval, timeout, publish }.
function parseDecisions(ck: Checker, v: JValue, cfg: Config): void {
  const path = "decisions";
  if (!ck.object(v, path)) return;
  ck.only(v, path, ["cluster", "authority", "prefix", "interval", "timeout", "publish"]);
  let d = new DecisionsConfig();
  let c = v.get("cluster");
  if (c === null) ck.errors.push(path + ".cluster: required (the Envoy cluster of etcd, e.g. \"outbound|2379||traffic-guard-etcd.traffic-guard.svc.cluster.local\")");
  else if (c.kind == JKind.String && isPlainText(c.str, 512)) d.cluster = c.str;
  else ck.bad(path + ".cluster", "an Envoy cluster name (1 to 512 printable characters, no spaces)", c);
  d.authority = clusterAuthority(d.cluster);
  let a = v.get("authority");
  if (a !== null) {
    if (a.kind == JKind.String && isPlainText(a.str, 256)) d.authority = a.str;
    else ck.bad(path + ".authority", "a host name like \"traffic-guard-etcd.traffic-guard.svc.cluster.local\" (1 to 256 printable characters, no spaces)", a);
  }
  let p = v.get("prefix");
  if (p !== null) {
    if (p.kind == JKind.String && isPlainText(p.str, 256) && p.str.endsWith("/")) d.prefix = p.str;
    else ck.bad(path + ".prefix", "a key prefix ending in \"/\" like \"traffic-guard/default/\" (at most 256 printable characters, no spaces)", p);
  }
  let iv = v.get("interval");
  if (iv !== null) d.intervalMs = boundedDuration(ck, iv, path + ".interval", 100, 60_000, "a duration from \"100ms\" to \"60s\"", d.intervalMs);
  let t = v.get("timeout");
  if (t !== null) d.timeoutMs = boundedDuration(ck, t, path + ".timeout", 10, 30_000, "a duration from \"10ms\" to \"30s\"", d.timeoutMs);
  let pb = v.get("publish");
  if (pb !== null) d.publish = ck.bool(pb, path + ".publish", true);
  cfg.decisions = d;
}

/** The result of parseConfig: `config` when `errors` is empty. */
export class ParseResult {
  config: Config | null = null;
  errors: string[] = [];
}

const MAX_REQUESTS: f64 = 1_000_000;
const MAX_DURATION_MS: u64 = 365 * 86_400_000;
/** Smallest and largest table capacities. */
export const MIN_CAPACITY: u32 = 1024;
/** Largest table capacity (48 MiB of records per Envoy process). */
export const MAX_CAPACITY: u32 = 1 << 20;

/**
 * Parses a duration such as "90s", "10m", "1h30m", "500ms" or "1d" into milliseconds; -1 if invalid.
 * Units: ms, s, m, h, d. A bare "0" is zero.
 */
export function parseDuration(s: string): i64 {
  if (s == "0") return 0;
  if (s.length == 0 || s.length > 32) return -1;
  let total: i64 = 0;
  let i = 0;
  while (i < s.length) {
    let start = i;
    let n: i64 = 0;
    while (i < s.length) {
      let c = s.charCodeAt(i);
      if (c < 0x30 || c > 0x39) break;
      n = n * 10 + (c - 0x30);
      i++;
      if (i - start > 12) return -1;
    }
    if (i == start || i >= s.length) return -1;
    let unit: i64 = 0;
    let c = s.charCodeAt(i);
    if (c == 0x6d && i + 1 < s.length && s.charCodeAt(i + 1) == 0x73) { unit = 1; i += 2; }
    else if (c == 0x73) { unit = 1000; i++; }
    else if (c == 0x6d) { unit = 60_000; i++; }
    else if (c == 0x68) { unit = 3_600_000; i++; }
    else if (c == 0x64) { unit = 86_400_000; i++; }
    else return -1;
    if (n > <i64>MAX_DURATION_MS / unit) return -1; // n * unit would overflow before the total check
    total += n * unit;
    if (total > <i64>MAX_DURATION_MS) return -1;
  }
  return total;
}

/** True for RFC 7230 token characters, restricted to lowercase (header names travel lowercased in Envoy). */
export function isHeaderName(s: string): bool {
  if (s.length == 0 || s.length > 128) return false;
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    let ok = (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c == 0x2d || c == 0x5f || c == 0x2e ||
      c == 0x21 || c == 0x23 || c == 0x24 || c == 0x25 || c == 0x26 || c == 0x27 || c == 0x2a || c == 0x2b ||
      c == 0x5e || c == 0x60 || c == 0x7c || c == 0x7e;
    if (!ok) return false;
  }
  return true;
}

function isHeaderValue(s: string): bool {
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    if (c == 0 || c == 0x0a || c == 0x0d) return false;
  }
  return s.length <= 4096;
}

/** Collects problems while walking the JSON tree. */
export class Checker {
  errors: string[] = [];

  bad(path: string, expected: string, got: JValue): void {
    this.errors.push(path + ": expected " + expected + ", got " + got.describe());
  }

  // Reports every key of `obj` that is not in `known`.
  only(obj: JValue, path: string, known: string[]): void {
    for (let i = 0; i < obj.keys.length; i++) {
      if (!known.includes(obj.keys[i])) {
        this.errors.push(join(path, obj.keys[i]) + ": unknown field (expected one of: " + known.join(", ") + ")");
      }
    }
  }

  object(v: JValue, path: string): bool {
    if (v.kind == JKind.Object) return true;
    this.bad(path, "an object", v);
    return false;
  }

  bool(v: JValue, path: string, fallback: bool): bool {
    if (v.kind == JKind.Bool) return v.bool;
    this.bad(path, "true or false", v);
    return fallback;
  }

  int(v: JValue, path: string, min: f64, max: f64, fallback: i64): i64 {
    if (v.isInteger() && v.num >= min && v.num <= max) return <i64>v.num;
    this.bad(path, "an integer from " + (<i64>min).toString() + " to " + (<i64>max).toString(), v);
    return fallback;
  }

  duration(v: JValue, path: string, allowZero: bool, fallback: u64): u64 {
    if (v.kind == JKind.String) {
      let ms = parseDuration(v.str);
      if (ms > 0 || (ms == 0 && allowZero)) return <u64>ms;
    }
    this.bad(path, allowZero ? "a duration like \"60s\" (\"0s\" allowed)" : "a duration like \"60s\"", v);
    return fallback;
  }


}

/** Lowercases ASCII letters only (header names and User-Agent globs are matched ASCII case-insensitively). */
export function asciiLower(s: string): string {
  let n = s.length;
  let out = changetype<string>(__new(<usize>n << 1, idof<string>()));
  for (let i = 0; i < n; i++) {
    let c = s.charCodeAt(i);
    store<u16>(changetype<usize>(out) + (<usize>i << 1), <u16>(c >= 0x41 && c <= 0x5a ? c | 0x20 : c));
  }
  return out;
}

/** The path of item i of the array at `path`: path[i]. */
export function at(path: string, i: i32): string {
  return path + "[" + i.toString() + "]";
}

function join(path: string, key: string): string {
  return path.length == 0 ? key : path + "." + key;
}

function parseLimit(ck: Checker, v: JValue, path: string, rule: Rule): void {
  if (!ck.object(v, path)) return;
  ck.only(v, path, ["requests", "per"]);
  let r = v.get("requests");
  if (r !== null) rule.requests = <u32>ck.int(r, path + ".requests", 1, MAX_REQUESTS, rule.requests);
  let per = v.get("per");
  if (per !== null) rule.perMs = ck.duration(per, path + ".per", false, rule.perMs);
  rule.update();
}

// `known`: the rule's fields, the common ones first.
function parseRule(ck: Checker, v: JValue, path: string, rule: Rule, known: string[]): void {
  ck.only(v, path, known);
  let e = v.get("enabled");
  if (e !== null) rule.enabled = ck.bool(e, path + ".enabled", true);
  let l = v.get("limit");
  if (l !== null) parseLimit(ck, l, path + ".limit", rule);
  let b = v.get("ban");
  if (b !== null) rule.banMs = ck.duration(b, path + ".ban", true, rule.banMs);
  let am = v.get("applyToMesh");
  if (am !== null) rule.mesh = ck.bool(am, path + ".applyToMesh", rule.mesh);
  let ml = v.get("meshLimit");
  if (ml !== null) {
    let m = new Rule(rule.requests, rule.perMs, rule.banMs);
    parseLimit(ck, ml, path + ".meshLimit", m);
    rule.meshRequests = m.requests;
    rule.meshPerMs = m.perMs;
  }
}

// Statuses: exact codes (404 or "404"), classes ("4xx"), or gRPC status codes ("grpc:14", 0 to 16).
function parseStatuses(ck: Checker, v: JValue, path: string, cfg: Config): void {
  const expected = "an HTTP status from 100 to 599 (404 or \"404\"), a class like \"4xx\", or a gRPC status from \"grpc:0\" to \"grpc:16\"";
  if (v.kind != JKind.Array || v.items.length == 0) {
    ck.bad(path, "a non-empty array of statuses such as [\"4xx\", 429]", v);
    return;
  }
  let match = new StaticArray<bool>(600);
  let grpc: u32 = 0;
  for (let i = 0; i < v.items.length; i++) {
    let item = v.items[i];
    let p = at(path, i);
    if (item.kind == JKind.String && item.str.startsWith("grpc:")) {
      let code = grpcCode(item.str.substring(5));
      if (code >= 0) {
        grpc |= (<u32>1) << <u32>code;
        continue;
      }
    }
    if (addStatus(item, match)) continue;
    ck.bad(p, expected, item);
  }
  cfg.statusMatch = match;
  cfg.grpcMatch = grpc;
}

// A gRPC status code written in decimal without sign or leading zero, 0 to 16; -1 otherwise.
function grpcCode(d: string): i32 {
  let n = d.length;
  if (n == 0 || n > 2 || (n == 2 && d.charCodeAt(0) == 0x30)) return -1;
  let v = 0;
  for (let i = 0; i < n; i++) {
    let c = d.charCodeAt(i) - 0x30;
    if (c < 0 || c > 9) return -1;
    v = v * 10 + c;
  }
  return v <= 16 ? v : -1;
}

function parseClientAddress(ck: Checker, v: JValue, cfg: Config): void {
  const path = "clientAddress";
  if (!ck.object(v, path)) return;
  ck.only(v, path, ["source", "trustedHops", "trustedPeers", "meshCallers"]);
  let s = v.get("source");
  if (s !== null) {
    let ok = s.kind == JKind.String;
    if (ok) {
      let src = s.str;
      if (src == "peer") cfg.source = Source.Peer;
      else if (src == "xff") cfg.source = Source.Xff;
      else if (src == "auto") cfg.source = Source.Auto;
      else if (src.startsWith("header:") && isHeaderName(asciiLower(src.substring(7)))) {
        cfg.source = Source.Header;
        cfg.headerName = String.UTF8.encode(asciiLower(src.substring(7)));
      } else ok = false;
    }
    if (!ok) ck.bad(path + ".source", "\"peer\", \"xff\", \"auto\" or \"header:<name>\"", s);
  }
  let h = v.get("trustedHops");
  if (h !== null) cfg.trustedHops = <i32>ck.int(h, path + ".trustedHops", 0, 16, 0);
  let tp = v.get("trustedPeers");
  if (tp !== null) {
    cfg.trustedPeerIds = [];
    cfg.trustedPeerCidrs = [];
    parsePeers(ck, tp, path + ".trustedPeers", cfg.trustedPeerCidrs, cfg.trustedPeerIds, "an array of SPIFFE ID patterns and CIDRs",
      "a SPIFFE ID pattern like \"spiffe://*/ns/istio-system/sa/istio-ingressgateway-service-account\" or a CIDR like \"10.0.0.0/8\"");
  }
  let mc = v.get("meshCallers");
  if (mc !== null) {
    let ok = mc.kind == JKind.String;
    if (ok) {
      if (mc.str == "identity") cfg.meshCallers = MeshCallers.Identity;
      else if (mc.str == "address") cfg.meshCallers = MeshCallers.Address;
      else if (mc.str == "exempt") cfg.meshCallers = MeshCallers.Exempt;
      else ok = false;
    }
    if (!ok) ck.bad(path + ".meshCallers", "\"identity\", \"address\" or \"exempt\"", mc);
  }
}

// A list of SPIFFE ID patterns ("spiffe://...") and CIDRs, split into `ids` and `cidrs`; `list` and `item`
// name the expected shapes in messages.
function parsePeers(ck: Checker, v: JValue, path: string, cidrs: Cidr[], ids: ArrayBuffer[], list: string, item: string): void {
  if (v.kind != JKind.Array) {
    ck.bad(path, list, v);
    return;
  }
  for (let i = 0; i < v.items.length; i++) {
    let it = v.items[i];
    let p = at(path, i);
    if (it.kind == JKind.String && it.str.startsWith("spiffe:")) {
      let problem = spiffePatternProblem(it.str);
      if (problem.length == 0) ids.push(String.UTF8.encode(it.str));
      else ck.errors.push(p + ": expected a SPIFFE ID pattern (spiffe://<trust-domain>/<path>, '*' for one whole segment), got " + it.describe() + ": " + problem);
      continue;
    }
    let c: Cidr | null = it.kind == JKind.String ? parseCidr(it.str) : null;
    if (c === null) ck.bad(p, item, it);
    else cidrs.push(c);
  }
}

// CIDRs; SPIFFE ID patterns ("spiffe://...") go to `ids`.
function parseCidrs(ck: Checker, v: JValue, path: string, ids: ArrayBuffer[]): Cidr[] {
  let out: Cidr[] = [];
  parsePeers(ck, v, path, out, ids, "an array of CIDRs like \"10.0.0.0/8\"", "a CIDR like \"10.0.0.0/8\" or \"fd00::/8\"");
  return out;
}

function parseResponse(ck: Checker, v: JValue, cfg: Config): void {
  const path = "response";
  if (!ck.object(v, path)) return;
  ck.only(v, path, ["status", "body", "headers"]);
  let s = v.get("status");
  if (s !== null) cfg.responseStatus = <u32>ck.int(s, path + ".status", 400, 599, 403);
  let b = v.get("body");
  if (b !== null) {
    if (b.kind == JKind.String && b.str.length <= 65536) cfg.responseBody = String.UTF8.encode(b.str);
    else ck.bad(path + ".body", "a string of at most 65536 characters", b);
  }
  let h = v.get("headers");
  if (h !== null) {
    if (!ck.object(h, path + ".headers")) return;
    cfg.responseHeaderNames = [];
    cfg.responseHeaderValues = [];
    for (let i = 0; i < h.keys.length; i++) {
      let name = asciiLower(h.keys[i]);
      let value = h.items[i];
      let p = path + ".headers." + h.keys[i];
      if (!isHeaderName(name)) {
        ck.errors.push(p + ": expected a header name (letters, digits, '-')");
        continue;
      }
      if (value.kind != JKind.String || !isHeaderValue(value.str)) {
        ck.bad(p, "a string without CR, LF or NUL", value);
        continue;
      }
      cfg.responseHeaderNames.push(name);
      cfg.responseHeaderValues.push(value.str);
    }
  }
}

/** Largest ban.range.threshold (a range entry remembers this many distinct clients). */
export const MAX_RANGE_THRESHOLD: i32 = 16;

// ban.range: { threshold, window, ban, prefixes: { ipv4, ipv6 } }. A range prefix must be shorter than
// the client prefix of its family (prefixes.*, parsed before), or 0 for off.
function parseRange(ck: Checker, v: JValue, cfg: Config): void {
  const path = "ban.range";
  if (!ck.object(v, path)) return;
  ck.only(v, path, ["threshold", "window", "ban", "prefixes"]);
  let th = v.get("threshold");
  if (th !== null) {
    if (th.isInteger() && (th.num == 0 || (th.num >= 2 && th.num <= <f64>MAX_RANGE_THRESHOLD))) cfg.rangeThreshold = <i32>th.num;
    else ck.bad(path + ".threshold", "0 (off) or an integer from 2 to " + MAX_RANGE_THRESHOLD.toString(), th);
  }
  let w = v.get("window");
  if (w !== null) cfg.rangeWindowMs = ck.duration(w, path + ".window", false, cfg.rangeWindowMs);
  let b = v.get("ban");
  if (b !== null) cfg.rangeBanMs = ck.duration(b, path + ".ban", false, cfg.rangeBanMs);
  let pf = v.get("prefixes");
  if (pf !== null && ck.object(pf, path + ".prefixes")) {
    ck.only(pf, path + ".prefixes", ["ipv4", "ipv6"]);
    let p4 = pf.get("ipv4");
    if (p4 !== null) cfg.rangePrefixV4 = rangePrefix(ck, p4, path + ".prefixes.ipv4", 8, cfg.prefixV4, "prefixes.ipv4");
    let p6 = pf.get("ipv6");
    if (p6 !== null) cfg.rangePrefixV6 = rangePrefix(ck, p6, path + ".prefixes.ipv6", 16, cfg.prefixV6, "prefixes.ipv6");
  }
}

function rangePrefix(ck: Checker, v: JValue, path: string, min: i32, client: i32, clientPath: string): i32 {
  if (v.isInteger() && (v.num == 0 || (v.num >= <f64>min && v.num < <f64>client))) return <i32>v.num;
  ck.bad(path, "0 (off) or a prefix length from " + min.toString() + " to " + (client - 1).toString() +
    " (shorter than " + clientPath + " = " + client.toString() + ")", v);
  return 0;
}

/** Parses and validates a pluginConfig string. Never throws. */
export function parseConfig(text: string): ParseResult {
  let res = new ParseResult();
  let cfg = new Config();
  if (text.trim().length == 0) {
    res.config = finishPlan(cfg);
    return res;
  }
  let parsed = parseJson(text); // untrimmed, so error positions match the text the operator wrote
  if (parsed.value === null) {
    res.errors.push("pluginConfig: " + parsed.error);
    return res;
  }
  let root = changetype<JValue>(parsed.value);
  let ck = new Checker();
  if (root.kind != JKind.Object) {
    ck.bad("pluginConfig", "a JSON object", root);
    res.errors = ck.errors;
    return res;
  }
  ck.only(root, "", ["mode", "clientAddress", "prefixes", "allow", "deny", "skipPaths", "rules", "ban", "response", "capacity", "decisions"]);

  let mode = root.get("mode");
  if (mode !== null) {
    if (mode.kind == JKind.String && (mode.str == "enforce" || mode.str == "dry-run")) cfg.dryRun = mode.str == "dry-run";
    else ck.bad("mode", "\"enforce\" or \"dry-run\"", mode);
  }

  let ca = root.get("clientAddress");
  if (ca !== null) parseClientAddress(ck, ca, cfg);

  let pf = root.get("prefixes");
  if (pf !== null && ck.object(pf, "prefixes")) {
    ck.only(pf, "prefixes", ["ipv4", "ipv6"]);
    let p4 = pf.get("ipv4");
    if (p4 !== null) cfg.prefixV4 = <i32>ck.int(p4, "prefixes.ipv4", 8, 32, 32);
    let p6 = pf.get("ipv6");
    if (p6 !== null) cfg.prefixV6 = <i32>ck.int(p6, "prefixes.ipv6", 16, 128, 64);
  }

  let allow = root.get("allow");
  if (allow !== null) cfg.allow = parseCidrs(ck, allow, "allow", cfg.allowIds);
  let deny = root.get("deny");
  if (deny !== null) cfg.deny = parseCidrs(ck, deny, "deny", cfg.denyIds);

  let skip = root.get("skipPaths");
  if (skip !== null) {
    if (skip.kind != JKind.Array) ck.bad("skipPaths", "an array of path prefixes like \"/healthz\"", skip);
    else for (let i = 0; i < skip.items.length; i++) {
      let item = skip.items[i];
      if (item.kind == JKind.String && item.str.startsWith("/")) cfg.skipPaths.push(String.UTF8.encode(item.str));
      else ck.bad(at("skipPaths", i), "a path prefix starting with \"/\"", item);
    }
  }

  let rules = root.get("rules");
  if (rules !== null && ck.object(rules, "rules")) {
    ck.only(rules, "rules", ["rate", "userAgent", "errors", "custom", "presets"]); // RULE_NAMES, then the custom ones
    parseCustomRules(ck, rules.get("presets"), rules.get("custom"), cfg.custom);
    let rate = rules.get("rate");
    if (rate !== null && ck.object(rate, "rules.rate")) parseRule(ck, rate, "rules.rate", cfg.rules[RULE_RATE], ["enabled", "limit", "ban", "applyToMesh", "meshLimit"]);
    let ua = rules.get("userAgent");
    if (ua !== null && ck.object(ua, "rules.userAgent")) {
      parseRule(ck, ua, "rules.userAgent", cfg.rules[RULE_UA], ["enabled", "limit", "ban", "applyToMesh", "meshLimit", "match"]);
      let m = ua.get("match");
      if (m !== null) {
        if (m.kind != JKind.Array) ck.bad("rules.userAgent.match", "an array of globs like \"curl/*\"", m);
        else {
          cfg.uaPatterns = [];
          for (let i = 0; i < m.items.length; i++) {
            let item = m.items[i];
            if (item.kind == JKind.String && item.str.length <= 256) cfg.uaPatterns.push(String.UTF8.encode(asciiLower(item.str)));
            else ck.bad(at("rules.userAgent.match", i), "a glob of at most 256 characters", item);
          }
        }
      }
    }
    let errs = rules.get("errors");
    if (errs !== null && ck.object(errs, "rules.errors")) {
      parseRule(ck, errs, "rules.errors", cfg.rules[RULE_ERRORS], ["enabled", "limit", "ban", "applyToMesh", "meshLimit", "statuses"]);
      let st = errs.get("statuses");
      if (st !== null) parseStatuses(ck, st, "rules.errors.statuses", cfg);
    }
  }

  let ban = root.get("ban");
  if (ban !== null && ck.object(ban, "ban")) {
    ck.only(ban, "ban", ["escalation", "max", "forgetAfter", "range"]);
    let esc = ban.get("escalation");
    if (esc !== null) {
      if (esc.kind == JKind.Number && esc.num >= 1 && esc.num <= 100) cfg.escalation = esc.num;
      else ck.bad("ban.escalation", "a number from 1 to 100", esc);
    }
    let max = ban.get("max");
    if (max !== null) cfg.banMaxMs = ck.duration(max, "ban.max", false, cfg.banMaxMs);
    let fa = ban.get("forgetAfter");
    if (fa !== null) cfg.forgetAfterMs = ck.duration(fa, "ban.forgetAfter", true, cfg.forgetAfterMs);
    let range = ban.get("range");
    if (range !== null) parseRange(ck, range, cfg);
  }

  let resp = root.get("response");
  if (resp !== null) parseResponse(ck, resp, cfg);

  let cap = root.get("capacity");
  if (cap !== null) cfg.capacity = <u32>ck.int(cap, "capacity", <f64>MIN_CAPACITY, <f64>MAX_CAPACITY, 65536);

  let dec = root.get("decisions");
  if (dec !== null) parseDecisions(ck, dec, cfg);

  cfg.deriveMeshRules();
  if (ck.errors.length > 0) {
    res.errors = ck.errors;
    return res;
  }
  res.config = finishPlan(cfg);
  return res;
}

// Compiles the matcher plan of a valid configuration: the custom rules' User-Agent globs and the built-in
// rule's patterns (when that rule is on anywhere) are matched in one pass.
function finishPlan(cfg: Config): Config {
  let uaOn = cfg.rules[RULE_UA].enabled || cfg.meshRules[RULE_UA].enabled;
  cfg.custom.plan.finish(uaOn ? cfg.uaPatterns : []);
  return cfg;
}

/**
 * Marks the HTTP statuses one config item names in `match` (indexed by status): a number or a
 * three-digit string from 100 to 599, or a class such as "3xx". Returns false when the item is neither.
 */
export function addStatus(item: JValue, match: StaticArray<bool>): bool {
  if (item.isInteger() && item.num >= 100 && item.num <= 599) {
    match[<i32>item.num] = true;
    return true;
  }
  if (item.kind != JKind.String || item.str.length != 3) return false;
  let s = item.str;
  let d0 = s.charCodeAt(0) - 0x30;
  if (d0 < 1 || d0 > 5) return false;
  if (s.charAt(1) == "x" && s.charAt(2) == "x") {
    for (let c = d0 * 100; c < d0 * 100 + 100; c++) match[c] = true;
    return true;
  }
  let d1 = s.charCodeAt(1) - 0x30, d2 = s.charCodeAt(2) - 0x30;
  if (d1 < 0 || d1 > 9 || d2 < 0 || d2 > 9) return false;
  match[d0 * 100 + d1 * 10 + d2] = true;
  return true;
}

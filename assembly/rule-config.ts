// rules.custom and rules.presets: named behaviour rules as data (documented in docs/rules.md).
//
// Each custom rule spends one token of its own bucket per request (or response) its `take` matcher
// matches and returns one, up to the capacity, per request its `give` matcher matches; a request matching
// both does neither. An empty bucket denies (ban "0s", the default) or bans, as the built-in rules do.
// A `delay` rule holds a request over its limit instead (delay.ts) until the bucket has a token again,
// at most delay.max; its optional `then` is a second, hard bucket that denies or bans.
// Presets are the same rules, written here once; parsing fills CustomRule objects and a matcher Plan.

import { JKind, JValue, parseJson } from "./json";
import { Checker, Rule, addStatus, asciiLower, at, isHeaderName, RULE_NAMES } from "./config";
import { Matcher, HeaderCond, Plan, HDR_PRESENT, HDR_ABSENT, HDR_GLOB, QUERY_ANY, QUERY_PRESENT, QUERY_ABSENT } from "./matchers";

/** Most custom rules (rules.custom plus rules.presets) in one configuration: bit 2i+1 of a u32 is rule i's give. */
export const MAX_CUSTOM_RULES: i32 = 16;
/** Longest rule name. */
export const MAX_RULE_NAME: i32 = 48;
/** Longest glob in a matcher. */
const MAX_GLOB: i32 = 256;

/** One custom rule (or preset) with its derived values. */
export class CustomRule {
  name: string = "";
  /** The take matcher, and the give matcher (null without one). */
  take: Matcher = new Matcher();
  give: Matcher | null = null;
  /** limit and ban, as for a built-in rule (ban 0 = deny while the bucket is empty). */
  limit: Rule = new Rule(1, 1, 0);
  /** delay.max in ms; 0 = no delay (deny or ban at once). */
  delayMaxMs: u64 = 0;
  /** `then`: the hard limit of a delay rule and its ban; null without one. */
  then: Rule | null = null;
  /** Index of the rule's bucket among the custom buckets of a record (record.ts). */
  bucket: i32 = 0;
  /** Index of the `then` bucket, or -1. */
  thenBucket: i32 = -1;
}

/** The preset names, in the order of docs/rules.md. */
export const PRESET_NAMES: string[] = ["sensitive-files", "crawl-non-static", "no-cookies", "redirect-loop", "scanner-user-agents"];

/** Each preset as a rules.custom entry (without its name), in PRESET_NAMES order: the one definition of the presets. */
export const PRESET_JSON: string[] = [
  // CrowdSec crowdsecurity/http-sensitive-files: probes for secrets and backups an application never serves.
  "{\"take\":{\"request\":{\"path\":[\"/.env\",\"/.env.*\",\"*/.env\",\"/.git/*\",\"/.svn/*\",\"/.hg/*\",\"/.htpasswd\",\"/.htaccess\"," +
    "\"/.aws/*\",\"/.ssh/*\",\"/.ds_store\",\"/wp-config.php*\",\"/config.php.*\",\"*.bak\",\"*.old\",\"*.orig\",\"*.swp\",\"*.sql\",\"*.sql.gz\"]}}," +
    "\"limit\":{\"requests\":3,\"per\":\"1h\"},\"ban\":\"1h\"}",
  // CrowdSec crowdsecurity/http-crawl-non_statics: many non-static GET/HEAD requests (capacity 40, leak 0.5 s).
  "{\"take\":{\"request\":{\"method\":[\"GET\",\"HEAD\"]}}," +
    "\"give\":{\"request\":{\"method\":[\"GET\",\"HEAD\"],\"path\":[\"*.js\",\"*.mjs\",\"*.css\",\"*.map\",\"*.png\",\"*.jpg\",\"*.jpeg\",\"*.gif\",\"*.webp\"," +
    "\"*.avif\",\"*.svg\",\"*.ico\",\"*.woff\",\"*.woff2\",\"*.ttf\",\"*.otf\",\"*.eot\",\"*.mp4\",\"*.webm\",\"*.mp3\",\"*.txt\",\"*.json\",\"*.xml\"]}}," +
    "\"limit\":{\"requests\":40,\"per\":\"20s\"},\"ban\":\"10m\"}",
  // No CrowdSec counterpart (an OpenResty cookie check): page loads that never send a cookie back.
  "{\"take\":{\"request\":{\"header\":{\"accept\":\"text/html*\",\"cookie\":\"absent\"}}}," +
    "\"limit\":{\"requests\":20,\"per\":\"10m\"},\"ban\":\"10m\"}",
  // No exact CrowdSec counterpart (closest: crowdsecurity/http-probing): redirect after redirect.
  "{\"take\":{\"response\":{\"status\":[301,302,303,307,308]}}," +
    "\"limit\":{\"requests\":50,\"per\":\"1m\"},\"ban\":\"5m\"}",
  // CrowdSec crowdsecurity/http-bad-user-agent: known scanners (capacity 1).
  "{\"take\":{\"request\":{\"userAgent\":[\"*sqlmap*\",\"*nikto*\",\"*nmap*\",\"*masscan*\",\"*zgrab*\",\"*nuclei*\",\"*dirbuster*\",\"*gobuster*\"," +
    "\"*wpscan*\",\"*acunetix*\",\"*nessus*\",\"*openvas*\",\"*ffuf*\",\"*feroxbuster*\",\"*whatweb*\",\"*wfuzz*\"]}}," +
    "\"limit\":{\"requests\":1,\"per\":\"1m\"},\"ban\":\"1h\"}",
];

/** The custom rules of a configuration, their bucket names and their matcher plan. */
export class CustomRules {
  rules: CustomRule[] = [];
  /** Bucket names in record order: a rule's name, and "<name>/then" for a `then` bucket. */
  bucketNames: string[] = [];
  /** Bucket limits in record order. */
  buckets: Rule[] = [];
  /**
   * The same limits flat, for the request path (record.ts advance): capacity, window (ms) and refill per
   * ms of bucket j at 3j, 3j+1, 3j+2, in one block rather than one object per bucket.
   */
  params: StaticArray<f64> = new StaticArray<f64>(0);
  /** Bucket j's capacity as the bits of the f32 a full bucket holds in a record (record.ts advance skips those). */
  capBits: StaticArray<u32> = new StaticArray<u32>(0);
  plan: Plan = new Plan();
  /** Bits (2i, 2i+1) of matchers with a response part. */
  responseBits: u32 = 0;

  /** Assigns buckets and builds the plan; call once all rules are parsed. */
  finish(): void {
    for (let i = 0; i < this.rules.length; i++) {
      let r = this.rules[i];
      r.bucket = this.buckets.length;
      this.buckets.push(r.limit);
      this.bucketNames.push(r.name);
      let then = r.then;
      if (then !== null) {
        r.thenBucket = this.buckets.length;
        this.buckets.push(then);
        this.bucketNames.push(r.name + "/then");
      }
      this.plan.add(2 * i, r.take);
      this.plan.add(2 * i + 1, r.give);
    }
    this.responseBits = this.plan.responseBits;
    let params = new StaticArray<f64>(3 * this.buckets.length);
    let caps = new StaticArray<u32>(this.buckets.length);
    for (let j = 0; j < this.buckets.length; j++) {
      let b = this.buckets[j];
      params[3 * j] = <f64>b.requests;
      params[3 * j + 1] = <f64>b.perMs;
      params[3 * j + 2] = b.refillPerMs;
      caps[j] = reinterpret<u32>(<f32><f64>b.requests);
    }
    this.params = params;
    this.capBits = caps;
  }
}

// Rule names: lowercase letters, digits and '-', starting with a letter (they become metric names).
function isRuleName(s: string): bool {
  if (s.length == 0 || s.length > MAX_RULE_NAME) return false;
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    let ok = (c >= 0x61 && c <= 0x7a) || (i > 0 && ((c >= 0x30 && c <= 0x39) || c == 0x2d));
    if (!ok) return false;
  }
  return s.charCodeAt(s.length - 1) != 0x2d;
}

// A non-empty list of globs, as lowercased bytes; a path glob must start with "/" or "*".
function globList(ck: Checker, v: JValue, path: string, list: string, item: string, pathLike: bool, out: ArrayBuffer[]): void {
  if (v.kind != JKind.Array || v.items.length == 0) {
    ck.bad(path, "a non-empty array of " + list, v);
    return;
  }
  for (let i = 0; i < v.items.length; i++) {
    let it = v.items[i];
    let ok = it.kind == JKind.String && it.str.length > 0 && it.str.length <= MAX_GLOB && noControl(it.str);
    if (ok && pathLike) ok = it.str.charAt(0) == "/" || it.str.charAt(0) == "*";
    if (ok) out.push(String.UTF8.encode(asciiLower(it.str)));
    else ck.bad(at(path, i), item + " of 1 to " + MAX_GLOB.toString() + " characters", it);
  }
}

function noControl(s: string): bool {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) < 0x20) return false;
  return true;
}

// An HTTP method token: uppercase letters (GET, POST, ...), at most 32.
function isMethod(s: string): bool {
  if (s.length == 0 || s.length > 32) return false;
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    if (c < 0x41 || c > 0x5a) return false;
  }
  return true;
}

// header: { name: "present" | "absent" | glob }.
function headerConds(ck: Checker, v: JValue, path: string, out: HeaderCond[], globs: bool): void {
  if (!ck.object(v, path)) return;
  for (let i = 0; i < v.keys.length; i++) {
    let name = asciiLower(v.keys[i]);
    let p = path + "." + v.keys[i];
    let value = v.items[i];
    if (!isHeaderName(name)) {
      ck.errors.push(p + ": expected a header name (letters, digits, '-')");
      continue;
    }
    if (value.kind == JKind.String && value.str == "present") out.push(new HeaderCond(name, HDR_PRESENT, new ArrayBuffer(0)));
    else if (value.kind == JKind.String && value.str == "absent") out.push(new HeaderCond(name, HDR_ABSENT, new ArrayBuffer(0)));
    else if (globs && value.kind == JKind.String && value.str.length > 0 && value.str.length <= MAX_GLOB && noControl(value.str)) {
      out.push(new HeaderCond(name, HDR_GLOB, String.UTF8.encode(asciiLower(value.str))));
    } else ck.bad(p, globs ? "\"present\", \"absent\" or a glob" : "\"present\" or \"absent\"", value);
  }
}

// response.status: codes (301 or "301") and classes ("3xx").
function statusList(ck: Checker, v: JValue, path: string): StaticArray<bool> {
  let match = new StaticArray<bool>(600);
  if (v.kind != JKind.Array || v.items.length == 0) {
    ck.bad(path, "a non-empty array of statuses such as [\"3xx\", 404]", v);
    return match;
  }
  for (let i = 0; i < v.items.length; i++) {
    let item = v.items[i];
    if (addStatus(item, match)) continue;
    ck.bad(at(path, i), "an HTTP status from 100 to 599 (301 or \"301\") or a class like \"3xx\"", item);
  }
  return match;
}

// A take or give matcher: { request: {...}, response: {...} }.
function parseMatcher(ck: Checker, v: JValue, path: string): Matcher {
  let mt = new Matcher();
  if (!ck.object(v, path)) return mt;
  ck.only(v, path, ["request", "response"]);
  let rq = v.get("request");
  if (rq !== null && ck.object(rq, path + ".request")) {
    let p = path + ".request";
    mt.request = true;
    ck.only(rq, p, ["method", "path", "query", "header", "userAgent"]);
    let me = rq.get("method");
    if (me !== null) {
      if (me.kind != JKind.Array || me.items.length == 0) ck.bad(p + ".method", "a non-empty array of methods like [\"GET\"]", me);
      else for (let i = 0; i < me.items.length; i++) {
        let item = me.items[i];
        if (item.kind == JKind.String && isMethod(item.str)) mt.methods.push(String.UTF8.encode(item.str));
        else ck.bad(at(p + ".method", i), "an uppercase HTTP method like \"GET\"", item);
      }
    }
    let pa = rq.get("path");
    if (pa !== null) globList(ck, pa, p + ".path", "paths (exact \"/.env\", prefix \"/api/*\" or glob \"*.bak\")",
      "a path starting with \"/\" or \"*\"", true, mt.paths);
    let q = rq.get("query");
    if (q !== null) {
      if (q.kind == JKind.String && q.str == "present") mt.query = QUERY_PRESENT;
      else if (q.kind == JKind.String && q.str == "absent") mt.query = QUERY_ABSENT;
      else ck.bad(p + ".query", "\"present\" or \"absent\"", q);
    }
    let h = rq.get("header");
    if (h !== null) headerConds(ck, h, p + ".header", mt.headers, true);
    let ua = rq.get("userAgent");
    if (ua !== null) globList(ck, ua, p + ".userAgent", "User-Agent globs like \"*bot*\"", "a User-Agent glob", false, mt.userAgents);
  }
  let rs = v.get("response");
  if (rs !== null && ck.object(rs, path + ".response")) {
    let p = path + ".response";
    mt.response = true;
    ck.only(rs, p, ["status", "header"]);
    let st = rs.get("status");
    if (st !== null) mt.statuses = statusList(ck, st, p + ".status");
    let h = rs.get("header");
    if (h !== null) headerConds(ck, h, p + ".header", mt.responseHeaders, false);
  }
  if (rq === null && rs === null) ck.errors.push(path + ": expected \"request\" and/or \"response\"");
  return mt;
}

// Reports the required field `key` of the object at `path` as missing.
function missing(ck: Checker, path: string, key: string): void {
  ck.errors.push(path + "." + key + ": required");
}

// limit: { requests, per } (both required for a custom rule).
function parseCustomLimit(ck: Checker, v: JValue, path: string, rule: Rule): void {
  if (!ck.object(v, path)) return;
  ck.only(v, path, ["requests", "per"]);
  let r = v.get("requests");
  if (r === null) missing(ck, path, "requests");
  else rule.requests = <u32>ck.int(r, path + ".requests", 1, 1_000_000, 1);
  let per = v.get("per");
  if (per === null) missing(ck, path, "per");
  else rule.perMs = ck.duration(per, path + ".per", false, 1000);
  rule.update();
}

// One rules.custom entry (or a preset's definition, with `name` given).
function parseCustomRule(ck: Checker, v: JValue, path: string, name: string): CustomRule {
  let rule = new CustomRule();
  rule.limit = new Rule(1, 1000, 0);
  if (!ck.object(v, path)) return rule;
  ck.only(v, path, name.length > 0 ? ["take", "give", "limit", "ban", "delay", "then"] : ["name", "take", "give", "limit", "ban", "delay", "then"]);
  if (name.length > 0) rule.name = name;
  else {
    let n = v.get("name");
    if (n === null) missing(ck, path, "name");
    else if (n.kind == JKind.String && isRuleName(n.str)) rule.name = n.str;
    else ck.bad(path + ".name", "a name of lowercase letters, digits and '-' starting with a letter (at most " + MAX_RULE_NAME.toString() + ")", n);
  }
  let take = v.get("take");
  if (take === null) missing(ck, path, "take");
  else rule.take = parseMatcher(ck, take, path + ".take");
  let give = v.get("give");
  if (give !== null) rule.give = parseMatcher(ck, give, path + ".give");
  let limit = v.get("limit");
  if (limit === null) ck.errors.push(path + ".limit: required (an object like {\"requests\": 30, \"per\": \"5m\"})");
  else parseCustomLimit(ck, limit, path + ".limit", rule.limit);
  let ban = v.get("ban");
  if (ban !== null) rule.limit.banMs = ck.duration(ban, path + ".ban", true, 0);
  let delay = v.get("delay");
  if (delay !== null && ck.object(delay, path + ".delay")) {
    ck.only(delay, path + ".delay", ["max"]);
    let max = delay.get("max");
    if (max === null) missing(ck, path + ".delay", "max");
    else rule.delayMaxMs = ck.duration(max, path + ".delay.max", false, 1000);
    if (limit === null) ck.errors.push(path + ".delay: requires a limit (the rate requests are spaced to)");
    if (rule.take.response) ck.errors.push(path + ".delay: a rule that takes on responses cannot delay (the request has been sent)");
  }
  let then = v.get("then");
  if (then !== null && ck.object(then, path + ".then")) {
    let p = path + ".then";
    ck.only(then, p, ["limit", "ban"]);
    let hard = new Rule(1, 1000, 0);
    let tl = then.get("limit");
    if (tl === null) missing(ck, p, "limit");
    else parseCustomLimit(ck, tl, p + ".limit", hard);
    let tb = then.get("ban");
    if (tb !== null) hard.banMs = ck.duration(tb, p + ".ban", true, 0);
    rule.then = hard;
    if (delay === null) ck.errors.push(p + ": requires delay (then is the hard limit after a delay)");
  }
  if (rule.take.response && rule.limit.banMs == 0 && limit !== null) {
    ck.errors.push(path + ".ban: expected a duration above \"0s\": a rule that takes on responses acts by banning (the response has been sent)");
  }
  return rule;
}

/** Parses rules.presets and rules.custom (either may be null) into `out`; problems go to `ck`. */
export function parseCustomRules(ck: Checker, presets: JValue | null, custom: JValue | null, out: CustomRules): void {
  let names: string[] = [];
  if (presets !== null) {
    if (presets.kind != JKind.Array) ck.bad("rules.presets", "an array of preset names (" + PRESET_NAMES.join(", ") + ")", presets);
    else for (let i = 0; i < presets.items.length; i++) {
      let item = presets.items[i];
      let p = at("rules.presets", i);
      let k = item.kind == JKind.String ? PRESET_NAMES.indexOf(item.str) : -1;
      if (k < 0) {
        ck.bad(p, "one of " + PRESET_NAMES.join(", "), item);
        continue;
      }
      if (names.includes(item.str)) {
        ck.errors.push(p + ": duplicate rule name \"" + item.str + "\"");
        continue;
      }
      names.push(item.str);
      out.rules.push(presetRule(k));
    }
  }
  if (custom !== null) {
    if (custom.kind != JKind.Array) ck.bad("rules.custom", "an array of rules like {\"name\": ..., \"take\": ..., \"limit\": ...}", custom);
    else for (let i = 0; i < custom.items.length; i++) {
      let p = at("rules.custom", i);
      let r = parseCustomRule(ck, custom.items[i], p, "");
      if (r.name.length == 0) continue;
      if (names.includes(r.name)) ck.errors.push(p + ".name: duplicate rule name \"" + r.name + "\"");
      else if (RULE_NAMES.includes(r.name)) ck.errors.push(p + ".name: \"" + r.name + "\" is a built-in rule's name");
      names.push(r.name);
      out.rules.push(r);
    }
  }
  if (out.rules.length > MAX_CUSTOM_RULES) {
    ck.errors.push("rules: expected at most " + MAX_CUSTOM_RULES.toString() + " custom rules and presets together, got " + out.rules.length.toString());
    return;
  }
  out.finish();
}

// A preset's rule, parsed from its definition (which a spec checks parses without problems).
function presetRule(k: i32): CustomRule {
  return parsePreset(k, new Checker());
}

/** Parses preset k of PRESET_JSON with `ck` (the spec of the presets checks it reports nothing). */
export function parsePreset(k: i32, ck: Checker): CustomRule {
  let parsed = parseJsonValue(PRESET_JSON[k]);
  return parseCustomRule(ck, parsed, "rules.presets[" + PRESET_NAMES[k] + "]", PRESET_NAMES[k]);
}

function parseJsonValue(text: string): JValue {
  return changetype<JValue>(parseJson(text).value);
}

// The pluginConfig contract (assembly/config.ts): documented defaults, every rejection with its exact
// message, durations, and the shared config fixtures in tests/fixtures/config/.

import {
  parseConfig, parseDuration, asciiLower, Config, Source, RULE_RATE, RULE_UA, RULE_ERRORS,
  RULE_NAMES, DEFAULT_UA_PATTERNS, MIN_CAPACITY, MAX_CAPACITY, MeshCallers,
} from "../../assembly/config";
import { GlobSet } from "../../assembly/glob";

// Whether the subject matches any pattern of the list, as the filter matches it (a compiled GlobSet).
function anyOf(patterns: ArrayBuffer[], subject: ArrayBuffer): bool {
  return new GlobSet(patterns).matches(changetype<usize>(subject), subject.byteLength);
}
import * as mock from "./mock";
import { expectIncludes } from "./helpers";

// Parses a config that must be accepted.
function accept(text: string): Config {
  let r = parseConfig(text);
  if (r.config === null) {
    expect(r.errors.join("; ")).toBe("", "config must be accepted: " + text);
    return new Config();
  }
  expect(r.errors.length).toBe(0);
  return changetype<Config>(r.config);
}

// Parses a config that must be rejected; returns the problems joined with "; " as in the log line.
function reject(text: string): string {
  let r = parseConfig(text);
  expect(r.config).toBeNull("config must be rejected: " + text);
  expect(r.errors.length).toBeGreaterThan(0);
  return r.errors.join("; ");
}

function utf8(b: ArrayBuffer): string { return String.UTF8.decode(b); }

// Which of the 600 status slots are set, as a compact list of ranges ("400-499").
function statusList(cfg: Config): string {
  let out: string[] = [];
  let s = 0;
  while (s < 600) {
    if (!cfg.statusMatch[s]) { s++; continue; }
    let e = s;
    while (e + 1 < 600 && cfg.statusMatch[e + 1]) e++;
    out.push(s == e ? s.toString() : s.toString() + "-" + e.toString());
    s = e + 1;
  }
  return out.join(",");
}

function patterns(cfg: Config): string {
  let out: string[] = [];
  for (let i = 0; i < cfg.uaPatterns.length; i++) out.push(utf8(cfg.uaPatterns[i]));
  return out.join(" ");
}

function ruleOf(cfg: Config, i: i32): string {
  let r = cfg.rules[i];
  return (r.enabled ? "on " : "off ") + r.requests.toString() + "/" + r.perMs.toString() + "ms ban " + r.banMs.toString() + "ms";
}

// Asserts every documented default (docs/configuration.md, and
// tests/fixtures/config/valid/every-field.json, which spells them out).
function expectDefaults(cfg: Config): void {
  expect(cfg.dryRun).toBe(false, "mode: enforce");
  expect(cfg.source).toBe(Source.Auto, "clientAddress.source: auto");
  expect(cfg.headerName.byteLength).toBe(0);
  expect(cfg.trustedHops).toBe(0, "clientAddress.trustedHops: 0");
  expect(cfg.prefixV4).toBe(32, "prefixes.ipv4: 32");
  expect(cfg.prefixV6).toBe(64, "prefixes.ipv6: 64");
  expect(cfg.allow.length).toBe(0);
  expect(cfg.deny.length).toBe(0);
  expect(cfg.skipPaths.length).toBe(0);
  expect(ruleOf(cfg, RULE_RATE)).toBe("on 600/60000ms ban 300000ms", "rate: 600 per 1m, ban 5m");
  expect(ruleOf(cfg, RULE_UA)).toBe("on 10/60000ms ban 600000ms", "userAgent: 10 per 1m, ban 10m");
  expect(ruleOf(cfg, RULE_ERRORS)).toBe("on 20/60000ms ban 1800000ms", "errors: 20 per 1m, ban 30m");
  expect(statusList(cfg)).toBe("400-499", "errors.statuses: 4xx");
  expect(cfg.escalation).toBe(2.0, "ban.escalation: 2");
  expect(cfg.banMaxMs).toBe(86_400_000, "ban.max: 24h");
  expect(cfg.forgetAfterMs).toBe(86_400_000, "ban.forgetAfter: 24h");
  expect(cfg.rangeThreshold).toBe(5, "ban.range.threshold: 5");
  expect(cfg.rangeWindowMs).toBe(600_000, "ban.range.window: 10m");
  expect(cfg.rangeBanMs).toBe(3_600_000, "ban.range.ban: 1h");
  expect(cfg.rangePrefixV4).toBe(0, "ban.range.prefixes.ipv4: 0 (off)");
  expect(cfg.rangePrefixV6).toBe(48, "ban.range.prefixes.ipv6: 48");
  expect(cfg.responseStatus).toBe(403, "response.status: 403");
  expect(utf8(cfg.responseBody)).toBe("Forbidden\n", "response.body");
  expect(cfg.responseHeaderNames.join(",")).toBe("content-type");
  expect(cfg.responseHeaderValues.join(",")).toBe("text/plain");
  expect(cfg.capacity).toBe(65536, "capacity: 65536");
  expect(cfg.enabledRules()).toBe("rate,userAgent,errors");
}

describe("configuration defaults", () => {
  it("gives every documented default for an empty configuration", () => {
    expectDefaults(accept(""));
  });

  it("gives every documented default for {}", () => {
    expectDefaults(accept("{}"));
  });

  it("treats a whitespace-only configuration as empty", () => {
    expectDefaults(accept(" \n\t \r\n"));
    expectDefaults(accept("  {}  \n"));
  });

  it("has the default User-Agent patterns, which catch HTTP libraries and scanners but not browsers", () => {
    let cfg = accept("{}");
    expect(patterns(cfg)).toBe(DEFAULT_UA_PATTERNS.join(" "));
    expect(cfg.uaPatterns.length).toBe(16);
    expect(anyOf(cfg.uaPatterns, String.UTF8.encode("curl/8.5.0"))).toBe(true);
    expect(anyOf(cfg.uaPatterns, String.UTF8.encode("Wget/1.21.4"))).toBe(true);
    expect(anyOf(cfg.uaPatterns, String.UTF8.encode("python-requests/2.31.0"))).toBe(true);
    expect(anyOf(cfg.uaPatterns, String.UTF8.encode("Go-http-client/1.1"))).toBe(true);
    expect(anyOf(cfg.uaPatterns, String.UTF8.encode("Mozilla/5.0 (compatible; Nmap Scripting Engine)"))).toBe(true);
    expect(anyOf(cfg.uaPatterns, String.UTF8.encode("sqlmap/1.7#stable (https://sqlmap.org)"))).toBe(true);
    expect(anyOf(cfg.uaPatterns, String.UTF8.encode("Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"))).toBe(false);
    expect(anyOf(cfg.uaPatterns, new ArrayBuffer(0))).toBe(false);
  });

  it("derives the refill rate of each rule from requests per period", () => {
    let cfg = accept("{}");
    expect(cfg.rules[RULE_RATE].refillPerMs).toBe(600.0 / 60000.0);
    expect(cfg.rules[RULE_ERRORS].refillPerMs).toBe(20.0 / 60000.0);
  });

  it("accepts every-field.json, which spells out the defaults, with the same values", () => {
    let text = "";
    for (let i = 0; i < mock.fixtureCount(mock.VALID); i++) {
      if (mock.fixtureName(mock.VALID, i) == "every-field") text = mock.fixtureText(mock.VALID, i);
    }
    expect(text.length).toBeGreaterThan(0, "tests/fixtures/config/valid/every-field.json exists");
    let cfg = accept(text);
    // It lists allow/deny/skipPaths and three UA patterns; everything else is the default.
    cfg.allow = [];
    cfg.deny = [];
    cfg.skipPaths = [];
    expect(patterns(cfg)).toBe("curl/* wget/* python-requests/*");
    cfg.uaPatterns = accept("").uaPatterns;
    expectDefaults(cfg);
  });
});

describe("configuration fixtures", () => {
  it("accepts every valid fixture", () => {
    let n = mock.fixtureCount(mock.VALID);
    expect(n).toBeGreaterThan(0, "tests/fixtures/config/valid/ has fixtures");
    let bad: string[] = [];
    for (let i = 0; i < n; i++) {
      let r = parseConfig(mock.fixtureText(mock.VALID, i));
      if (r.config === null) bad.push(mock.fixtureName(mock.VALID, i) + ": " + r.errors.join("; "));
    }
    expect(bad.join("\n")).toBe("");
  });

  it("rejects every invalid fixture with exactly the expected problems, in order", () => {
    let n = mock.fixtureCount(mock.INVALID);
    expect(n).toBeGreaterThan(0, "tests/fixtures/config/invalid/ has fixtures");
    let bad: string[] = [];
    for (let i = 0; i < n; i++) {
      let name = mock.fixtureName(mock.INVALID, i);
      let expected = mock.fixtureExpected(mock.INVALID, i);
      let r = parseConfig(mock.fixtureText(mock.INVALID, i));
      let got = r.errors.join("\n");
      if (r.config !== null) bad.push(name + ": accepted");
      else if (expected.length == 0) bad.push(name + ": no .expected file");
      else if (got != expected) bad.push(name + ":\n  expected: " + expected.replaceAll("\n", "\n            ") + "\n  got:      " + got.replaceAll("\n", "\n            "));
    }
    expect(bad.join("\n")).toBe("");
  });
});

describe("configuration: top level", () => {
  it("rejects text that is not JSON with the parser's position", () => {
    expect(reject("{\"mode\": enforce}")).toBe("pluginConfig: invalid JSON at position 9: expected a value, found 'e'");
    expect(reject("{")).toBe("pluginConfig: invalid JSON at position 1: expected a string key, found end of input");
  });

  it("reports the JSON error position in the text as given, leading whitespace included", () => {
    // The offset must point into the pluginConfig the operator wrote, not into a trimmed copy of it.
    expect(reject("  \n  {\"mode\": enforce}")).toBe("pluginConfig: invalid JSON at position 14: expected a value, found 'e'");
  });

  it("rejects JSON that is not an object", () => {
    expect(reject("[]")).toBe("pluginConfig: expected a JSON object, got an array");
    expect(reject("\"x\"")).toBe("pluginConfig: expected a JSON object, got \"x\"");
    expect(reject("42")).toBe("pluginConfig: expected a JSON object, got 42");
    expect(reject("null")).toBe("pluginConfig: expected a JSON object, got null");
  });

  it("rejects unknown fields and lists the known ones", () => {
    expect(reject("{\"mdoe\":\"enforce\"}")).toBe("mdoe: unknown field (expected one of: mode, clientAddress, prefixes, allow, deny, skipPaths, rules, ban, response, capacity, decisions)");
  });

  it("reports every problem in document order, not just the first", () => {
    expect(reject("{\"mode\":1,\"capacity\":\"big\",\"prefixes\":{\"ipv4\":0,\"ipv7\":1}}")).toBe(
      "mode: expected \"enforce\" or \"dry-run\", got 1; prefixes.ipv7: unknown field (expected one of: ipv4, ipv6); " +
      "prefixes.ipv4: expected an integer from 8 to 32, got 0; capacity: expected an integer from 1024 to 1048576, got \"big\"");
  });
});

describe("configuration: mode", () => {
  it("accepts enforce and dry-run", () => {
    expect(accept("{\"mode\":\"enforce\"}").dryRun).toBe(false);
    expect(accept("{\"mode\":\"dry-run\"}").dryRun).toBe(true);
  });

  it("rejects other modes and types", () => {
    expect(reject("{\"mode\":\"block\"}")).toBe("mode: expected \"enforce\" or \"dry-run\", got \"block\"");
    expect(reject("{\"mode\":\"Enforce\"}")).toBe("mode: expected \"enforce\" or \"dry-run\", got \"Enforce\"");
    expect(reject("{\"mode\":true}")).toBe("mode: expected \"enforce\" or \"dry-run\", got true");
    expect(reject("{\"mode\":null}")).toBe("mode: expected \"enforce\" or \"dry-run\", got null");
  });
});

describe("configuration: clientAddress", () => {
  it("accepts each source", () => {
    expect(accept("{\"clientAddress\":{\"source\":\"peer\"}}").source).toBe(Source.Peer);
    expect(accept("{\"clientAddress\":{\"source\":\"xff\"}}").source).toBe(Source.Xff);
    expect(accept("{\"clientAddress\":{\"source\":\"auto\"}}").source).toBe(Source.Auto);
    let h = accept("{\"clientAddress\":{\"source\":\"header:X-Real-IP\"}}");
    expect(h.source).toBe(Source.Header);
    expect(utf8(h.headerName)).toBe("x-real-ip", "the header name is lowercased");
  });

  it("rejects unknown sources, an empty header name and header names with illegal characters", () => {
    let msg = "clientAddress.source: expected \"peer\", \"xff\", \"auto\" or \"header:<name>\", got ";
    expect(reject("{\"clientAddress\":{\"source\":\"forwarded\"}}")).toBe(msg + "\"forwarded\"");
    expect(reject("{\"clientAddress\":{\"source\":\"header:\"}}")).toBe(msg + "\"header:\"");
    expect(reject("{\"clientAddress\":{\"source\":\"header:x real ip\"}}")).toBe(msg + "\"header:x real ip\"");
    expect(reject("{\"clientAddress\":{\"source\":\"header:a:b\"}}")).toBe(msg + "\"header:a:b\"");
    expect(reject("{\"clientAddress\":{\"source\":\"PEER\"}}")).toBe(msg + "\"PEER\"");
    expect(reject("{\"clientAddress\":{\"source\":1}}")).toBe(msg + "1");
  });

  it("accepts header names up to 128 characters and rejects longer ones", () => {
    expect(accept("{\"clientAddress\":{\"source\":\"header:" + "a".repeat(128) + "\"}}").source).toBe(Source.Header);
    expectIncludes(reject("{\"clientAddress\":{\"source\":\"header:" + "a".repeat(129) + "\"}}"), "clientAddress.source: expected");
  });

  it("accepts trustedHops from 0 to 16", () => {
    expect(accept("{\"clientAddress\":{\"trustedHops\":0}}").trustedHops).toBe(0);
    expect(accept("{\"clientAddress\":{\"trustedHops\":16}}").trustedHops).toBe(16);
    expect(accept("{\"clientAddress\":{\"source\":\"xff\",\"trustedHops\":2}}").trustedHops).toBe(2);
  });

  it("rejects trustedHops outside 0..16, fractions and strings", () => {
    expect(reject("{\"clientAddress\":{\"trustedHops\":-1}}")).toBe("clientAddress.trustedHops: expected an integer from 0 to 16, got -1");
    expect(reject("{\"clientAddress\":{\"trustedHops\":17}}")).toBe("clientAddress.trustedHops: expected an integer from 0 to 16, got 17");
    expect(reject("{\"clientAddress\":{\"trustedHops\":1.5}}")).toBe("clientAddress.trustedHops: expected an integer from 0 to 16, got 1.5");
    expect(reject("{\"clientAddress\":{\"trustedHops\":\"1\"}}")).toBe("clientAddress.trustedHops: expected an integer from 0 to 16, got \"1\"");
  });

  it("rejects a clientAddress that is not an object and unknown fields in it", () => {
    expect(reject("{\"clientAddress\":\"peer\"}")).toBe("clientAddress: expected an object, got \"peer\"");
    expect(reject("{\"clientAddress\":{\"hops\":1}}")).toBe("clientAddress.hops: unknown field (expected one of: source, trustedHops, trustedPeers, meshCallers)");
  });
});

describe("configuration: prefixes", () => {
  it("accepts ipv4 8..32 and ipv6 16..128", () => {
    let lo = accept("{\"prefixes\":{\"ipv4\":8,\"ipv6\":16}}");
    expect(lo.prefixV4).toBe(8);
    expect(lo.prefixV6).toBe(16);
    let hi = accept("{\"prefixes\":{\"ipv4\":32,\"ipv6\":128}}");
    expect(hi.prefixV4).toBe(32);
    expect(hi.prefixV6).toBe(128);
    expect(accept("{\"prefixes\":{\"ipv6\":48}}").prefixV4).toBe(32, "an omitted family keeps its default");
  });

  it("rejects prefixes outside their ranges", () => {
    expect(reject("{\"prefixes\":{\"ipv4\":7}}")).toBe("prefixes.ipv4: expected an integer from 8 to 32, got 7");
    expect(reject("{\"prefixes\":{\"ipv4\":33}}")).toBe("prefixes.ipv4: expected an integer from 8 to 32, got 33");
    expect(reject("{\"prefixes\":{\"ipv6\":15}}")).toBe("prefixes.ipv6: expected an integer from 16 to 128, got 15");
    expect(reject("{\"prefixes\":{\"ipv6\":129}}")).toBe("prefixes.ipv6: expected an integer from 16 to 128, got 129");
    expect(reject("{\"prefixes\":{\"ipv6\":\"64\"}}")).toBe("prefixes.ipv6: expected an integer from 16 to 128, got \"64\"");
    expect(reject("{\"prefixes\":24}")).toBe("prefixes: expected an object, got 24");
  });
});

describe("configuration: allow and deny", () => {
  it("parses CIDRs and bare addresses of both families", () => {
    let cfg = accept("{\"allow\":[\"10.0.0.0/8\",\"fd00::/8\",\"192.168.1.1\",\"::1\"],\"deny\":[\"203.0.113.0/24\"]}");
    expect(cfg.allow.length).toBe(4);
    expect(cfg.deny.length).toBe(1);
    expect(cfg.allow[0].lo).toBe(0x0000ffff0a000000);
    expect(cfg.allow[0].mlo).toBe(0xffffffffff000000);
    expect(cfg.allow[3].mhi).toBe(0xffffffffffffffff, "a bare IPv6 address is a /128");
    expect(cfg.allow[3].mlo).toBe(0xffffffffffffffff);
  });

  it("accepts empty lists", () => {
    let cfg = accept("{\"allow\":[],\"deny\":[]}");
    expect(cfg.allow.length).toBe(0);
    expect(cfg.deny.length).toBe(0);
  });

  it("rejects bad entries by index and a non-array list", () => {
    expect(reject("{\"allow\":[\"10.0.0.0/33\",\"nope\"],\"deny\":\"1.2.3.4\"}")).toBe(
      "allow[0]: expected a CIDR like \"10.0.0.0/8\" or \"fd00::/8\", got \"10.0.0.0/33\"; " +
      "allow[1]: expected a CIDR like \"10.0.0.0/8\" or \"fd00::/8\", got \"nope\"; " +
      "deny: expected an array of CIDRs like \"10.0.0.0/8\", got \"1.2.3.4\"");
    expect(reject("{\"deny\":[\"::/129\",8]}")).toBe(
      "deny[0]: expected a CIDR like \"10.0.0.0/8\" or \"fd00::/8\", got \"::/129\"; " +
      "deny[1]: expected a CIDR like \"10.0.0.0/8\" or \"fd00::/8\", got 8");
  });
});

describe("configuration: skipPaths", () => {
  it("keeps path prefixes as UTF-8 bytes", () => {
    let cfg = accept("{\"skipPaths\":[\"/healthz\",\"/\",\"/ünï\"]}");
    expect(cfg.skipPaths.length).toBe(3);
    expect(utf8(cfg.skipPaths[0])).toBe("/healthz");
    expect(cfg.skipPaths[2].byteLength).toBe(6);
  });

  it("rejects entries that do not start with a slash and a non-array", () => {
    expect(reject("{\"skipPaths\":[\"healthz\",7]}")).toBe(
      "skipPaths[0]: expected a path prefix starting with \"/\", got \"healthz\"; skipPaths[1]: expected a path prefix starting with \"/\", got 7");
    expect(reject("{\"skipPaths\":\"/healthz\"}")).toBe("skipPaths: expected an array of path prefixes like \"/healthz\", got \"/healthz\"");
    expect(reject("{\"skipPaths\":[\"\"]}")).toBe("skipPaths[0]: expected a path prefix starting with \"/\", got \"\"");
  });
});

describe("configuration: rules", () => {
  it("sets each rule's limit, period and ban", () => {
    let cfg = accept("{\"rules\":{\"rate\":{\"limit\":{\"requests\":5,\"per\":\"10s\"},\"ban\":\"1h\"}," +
      "\"userAgent\":{\"limit\":{\"requests\":1,\"per\":\"1d\"},\"ban\":\"0s\"},\"errors\":{\"limit\":{\"requests\":1000000,\"per\":\"500ms\"}}}}");
    expect(ruleOf(cfg, RULE_RATE)).toBe("on 5/10000ms ban 3600000ms");
    expect(ruleOf(cfg, RULE_UA)).toBe("on 1/86400000ms ban 0ms");
    expect(ruleOf(cfg, RULE_ERRORS)).toBe("on 1000000/500ms ban 1800000ms");
    expect(cfg.rules[RULE_RATE].refillPerMs).toBe(5.0 / 10000.0);
  });

  it("keeps the other half of a limit at its default when only one is given", () => {
    let cfg = accept("{\"rules\":{\"rate\":{\"limit\":{\"requests\":60}},\"errors\":{\"limit\":{\"per\":\"10m\"}}}}");
    expect(ruleOf(cfg, RULE_RATE)).toBe("on 60/60000ms ban 300000ms");
    expect(ruleOf(cfg, RULE_ERRORS)).toBe("on 20/600000ms ban 1800000ms");
    expect(cfg.rules[RULE_RATE].refillPerMs).toBe(60.0 / 60000.0);
    expect(cfg.rules[RULE_ERRORS].refillPerMs).toBe(20.0 / 600000.0);
  });

  it("disables rules and names the enabled ones", () => {
    expect(accept("{\"rules\":{\"userAgent\":{\"enabled\":false}}}").enabledRules()).toBe("rate,errors");
    let off = accept("{\"rules\":{\"rate\":{\"enabled\":false},\"userAgent\":{\"enabled\":false},\"errors\":{\"enabled\":false}}}");
    expect(off.enabledRules()).toBe("none");
    expect(RULE_NAMES.join(",")).toBe("rate,userAgent,errors");
  });

  it("rejects requests outside 1..1000000 and fractions", () => {
    expect(reject("{\"rules\":{\"userAgent\":{\"limit\":{\"requests\":0,\"per\":\"1m\"}}}}")).toBe("rules.userAgent.limit.requests: expected an integer from 1 to 1000000, got 0");
    expect(reject("{\"rules\":{\"rate\":{\"limit\":{\"requests\":1000001}}}}")).toBe("rules.rate.limit.requests: expected an integer from 1 to 1000000, got 1000001");
    expect(reject("{\"rules\":{\"rate\":{\"limit\":{\"requests\":2.5}}}}")).toBe("rules.rate.limit.requests: expected an integer from 1 to 1000000, got 2.5");
    expect(reject("{\"rules\":{\"errors\":{\"limit\":{\"requests\":\"20\"}}}}")).toBe("rules.errors.limit.requests: expected an integer from 1 to 1000000, got \"20\"");
  });

  it("rejects a zero, numeric or malformed period", () => {
    expect(reject("{\"rules\":{\"rate\":{\"limit\":{\"per\":\"0s\"}}}}")).toBe("rules.rate.limit.per: expected a duration like \"60s\", got \"0s\"");
    expect(reject("{\"rules\":{\"rate\":{\"limit\":{\"per\":\"0\"}}}}")).toBe("rules.rate.limit.per: expected a duration like \"60s\", got \"0\"");
    expect(reject("{\"rules\":{\"rate\":{\"limit\":{\"per\":60}}}}")).toBe("rules.rate.limit.per: expected a duration like \"60s\", got 60");
    expect(reject("{\"rules\":{\"rate\":{\"limit\":{\"requests\":10,\"per\":\"abc\"}}}}")).toBe("rules.rate.limit.per: expected a duration like \"60s\", got \"abc\"");
  });

  it("allows ban 0s (plain limiting) and rejects malformed bans", () => {
    expect(accept("{\"rules\":{\"rate\":{\"ban\":\"0s\"}}}").rules[RULE_RATE].banMs).toBe(0);
    expect(accept("{\"rules\":{\"rate\":{\"ban\":\"0\"}}}").rules[RULE_RATE].banMs).toBe(0);
    expect(reject("{\"rules\":{\"errors\":{\"ban\":1800}}}")).toBe("rules.errors.ban: expected a duration like \"60s\" (\"0s\" allowed), got 1800");
    expect(reject("{\"rules\":{\"rate\":{\"ban\":\"-1s\"}}}")).toBe("rules.rate.ban: expected a duration like \"60s\" (\"0s\" allowed), got \"-1s\"");
  });

  it("rejects a non-boolean enabled", () => {
    expect(reject("{\"rules\":{\"rate\":{\"enabled\":\"yes\"}}}")).toBe("rules.rate.enabled: expected true or false, got \"yes\"");
    expect(reject("{\"rules\":{\"errors\":{\"enabled\":1}}}")).toBe("rules.errors.enabled: expected true or false, got 1");
  });

  it("rejects unknown rules and fields, each rule listing its own fields", () => {
    expect(reject("{\"rules\":{\"bots\":{}}}")).toBe("rules.bots: unknown field (expected one of: rate, userAgent, errors, custom, presets)");
    expect(reject("{\"rules\":{\"rate\":{\"match\":[]}}}")).toBe("rules.rate.match: unknown field (expected one of: enabled, limit, ban, applyToMesh, meshLimit)");
    expect(reject("{\"rules\":{\"userAgent\":{\"statuses\":[]}}}")).toBe("rules.userAgent.statuses: unknown field (expected one of: enabled, limit, ban, applyToMesh, meshLimit, match)");
    expect(reject("{\"rules\":{\"errors\":{\"match\":[]}}}")).toBe("rules.errors.match: unknown field (expected one of: enabled, limit, ban, applyToMesh, meshLimit, statuses)");
    expect(reject("{\"rules\":{\"rate\":{\"limit\":{\"burst\":5}}}}")).toBe("rules.rate.limit.burst: unknown field (expected one of: requests, per)");
  });

  it("rejects rules, a rule and a limit that are not objects", () => {
    expect(reject("{\"rules\":[]}")).toBe("rules: expected an object, got an array");
    expect(reject("{\"rules\":{\"rate\":true}}")).toBe("rules.rate: expected an object, got true");
    expect(reject("{\"rules\":{\"rate\":{\"limit\":5}}}")).toBe("rules.rate.limit: expected an object, got 5");
  });
});

describe("configuration: userAgent.match", () => {
  it("replaces the default patterns and lowercases them", () => {
    let cfg = accept("{\"rules\":{\"userAgent\":{\"match\":[\"Curl/*\",\"*BOT*\"]}}}");
    expect(patterns(cfg)).toBe("curl/* *bot*");
  });

  it("accepts an empty list (nothing matches) and patterns up to 256 characters", () => {
    expect(accept("{\"rules\":{\"userAgent\":{\"match\":[]}}}").uaPatterns.length).toBe(0);
    expect(accept("{\"rules\":{\"userAgent\":{\"match\":[\"" + "a".repeat(256) + "\"]}}}").uaPatterns.length).toBe(1);
  });

  it("rejects a non-array, non-strings and patterns over 256 characters", () => {
    expect(reject("{\"rules\":{\"userAgent\":{\"match\":\"curl/*\"}}}")).toBe("rules.userAgent.match: expected an array of globs like \"curl/*\", got \"curl/*\"");
    expect(reject("{\"rules\":{\"userAgent\":{\"match\":[1]}}}")).toBe("rules.userAgent.match[0]: expected a glob of at most 256 characters, got 1");
    expect(reject("{\"rules\":{\"userAgent\":{\"match\":[\"ok\",\"" + "a".repeat(257) + "\"]}}}")).toBe(
      "rules.userAgent.match[1]: expected a glob of at most 256 characters, got \"" + "a".repeat(61) + "...\"");
  });
});

describe("configuration: errors.statuses", () => {
  it("accepts codes as numbers or strings and classes", () => {
    expect(statusList(accept("{\"rules\":{\"errors\":{\"statuses\":[404,\"429\",\"5xx\"]}}}"))).toBe("404,429,500-599");
    expect(statusList(accept("{\"rules\":{\"errors\":{\"statuses\":[100,599,\"1xx\"]}}}"))).toBe("100-199,599");
  });

  it("replaces the default 4xx rather than adding to it", () => {
    expect(statusList(accept("{\"rules\":{\"errors\":{\"statuses\":[404]}}}"))).toBe("404");
  });

  it("accepts gRPC statuses grpc:0 to grpc:16 as a bit set, beside HTTP statuses", () => {
    let cfg = accept("{\"rules\":{\"errors\":{\"statuses\":[\"grpc:5\",\"grpc:16\",\"grpc:0\",404]}}}");
    expect(cfg.grpcMatch).toBe((1 << 5) | (1 << 16) | 1);
    expect(statusList(cfg)).toBe("404");
    expect(statusList(accept("{\"rules\":{\"errors\":{\"statuses\":[\"grpc:14\"]}}}"))).toBe("", "gRPC statuses only: no HTTP status counts");
    expect(accept("{}").grpcMatch).toBe(0, "no gRPC status counts by default");
  });

  it("rejects codes outside 100..599, bad classes and malformed strings, by index", () => {
    let msg = ": expected an HTTP status from 100 to 599 (404 or \"404\"), a class like \"4xx\", or a gRPC status from \"grpc:0\" to \"grpc:16\", got ";
    expect(reject("{\"rules\":{\"errors\":{\"statuses\":[\"6xx\",99,\"abc\"]}}}")).toBe(
      "rules.errors.statuses[0]" + msg + "\"6xx\"; rules.errors.statuses[1]" + msg + "99; rules.errors.statuses[2]" + msg + "\"abc\"");
    expect(reject("{\"rules\":{\"errors\":{\"statuses\":[600]}}}")).toBe("rules.errors.statuses[0]" + msg + "600");
    expect(reject("{\"rules\":{\"errors\":{\"statuses\":[\"0xx\"]}}}")).toBe("rules.errors.statuses[0]" + msg + "\"0xx\"");
    expect(reject("{\"rules\":{\"errors\":{\"statuses\":[\"4XX\"]}}}")).toBe("rules.errors.statuses[0]" + msg + "\"4XX\"");
    expect(reject("{\"rules\":{\"errors\":{\"statuses\":[\"4x\"]}}}")).toBe("rules.errors.statuses[0]" + msg + "\"4x\"");
    expect(reject("{\"rules\":{\"errors\":{\"statuses\":[\"40a\"]}}}")).toBe("rules.errors.statuses[0]" + msg + "\"40a\"");
    expect(reject("{\"rules\":{\"errors\":{\"statuses\":[404.5]}}}")).toBe("rules.errors.statuses[0]" + msg + "404.5");
    expect(reject("{\"rules\":{\"errors\":{\"statuses\":[\"grpc:17\"]}}}")).toBe("rules.errors.statuses[0]" + msg + "\"grpc:17\"");
    expect(reject("{\"rules\":{\"errors\":{\"statuses\":[\"grpc:05\"]}}}")).toBe("rules.errors.statuses[0]" + msg + "\"grpc:05\"");
    expect(reject("{\"rules\":{\"errors\":{\"statuses\":[\"grpc:\"]}}}")).toBe("rules.errors.statuses[0]" + msg + "\"grpc:\"");
  });

  it("rejects an empty list and a non-array", () => {
    expect(reject("{\"rules\":{\"errors\":{\"statuses\":[]}}}")).toBe("rules.errors.statuses: expected a non-empty array of statuses such as [\"4xx\", 429], got an array");
    expect(reject("{\"rules\":{\"errors\":{\"statuses\":\"4xx\"}}}")).toBe("rules.errors.statuses: expected a non-empty array of statuses such as [\"4xx\", 429], got \"4xx\"");
  });
});

describe("configuration: ban", () => {
  it("sets escalation, max and forgetAfter", () => {
    let cfg = accept("{\"ban\":{\"escalation\":1.5,\"max\":\"1h30m\",\"forgetAfter\":\"0s\"}}");
    expect(cfg.escalation).toBe(1.5);
    expect(cfg.banMaxMs).toBe(5_400_000);
    expect(cfg.forgetAfterMs).toBe(0);
    expect(accept("{\"ban\":{\"escalation\":1}}").escalation).toBe(1.0);
    expect(accept("{\"ban\":{\"escalation\":100}}").escalation).toBe(100.0);
  });

  it("rejects escalation outside 1..100 and non-numbers", () => {
    expect(reject("{\"ban\":{\"escalation\":0.5}}")).toBe("ban.escalation: expected a number from 1 to 100, got 0.5");
    expect(reject("{\"ban\":{\"escalation\":101}}")).toBe("ban.escalation: expected a number from 1 to 100, got 101");
    expect(reject("{\"ban\":{\"escalation\":\"2\"}}")).toBe("ban.escalation: expected a number from 1 to 100, got \"2\"");
  });

  it("rejects a zero max but allows a zero forgetAfter", () => {
    expect(reject("{\"ban\":{\"max\":\"0s\"}}")).toBe("ban.max: expected a duration like \"60s\", got \"0s\"");
    expect(reject("{\"ban\":{\"forgetAfter\":\"soon\"}}")).toBe("ban.forgetAfter: expected a duration like \"60s\" (\"0s\" allowed), got \"soon\"");
  });

  it("rejects a ban that is not an object and unknown fields", () => {
    expect(reject("{\"ban\":[]}")).toBe("ban: expected an object, got an array");
    expect(reject("{\"ban\":{\"min\":\"1s\"}}")).toBe("ban.min: unknown field (expected one of: escalation, max, forgetAfter, range)");
  });
});

describe("configuration: response", () => {
  it("sets status, body and headers, lowercasing header names", () => {
    let cfg = accept("{\"response\":{\"status\":429,\"body\":\"slow down ✋\",\"headers\":{\"Content-Type\":\"text/html\",\"X-Why\":\"traffic-guard\"}}}");
    expect(cfg.responseStatus).toBe(429);
    expect(utf8(cfg.responseBody)).toBe("slow down ✋");
    expect(cfg.responseHeaderNames.join(",")).toBe("content-type,x-why");
    expect(cfg.responseHeaderValues.join(",")).toBe("text/html,traffic-guard");
  });

  it("accepts an empty body and no headers", () => {
    let cfg = accept("{\"response\":{\"body\":\"\",\"headers\":{}}}");
    expect(cfg.responseBody.byteLength).toBe(0);
    expect(cfg.responseHeaderNames.length).toBe(0);
  });

  it("accepts statuses 400..599 only", () => {
    expect(accept("{\"response\":{\"status\":400}}").responseStatus).toBe(400);
    expect(accept("{\"response\":{\"status\":599}}").responseStatus).toBe(599);
    expect(reject("{\"response\":{\"status\":200}}")).toBe("response.status: expected an integer from 400 to 599, got 200");
    expect(reject("{\"response\":{\"status\":600}}")).toBe("response.status: expected an integer from 400 to 599, got 600");
    expect(reject("{\"response\":{\"status\":\"403\"}}")).toBe("response.status: expected an integer from 400 to 599, got \"403\"");
  });

  it("accepts a 65536-character body and rejects a longer one or a non-string", () => {
    expect(accept("{\"response\":{\"body\":\"" + "b".repeat(65536) + "\"}}").responseBody.byteLength).toBe(65536);
    expect(reject("{\"response\":{\"body\":\"" + "b".repeat(65537) + "\"}}")).toBe(
      "response.body: expected a string of at most 65536 characters, got \"" + "b".repeat(61) + "...\"");
    expect(reject("{\"response\":{\"body\":null}}")).toBe("response.body: expected a string of at most 65536 characters, got null");
  });

  it("rejects header names with illegal characters and values with CR, LF or NUL", () => {
    expect(reject("{\"response\":{\"headers\":{\"Bad Header\":\"x\"}}}")).toBe("response.headers.Bad Header: expected a header name (letters, digits, '-')");
    expect(reject("{\"response\":{\"headers\":{\"\":\"x\"}}}")).toBe("response.headers.: expected a header name (letters, digits, '-')");
    expect(reject("{\"response\":{\"headers\":{\"x-a\":\"a\\nb\"}}}")).toBe("response.headers.x-a: expected a string without CR, LF or NUL, got \"a\\nb\"");
    expect(reject("{\"response\":{\"headers\":{\"x-a\":\"a\\rb\"}}}")).toBe("response.headers.x-a: expected a string without CR, LF or NUL, got \"a\\u000db\"");
    expect(reject("{\"response\":{\"headers\":{\"x-a\":\"a\\u0000b\"}}}")).toBe("response.headers.x-a: expected a string without CR, LF or NUL, got \"a\\u0000b\"");
    expect(reject("{\"response\":{\"headers\":{\"x-a\":5}}}")).toBe("response.headers.x-a: expected a string without CR, LF or NUL, got 5");
    expectIncludes(reject("{\"response\":{\"headers\":{\"x-a\":\"" + "v".repeat(4097) + "\"}}}"), "response.headers.x-a: expected a string without CR, LF or NUL");
  });

  it("rejects a response or headers that are not objects, and unknown fields", () => {
    expect(reject("{\"response\":\"403\"}")).toBe("response: expected an object, got \"403\"");
    expect(reject("{\"response\":{\"headers\":[]}}")).toBe("response.headers: expected an object, got an array");
    expect(reject("{\"response\":{\"code\":403}}")).toBe("response.code: unknown field (expected one of: status, body, headers)");
  });
});

describe("configuration: capacity", () => {
  it("accepts 1024 to 1048576", () => {
    expect(MIN_CAPACITY).toBe(1024);
    expect(MAX_CAPACITY).toBe(1048576);
    expect(accept("{\"capacity\":1024}").capacity).toBe(1024);
    expect(accept("{\"capacity\":1048576}").capacity).toBe(1048576);
  });

  it("rejects capacities outside the range and fractions", () => {
    expect(reject("{\"capacity\":100}")).toBe("capacity: expected an integer from 1024 to 1048576, got 100");
    expect(reject("{\"capacity\":1023}")).toBe("capacity: expected an integer from 1024 to 1048576, got 1023");
    expect(reject("{\"capacity\":1048577}")).toBe("capacity: expected an integer from 1024 to 1048576, got 1048577");
    expect(reject("{\"capacity\":2048.5}")).toBe("capacity: expected an integer from 1024 to 1048576, got 2048.5");
  });
});

describe("durations", () => {
  it("parses each unit", () => {
    expect(parseDuration("500ms")).toBe(500);
    expect(parseDuration("90s")).toBe(90_000);
    expect(parseDuration("10m")).toBe(600_000);
    expect(parseDuration("2h")).toBe(7_200_000);
    expect(parseDuration("1d")).toBe(86_400_000);
  });

  it("adds up compound durations", () => {
    expect(parseDuration("1h30m")).toBe(5_400_000);
    expect(parseDuration("1m30s")).toBe(90_000);
    expect(parseDuration("1s500ms")).toBe(1_500);
    expect(parseDuration("1d2h3m4s5ms")).toBe(86_400_000 + 7_200_000 + 180_000 + 4_000 + 5);
  });

  it("parses zero with or without a unit", () => {
    expect(parseDuration("0")).toBe(0);
    expect(parseDuration("0s")).toBe(0);
    expect(parseDuration("0ms")).toBe(0);
  });

  it("rejects empty, unitless, numberless, unknown-unit, negative and fractional durations", () => {
    expect(parseDuration("")).toBe(-1);
    expect(parseDuration("5")).toBe(-1);
    expect(parseDuration("m")).toBe(-1);
    expect(parseDuration("ms")).toBe(-1);
    expect(parseDuration("1x")).toBe(-1);
    expect(parseDuration("-1s")).toBe(-1);
    expect(parseDuration("1.5s")).toBe(-1);
    expect(parseDuration("1 s")).toBe(-1);
    expect(parseDuration(" 1s")).toBe(-1);
    expect(parseDuration("1S")).toBe(-1);
    expect(parseDuration("1h30")).toBe(-1);
    expect(parseDuration("1mss")).toBe(-1);
  });

  it("accepts up to 365 days and rejects anything longer", () => {
    expect(parseDuration("365d")).toBe(31_536_000_000);
    expect(parseDuration("366d")).toBe(-1);
    expect(parseDuration("364d24h")).toBe(31_536_000_000);
    expect(parseDuration("365d1ms")).toBe(-1);
    expect(parseDuration("8760h")).toBe(31_536_000_000);
    expect(parseDuration("31536000001ms")).toBe(-1);
  });

  it("rejects more than 12 digits and strings over 32 characters", () => {
    expect(parseDuration("0000000000001s")).toBe(-1);
    expect(parseDuration("000000000001s")).toBe(1000);
    expect(parseDuration("1s".repeat(17))).toBe(-1);
    expect(parseDuration("1s".repeat(16))).toBe(16_000);
  });

  it("rejects day counts whose millisecond value overflows 64 bits instead of wrapping around", () => {
    // 213503982335 days = 2^64 + 34448384 ms: a wrapping multiplication would read it as about 9.5 hours.
    expect(parseDuration("213503982335d")).toBe(-1);
    expect(parseDuration("427007964670d")).toBe(-1);
    expect(parseDuration("999999999999d")).toBe(-1);
    expect(parseDuration("999999999999h")).toBe(-1);
  });

  it("parses composite durations to exact milliseconds", () => {
    expect(parseDuration("10m")).toBe(600_000);
    expect(parseDuration("1h30m")).toBe(5_400_000);
    expect(parseDuration("90m")).toBe(5_400_000);
    expect(parseDuration("500ms")).toBe(500);
    expect(parseDuration("1d12h")).toBe(129_600_000);
    expect(parseDuration("2m5s250ms")).toBe(125_250);
    expect(parseDuration("1d1h1m1s1ms")).toBe(90_061_001);
    expect(parseDuration("365d")).toBe(31_536_000_000);
  });
});

describe("asciiLower", () => {
  it("lowercases ASCII letters only", () => {
    expect(asciiLower("X-Real-IP")).toBe("x-real-ip");
    expect(asciiLower("ABCXYZ@[`{")).toBe("abcxyz@[`{");
    expect(asciiLower("ÀÉÎ Straße İ")).toBe("ÀÉÎ straße İ");
    expect(asciiLower("")).toBe("");
    expect(asciiLower("already lower 123")).toBe("already lower 123");
  });
});

describe("configuration: mesh identity", () => {
  it("defaults: Istio's ingress gateway is the one trusted peer, mesh callers keyed by identity, userAgent off for them", () => {
    let cfg = accept("{}");
    expect(cfg.trustedPeerIds.length).toBe(1);
    expect(utf8(cfg.trustedPeerIds[0])).toBe("spiffe://*/ns/istio-system/sa/istio-ingressgateway-service-account");
    expect(cfg.trustedPeerCidrs.length).toBe(0);
    expect(cfg.meshCallers).toBe(MeshCallers.Identity);
    expect(cfg.meshRules[RULE_RATE].enabled).toBe(true);
    expect(cfg.meshRules[RULE_UA].enabled).toBe(false);
    expect(cfg.meshRules[RULE_ERRORS].enabled).toBe(true);
    expect(cfg.meshRules[RULE_RATE].requests).toBe(600);
  });

  it("splits trustedPeers into SPIFFE patterns and networks, replacing the default", () => {
    let cfg = accept("{\"clientAddress\":{\"trustedPeers\":[\"spiffe://cluster.local/ns/edge/sa/*\",\"10.20.0.0/16\",\"fd00::1\"]}}");
    expect(cfg.trustedPeerIds.length).toBe(1);
    expect(utf8(cfg.trustedPeerIds[0])).toBe("spiffe://cluster.local/ns/edge/sa/*");
    expect(cfg.trustedPeerCidrs.length).toBe(2);
    expect(accept("{\"clientAddress\":{\"trustedPeers\":[]}}").trustedPeerIds.length).toBe(0, "an empty list trusts no one");
  });

  it("accepts meshCallers identity, address and exempt only", () => {
    expect(accept("{\"clientAddress\":{\"meshCallers\":\"address\"}}").meshCallers).toBe(MeshCallers.Address);
    expect(accept("{\"clientAddress\":{\"meshCallers\":\"exempt\"}}").meshCallers).toBe(MeshCallers.Exempt);
    expect(reject("{\"clientAddress\":{\"meshCallers\":\"all\"}}")).toBe("clientAddress.meshCallers: expected \"identity\", \"address\" or \"exempt\", got \"all\"");
  });

  it("derives the mesh rules from applyToMesh and meshLimit, keeping the ban", () => {
    let cfg = accept("{\"rules\":{\"rate\":{\"limit\":{\"requests\":100,\"per\":\"1m\"},\"meshLimit\":{\"requests\":5000,\"per\":\"10s\"},\"ban\":\"2m\"},\"userAgent\":{\"applyToMesh\":true},\"errors\":{\"applyToMesh\":false}}}");
    expect(cfg.meshRules[RULE_RATE].requests).toBe(5000);
    expect(cfg.meshRules[RULE_RATE].perMs).toBe(10_000);
    expect(cfg.meshRules[RULE_RATE].banMs).toBe(120_000);
    expect(cfg.rules[RULE_RATE].requests).toBe(100, "the address limit is unchanged");
    expect(cfg.meshRules[RULE_UA].enabled).toBe(true);
    expect(cfg.meshRules[RULE_ERRORS].enabled).toBe(false);
    let off = accept("{\"rules\":{\"rate\":{\"enabled\":false,\"applyToMesh\":true}}}");
    expect(off.meshRules[RULE_RATE].enabled).toBe(false, "a disabled rule is off for mesh callers too");
  });

  it("puts SPIFFE patterns of allow and deny beside their networks", () => {
    let cfg = accept("{\"allow\":[\"10.0.0.0/8\",\"spiffe://cluster.local/ns/monitoring/sa/*\"],\"deny\":[\"spiffe://*/ns/shop/sa/crawler\"]}");
    expect(cfg.allow.length).toBe(1);
    expect(cfg.allowIds.length).toBe(1);
    expect(cfg.deny.length).toBe(0);
    expect(utf8(cfg.denyIds[0])).toBe("spiffe://*/ns/shop/sa/crawler");
  });
});

// The three rules applied to one record (assembly/rules.ts): the (N+1)-th event in a window is the
// violation, bans start with escalation, ban 0s is plain limiting, and the errors bucket.

import * as rules from "../../assembly/rules";
import * as rec from "../../assembly/record";
import { parseConfig, Config, RULE_RATE, RULE_UA, RULE_ERRORS } from "../../assembly/config";

function cfgOf(text: string): Config {
  let r = parseConfig(text);
  expect(r.errors.join("; ")).toBe("");
  return changetype<Config>(r.config);
}

let buf = new ArrayBuffer(48);
// A fresh record at time `now` for the given config.
function fresh(cfg: Config, now: u64): usize {
  let r = changetype<usize>(buf);
  rec.init(r, 0, 0x0000ffffcb007107, now, cfg);
  return r;
}

// One request at `now`, as the table does it: bring the record up to date, then apply the rules.
function request(r: usize, cfg: Config, ua: bool, now: u64): i32 {
  rec.advance(r, now, cfg);
  return rules.onRequest(r, cfg, ua, now);
}

function errorResponse(r: usize, cfg: Config, now: u64): void {
  rec.advance(r, now, cfg);
  rules.onErrorResponse(r, cfg, now);
}

// Sends `n` requests at `now` and returns how many passed.
function burst(r: usize, cfg: Config, ua: bool, n: i32, now: u64): i32 {
  let passed = 0;
  for (let i = 0; i < n; i++) if (request(r, cfg, ua, now) == rules.PASS) passed++;
  return passed;
}

describe("rate rule", () => {
  it("passes N requests in a burst and bans on the (N+1)-th", () => {
    let cfg = cfgOf("{\"rules\":{\"rate\":{\"limit\":{\"requests\":3,\"per\":\"1m\"},\"ban\":\"5m\"}}}");
    let r = fresh(cfg, 1000);
    expect(burst(r, cfg, false, 3, 1000)).toBe(3);
    expect(rules.banStartedRule).toBe(-1);
    expect(request(r, cfg, false, 1000)).toBe(rules.DENY_RATE);
    expect(rules.banStartedRule).toBe(RULE_RATE);
    expect(rules.dirty).toBe(true);
    expect(rec.strikes(r)).toBe(1);
    expect(rec.banRule(r)).toBe(RULE_RATE);
    expect(rec.banUntil(r)).toBe(1000 + 300_000);
  });

  it("denies a banned client without touching its buckets, until the ban ends", () => {
    let cfg = cfgOf("{\"rules\":{\"rate\":{\"limit\":{\"requests\":3,\"per\":\"1m\"},\"ban\":\"5m\"}}}");
    let r = fresh(cfg, 0);
    burst(r, cfg, false, 4, 0);
    expect(request(r, cfg, false, 299_999)).toBe(rules.DENY_BANNED);
    expect(rules.dirty).toBe(false, "nothing to write back while banned");
    expect(rules.banStartedRule).toBe(-1, "no new ban while banned");
    expect(rec.strikes(r)).toBe(1);
    expect(request(r, cfg, false, 300_000)).toBe(rules.PASS, "the ban has ended and the bucket refilled");
  });

  it("refills continuously: one more request per period/N after a burst", () => {
    let cfg = cfgOf("{\"rules\":{\"rate\":{\"limit\":{\"requests\":6,\"per\":\"1m\"},\"ban\":\"0s\"}}}");
    let r = fresh(cfg, 0);
    expect(burst(r, cfg, false, 6, 0)).toBe(6);
    expect(request(r, cfg, false, 9_999)).toBe(rules.DENY_RATE);
    expect(request(r, cfg, false, 10_000)).toBe(rules.PASS);
    expect(request(r, cfg, false, 10_000)).toBe(rules.DENY_RATE);
  });

  it("escalates the second ban by the escalation factor, capped at ban.max", () => {
    let cfg = cfgOf("{\"rules\":{\"rate\":{\"limit\":{\"requests\":1,\"per\":\"1s\"},\"ban\":\"10s\"}},\"ban\":{\"escalation\":3,\"max\":\"60s\"}}");
    let r = fresh(cfg, 0);
    burst(r, cfg, false, 2, 0);
    expect(rec.banUntil(r)).toBe(10_000);
    burst(r, cfg, false, 2, 10_000);
    expect(rec.strikes(r)).toBe(2);
    expect(rec.banUntil(r)).toBe(10_000 + 30_000);
    burst(r, cfg, false, 2, 40_000);
    expect(rec.strikes(r)).toBe(3);
    expect(rec.banUntil(r)).toBe(40_000 + 60_000, "90 s capped at ban.max 60 s");
  });

  it("starts over at the base ban once forgetAfter has passed", () => {
    let cfg = cfgOf("{\"rules\":{\"rate\":{\"limit\":{\"requests\":1,\"per\":\"1s\"},\"ban\":\"10s\"}},\"ban\":{\"forgetAfter\":\"1m\"}}");
    let r = fresh(cfg, 0);
    burst(r, cfg, false, 2, 0);
    burst(r, cfg, false, 2, 10_000 + 60_000);
    expect(rec.strikes(r)).toBe(1);
    expect(rec.banUntil(r)).toBe(70_000 + 10_000);
  });

  it("is plain limiting with ban 0s: denied while empty, never banned", () => {
    let cfg = cfgOf("{\"rules\":{\"rate\":{\"limit\":{\"requests\":2,\"per\":\"1m\"},\"ban\":\"0s\"}}}");
    let r = fresh(cfg, 0);
    expect(burst(r, cfg, false, 5, 0)).toBe(2);
    expect(rules.banStartedRule).toBe(-1);
    expect(rec.strikes(r)).toBe(0);
    expect(rec.banUntil(r)).toBe(0);
    expect(request(r, cfg, false, 30_000)).toBe(rules.PASS);
  });

  it("takes no token when the rule is disabled", () => {
    let cfg = cfgOf("{\"rules\":{\"rate\":{\"enabled\":false,\"limit\":{\"requests\":1}}}}");
    let r = fresh(cfg, 0);
    expect(burst(r, cfg, false, 100, 0)).toBe(100);
    expect(rec.tokens(r, RULE_RATE)).toBe(1.0);
  });
});

describe("userAgent rule", () => {
  it("counts only requests whose User-Agent matched", () => {
    let cfg = cfgOf("{\"rules\":{\"userAgent\":{\"limit\":{\"requests\":2,\"per\":\"1m\"},\"ban\":\"10m\"}}}");
    let r = fresh(cfg, 0);
    expect(burst(r, cfg, false, 50, 0)).toBe(50);
    expect(rec.tokens(r, RULE_UA)).toBe(2.0);
    expect(burst(r, cfg, true, 2, 0)).toBe(2);
    expect(request(r, cfg, true, 0)).toBe(rules.DENY_UA);
    expect(rules.banStartedRule).toBe(RULE_UA);
    expect(rec.banUntil(r)).toBe(600_000);
    expect(rec.banRule(r)).toBe(RULE_UA);
  });

  it("checks rate first: a rate violation does not also spend a userAgent token", () => {
    let cfg = cfgOf("{\"rules\":{\"rate\":{\"limit\":{\"requests\":1},\"ban\":\"0s\"},\"userAgent\":{\"limit\":{\"requests\":5},\"ban\":\"0s\"}}}");
    let r = fresh(cfg, 0);
    expect(request(r, cfg, true, 0)).toBe(rules.PASS);
    expect(rec.tokens(r, RULE_UA)).toBe(4.0);
    expect(request(r, cfg, true, 0)).toBe(rules.DENY_RATE);
    expect(rec.tokens(r, RULE_UA)).toBe(4.0);
  });

  it("spends the rate token of a request that the userAgent rule then denies", () => {
    let cfg = cfgOf("{\"rules\":{\"rate\":{\"limit\":{\"requests\":10}},\"userAgent\":{\"limit\":{\"requests\":1},\"ban\":\"0s\"}}}");
    let r = fresh(cfg, 0);
    request(r, cfg, true, 0);
    expect(request(r, cfg, true, 0)).toBe(rules.DENY_UA);
    expect(rec.tokens(r, RULE_RATE)).toBe(8.0);
  });

  it("takes no token when the rule is disabled", () => {
    let cfg = cfgOf("{\"rules\":{\"userAgent\":{\"enabled\":false,\"limit\":{\"requests\":1}}}}");
    let r = fresh(cfg, 0);
    expect(burst(r, cfg, true, 10, 0)).toBe(10);
  });
});

describe("errors rule", () => {
  it("bans on the (N+1)-th matching error response", () => {
    let cfg = cfgOf("{\"rules\":{\"errors\":{\"limit\":{\"requests\":20,\"per\":\"1m\"},\"ban\":\"30m\"}}}");
    let r = fresh(cfg, 0);
    for (let i = 0; i < 20; i++) {
      errorResponse(r, cfg, 0);
      expect(rules.banStartedRule).toBe(-1);
    }
    errorResponse(r, cfg, 0);
    expect(rules.banStartedRule).toBe(RULE_ERRORS);
    expect(rec.banUntil(r)).toBe(1_800_000);
    expect(rec.banRule(r)).toBe(RULE_ERRORS);
    expect(request(r, cfg, false, 1)).toBe(rules.DENY_BANNED);
  });

  it("ignores error responses while the client is banned", () => {
    let cfg = cfgOf("{\"rules\":{\"errors\":{\"limit\":{\"requests\":1},\"ban\":\"1m\"}}}");
    let r = fresh(cfg, 0);
    errorResponse(r, cfg, 0);
    errorResponse(r, cfg, 0);
    expect(rec.strikes(r)).toBe(1);
    errorResponse(r, cfg, 1000);
    expect(rules.dirty).toBe(false);
    expect(rules.banStartedRule).toBe(-1);
    expect(rec.strikes(r)).toBe(1, "no second strike from responses during the ban");
  });

  it("with ban 0s denies requests while the errors bucket is empty, without writing", () => {
    let cfg = cfgOf("{\"rules\":{\"errors\":{\"limit\":{\"requests\":2,\"per\":\"1m\"},\"ban\":\"0s\"}}}");
    let r = fresh(cfg, 0);
    errorResponse(r, cfg, 0);
    errorResponse(r, cfg, 0);
    expect(request(r, cfg, false, 0)).toBe(rules.DENY_ERRORS);
    expect(rules.dirty).toBe(false);
    expect(rec.tokens(r, RULE_RATE)).toBe(600.0, "a denied request takes no rate token");
    errorResponse(r, cfg, 0);
    expect(rules.banStartedRule).toBe(-1);
    expect(rec.strikes(r)).toBe(0);
    expect(request(r, cfg, false, 29_999)).toBe(rules.DENY_ERRORS);
    expect(request(r, cfg, false, 30_000)).toBe(rules.PASS, "one error token back after period/N");
  });

  it("does not deny requests on an empty errors bucket when the rule is disabled", () => {
    let cfg = cfgOf("{\"rules\":{\"errors\":{\"enabled\":false,\"ban\":\"0s\"}}}");
    let r = fresh(cfg, 0);
    rec.setTokens(r, RULE_ERRORS, 0);
    expect(request(r, cfg, false, 0)).toBe(rules.PASS);
  });

  it("with a ban configured, an empty errors bucket alone does not deny requests", () => {
    let cfg = cfgOf("{\"rules\":{\"errors\":{\"limit\":{\"requests\":1},\"ban\":\"1m\"}}}");
    let r = fresh(cfg, 0);
    rec.setTokens(r, RULE_ERRORS, 0);
    expect(request(r, cfg, false, 0)).toBe(rules.PASS);
  });
});

describe("startBan", () => {
  it("records the strike, the rule and the escalated end", () => {
    let cfg = cfgOf("{}");
    let r = fresh(cfg, 0);
    rec.setStrikes(r, 2);
    rules.startBan(r, RULE_UA, 5000, cfg);
    expect(rec.strikes(r)).toBe(3);
    expect(rec.banRule(r)).toBe(RULE_UA);
    expect(rec.banUntil(r)).toBe(5000 + 600_000 * 4);
    expect(rules.banStartedRule).toBe(RULE_UA);
  });
});

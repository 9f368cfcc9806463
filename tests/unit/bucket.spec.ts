// Token-bucket math (assembly/bucket.ts): continuous refill, capacity cap, full-window refill, the
// whole-token epsilon, and ban escalation.

import { refill, hasToken, take, banDuration, EPSILON } from "../../assembly/bucket";
import { Rule } from "../../assembly/config";
import * as rec from "../../assembly/record";
import { parseConfig, Config, RULE_ERRORS } from "../../assembly/config";

function errorsRule(): Rule { return new Rule(20, 60_000, 1_800_000); }

describe("refill", () => {
  it("refills continuously at requests per period", () => {
    let r = errorsRule(); // 20 per minute = one token every 3 s
    expect(refill(0, 3000, r)).toBeCloseTo(1.0);
    expect(refill(0, 1500, r)).toBeCloseTo(0.5);
    expect(refill(5, 30_000, r)).toBeCloseTo(15.0);
    expect(refill(2.5, 0, r)).toBe(2.5);
  });

  it("never goes above the capacity", () => {
    let r = errorsRule();
    expect(refill(19.5, 3000, r)).toBe(20.0);
    expect(refill(20, 1, r)).toBe(20.0);
  });

  it("refills any bucket completely after a full window, however the levels drifted", () => {
    let r = errorsRule();
    expect(refill(0, 60_000, r)).toBe(20.0);
    expect(refill(0, 59_999, r)).toBeLessThan(20.0);
    expect(refill(1000, 60_000, r)).toBe(20.0, "a level above a lowered capacity comes back to the capacity");
    expect(refill(0, 0xffffffffffffffff, r)).toBe(20.0);
  });

  it("does not lose fractional refill across many 1 ms steps", () => {
    let r = errorsRule();
    let level: f64 = 0;
    for (let i = 0; i < 30_000; i++) level = refill(level, 1, r);
    expect(level).toBeCloseTo(10.0);
    for (let i = 0; i < 60_000; i++) level = refill(level, 1, r);
    expect(level).toBe(20.0);
  });

  it("lets an error every 1 ms through exactly at the configured rate (20 burst, then one per 3 s)", () => {
    // errors 20/1m, an error response every millisecond for a minute: the 20-token burst, then one token
    // per 3000 ms of refill. Exact arithmetic: grants at t = 1..20, then at t = 3000k + 1, i.e. 39 in
    // t = 1..60000 (the 40th is due at t = 60001).
    let r = errorsRule();
    let level: f64 = 20;
    let granted = 0;
    let lastGrant: i32 = 0;
    for (let t = 1; t <= 60_000; t++) {
      level = refill(level, 1, r);
      if (hasToken(level)) { level = take(level); granted++; lastGrant = t; }
    }
    expect(granted).toBe(39);
    expect(lastGrant).toBeGreaterThanOrEqual(57_000);
    expect(lastGrant).toBeLessThanOrEqual(57_001);
  });

  it("keeps the same rate when the level is stored in a record as f32 between steps", () => {
    // The shared record holds token levels as f32; rounding at every store must not starve the client.
    let res = parseConfig("{}");
    let cfg = changetype<Config>(res.config);
    let buf = new ArrayBuffer(rec.RECORD_SIZE);
    let r = changetype<usize>(buf);
    rec.init(r, 0, 0, 0, cfg);
    let granted = 0;
    for (let t: u64 = 1; t <= 60_000; t++) {
      rec.advance(r, t, cfg);
      let level = rec.tokens(r, RULE_ERRORS);
      if (hasToken(level)) { rec.setTokens(r, RULE_ERRORS, take(level)); granted++; }
    }
    expect(granted).toBe(39);
    // A second minute at the same pace gets 20 more (one per 3 s), not fewer.
    for (let t: u64 = 60_001; t <= 120_000; t++) {
      rec.advance(r, t, cfg);
      let level = rec.tokens(r, RULE_ERRORS);
      if (hasToken(level)) { rec.setTokens(r, RULE_ERRORS, take(level)); granted++; }
    }
    expect(granted).toBe(59);
  });

  it("refills an idle record in f32 to full capacity over 1 ms steps", () => {
    let cfg = changetype<Config>(parseConfig("{}").config);
    let buf = new ArrayBuffer(rec.RECORD_SIZE);
    let r = changetype<usize>(buf);
    rec.init(r, 0, 0, 0, cfg);
    for (let i = 0; i < 3; i++) rec.setTokens(r, i, 0);
    for (let t: u64 = 1; t <= 30_000; t++) rec.advance(r, t, cfg);
    expect(rec.tokens(r, RULE_ERRORS)).toBeGreaterThanOrEqual(10.0 - 0.01);
    expect(rec.tokens(r, RULE_ERRORS)).toBeLessThanOrEqual(10.0 + 0.01);
    expect(rec.tokens(r, 0)).toBeGreaterThanOrEqual(300.0 - 0.3, "rate: 600/1m over 30 s");
  });
});

describe("hasToken and take", () => {
  it("counts a level within the epsilon of one as a whole token", () => {
    expect(EPSILON).toBe(1e-6);
    expect(hasToken(1.0)).toBe(true);
    expect(hasToken(1.0 - 1e-7)).toBe(true);
    expect(hasToken(0.9999999999999999)).toBe(true);
    expect(hasToken(1.0 - 1e-5)).toBe(false);
    expect(hasToken(0.5)).toBe(false);
    expect(hasToken(0)).toBe(false);
  });

  it("gives a token after exactly one refill interval despite float rounding", () => {
    let r = new Rule(20, 60_000, 0);
    expect(hasToken(refill(0, 3000, r))).toBe(true);
    expect(hasToken(refill(0, 2999, r))).toBe(false);
    let r3 = new Rule(3, 10_000, 0); // 0.0003 per ms, not exact in binary
    expect(hasToken(refill(0, 3334, r3))).toBe(true);
    expect(hasToken(refill(0, 3333, r3))).toBe(false);
  });

  it("takes one token and never goes below zero", () => {
    expect(take(5)).toBe(4.0);
    expect(take(1.25)).toBe(0.25);
    expect(take(1.0 - 1e-7)).toBe(0.0);
    expect(take(0)).toBe(0.0);
  });
});

describe("banDuration", () => {
  it("multiplies the ban by escalation for each earlier strike", () => {
    expect(banDuration(300_000, 1, 2, 86_400_000)).toBe(300_000);
    expect(banDuration(300_000, 2, 2, 86_400_000)).toBe(600_000);
    expect(banDuration(300_000, 3, 2, 86_400_000)).toBe(1_200_000);
    expect(banDuration(300_000, 3, 1.5, 86_400_000)).toBe(675_000);
  });

  it("keeps the same ban with escalation 1", () => {
    expect(banDuration(600_000, 1, 1, 86_400_000)).toBe(600_000);
    expect(banDuration(600_000, 200, 1, 86_400_000)).toBe(600_000);
  });

  it("caps the ban at ban.max", () => {
    expect(banDuration(300_000, 9, 2, 86_400_000)).toBe(76_800_000);
    expect(banDuration(300_000, 10, 2, 86_400_000)).toBe(86_400_000);
    expect(banDuration(300_000, 255, 2, 86_400_000)).toBe(86_400_000);
    expect(banDuration(300_000, 5, 100, 86_400_000)).toBe(86_400_000);
    expect(banDuration(90_000_000, 1, 2, 86_400_000)).toBe(86_400_000, "a base ban longer than max is capped");
  });

  it("does not overflow with the largest escalation and strike count", () => {
    expect(banDuration(31_536_000_000, 255, 100, 31_536_000_000)).toBe(31_536_000_000);
  });

  it("returns 0 for a ban of 0s", () => {
    expect(banDuration(0, 1, 2, 86_400_000)).toBe(0);
    expect(banDuration(0, 7, 2, 86_400_000)).toBe(0);
  });
});

// The 48-byte client record (assembly/record.ts): field offsets, init, advance (refill, clamp, forgetting
// strikes after forgetAfter) and isExpired.

import * as rec from "../../assembly/record";
import { parseConfig, Config, RULE_RATE, RULE_UA, RULE_ERRORS } from "../../assembly/config";

function cfgOf(text: string): Config {
  let r = parseConfig(text);
  expect(r.errors.join("; ")).toBe("");
  return changetype<Config>(r.config);
}

// A record slot surrounded by guard bytes, to catch writes outside its 48 bytes.
let arena = new ArrayBuffer(48 * 3);
function slot(): usize {
  memory.fill(changetype<usize>(arena), 0xaa, 48 * 3);
  return changetype<usize>(arena) + 48;
}
function guardsIntact(): bool {
  let p = changetype<usize>(arena);
  for (let i = 0; i < 48; i++) {
    if (load<u8>(p + i) != 0xaa || load<u8>(p + 96 + i) != 0xaa) return false;
  }
  return true;
}

const HI: u64 = 0x20010db800010002;
const LO: u64 = 0x0000000000000000;

describe("record layout", () => {
  it("is 48 bytes, 8 per set, 384 bytes per set", () => {
    expect(rec.RECORD_SIZE).toBe(48);
    expect(rec.WAYS).toBe(8);
    expect(rec.SET_SIZE).toBe(384);
  });

  it("stores each field at its documented offset, little endian", () => {
    let r = slot();
    memory.fill(r, 0, 48);
    store<u64>(r, 0x1122334455667788, 0);
    store<u64>(r, 0x99aabbccddeeff00, 8);
    store<u64>(r, 1_700_000_000_123, 16);
    store<u64>(r, 1_700_000_600_000, 24);
    store<f32>(r, 599.5, 32);
    store<f32>(r, 9.25, 36);
    store<f32>(r, 0.5, 40);
    store<u8>(r, 3, 44);
    store<u8>(r, 2, 45);
    store<u8>(r, 1, 46);
    expect(rec.addrHi(r)).toBe(0x1122334455667788);
    expect(load<u8>(r)).toBe(0x88, "little endian");
    expect(rec.addrLo(r)).toBe(0x99aabbccddeeff00);
    expect(rec.updated(r)).toBe(1_700_000_000_123);
    expect(rec.banUntil(r)).toBe(1_700_000_600_000);
    expect(rec.tokens(r, RULE_RATE)).toBe(599.5);
    expect(rec.tokens(r, RULE_UA)).toBe(9.25);
    expect(rec.tokens(r, RULE_ERRORS)).toBe(0.5);
    expect(rec.strikes(r)).toBe(3);
    expect(rec.banRule(r)).toBe(2);
    expect(rec.isUsed(r)).toBe(true);
    expect(guardsIntact()).toBe(true);
  });

  it("round-trips every setter through its getter without touching other fields", () => {
    let r = slot();
    rec.init(r, HI, LO, 1000, cfgOf("{}"));
    rec.setBanUntil(r, 0xfedcba9876543210);
    rec.setTokens(r, RULE_UA, 3.75);
    rec.setStrikes(r, 7);
    rec.setBanRule(r, RULE_ERRORS);
    expect(load<u64>(r, 24)).toBe(0xfedcba9876543210);
    expect(load<f32>(r, 36)).toBe(<f32>3.75);
    expect(load<u8>(r, 44)).toBe(7);
    expect(load<u8>(r, 45)).toBe(2);
    expect(rec.addrHi(r)).toBe(HI);
    expect(rec.addrLo(r)).toBe(LO);
    expect(rec.updated(r)).toBe(1000);
    expect(rec.tokens(r, RULE_RATE)).toBe(600.0);
    expect(rec.tokens(r, RULE_ERRORS)).toBe(20.0);
    expect(load<u8>(r, 47)).toBe(0, "the spare byte stays zero");
    expect(guardsIntact()).toBe(true);
  });

  it("saturates the strike count at 255", () => {
    let r = slot();
    rec.init(r, HI, LO, 0, cfgOf("{}"));
    rec.setStrikes(r, 300);
    expect(rec.strikes(r)).toBe(255);
    rec.setStrikes(r, 255);
    expect(rec.strikes(r)).toBe(255);
  });
});

describe("record init", () => {
  it("fills every bucket to its capacity, clears ban history and marks the slot used", () => {
    let r = slot();
    let cfg = cfgOf("{\"rules\":{\"rate\":{\"limit\":{\"requests\":5}},\"userAgent\":{\"limit\":{\"requests\":2}},\"errors\":{\"limit\":{\"requests\":7}}}}");
    rec.init(r, HI, 0x1234, 42_000, cfg);
    expect(rec.isUsed(r)).toBe(true);
    expect(rec.isFor(r, HI, 0x1234)).toBe(true);
    expect(rec.isFor(r, HI, 0x1235)).toBe(false);
    expect(rec.updated(r)).toBe(42_000);
    expect(rec.banUntil(r)).toBe(0);
    expect(rec.strikes(r)).toBe(0);
    expect(rec.banRule(r)).toBe(0);
    expect(rec.tokens(r, RULE_RATE)).toBe(5.0);
    expect(rec.tokens(r, RULE_UA)).toBe(2.0);
    expect(rec.tokens(r, RULE_ERRORS)).toBe(7.0);
    expect(load<u8>(r, 46)).toBe(1, "flags: bit 0 used, nothing else");
    expect(load<u8>(r, 47)).toBe(0);
    expect(guardsIntact()).toBe(true);
  });

  it("overwrites whatever the slot held before", () => {
    let r = slot();
    memory.fill(r, 0xff, 48);
    rec.init(r, 0, 0x0000ffff01020304, 5, cfgOf("{}"));
    expect(rec.banUntil(r)).toBe(0);
    expect(rec.strikes(r)).toBe(0);
    expect(load<u8>(r, 46)).toBe(1);
  });

  it("treats an all-zero slot as unused and never as some address's record", () => {
    let r = slot();
    memory.fill(r, 0, 48);
    expect(rec.isUsed(r)).toBe(false);
    expect(rec.isFor(r, 0, 0)).toBe(false);
  });
});

describe("record advance", () => {
  it("refills every bucket for the elapsed time and moves updated forward", () => {
    let cfg = cfgOf("{}");
    let r = slot();
    rec.init(r, HI, LO, 0, cfg);
    for (let i = 0; i < 3; i++) rec.setTokens(r, i, 0);
    rec.advance(r, 6000, cfg);
    expect(rec.updated(r)).toBe(6000);
    expect(rec.tokens(r, RULE_RATE)).toBeCloseTo(60.0);
    expect(rec.tokens(r, RULE_UA)).toBeCloseTo(1.0);
    expect(rec.tokens(r, RULE_ERRORS)).toBeCloseTo(2.0);
  });

  it("does nothing to the buckets when the clock goes backwards", () => {
    let cfg = cfgOf("{}");
    let r = slot();
    rec.init(r, HI, LO, 10_000, cfg);
    rec.setTokens(r, RULE_RATE, 1);
    rec.advance(r, 5_000, cfg);
    expect(rec.updated(r)).toBe(10_000);
    expect(rec.tokens(r, RULE_RATE)).toBe(1.0);
  });

  it("clamps levels above a lowered capacity at once", () => {
    let r = slot();
    rec.init(r, HI, LO, 0, cfgOf("{}"));
    expect(rec.tokens(r, RULE_RATE)).toBe(600.0);
    let lower = cfgOf("{\"rules\":{\"rate\":{\"limit\":{\"requests\":10}}}}");
    rec.advance(r, 0, lower);
    expect(rec.tokens(r, RULE_RATE)).toBe(10.0);
  });

  it("forgets strikes once forgetAfter has passed since the ban ended, and not before", () => {
    let cfg = cfgOf("{\"ban\":{\"forgetAfter\":\"5s\"}}");
    let r = slot();
    rec.init(r, HI, LO, 0, cfg);
    rec.setStrikes(r, 2);
    rec.setBanUntil(r, 1000);
    rec.advance(r, 500, cfg);
    expect(rec.strikes(r)).toBe(2, "still banned");
    rec.advance(r, 5999, cfg);
    expect(rec.strikes(r)).toBe(2, "4999 ms after the ban");
    rec.advance(r, 6000, cfg);
    expect(rec.strikes(r)).toBe(0, "5000 ms after the ban");
    expect(rec.banUntil(r)).toBe(1000, "the last ban end is kept");
  });

  it("forgets strikes as soon as the ban ends with forgetAfter 0s", () => {
    let cfg = cfgOf("{\"ban\":{\"forgetAfter\":\"0s\"}}");
    let r = slot();
    rec.init(r, HI, LO, 0, cfg);
    rec.setStrikes(r, 1);
    rec.setBanUntil(r, 1000);
    rec.advance(r, 999, cfg);
    expect(rec.strikes(r)).toBe(1);
    rec.advance(r, 1000, cfg);
    expect(rec.strikes(r)).toBe(0);
  });
});

describe("record isExpired", () => {
  it("is true for an unused slot", () => {
    let r = slot();
    memory.fill(r, 0, 48);
    expect(rec.isExpired(r, 0, cfgOf("{}"))).toBe(true);
  });

  it("is true for a fresh record whose buckets are still full", () => {
    let r = slot();
    let cfg = cfgOf("{}");
    rec.init(r, HI, LO, 1000, cfg);
    expect(rec.isExpired(r, 1000, cfg)).toBe(true);
  });

  it("is false while a bucket has not refilled, and true once it has", () => {
    let r = slot();
    let cfg = cfgOf("{}");
    rec.init(r, HI, LO, 0, cfg);
    rec.setTokens(r, RULE_ERRORS, 19); // one token short: refilled after 3 s
    expect(rec.isExpired(r, 2999, cfg)).toBe(false);
    expect(rec.isExpired(r, 3000, cfg)).toBe(true);
    expect(rec.isExpired(r, 1_000_000, cfg)).toBe(true);
  });

  it("is false while banned and while strikes are remembered", () => {
    let r = slot();
    let cfg = cfgOf("{\"ban\":{\"forgetAfter\":\"1h\"}}");
    rec.init(r, HI, LO, 0, cfg);
    rec.setStrikes(r, 1);
    rec.setBanUntil(r, 600_000);
    expect(rec.isExpired(r, 599_999, cfg)).toBe(false, "banned");
    expect(rec.isExpired(r, 600_000, cfg)).toBe(false, "ban over, strike remembered");
    expect(rec.isExpired(r, 600_000 + 3_599_999, cfg)).toBe(false);
    expect(rec.isExpired(r, 600_000 + 3_600_000, cfg)).toBe(true);
  });

  it("is false while banned even without strikes", () => {
    let r = slot();
    let cfg = cfgOf("{}");
    rec.init(r, HI, LO, 0, cfg);
    rec.setBanUntil(r, 10);
    expect(rec.isExpired(r, 9, cfg)).toBe(false);
    expect(rec.isExpired(r, 10, cfg)).toBe(true);
  });

  it("does not change the record", () => {
    let r = slot();
    let cfg = cfgOf("{}");
    rec.init(r, HI, LO, 0, cfg);
    rec.setTokens(r, RULE_RATE, 1);
    rec.isExpired(r, 120_000, cfg);
    expect(rec.tokens(r, RULE_RATE)).toBe(1.0);
    expect(rec.updated(r)).toBe(0);
  });
});

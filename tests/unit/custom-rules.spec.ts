// Custom rules as pure pieces: the presets parse cleanly, buckets are laid out in rule order (a `then`
// bucket after its rule), take/give arithmetic on a record, and a set converted between layouts by name.

import { parseConfig, Config, Checker } from "../../assembly/config";
import { PRESET_NAMES, PRESET_JSON, parsePreset, MAX_CUSTOM_RULES } from "../../assembly/rule-config";
import * as custom from "../../assembly/custom-rules";
import * as rec from "../../assembly/record";
import { Layout, layoutTag, TAG_SIZE } from "../../assembly/layout";
import { Table } from "../../assembly/table";
import * as rules from "../../assembly/rules";
import * as mock from "./mock";

function cfgOf(text: string): Config {
  let r = parseConfig(text);
  expect(r.errors.join("; ")).toBe("");
  return changetype<Config>(r.config);
}

const TWO = "{\"rules\":{\"custom\":[" +
  "{\"name\":\"a\",\"take\":{\"request\":{\"path\":[\"/a\"]}},\"give\":{\"request\":{\"path\":[\"/g\"]}},\"limit\":{\"requests\":2,\"per\":\"1h\"}}," +
  "{\"name\":\"slow\",\"take\":{\"request\":{}},\"limit\":{\"requests\":10,\"per\":\"1s\"},\"delay\":{\"max\":\"1s\"},\"then\":{\"limit\":{\"requests\":30,\"per\":\"1s\"},\"ban\":\"1m\"}}]}}";

describe("presets", () => {
  it("parses every preset definition without a problem", () => {
    expect(PRESET_JSON.length).toBe(PRESET_NAMES.length);
    for (let k = 0; k < PRESET_NAMES.length; k++) {
      let ck = new Checker();
      let r = parsePreset(k, ck);
      expect(ck.errors.join("; ")).toBe("", PRESET_NAMES[k]);
      expect(r.name).toBe(PRESET_NAMES[k]);
    }
  });

  it("allows at most 16 custom rules and presets together", () => {
    expect(MAX_CUSTOM_RULES).toBe(16);
  });
});

describe("bucket layout", () => {
  it("gives each rule one bucket and a then limit a second, in rule order", () => {
    let cfg = cfgOf(TWO);
    expect(cfg.custom.bucketNames.join(",")).toBe("a,slow,slow/then");
    expect(cfg.custom.rules[1].bucket).toBe(1);
    expect(cfg.custom.rules[1].thenBucket).toBe(2);
    expect(rec.recordSize(cfg)).toBe(48 + 3 * 4);
    expect(rec.recordSize(new Config())).toBe(48);
  });
});

let slotBuf = new ArrayBuffer(64);

describe("take and give", () => {
  it("takes one token per take, gives one back up to the capacity, and does neither when both match", () => {
    let cfg = cfgOf(TWO);
    let r = changetype<usize>(slotBuf);
    rec.init(r, 0, 1, 1000, cfg);
    expect(rec.customTokens(r, 0)).toBe(2.0);
    custom.setBits(1); // rule 0 take
    expect(custom.onRequest(r, cfg, 1000)).toBe(custom.PASS);
    expect(rec.customTokens(r, 0)).toBe(1.0);
    custom.setBits(3); // take and give
    expect(custom.onRequest(r, cfg, 1000)).toBe(custom.PASS);
    expect(custom.dirty).toBe(false);
    expect(rec.customTokens(r, 0)).toBe(1.0);
    custom.setBits(2); // give
    custom.onRequest(r, cfg, 1000);
    custom.onRequest(r, cfg, 1000);
    expect(rec.customTokens(r, 0)).toBe(2.0, "never above the capacity");
    custom.setBits(1);
    custom.onRequest(r, cfg, 1000);
    custom.onRequest(r, cfg, 1000);
    expect(custom.onRequest(r, cfg, 1000)).toBe(custom.DENY);
    expect(custom.deniedRule).toBe(0);
    expect(custom.banRule).toBe(-1, "ban 0s: denied, not banned");
  });

  it("holds a delay rule's request for the time its token takes to refill, then denies past delay.max", () => {
    let cfg = cfgOf(TWO);
    let r = changetype<usize>(slotBuf);
    rec.init(r, 0, 1, 1000, cfg);
    custom.setBits(4); // rule 1 take
    for (let i = 0; i < 10; i++) expect(custom.onRequest(r, cfg, 1000)).toBe(custom.PASS);
    expect(custom.onRequest(r, cfg, 1000)).toBe(custom.HOLD);
    expect(custom.holdMs).toBe(100);
    expect(custom.onRequest(r, cfg, 1000)).toBe(custom.HOLD);
    expect(custom.holdMs).toBe(200);
    rec.advance(r, 1100, cfg); // 100 ms: one token of the debt repaid
    expect(rec.customTokens(r, 1)).toBeCloseTo(-1.0);
  });
});

// TWO's three buckets (a: 2 per hour; slow: 10 per second; slow/then: 30 per second) with other capacities.
const TWO_LOWER = TWO.replace("\"requests\":2,", "\"requests\":1,").replace("\"requests\":10,", "\"requests\":4,").replace("\"requests\":30,", "\"requests\":20,");
const TWO_HIGHER = TWO.replace("\"requests\":10,", "\"requests\":40,");

describe("custom buckets brought up to date (record.advance)", () => {
  it("leaves full buckets full and refills the others, whether the pair beside them is full or not", () => {
    let cfg = cfgOf(TWO);
    let r = changetype<usize>(slotBuf);
    rec.init(r, 0, 1, 1000, cfg);
    rec.setCustomTokens(r, 1, 0); // the pair (a, slow): one full, one empty
    rec.setCustomTokens(r, 2, 5); // slow/then: alone at the end
    rec.advance(r, 1500, cfg);
    expect(rec.customTokens(r, 0)).toBe(2.0);
    expect(rec.customTokens(r, 1)).toBeCloseTo(5.0);
    expect(rec.customTokens(r, 2)).toBeCloseTo(20.0);
    rec.advance(r, 10_000, cfg);
    expect(rec.customTokens(r, 1)).toBe(10.0);
    expect(rec.customTokens(r, 2)).toBe(30.0);
    expect(rec.updated(r)).toBe(10_000);
  });

  it("clamps full buckets to lowered capacities at once, with no time passed", () => {
    let r = changetype<usize>(slotBuf);
    rec.init(r, 0, 1, 1000, cfgOf(TWO));
    rec.advance(r, 1000, cfgOf(TWO_LOWER));
    expect(rec.customTokens(r, 0)).toBe(1.0);
    expect(rec.customTokens(r, 1)).toBe(4.0);
    expect(rec.customTokens(r, 2)).toBe(20.0);
  });

  it("refills a bucket that was full towards a raised capacity as time passes, and not before", () => {
    let r = changetype<usize>(slotBuf);
    rec.init(r, 0, 1, 1000, cfgOf(TWO));
    let higher = cfgOf(TWO_HIGHER);
    rec.advance(r, 1000, higher);
    expect(rec.customTokens(r, 1)).toBe(10.0);
    rec.advance(r, 1500, higher);
    expect(rec.customTokens(r, 1)).toBeCloseTo(30.0);
    expect(rec.customTokens(r, 0)).toBe(2.0);
  });

  it("keeps a delay rule's debt when no time has passed", () => {
    let cfg = cfgOf(TWO);
    let r = changetype<usize>(slotBuf);
    rec.init(r, 0, 1, 1000, cfg);
    rec.setCustomTokens(r, 1, -3);
    rec.advance(r, 1000, cfg);
    expect(rec.customTokens(r, 1)).toBe(-3.0);
    expect(rec.updated(r)).toBe(1000);
  });
});

let oldSet = new ArrayBuffer(8 * (48 + 8) + 4);
let newSet = new ArrayBuffer(8 * (48 + 12) + 4);

describe("layout conversion", () => {
  it("tags a layout by its bucket names in order", () => {
    expect(layoutTag(["a", "b"])).not.toBe(layoutTag(["b", "a"]));
    expect(new Layout(new Config(), "p/").valueSize).toBe(384);
  });

  it("keeps the base record and carries buckets over by name; new buckets start full", () => {
    let oldCfg = cfgOf("{\"rules\":{\"custom\":[{\"name\":\"x\",\"take\":{\"request\":{}},\"limit\":{\"requests\":5,\"per\":\"1h\"}}," +
      "{\"name\":\"y\",\"take\":{\"request\":{}},\"limit\":{\"requests\":5,\"per\":\"1h\"}}]}}");
    let newCfg = cfgOf("{\"rules\":{\"custom\":[{\"name\":\"z\",\"take\":{\"request\":{}},\"limit\":{\"requests\":7,\"per\":\"1h\"}}," +
      "{\"name\":\"y\",\"take\":{\"request\":{}},\"limit\":{\"requests\":5,\"per\":\"1h\"}},{\"name\":\"x\",\"take\":{\"request\":{}},\"limit\":{\"requests\":5,\"per\":\"1h\"}}]}}");
    let oldLayout = new Layout(oldCfg, "p/");
    let newLayout = new Layout(newCfg, "p/");
    oldLayout.publish();
    expect(oldLayout.valueSize).toBe(oldSet.byteLength);
    let base = changetype<usize>(oldSet);
    let r = base + <usize>oldLayout.recordSize; // slot 1
    rec.init(r, 7, 8, 1000, oldCfg);
    rec.setCustomTokens(r, 0, 1.0); // x
    rec.setCustomTokens(r, 1, 3.0); // y
    rec.setBanUntil(r, 99_000);
    rec.setStrikes(r, 2);
    oldLayout.stamp(base);
    expect(newLayout.isOurs(oldSet)).toBe(false);
    expect(newLayout.convert(oldSet, changetype<usize>(newSet))).toBe(true);
    expect(newLayout.isOurs(newSet)).toBe(true);
    let n = changetype<usize>(newSet) + <usize>newLayout.recordSize;
    expect(rec.isFor(n, 7, 8)).toBe(true);
    expect(rec.banUntil(n)).toBe(99_000);
    expect(rec.strikes(n)).toBe(2);
    expect(rec.customTokens(n, 0)).toBe(7.0, "z is new: full");
    expect(rec.customTokens(n, 1)).toBe(3.0, "y by name");
    expect(rec.customTokens(n, 2)).toBe(1.0, "x by name");
    expect(rec.isUsed(changetype<usize>(newSet))).toBe(false, "an empty slot stays empty");
    expect(TAG_SIZE).toBe(4);
  });
});

describe("a ban decided elsewhere (Table.applyBan) with custom rules", () => {
  it("keeps the set in the configuration's layout, keeps the custom buckets, and refills them on a lift", () => {
    mock.reset();
    let cfg = cfgOf(TWO);
    let t = new Table(1024, "", cfg);
    t.migrate(cfg, 1000);
    custom.setBits(1); // rule "a" takes
    expect(t.request(cfg, 0, 9, false, 1000)).toBe(rules.PASS);
    expect(t.applyBan(cfg, 0, 9, 61_000, 1000)).toBe(true);
    let key = String.UTF8.decode(t.keyFor(t.setOf(0, 9)));
    let v = changetype<ArrayBuffer>(mock.sharedValue(key));
    expect(t.layout.isOurs(v)).toBe(true, "the set keeps the custom-rule layout");
    let r = changetype<usize>(v);
    while (!rec.isFor(r, 0, 9)) r += <usize>t.layout.recordSize;
    expect(rec.banUntil(r)).toBe(61_000);
    expect(rec.customTokens(r, 0)).toBe(1.0, "rule a's spent token is kept");
    expect(t.applyBan(cfg, 0, 9, 0, 2000)).toBe(true); // lifted
    v = changetype<ArrayBuffer>(mock.sharedValue(key));
    r = changetype<usize>(v);
    while (!rec.isFor(r, 0, 9)) r += <usize>t.layout.recordSize;
    expect(rec.isBanned(r, 2000)).toBe(false);
    expect(rec.customTokens(r, 0)).toBe(2.0, "a lift refills the custom buckets too");
    custom.setBits(0);
  });
});

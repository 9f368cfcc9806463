// The bounded client table over proxy-wasm shared data (assembly/table.ts), against the host mock's
// shared data with Envoy's CAS semantics: keys, finding a client again, the replacement order in a full
// set, CAS retries (with another worker's writes injected by the mock), giving up, host errors, and the
// migration to a new geometry after a capacity change.

import { Table, keyOf, MAX_ATTEMPTS, KEY_PREFIX, META_KEY, FAILED } from "../../assembly/table";
import * as rules from "../../assembly/rules";
import * as rec from "../../assembly/record";
import { parseConfig, Config, RULE_RATE, RULE_ERRORS } from "../../assembly/config";
import { V4_MARK } from "../../assembly/address";
import * as mock from "./mock";

const CAS_MISMATCH: i32 = 8;
const INTERNAL_FAILURE: i32 = 10;

function cfgOf(text: string): Config {
  let r = parseConfig(text);
  expect(r.errors.join("; ")).toBe("");
  return changetype<Config>(r.config);
}

// An IPv4 client address (low word; the high word of IPv4 is 0).
function v4(n: u32): u64 { return V4_MARK | <u64>n; }

function keyString(t: Table, lo: u64): string {
  return String.UTF8.decode(t.keyFor(t.setOf(0, lo)));
}

// `n` IPv4 clients that all hash to the same set of `t`.
function sameSet(t: Table, n: i32): u64[] {
  let out: u64[] = [];
  let target = t.setOf(0, v4(1));
  for (let i: u32 = 1; out.length < n; i++) {
    if (t.setOf(0, v4(i)) == target) out.push(v4(i));
  }
  return out;
}

// The slot index of client `lo` in the stored value of `key`, or -1.
function slotOf(key: string, lo: u64): i32 {
  let v = mock.sharedValue(key);
  if (v === null || v.byteLength != rec.SET_SIZE) return -1;
  let base = changetype<usize>(v);
  for (let i = 0; i < rec.WAYS; i++) {
    if (rec.isFor(base + <usize>(i * rec.RECORD_SIZE), 0, lo)) return i;
  }
  return -1;
}

// A copy of client `lo`'s record from the stored value of `key` (zeroes when absent).
function recordOf(key: string, lo: u64): ArrayBuffer {
  let out = new ArrayBuffer(rec.RECORD_SIZE);
  let v = mock.sharedValue(key);
  let i = slotOf(key, lo);
  if (v !== null && i >= 0) memory.copy(changetype<usize>(out), changetype<usize>(v) + <usize>(i * rec.RECORD_SIZE), rec.RECORD_SIZE);
  return out;
}

function rateTokens(key: string, lo: u64): f64 {
  return rec.tokens(changetype<usize>(recordOf(key, lo)), RULE_RATE);
}

function isHex(c: i32): bool { return (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66); }

// Whether `key` is "traffic-guard/t/SSSSS/IIIII" with five lowercase hex digits each.
function isTableKey(key: string): bool {
  if (!key.startsWith(KEY_PREFIX) || key.length != KEY_PREFIX.length + 11) return false;
  let rest = key.substring(KEY_PREFIX.length);
  for (let i = 0; i < 11; i++) {
    if (i == 5) { if (rest.charCodeAt(i) != 0x2f) return false; }
    else if (!isHex(rest.charCodeAt(i))) return false;
  }
  return true;
}

describe("table keys", () => {
  beforeEach(() => { mock.reset(); });

  it("has capacity/8 sets", () => {
    expect(new Table(1024).sets).toBe(128);
    expect(new Table(65536).sets).toBe(8192);
    expect(new Table(1048576).sets).toBe(131072);
  });

  it("names a set traffic-guard/t/<set count>/<set index> in five lowercase hex digits each", () => {
    expect(String.UTF8.decode(keyOf(128, 0))).toBe("traffic-guard/t/00080/00000");
    expect(String.UTF8.decode(keyOf(8192, 0x1abc))).toBe("traffic-guard/t/02000/01abc");
    expect(String.UTF8.decode(keyOf(131072, 131071))).toBe("traffic-guard/t/20000/1ffff");
    let t = new Table(65536);
    expect(String.UTF8.decode(t.keyFor(255))).toBe("traffic-guard/t/02000/000ff");
  });

  it("hashes clients into every set and never past the last one", () => {
    let t = new Table(1024);
    let seen = new StaticArray<i32>(128);
    for (let i: u32 = 0; i < 4096; i++) {
      let s = t.setOf(0, v4(0xc0a80000 + i));
      expect(s).toBeLessThan(128);
      seen[s]++;
    }
    let empty = 0, max = 0;
    for (let s = 0; s < 128; s++) { if (seen[s] == 0) empty++; if (seen[s] > max) max = seen[s]; }
    expect(empty).toBe(0, "4096 neighbouring addresses leave no set empty");
    expect(max).toBeLessThan(80, "no set gets more than 2.5x its share");
  });

  it("spreads IPv6 /64 clients that differ only in the high word", () => {
    let t = new Table(1024);
    let seen = new StaticArray<bool>(128);
    let distinct = 0;
    for (let i: u64 = 0; i < 1024; i++) {
      let s = t.setOf(0x20010db800000000 | i, 0);
      if (!seen[s]) { seen[s] = true; distinct++; }
    }
    expect(distinct).toBeGreaterThan(120);
  });

  it("writes nothing but table keys of its own geometry on the request path", () => {
    let t = new Table(1024);
    let cfg = cfgOf("{\"capacity\":1024}");
    for (let i: u32 = 0; i < 3000; i++) t.request(cfg, 0, v4(0x0a000000 + i * 7919), false, 1000);
    for (let i: u64 = 0; i < 200; i++) t.request(cfg, 0x20010db800000000 | (i << 16), 0, true, 1000);
    let n = mock.sharedKeyCount();
    expect(n).toBeGreaterThan(100);
    expect(n).toBeLessThanOrEqual(128);
    let bad: string[] = [];
    for (let i = 0; i < n; i++) {
      let k = mock.sharedKeyAt(i);
      if (!isTableKey(k) || !k.startsWith("traffic-guard/t/00080/")) bad.push(k);
      else if (I32.parseInt(k.substring(KEY_PREFIX.length + 6), 16) >= 128) bad.push(k);
    }
    expect(bad.join(", ")).toBe("");
  });
});

describe("table updates", () => {
  beforeEach(() => { mock.reset(); });

  it("stores a new client in an empty slot of its set, buckets full minus the request", () => {
    let t = new Table(1024);
    let cfg = cfgOf("{\"capacity\":1024}");
    let lo = v4(0xcb007107);
    expect(t.request(cfg, 0, lo, false, 1000)).toBe(rules.PASS);
    expect(t.filledSlot).toBe(true);
    expect(t.evicted).toBe(false);
    expect(t.conflicts).toBe(0);
    expect(mock.sharedKeyCount()).toBe(1);
    let key = keyString(t, lo);
    expect(mock.sharedKeyAt(0)).toBe(key);
    let v = mock.sharedValue(key);
    expect(v === null ? 0 : v.byteLength).toBe(384);
    expect(slotOf(key, lo)).toBe(0);
    let r = changetype<usize>(recordOf(key, lo));
    expect(rec.updated(r)).toBe(1000);
    expect(rec.tokens(r, RULE_RATE)).toBe(599.0);
    expect(rec.tokens(r, RULE_ERRORS)).toBe(20.0);
  });

  it("finds the client again in its set and keeps counting in the same record", () => {
    let t = new Table(1024);
    let cfg = cfgOf("{\"capacity\":1024}");
    let lo = v4(0xcb007107);
    t.request(cfg, 0, lo, false, 1000);
    expect(t.request(cfg, 0, lo, false, 1000)).toBe(rules.PASS);
    expect(t.filledSlot).toBe(false, "no new slot for a known client");
    expect(t.evicted).toBe(false);
    expect(mock.sharedKeyCount()).toBe(1);
    let key = keyString(t, lo);
    expect(slotOf(key, lo)).toBe(0);
    expect(rateTokens(key, lo)).toBe(598.0);
  });

  it("sees the same state from a second Table (another worker's VM) on the same shared data", () => {
    let cfg = cfgOf("{\"capacity\":1024,\"rules\":{\"rate\":{\"limit\":{\"requests\":3}}}}");
    let a = new Table(1024), b = new Table(1024);
    let lo = v4(0x01020304);
    expect(a.request(cfg, 0, lo, false, 0)).toBe(rules.PASS);
    expect(b.request(cfg, 0, lo, false, 0)).toBe(rules.PASS);
    expect(a.request(cfg, 0, lo, false, 0)).toBe(rules.PASS);
    expect(b.request(cfg, 0, lo, false, 0)).toBe(rules.DENY_RATE);
    expect(b.banRule).toBe(RULE_RATE);
    expect(a.request(cfg, 0, lo, false, 1)).toBe(rules.DENY_BANNED);
  });

  it("reports the ban it started once the write has landed, and the active ban later", () => {
    let t = new Table(1024);
    let cfg = cfgOf("{\"capacity\":1024,\"rules\":{\"rate\":{\"limit\":{\"requests\":3},\"ban\":\"5m\"}}}");
    let lo = v4(0x01020304);
    for (let i = 0; i < 3; i++) {
      expect(t.request(cfg, 0, lo, false, 1000)).toBe(rules.PASS);
      expect(t.banRule).toBe(-1);
    }
    expect(t.request(cfg, 0, lo, false, 1000)).toBe(rules.DENY_RATE);
    expect(t.banRule).toBe(RULE_RATE);
    expect(t.strike).toBe(1);
    expect(t.banUntil).toBe(301_000);
    let sets = mock.sharedSets();
    expect(t.request(cfg, 0, lo, false, 2000)).toBe(rules.DENY_BANNED);
    expect(t.banRule).toBe(-1, "no new ban");
    expect(t.banUntil).toBe(301_000, "the active ban is reported for retry-after");
    expect(t.strike).toBe(1);
    expect(mock.sharedSets()).toBe(sets, "a denied banned client writes nothing");
  });

  it("counts error responses and bans on the (N+1)-th", () => {
    let t = new Table(1024);
    let cfg = cfgOf("{\"capacity\":1024,\"rules\":{\"errors\":{\"limit\":{\"requests\":2},\"ban\":\"30m\"}}}");
    let lo = v4(0x01020304);
    expect(t.errorResponse(cfg, 0, lo, 0)).toBe(rules.PASS);
    expect(t.errorResponse(cfg, 0, lo, 0)).toBe(rules.PASS);
    expect(t.banRule).toBe(-1);
    expect(t.errorResponse(cfg, 0, lo, 0)).toBe(rules.PASS, "the response itself is not affected");
    expect(t.banRule).toBe(RULE_ERRORS);
    expect(t.banUntil).toBe(1_800_000);
    expect(t.request(cfg, 0, lo, false, 1)).toBe(rules.DENY_BANNED);
  });

  it("with errors ban 0s denies requests while the errors bucket is empty and writes nothing for them", () => {
    let t = new Table(1024);
    let cfg = cfgOf("{\"capacity\":1024,\"rules\":{\"errors\":{\"limit\":{\"requests\":1},\"ban\":\"0s\"}}}");
    let lo = v4(0x01020304);
    t.errorResponse(cfg, 0, lo, 0);
    let sets = mock.sharedSets();
    expect(t.request(cfg, 0, lo, false, 0)).toBe(rules.DENY_ERRORS);
    expect(mock.sharedSets()).toBe(sets);
  });
});

describe("table replacement in a full set", () => {
  beforeEach(() => { mock.reset(); });

  it("fills the eight slots of a set before replacing anyone", () => {
    let t = new Table(1024);
    let cfg = cfgOf("{\"capacity\":1024}");
    let c = sameSet(t, 8);
    let key = keyString(t, c[0]);
    for (let i = 0; i < 8; i++) {
      expect(t.request(cfg, 0, c[i], false, 1000 + <u64>i)).toBe(rules.PASS);
      expect(t.filledSlot).toBe(true);
      expect(t.evicted).toBe(false);
      expect(slotOf(key, c[i])).toBe(i);
    }
    expect(mock.sharedKeyCount()).toBe(1);
  });

  it("uses an empty slot before replacing an expired record", () => {
    let t = new Table(1024);
    let cfg = cfgOf("{\"capacity\":1024}");
    let c = sameSet(t, 2);
    t.request(cfg, 0, c[0], false, 0);
    t.request(cfg, 0, c[1], false, 3_600_000); // c[0] has long expired
    expect(t.filledSlot).toBe(true);
    expect(t.evicted).toBe(false);
    let key = keyString(t, c[0]);
    expect(slotOf(key, c[0])).toBe(0);
    expect(slotOf(key, c[1])).toBe(1);
  });

  it("replaces the least recently updated record when all eight are live", () => {
    let t = new Table(1024);
    let cfg = cfgOf("{\"capacity\":1024,\"rules\":{\"rate\":{\"limit\":{\"requests\":3,\"per\":\"1h\"}}}}");
    let c = sameSet(t, 9);
    let key = keyString(t, c[0]);
    // Updated times: c0 at 5 s, c1 at 1 s (the oldest), the others at 2..7 s.
    t.request(cfg, 0, c[0], false, 0);
    t.request(cfg, 0, c[1], false, 1000);
    for (let i = 2; i < 8; i++) t.request(cfg, 0, c[i], false, <u64>i * 1000);
    t.request(cfg, 0, c[0], false, 5000);
    expect(t.request(cfg, 0, c[8], false, 10_000)).toBe(rules.PASS);
    expect(t.evicted).toBe(true);
    expect(t.filledSlot).toBe(false);
    expect(slotOf(key, c[1])).toBe(-1, "the least recently updated client was replaced");
    expect(slotOf(key, c[8])).toBe(1, "in its slot");
    for (let i = 0; i < 8; i++) if (i != 1) expect(slotOf(key, c[i])).toBe(i);
  });

  it("replaces an expired record before the least recently updated live one", () => {
    let t = new Table(1024);
    // 3 per hour: one token back every 20 minutes.
    let cfg = cfgOf("{\"capacity\":1024,\"rules\":{\"rate\":{\"limit\":{\"requests\":3,\"per\":\"1h\"}}}}");
    let c = sameSet(t, 9);
    let key = keyString(t, c[0]);
    const MIN: u64 = 60_000;
    for (let k = 0; k < 3; k++) t.request(cfg, 0, c[0], false, 0);          // empty at 0: full again at 60 min
    t.request(cfg, 0, c[1], false, 1 * MIN);                                 // one token: full at 21 min
    for (let i = 2; i < 8; i++) for (let k = 0; k < 3; k++) t.request(cfg, 0, c[i], false, <u64>i * MIN);
    t.request(cfg, 0, c[8], false, 30 * MIN);
    expect(t.evicted).toBe(true);
    expect(slotOf(key, c[1])).toBe(-1, "the expired record went");
    expect(slotOf(key, c[0])).toBe(0, "the older but live record stayed");
    expect(slotOf(key, c[8])).toBe(1);
  });

  it("keeps a banned record even when it is the least recently updated", () => {
    let t = new Table(1024);
    let cfg = cfgOf("{\"capacity\":1024,\"rules\":{\"rate\":{\"limit\":{\"requests\":1,\"per\":\"1h\"},\"ban\":\"1h\"}}}");
    let c = sameSet(t, 9);
    let key = keyString(t, c[0]);
    t.request(cfg, 0, c[0], false, 0);
    expect(t.request(cfg, 0, c[0], false, 0)).toBe(rules.DENY_RATE); // banned until 60 min
    for (let i = 1; i < 8; i++) t.request(cfg, 0, c[i], false, <u64>i * 1000);
    t.request(cfg, 0, c[8], false, 10_000);
    expect(slotOf(key, c[0])).toBe(0, "banned, kept");
    expect(slotOf(key, c[1])).toBe(-1, "least recently updated unbanned, replaced");
    expect(slotOf(key, c[8])).toBe(1);
    expect(t.request(cfg, 0, c[0], false, 20_000)).toBe(rules.DENY_BANNED);
  });

  it("never replaces a banned record with a newcomer, even when all eight are banned: it is refused", () => {
    let t = new Table(1024);
    let cfg = cfgOf("{\"capacity\":1024,\"rules\":{\"rate\":{\"limit\":{\"requests\":1,\"per\":\"1h\"},\"ban\":\"1h\"}}}");
    let c = sameSet(t, 9);
    let key = keyString(t, c[0]);
    for (let i = 0; i < 8; i++) {
      t.request(cfg, 0, c[i], false, <u64>i * 1000);
      expect(t.request(cfg, 0, c[i], false, <u64>i * 1000)).toBe(rules.DENY_RATE);
    }
    let sets = mock.sharedSets();
    expect(t.request(cfg, 0, c[8], false, 10_000)).toBe(rules.PASS);
    expect(t.refused).toBe(true);
    expect(t.evicted).toBe(false);
    expect(mock.sharedSets()).toBe(sets, "nothing written");
    for (let i = 0; i < 8; i++) expect(slotOf(key, c[i])).toBeGreaterThanOrEqual(0, "every ban is kept");
    // An error response of the refused client is evidence, but evidence does not displace a ban either.
    expect(t.errorResponse(cfg, 0, c[8], 10_000)).toBe(rules.PASS);
    expect(t.refused).toBe(true);
  });
});

describe("table admission", () => {
  beforeEach(() => { mock.reset(); });

  const RULES = "{\"capacity\":1024,\"rules\":{\"rate\":{\"limit\":{\"requests\":10,\"per\":\"1h\"},\"ban\":\"1h\"},\"errors\":{\"limit\":{\"requests\":5,\"per\":\"1h\"},\"ban\":\"1h\"}}}";

  it("lets a one-request newcomer replace only records on probation, the least recently updated first", () => {
    let t = new Table(1024);
    let cfg = cfgOf(RULES);
    let c = sameSet(t, 10);
    let key = keyString(t, c[0]);
    t.request(cfg, 0, c[0], false, 0);
    t.errorResponse(cfg, 0, c[0], 0); // evidence: a counted error
    t.request(cfg, 0, c[1], false, 1000);
    t.request(cfg, 0, c[1], false, 1000); // evidence: a second token within the window
    for (let i = 2; i < 8; i++) t.request(cfg, 0, c[i], false, <u64>i * 1000); // probation
    expect(t.request(cfg, 0, c[8], false, 9000)).toBe(rules.PASS);
    expect(t.evicted).toBe(true);
    expect(slotOf(key, c[2])).toBe(-1, "the oldest record on probation made room");
    expect(slotOf(key, c[0])).toBeGreaterThanOrEqual(0, "the record with an error is kept although older");
    expect(slotOf(key, c[1])).toBeGreaterThanOrEqual(0, "the record with two requests is kept although older");
  });

  it("refuses a one-request newcomer when every record holds evidence, and admits it once it brings an error", () => {
    let t = new Table(1024);
    let cfg = cfgOf(RULES);
    let c = sameSet(t, 9);
    let key = keyString(t, c[0]);
    for (let i = 0; i < 8; i++) {
      t.request(cfg, 0, c[i], false, <u64>i * 1000);
      t.errorResponse(cfg, 0, c[i], <u64>i * 1000);
    }
    expect(t.request(cfg, 0, c[8], false, 9000)).toBe(rules.PASS);
    expect(t.refused).toBe(true);
    expect(slotOf(key, c[8])).toBe(-1);
    expect(t.errorResponse(cfg, 0, c[8], 9000)).toBe(rules.PASS);
    expect(t.refused).toBe(false);
    expect(t.evicted).toBe(true);
    expect(slotOf(key, c[0])).toBe(-1, "the least recently updated record with evidence made room");
    expect(slotOf(key, c[8])).toBeGreaterThanOrEqual(0);
  });

  it("counts a record whose buckets refilled as expired again, so any newcomer may take its slot", () => {
    let t = new Table(1024);
    let cfg = cfgOf(RULES);
    let c = sameSet(t, 9);
    let key = keyString(t, c[0]);
    for (let i = 0; i < 8; i++) {
      t.request(cfg, 0, c[i], false, 0);
      t.errorResponse(cfg, 0, c[i], 0);
    }
    expect(t.request(cfg, 0, c[8], false, 3_600_000)).toBe(rules.PASS);
    expect(t.refused).toBe(false);
    expect(slotOf(key, c[8])).toBeGreaterThanOrEqual(0);
  });
});

describe("table CAS handling", () => {
  beforeEach(() => { mock.reset(); });

  it("retries after another worker's write and counts the request once", () => {
    let t = new Table(1024);
    let cfg = cfgOf("{\"capacity\":1024}");
    let lo = v4(0x01020304);
    t.request(cfg, 0, lo, false, 0);
    let key = keyString(t, lo);
    let gets = mock.sharedGets(), sets = mock.sharedSets();
    mock.interfereNextSets(1);
    expect(t.request(cfg, 0, lo, false, 0)).toBe(rules.PASS);
    expect(t.conflicts).toBe(1);
    expect(mock.sharedGets() - gets).toBe(2);
    expect(mock.sharedSets() - sets).toBe(2);
    expect(rateTokens(key, lo)).toBe(598.0, "one token for one request, not two");
  });

  it("recomputes the update from the other worker's data after a conflict", () => {
    let t = new Table(1024);
    let cfg = cfgOf("{\"capacity\":1024}");
    let c = sameSet(t, 2);
    t.request(cfg, 0, c[0], false, 0);
    let key = keyString(t, c[0]);
    // Another worker has meanwhile taken 5 tokens from c0 and added client c1 to the set.
    let theirs = changetype<ArrayBuffer>(mock.sharedValue(key));
    let base = changetype<usize>(theirs);
    rec.setTokens(base, RULE_RATE, 594);
    rec.init(base + <usize>rec.RECORD_SIZE, 0, c[1], 0, cfg);
    mock.interfereWith(key, theirs);
    expect(t.request(cfg, 0, c[0], false, 0)).toBe(rules.PASS);
    expect(t.conflicts).toBe(1);
    expect(rateTokens(key, c[0])).toBe(593.0);
    expect(slotOf(key, c[1])).toBe(1, "the other worker's new client survives");
  });

  it("succeeds on the last of MAX_ATTEMPTS attempts", () => {
    expect(MAX_ATTEMPTS).toBe(8);
    let t = new Table(1024);
    let cfg = cfgOf("{\"capacity\":1024}");
    let lo = v4(0x01020304);
    t.request(cfg, 0, lo, false, 0);
    mock.interfereNextSets(MAX_ATTEMPTS - 1);
    expect(t.request(cfg, 0, lo, false, 0)).toBe(rules.PASS);
    expect(t.conflicts).toBe(MAX_ATTEMPTS - 1);
    expect(rateTokens(keyString(t, lo), lo)).toBe(598.0);
  });

  it("gives up after MAX_ATTEMPTS conflicts and returns FAILED without changing the data", () => {
    let t = new Table(1024);
    let cfg = cfgOf("{\"capacity\":1024}");
    let lo = v4(0x01020304);
    t.request(cfg, 0, lo, false, 0);
    let sets = mock.sharedSets();
    mock.interfereNextSets(MAX_ATTEMPTS);
    expect(t.request(cfg, 0, lo, false, 0)).toBe(FAILED);
    expect(t.conflicts).toBe(MAX_ATTEMPTS);
    expect(mock.sharedSets() - sets).toBe(MAX_ATTEMPTS);
    expect(rateTokens(keyString(t, lo), lo)).toBe(599.0);
    expect(t.request(cfg, 0, lo, false, 0)).toBe(rules.PASS, "the next update works again");
  });

  it("also retries CAS conflicts on error responses and gives up the same way", () => {
    let t = new Table(1024);
    let cfg = cfgOf("{\"capacity\":1024}");
    let lo = v4(0x01020304);
    t.request(cfg, 0, lo, false, 0);
    mock.interfereNextSets(2);
    expect(t.errorResponse(cfg, 0, lo, 0)).toBe(rules.PASS);
    expect(t.conflicts).toBe(2);
    mock.interfereNextSets(MAX_ATTEMPTS);
    expect(t.errorResponse(cfg, 0, lo, 0)).toBe(FAILED);
  });

  it("returns FAILED at once when the host fails a set for another reason", () => {
    let t = new Table(1024);
    let cfg = cfgOf("{\"capacity\":1024}");
    let lo = v4(0x01020304);
    t.request(cfg, 0, lo, false, 0);
    let sets = mock.sharedSets();
    mock.failNextSet(INTERNAL_FAILURE);
    expect(t.request(cfg, 0, lo, false, 0)).toBe(FAILED);
    expect(mock.sharedSets() - sets).toBe(1);
  });

  it("returns FAILED at once when the host fails a get, writing nothing", () => {
    let t = new Table(1024);
    let cfg = cfgOf("{\"capacity\":1024}");
    mock.failNextGet(INTERNAL_FAILURE);
    expect(t.request(cfg, 0, v4(0x01020304), false, 0)).toBe(FAILED);
    expect(mock.sharedSets()).toBe(0);
    expect(mock.sharedKeyCount()).toBe(0);
  });

  it("writes a never-written set with a non-zero CAS, so another worker's first write to it is not lost", () => {
    // Envoy ignores the CAS for a key that does not exist yet; once it exists, any non-zero CAS must
    // match. The other worker creates the set between our get (NotFound) and our set.
    let t = new Table(1024);
    let cfg = cfgOf("{\"capacity\":1024}");
    let c = sameSet(t, 2);
    let key = keyString(t, c[0]);
    let theirs = new ArrayBuffer(rec.SET_SIZE);
    rec.init(changetype<usize>(theirs), 0, c[1], 0, cfg);
    mock.interfereWith(key, theirs);
    expect(t.request(cfg, 0, c[0], false, 0)).toBe(rules.PASS);
    expect(t.conflicts).toBe(1);
    expect(slotOf(key, c[1])).toBe(0, "their client is kept");
    expect(slotOf(key, c[0])).toBe(1, "ours is added next to it");
  });

  it("writes a never-written set on the first attempt when nobody interferes", () => {
    let t = new Table(1024);
    let cfg = cfgOf("{\"capacity\":1024}");
    expect(t.request(cfg, 0, v4(0x01020304), false, 0)).toBe(rules.PASS);
    expect(t.conflicts).toBe(0);
    expect(mock.sharedSets()).toBe(1);
  });

  it("overwrites a value of another size, still under CAS", () => {
    let t = new Table(1024);
    let cfg = cfgOf("{\"capacity\":1024}");
    let lo = v4(0x01020304);
    let key = keyString(t, lo);
    expect(mock.sharedPut(key, new ArrayBuffer(10))).toBe(0);
    mock.interfereNextSets(1);
    expect(t.request(cfg, 0, lo, false, 0)).toBe(rules.PASS);
    expect(t.conflicts).toBe(1);
    let v = mock.sharedValue(key);
    expect(v === null ? 0 : v.byteLength).toBe(384);
    expect(slotOf(key, lo)).toBe(0);
  });
});

describe("table migration after a capacity change", () => {
  beforeEach(() => { mock.reset(); });

  it("records the geometry on first use without moving anything", () => {
    let t = new Table(1024);
    expect(t.migrate(cfgOf("{\"capacity\":1024}"), 0)).toBe(false);
    expect(mock.sharedHas(META_KEY)).toBe(true);
    let m = mock.sharedValue(META_KEY);
    expect(m === null ? 0 : load<u32>(changetype<usize>(m))).toBe(128);
    expect(t.migrate(cfgOf("{\"capacity\":1024}"), 0)).toBe(false, "same geometry: nothing to do");
  });

  it("moves unexpired clients to the new sets, keeps bans, drops expired ones and empties the old keys", () => {
    let small = cfgOf("{\"capacity\":1024,\"rules\":{\"rate\":{\"limit\":{\"requests\":1,\"per\":\"1h\"},\"ban\":\"1h\"}}}");
    let big = cfgOf("{\"capacity\":2048,\"rules\":{\"rate\":{\"limit\":{\"requests\":1,\"per\":\"1h\"},\"ban\":\"1h\"}}}");
    let old = new Table(1024);
    old.migrate(small, 0);
    let banned = v4(0x0a000001), live = v4(0x0a000002), expired = v4(0x0a000003);
    old.request(small, 0, banned, false, 0);
    old.request(small, 0, banned, false, 0);
    old.request(small, 0, live, false, 0);
    expect(old.request(small, 0, expired, false, 0)).toBe(rules.PASS);
    let key = keyString(old, expired);
    // Make `expired` decay: its bucket full again and no ban history.
    let stored = changetype<ArrayBuffer>(mock.sharedValue(key));
    rec.setTokens(changetype<usize>(stored) + <usize>(slotOf(key, expired) * rec.RECORD_SIZE), RULE_RATE, 1);
    mock.sharedPut(key, stored);

    let fresh = new Table(2048);
    expect(fresh.migrate(big, 1000)).toBe(true);
    expect(fresh.oldUsed).toBe(0, "configure only records the new geometry");
    fresh.finishMigration(big, 1000);
    expect(fresh.oldUsed).toBe(3);
    expect(fresh.moved).toBe(2);
    expect(fresh.occupiedDelta).toBe(-1, "three records left the old sets, two landed in new ones");
    expect(fresh.request(big, 0, banned, false, 2000)).toBe(rules.DENY_BANNED, "the ban survived");
    expect(fresh.request(big, 0, live, false, 2000)).toBe(rules.DENY_RATE, "its empty bucket came along");
    let oldKeys = 0, emptied = 0;
    for (let i = 0; i < mock.sharedKeyCount(); i++) {
      let k = mock.sharedKeyAt(i);
      if (!k.startsWith("traffic-guard/t/00080/")) continue;
      oldKeys++;
      let v = mock.sharedValue(k);
      if (v !== null && v.byteLength == 0) emptied++;
    }
    expect(oldKeys).toBeGreaterThan(0);
    expect(emptied).toBe(oldKeys);
  });

  it("lets a worker still on the old geometry follow the migration, so a banned client stays banned", () => {
    let small = cfgOf("{\"capacity\":1024,\"rules\":{\"rate\":{\"limit\":{\"requests\":1,\"per\":\"1h\"},\"ban\":\"1h\"}}}");
    let big = cfgOf("{\"capacity\":2048,\"rules\":{\"rate\":{\"limit\":{\"requests\":1,\"per\":\"1h\"},\"ban\":\"1h\"}}}");
    let stale = new Table(1024);
    stale.migrate(small, 0);
    let c = v4(0x0a000001);
    stale.request(small, 0, c, false, 0);
    stale.request(small, 0, c, false, 0);
    let moved = new Table(2048);
    expect(moved.migrate(big, 0)).toBe(true);
    expect(stale.request(small, 0, c, false, 1000)).toBe(rules.DENY_BANNED, "old set not drained yet: still there");
    expect(moved.request(big, 0, c, false, 1000)).toBe(rules.DENY_BANNED, "the new geometry merged the client's old set on access");
    moved.finishMigration(big, 1000);
    expect(stale.request(small, 0, c, false, 2000)).toBe(rules.DENY_BANNED);
    expect(stale.sets).toBe(256, "it now uses the recorded geometry");
  });

  it("merges a client's records from both geometries: the later ban, the higher strike count, the fewer tokens", () => {
    let small = cfgOf("{\"capacity\":1024,\"rules\":{\"rate\":{\"limit\":{\"requests\":5,\"per\":\"1h\"},\"ban\":\"1h\"}}}");
    let big = cfgOf("{\"capacity\":2048,\"rules\":{\"rate\":{\"limit\":{\"requests\":5,\"per\":\"1h\"},\"ban\":\"1h\"}}}");
    let stale = new Table(1024);
    stale.migrate(small, 0);
    let c = v4(0x0a000001);
    for (let i = 0; i < 6; i++) stale.request(small, 0, c, false, 0); // banned until 1h, strike 1
    let moved = new Table(2048);
    expect(moved.migrate(big, 0)).toBe(true);
    // Before the new geometry drained the old set, the banned client's record there is in its way:
    // the new geometry must merge it instead of creating a fresh record.
    let newKey = keyString(moved, c);
    expect(moved.request(big, 0, c, false, 1000)).toBe(rules.DENY_BANNED);
    let r = changetype<usize>(recordOf(newKey, c));
    expect(rec.strikes(r)).toBe(1);
    expect(rec.banUntil(r)).toBe(3_600_000);
    expect(rec.tokens(r, RULE_RATE)).toBeLessThan(1.0);
  });

  it("empties an old set with the CAS of its read and redoes the merge when another worker wrote it in between", () => {
    let small = cfgOf("{\"capacity\":1024,\"rules\":{\"rate\":{\"limit\":{\"requests\":1,\"per\":\"1h\"},\"ban\":\"1h\"}}}");
    let big = cfgOf("{\"capacity\":2048,\"rules\":{\"rate\":{\"limit\":{\"requests\":1,\"per\":\"1h\"},\"ban\":\"1h\"}}}");
    let stale = new Table(1024);
    stale.migrate(small, 0);
    let c = v4(0x0a000001);
    stale.request(small, 0, c, false, 0);
    let oldKey = keyString(stale, c);
    let moved = new Table(2048);
    moved.migrate(big, 0);
    // Another worker (still on the old geometry) bans the client between our read and our emptying set.
    let banned = changetype<ArrayBuffer>(mock.sharedValue(oldKey));
    let slot = changetype<usize>(banned) + <usize>(slotOf(oldKey, c) * rec.RECORD_SIZE);
    rec.setBanUntil(slot, 7_200_000);
    rec.setStrikes(slot, 1);
    mock.interfereWith(oldKey, banned);
    moved.finishMigration(big, 1000);
    let v = mock.sharedValue(oldKey);
    expect(v !== null && v.byteLength == 0).toBe(true, "the old set was emptied");
    expect(moved.request(big, 0, c, false, 2000)).toBe(rules.DENY_BANNED, "the ban written in between was merged, not lost");
    expect(moved.banUntil).toBe(7_200_000);
  });
});

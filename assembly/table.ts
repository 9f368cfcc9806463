// The bounded client table in proxy-wasm shared data, shared by every Envoy worker (VM) of the process.
//
// Envoy never deletes shared-data keys, so the table is a fixed set of keys: capacity/8 sets of 8
// records, key "traffic-guard/t/SSSSS/IIIII" (hex set count, hex set index). A client lives in the set its
// address hashes to. The set count is part of the key because a new capacity re-hashes every client:
// on configure, records of the previous geometry (named by the "traffic-guard/meta" key) are moved into
// the new one and the old keys are emptied, so bans survive a capacity change and memory stays bounded.
// Every update is get -> modify -> set with the CAS from the get; on CAS_MISMATCH another worker changed
// the set in between, so the update is recomputed from fresh data (bounded retries).
//
// Replacement in a full set: an empty slot, else an expired record (no ban, history forgotten, buckets
// full), else the least recently updated record that is not banned; a banned record is replaced only when
// all eight are banned, and then the one whose ban ends first.
//
// First writes: Envoy ignores the CAS of a set on a key that does not exist yet, and cas 0 means "no
// check". So a set found absent is written with cas FRESH_CAS (non-zero): if the key is still absent the
// write lands; if another worker created it in between, its CAS differs and we get CAS_MISMATCH and redo
// the update from its data. No update is lost, except in the 1-in-2^32 case that the other worker's
// write drew exactly FRESH_CAS from Envoy's CAS counter at that instant.

import { get_shared_data, set_shared_data, WasmResultValues } from "@solo-io/proxy-runtime/assembly/runtime";
import { Config } from "./config";
import * as rec from "./record";
import * as rules from "./rules";

/** CAS attempts per update before giving up (and failing open). */
export const MAX_ATTEMPTS: i32 = 8;
/** Prefix of every shared-data key this filter writes. */
export const KEY_PREFIX: string = "traffic-guard/t/";
/** The key holding the set count of the table in use (u32), for migration after a capacity change. */
export const META_KEY: string = "traffic-guard/meta";

/** The CAS passed when writing a set that did not exist: any non-zero value (see above). */
export const FRESH_CAS: u32 = 0xffffffff;

const OP_REQUEST: i32 = 0;
const OP_RESPONSE: i32 = 1;
const HEX = "0123456789abcdef";

// Writes `value` as five lowercase hex digits at p.
function writeHex(p: usize, value: u32): void {
  for (let i = 4; i >= 0; i--) {
    store<u8>(p + <usize>i, <u8>HEX.charCodeAt(value & 15));
    value >>= 4;
  }
}

/** The shared-data key of set `index` in a table of `sets` sets: "traffic-guard/t/SSSSS/IIIII". */
export function keyOf(sets: u32, index: u32): ArrayBuffer {
  let key = String.UTF8.encode(KEY_PREFIX + "00000/00000");
  writeHex(changetype<usize>(key) + <usize>KEY_PREFIX.length, sets);
  writeHex(changetype<usize>(key) + <usize>KEY_PREFIX.length + 6, index);
  return key;
}

/** Result of a failed update: the request passes (fail open) and the caller counts an internal error. */
export const FAILED: i32 = -1;

/** The shared table as seen from one VM. The outcome fields describe the last update that landed. */
export class Table {
  /** Number of sets (shared-data keys). */
  sets: u32;
  private key: ArrayBuffer = new ArrayBuffer(0);
  private scratch: ArrayBuffer = new ArrayBuffer(rec.SET_SIZE);

  /** A used record was replaced by the last update. */
  evicted: bool = false;
  /** The last update filled a previously empty slot (one more tracked client). */
  filledSlot: bool = false;
  /** CAS conflicts seen by the last update. */
  conflicts: i32 = 0;
  /** The rule that the last update banned the client for, or -1. */
  banRule: i32 = -1;
  /** Strike number and ban end of the last ban started, or the active ban found. */
  strike: i32 = 0;
  banUntil: u64 = 0;

  constructor(capacity: u32) {
    this.sets = (capacity + <u32>rec.WAYS - 1) / <u32>rec.WAYS;
    this.key = keyOf(this.sets, 0);
  }

  /** The set index for an address (a 64-bit mix of both words, reduced to the set count). */
  setOf(hi: u64, lo: u64): u32 {
    let h = hi * 0x9e3779b97f4a7c15 ^ lo;
    h ^= h >> 33; h *= 0xff51afd7ed558ccd;
    h ^= h >> 33; h *= 0xc4ceb9fe1a85ec53;
    h ^= h >> 33;
    return <u32>(h % <u64>this.sets);
  }

  /** The shared-data key of set `index` (the returned buffer is reused by the next call). */
  keyFor(index: u32): ArrayBuffer {
    writeHex(changetype<usize>(this.key) + <usize>KEY_PREFIX.length + 6, index);
    return this.key;
  }

  /** Records moved by the last migrate() call, and used records found in the old sets. */
  moved: i32 = 0;
  oldUsed: i32 = 0;
  /** Change of the occupied-record count caused by the last migrate() call. */
  occupiedDelta: i32 = 0;

  // An emptied set means a worker with a newer capacity moved the table away from this geometry. Until
  // this worker is reconfigured too, it follows the geometry recorded in the meta key, so a banned
  // client stays banned on every worker. Returns true when the geometry changed.
  private followMigration(): bool {
    let meta = get_shared_data(String.UTF8.encode(META_KEY));
    if (meta.result != WasmResultValues.Ok || meta.value.byteLength != 4) return false;
    let sets = load<u32>(changetype<usize>(meta.value));
    if (sets == this.sets || sets == 0) return false;
    this.sets = sets;
    this.key = keyOf(sets, 0);
    return true;
  }

  /**
   * Moves the clients of a previous table geometry into this one (after a capacity change), then
   * empties the old keys. Returns false when there was nothing to do. Runs at configure time only.
   */
  migrate(cfg: Config, now: u64): bool {
    this.moved = 0;
    this.oldUsed = 0;
    this.occupiedDelta = 0;
    let metaKey = String.UTF8.encode(META_KEY);
    let meta = get_shared_data(metaKey);
    let prev: u32 = meta.result == WasmResultValues.Ok && meta.value.byteLength == 4 ? load<u32>(changetype<usize>(meta.value)) : 0;
    if (prev == this.sets) return false;
    let mine = new ArrayBuffer(4);
    store<u32>(changetype<usize>(mine), this.sets);
    // Whoever wins this CAS migrates; a worker that loses it finds the new geometry already recorded.
    let metaCas = meta.result == WasmResultValues.NotFound ? FRESH_CAS : meta.cas;
    if (set_shared_data(metaKey, mine, metaCas) != WasmResultValues.Ok || prev == 0) return false;
    let empty = new ArrayBuffer(0);
    for (let i: u32 = 0; i < prev; i++) {
      let oldKey = keyOf(prev, i);
      let old = get_shared_data(oldKey);
      if (old.result != WasmResultValues.Ok || old.value.byteLength != rec.SET_SIZE) continue;
      let base = changetype<usize>(old.value);
      for (let w = 0; w < rec.WAYS; w++) {
        let r = base + <usize>(w * rec.RECORD_SIZE);
        if (!rec.isUsed(r)) continue;
        this.oldUsed++;
        this.occupiedDelta--;
        if (!rec.isExpired(r, now, cfg) && this.adopt(r, cfg, now)) this.moved++;
      }
      set_shared_data(oldKey, empty, 0); // releases the value's memory; the key itself stays
    }
    return true;
  }

  // Copies a record from another table into its set here, unless that client is already present.
  private adopt(src: usize, cfg: Config, now: u64): bool {
    let hi = rec.addrHi(src), lo = rec.addrLo(src);
    let key = this.keyFor(this.setOf(hi, lo));
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      let sd = get_shared_data(key);
      let buf = sd.value;
      let cas = sd.cas;
      if (sd.result != WasmResultValues.Ok || buf.byteLength != rec.SET_SIZE) {
        if (sd.result == WasmResultValues.NotFound) cas = FRESH_CAS;
        buf = this.scratch;
        memory.fill(changetype<usize>(buf), 0, rec.SET_SIZE);
      }
      let base = changetype<usize>(buf);
      for (let i = 0; i < rec.WAYS; i++) {
        if (rec.isFor(base + <usize>(i * rec.RECORD_SIZE), hi, lo)) return false;
      }
      let r = this.locate(base, hi, lo, now, cfg);
      memory.copy(r, src, rec.RECORD_SIZE);
      let res = set_shared_data(key, buf, cas);
      if (res == WasmResultValues.Ok) {
        if (this.filledSlot) this.occupiedDelta++;
        return true;
      }
      if (res != WasmResultValues.CasMismatch) return false;
    }
    return false;
  }

  /** Request-time update for a client: returns rules.PASS, a rules.DENY_* reason, or FAILED. */
  request(cfg: Config, hi: u64, lo: u64, uaMatched: bool, now: u64): i32 {
    return this.update(OP_REQUEST, cfg, hi, lo, uaMatched, now);
  }

  /** Counts one matching error response for a client: returns rules.PASS or FAILED. */
  errorResponse(cfg: Config, hi: u64, lo: u64, now: u64): i32 {
    return this.update(OP_RESPONSE, cfg, hi, lo, false, now);
  }

  private update(op: i32, cfg: Config, hi: u64, lo: u64, uaMatched: bool, now: u64): i32 {
    let key = this.keyFor(this.setOf(hi, lo));
    this.conflicts = 0;
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      this.evicted = false;
      this.filledSlot = false;
      this.banRule = -1;
      let sd = get_shared_data(key);
      let cas = sd.cas;
      let buf = sd.value;
      if (sd.result == WasmResultValues.Ok && buf.byteLength == 0 && this.followMigration()) {
        key = this.keyFor(this.setOf(hi, lo)); // another worker moved the table: use the new geometry
        continue;
      }
      if (sd.result == WasmResultValues.NotFound || buf.byteLength != rec.SET_SIZE) {
        // A never-written set (or a value of another size, which this version cannot read): start empty.
        if (sd.result != WasmResultValues.Ok && sd.result != WasmResultValues.NotFound) return FAILED;
        if (sd.result == WasmResultValues.NotFound) cas = FRESH_CAS;
        buf = this.scratch;
        memory.fill(changetype<usize>(buf), 0, rec.SET_SIZE);
      }
      let r = this.locate(changetype<usize>(buf), hi, lo, now, cfg);
      rec.advance(r, now, cfg);
      let decision = rules.PASS;
      if (op == OP_REQUEST) decision = rules.onRequest(r, cfg, uaMatched, now);
      else rules.onErrorResponse(r, cfg, now);
      this.strike = rec.strikes(r);
      this.banUntil = rec.banUntil(r);
      if (!rules.dirty && !this.filledSlot && !this.evicted) return decision; // nothing to write back
      let res = set_shared_data(key, buf, cas);
      if (res == WasmResultValues.Ok) {
        this.banRule = rules.banStartedRule;
        return decision;
      }
      if (res != WasmResultValues.CasMismatch) return FAILED;
      this.conflicts++;
    }
    return FAILED;
  }

  // Finds the client's record in the set at `base`, or makes room for it (see the replacement policy).
  private locate(base: usize, hi: u64, lo: u64, now: u64, cfg: Config): usize {
    let empty: usize = 0, expired: usize = 0, idle: usize = 0, banned: usize = 0;
    for (let i = 0; i < rec.WAYS; i++) {
      let r = base + <usize>(i * rec.RECORD_SIZE);
      if (rec.isFor(r, hi, lo)) return r;
      if (!rec.isUsed(r)) { if (empty == 0) empty = r; continue; }
      if (rec.isBanned(r, now)) {
        if (banned == 0 || rec.banUntil(r) < rec.banUntil(banned)) banned = r;
      } else if (rec.isExpired(r, now, cfg)) {
        if (expired == 0) expired = r;
      } else if (idle == 0 || rec.updated(r) < rec.updated(idle)) {
        idle = r;
      }
    }
    let r = empty != 0 ? empty : expired != 0 ? expired : idle != 0 ? idle : banned;
    this.filledSlot = empty != 0;
    this.evicted = empty == 0;
    rec.init(r, hi, lo, now, cfg);
    return r;
  }
}

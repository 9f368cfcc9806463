// The bounded client table in proxy-wasm shared data, shared by every Envoy worker (VM) of the process.
//
// Envoy never deletes shared-data keys, so the table is a fixed set of keys: capacity/8 sets of 8
// records, key "traffic-guard/<plugin>/t/SSSSS/IIIII" (hex set count, hex set index). <plugin> is the
// plugin's name as Envoy passes it (Istio: <namespace>.<WasmPlugin name>), so two traffic-guard plugins
// in one proxy keep separate tables even though shared data is per vm_id, not per plugin.
//
// A client lives in the set its address hashes to. The hash is keyed with a 128-bit secret drawn once
// per process and plugin and kept in the "traffic-guard/<plugin>/meta" key together with the set count,
// so every worker places a client in the same set while nobody outside can compute which addresses
// share a set (and aim addresses at a banned client's set).
//
// The set count is part of the key because a new capacity re-hashes every client. A capacity change is
// recorded in the meta key (new set count, previous set count) by one CAS at configure time; the records
// of the previous geometry are then merged into the new one while requests are served, in slices of
// MIGRATE_SLICE old sets per request on every worker, and each old set is emptied with the CAS of its
// read. A client whose record is still in an old set has it merged first when it makes a request (its
// old set is drained before its new one is read), so no ban lapses during the move. The worker that
// completes a pass over the old sets clears the previous set count; a later capacity change waits for
// that. Until then both geometries hold records (at most old + new capacity).
// Every update is get -> modify -> set with the CAS from the get; on CAS_MISMATCH another worker changed
// the set in between, so the update is recomputed from fresh data (bounded retries).
//
// Admission and replacement in a full set (record.classify): a newcomer takes an empty slot, else an
// expired record, else the least recently updated record on probation (a client seen once, with no
// evidence against it). It never displaces a record holding evidence (a counted error, a second token
// spent, strikes) and never a banned one, so a flood of one-request addresses cannot wash out what a
// slow prober has accumulated, and colluding addresses cannot free a banned client. A newcomer that
// finds no slot it may take is not tracked for this request (it passes, and is counted). A newcomer
// that arrives with evidence (an error response of a client whose record was not kept) may also replace
// the least recently updated unbanned record; only a ban (moved during a migration) displaces a ban,
// and then the one ending soonest, if it ends before the newcomer's.
//
// First writes: Envoy ignores the CAS of a set on a key that does not exist yet, and cas 0 means "no
// check". So a set found absent is written with cas FRESH_CAS (non-zero): if the key is still absent the
// write lands; if another worker created it in between, its CAS differs and we get CAS_MISMATCH and redo
// the update from its data. No update is lost, except in the 1-in-2^32 case that the other worker's
// write drew exactly FRESH_CAS from Envoy's CAS counter at that instant.

import { randomBits, random0, random1 } from "./entropy";
import { get_shared_data, set_shared_data, WasmResultValues } from "@solo-io/proxy-runtime/assembly/runtime";
import { readShared, sharedResult, sharedCas } from "./host";
import * as imports from "@solo-io/proxy-runtime/assembly/imports";
import { Config } from "./config";
import * as rec from "./record";
import * as rules from "./rules";
import { Layout } from "./layout";

/** CAS attempts per update before giving up (and failing open). */
export const MAX_ATTEMPTS: i32 = 8;
/** Table-key prefix of a plugin without a name (the prefix is "traffic-guard/<plugin>/t/" otherwise). */
export const KEY_PREFIX: string = "traffic-guard/t/";
/** Meta key of a plugin without a name ("traffic-guard/<plugin>/meta" otherwise). */
export const META_KEY: string = "traffic-guard/meta";
/** Bytes of the meta value: u32 set count, u32 previous set count while migrating (else 0), u64 k0, u64 k1 (the hash secret). */
export const META_SIZE: i32 = 24;
/** Old sets a request drains while a capacity change is in progress (bounds the work per callback). */
export const MIGRATE_SLICE: u32 = 8;

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

/** The key prefix of a plugin: "traffic-guard/<plugin>/" ("traffic-guard/" without a name). */
export function pluginPrefix(plugin: string): string {
  return plugin.length == 0 ? "traffic-guard/" : "traffic-guard/" + plugin + "/";
}

/** The shared-data key of set `index` in a table of `sets` sets: "traffic-guard/<plugin>/t/SSSSS/IIIII". */
export function keyOf(sets: u32, index: u32, plugin: string = ""): ArrayBuffer {
  let prefix = pluginPrefix(plugin) + "t/";
  let at = <usize>String.UTF8.byteLength(prefix);
  let key = String.UTF8.encode(prefix + "00000/00000");
  writeHex(changetype<usize>(key) + at, sets);
  writeHex(changetype<usize>(key) + at + 6, index);
  return key;
}

// The murmur3 64-bit finaliser: a bijection that spreads every input bit over the output.
// @ts-ignore: decorator
@inline function fmix(h: u64): u64 {
  h ^= h >> 33; h *= 0xff51afd7ed558ccd;
  h ^= h >> 33; h *= 0xc4ceb9fe1a85ec53;
  return h ^ (h >> 33);
}

/**
 * Derives one half of the table secret from `seed` and the plugin name. The seed is 64 bits from the
 * host's WASI random_get (entropy.ts); on a host without it, the host time in ns at the first configure of
 * the process: the attacker would then have to know that instant to the nanosecond, and could only test a
 * guess by getting addresses banned in Envoy.
 */
export function secretFrom(seed: u64, plugin: string): u64 {
  let h: u64 = 0x243f6a8885a308d3;
  for (let i = 0; i < plugin.length; i++) h = fmix(h ^ <u64>plugin.charCodeAt(i));
  return fmix(seed ^ h) | 1; // never 0, which would mean "no secret yet"
}

const NANOS = memory.data(8);

// The host's wall clock in nanoseconds (0 if the host fails the call).
function nanos(): u64 {
  let out = NANOS;
  store<u64>(out, 0);
  imports.proxy_get_current_time_nanoseconds(out);
  return load<u64>(out);
}

/** Result of a failed update: the request passes (fail open) and the caller counts an internal error. */
export const FAILED: i32 = -1;

/** The shared table as seen from one VM. The outcome fields describe the last update that landed. */
export class Table {
  /** Number of sets (shared-data keys). */
  sets: u32;
  /** The hash secret (0 until configure read or created it; the unkeyed hash is then used). */
  k0: u64 = 0;
  /** Second half of the hash secret. */
  k1: u64 = 0;
  private plugin: string = "";
  private hexAt: usize = 0;
  private metaKey: ArrayBuffer = new ArrayBuffer(0);
  private key: ArrayBuffer = new ArrayBuffer(0);
  private scratch: ArrayBuffer = new ArrayBuffer(0);
  // drain() converts an old set here, while adopt() uses `scratch`.
  private drainScratch: ArrayBuffer = new ArrayBuffer(0);
  // update() reads a set of this layout here (host.ts readShared), so the request path allocates nothing.
  private readBuf: ArrayBuffer = new ArrayBuffer(0);
  /** The record layout of this configuration (layout.ts): record size, custom buckets, conversion. */
  layout: Layout = changetype<Layout>(0);

  /** A used record was replaced by the last update. */
  evicted: bool = false;
  /** The last update filled a previously empty slot (one more tracked client). */
  filledSlot: bool = false;
  /** The last update found no slot the newcomer may take: the client was not tracked. */
  refused: bool = false;
  /** CAS conflicts seen by the last update. */
  conflicts: i32 = 0;
  /** The rule that the last update banned the client for, or -1. */
  banRule: i32 = -1;
  /** Strike number and ban end of the last ban started, or the active ban found. */
  strike: i32 = 0;
  banUntil: u64 = 0;

  /** The set count this worker's configuration asks for. */
  wanted: u32;
  /** The set count being drained into `sets` (0 when no capacity change is in progress). */
  prevSets: u32 = 0;
  /** The next old set this worker drains. */
  private cursor: u32 = 0;
  private oldKey: ArrayBuffer = new ArrayBuffer(0);
  /** The last update completed this worker's pass over the old sets (log it once). */
  completed: bool = false;

  constructor(capacity: u32, plugin: string = "", cfg: Config | null = null) {
    this.layout = new Layout(cfg !== null ? cfg : new Config(), pluginPrefix(plugin));
    this.scratch = new ArrayBuffer(this.layout.valueSize);
    this.drainScratch = new ArrayBuffer(this.layout.valueSize);
    this.readBuf = new ArrayBuffer(this.layout.valueSize);
    this.sets = (capacity + <u32>rec.WAYS - 1) / <u32>rec.WAYS;
    this.wanted = this.sets;
    this.plugin = plugin;
    let prefix = pluginPrefix(plugin);
    this.hexAt = <usize>String.UTF8.byteLength(prefix) + 2;
    this.metaKey = String.UTF8.encode(prefix + "meta");
    this.key = keyOf(this.sets, 0, plugin);
  }

  /** The set index for an address: a keyed 64-bit mix of both words, reduced to the set count. */
  setOf(hi: u64, lo: u64): u32 {
    return this.setIn(hi, lo, this.sets);
  }

  // The set index for an address in a table of `sets` sets.
  private setIn(hi: u64, lo: u64, sets: u32): u32 {
    let h = fmix((hi ^ this.k0) * 0x9e3779b97f4a7c15 ^ lo ^ this.k1);
    h = fmix(h ^ this.k0 ^ rotl<u64>(this.k1, 29));
    return <u32>(h % <u64>sets);
  }

  // Switches to geometry `sets`, draining `prev` (0: nothing to drain).
  private use(sets: u32, prev: u32): void {
    if (sets != this.sets) {
      this.sets = sets;
      this.key = keyOf(sets, 0, this.plugin);
    }
    if (prev != this.prevSets) {
      this.prevSets = prev;
      this.cursor = 0;
      this.moved = 0;
      this.oldUsed = 0;
      if (prev != 0) this.oldKey = keyOf(prev, 0, this.plugin);
    }
  }

  // The shared-data key of old set `index` (the returned buffer is reused by the next call).
  private oldKeyFor(index: u32): ArrayBuffer {
    writeHex(changetype<usize>(this.oldKey) + this.hexAt + 6, index);
    return this.oldKey;
  }

  /** The shared-data key of set `index` (the returned buffer is reused by the next call). */
  keyFor(index: u32): ArrayBuffer {
    writeHex(changetype<usize>(this.key) + this.hexAt + 6, index);
    return this.key;
  }

  /** Records this worker moved during the current capacity change, and used records it found in old sets. */
  moved: i32 = 0;
  oldUsed: i32 = 0;
  /** Change of the occupied-record count caused by draining, not yet reported (the caller resets it). */
  occupiedDelta: i32 = 0;

  private metaPrev: u32 = 0;

  // Reads the secret from a meta value; returns its set count (its previous set count in metaPrev), or
  // 0 if the value is not a meta value of this version.
  private readMeta(v: ArrayBuffer): u32 {
    this.metaPrev = 0;
    if (v.byteLength != META_SIZE) return 0;
    let p = changetype<usize>(v);
    let k0 = load<u64>(p, 8), k1 = load<u64>(p, 16);
    if (k0 == 0 && k1 == 0) return 0;
    this.k0 = k0;
    this.k1 = k1;
    this.metaPrev = load<u32>(p, 4);
    return load<u32>(p);
  }

  // Writes the meta value (sets, prev, secret) with `cas`.
  private writeMeta(sets: u32, prev: u32, cas: u32): WasmResultValues {
    let v = new ArrayBuffer(META_SIZE);
    let p = changetype<usize>(v);
    store<u32>(p, sets);
    store<u32>(p, prev, 4);
    store<u64>(p, this.k0, 8);
    store<u64>(p, this.k1, 16);
    return set_shared_data(this.metaKey, v, cas);
  }

  // An emptied (or absent) set can mean that a worker with a newer capacity moved the table away from
  // this geometry. Until this worker is reconfigured too, it follows the geometry recorded in the meta
  // key (and helps drain it), so a banned client stays banned on every worker. Returns true when the
  // geometry changed.
  private followMigration(): bool {
    let meta = get_shared_data(this.metaKey);
    if (meta.result != WasmResultValues.Ok) return false;
    let sets = this.readMeta(meta.value);
    if (sets == this.sets || sets == 0) return false;
    this.use(sets, this.metaPrev);
    this.wanted = sets; // the newer configuration's capacity, so as not to move the table back
    return true;
  }

  /**
   * Joins the table of this plugin at configure time, with one meta read and at most MAX_ATTEMPTS
   * CAS writes: reads the hash secret and the geometry, or creates them (secret from the host clock,
   * see secretFrom); after a capacity change records the new geometry, whose old sets requests then
   * drain (see above). Returns true when this call started a capacity change.
   */
  migrate(cfg: Config, now: u64): bool {
    this.completed = false;
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      let meta = get_shared_data(this.metaKey);
      if (meta.result != WasmResultValues.Ok && meta.result != WasmResultValues.NotFound) return false;
      let cas = meta.result == WasmResultValues.NotFound ? FRESH_CAS : meta.cas;
      let stored: u32 = meta.result == WasmResultValues.Ok ? this.readMeta(meta.value) : 0;
      if (stored == 0) {
        // No table yet (or one of another version): draw the secret and record the geometry.
        if (randomBits()) {
          this.k0 = secretFrom(random0, this.plugin);
          this.k1 = secretFrom(random1, this.plugin);
        } else {
          this.k0 = secretFrom(nanos() ^ now, this.plugin);
          this.k1 = secretFrom(this.k0 ^ 0x9e3779b97f4a7c15, this.plugin);
        }
        let res = this.writeMeta(this.wanted, 0, cas);
        if (res == WasmResultValues.CasMismatch) continue;
        this.use(this.wanted, 0);
        return false;
      }
      if (stored == this.wanted || this.metaPrev != 0) {
        // Our geometry already, or a capacity change in progress that must finish first (requests
        // start ours afterwards, see step()).
        this.use(stored, this.metaPrev);
        return false;
      }
      let res = this.writeMeta(this.wanted, stored, cas);
      if (res == WasmResultValues.CasMismatch) continue;
      if (res != WasmResultValues.Ok) return false;
      this.use(this.wanted, stored);
      return true;
    }
    return false;
  }

  // Migration work of one request: start a capacity change this worker's configuration still wants,
  // or drain the next MIGRATE_SLICE old sets; the worker that completes the pass clears the previous
  // set count in the meta key.
  private step(cfg: Config, now: u64): void {
    if (this.prevSets == 0) {
      // A capacity change waited for the previous one to finish.
      let meta = get_shared_data(this.metaKey);
      if (meta.result != WasmResultValues.Ok) return;
      let cas = meta.cas;
      let stored = this.readMeta(meta.value);
      if (stored == 0) return;
      if (stored == this.wanted || this.metaPrev != 0) {
        this.use(stored, this.metaPrev);
        if (stored != this.wanted) this.wanted = stored;
        return;
      }
      if (this.writeMeta(this.wanted, stored, cas) == WasmResultValues.Ok) this.use(this.wanted, stored);
      return;
    }
    let end = this.cursor + MIGRATE_SLICE;
    if (end > this.prevSets) end = this.prevSets;
    for (; this.cursor < end; this.cursor++) this.drain(this.oldKeyFor(this.cursor), cfg, now);
    if (this.cursor < this.prevSets) return;
    // Pass complete: every old set was emptied (or never written).
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      let meta = get_shared_data(this.metaKey);
      if (meta.result != WasmResultValues.Ok) break;
      let cas = meta.cas;
      let stored = this.readMeta(meta.value);
      if (stored != this.sets || this.metaPrev != this.prevSets) break; // someone else moved on
      let res = this.writeMeta(this.sets, 0, cas);
      if (res != WasmResultValues.CasMismatch) break;
    }
    this.prevSets = 0;
    this.completed = true;
  }

  /** Drains every remaining old set now (tests, and a worker that must finish a pass at once). */
  finishMigration(cfg: Config, now: u64): void {
    while (this.prevSets != 0) this.step(cfg, now);
  }

  // Merges the records of one old set into the current geometry, then empties it with the CAS of the
  // read; a worker that wrote to the old set in between makes the CAS fail, and the set is read again
  // (merging is idempotent, so records moved by the failed round are merged, not duplicated).
  private drain(oldKey: ArrayBuffer, cfg: Config, now: u64): void {
    let empty = new ArrayBuffer(0);
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      // get_shared_data returns one global object that adopt's reads overwrite: keep what we need.
      let old = get_shared_data(oldKey);
      let value = old.value;
      let cas = old.cas;
      if (old.result != WasmResultValues.Ok || value.byteLength == 0) return;
      if (!this.layout.isOurs(value)) {
        if (!this.layout.convert(value, changetype<usize>(this.drainScratch))) return;
        value = this.drainScratch;
      }
      let base = changetype<usize>(value);
      let used = 0, moved = 0, filled = 0;
      for (let w = 0; w < rec.WAYS; w++) {
        let r = base + <usize>(w * this.layout.recordSize);
        if (!rec.isUsed(r)) continue;
        used++;
        if (rec.isExpired(r, now, cfg)) continue;
        if (this.adopt(r, cfg, now)) {
          moved++;
          if (this.filledSlot) filled++;
        }
      }
      // The value's memory is released; the key itself stays.
      if (set_shared_data(oldKey, empty, cas) == WasmResultValues.Ok) {
        this.oldUsed += used;
        this.moved += moved;
        this.occupiedDelta += filled - used;
        return;
      }
    }
  }

  /** The CAS of the last readSet. */
  private readCas: u32 = 0;

  // Reads set `key` for a read-modify-write by adopt and applyBan: its value, or, written under another
  // rule layout, its conversion in scratch, or an empty set of this layout in scratch when the key is
  // absent or unreadable; its CAS (FRESH_CAS when absent) in readCas. null when the host failed.
  private readSet(key: ArrayBuffer): ArrayBuffer | null {
    let sd = get_shared_data(key);
    let buf = sd.value;
    this.readCas = sd.cas;
    if (sd.result == WasmResultValues.Ok && buf.byteLength > 0 && !this.layout.isOurs(buf) &&
        this.layout.convert(buf, changetype<usize>(this.scratch))) {
      return this.scratch; // written under another rule layout: converted, written back with the read's CAS
    }
    if (sd.result == WasmResultValues.Ok && this.layout.isOurs(buf)) return buf;
    if (sd.result != WasmResultValues.Ok && sd.result != WasmResultValues.NotFound) return null;
    if (sd.result == WasmResultValues.NotFound) this.readCas = FRESH_CAS;
    buf = this.scratch;
    memory.fill(changetype<usize>(buf), 0, this.layout.valueSize);
    this.layout.stamp(changetype<usize>(buf));
    return buf;
  }

  // Merges a record from another geometry into its set here: into the client's record if it has one
  // (the later ban, the higher strike count, the fewer tokens), else into a slot the record's evidence
  // may take. Returns false when it found no such slot or the write failed.
  private adopt(src: usize, cfg: Config, now: u64): bool {
    let hi = rec.addrHi(src), lo = rec.addrLo(src);
    rec.advance(src, now, cfg);
    let admit = rec.classify(src, now, cfg);
    let key = this.keyFor(this.setOf(hi, lo));
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      this.filledSlot = false;
      let buf = this.readSet(key);
      if (buf === null) return false;
      let cas = this.readCas;
      let base = changetype<usize>(buf);
      let r = this.find(base, hi, lo);
      if (r != 0) {
        rec.advance(r, now, cfg);
        if (!rec.merge(r, src, this.layout.buckets)) return true; // nothing to add
      } else {
        r = this.place(base, now, cfg, admit, rec.banUntil(src));
        if (r == 0) return false;
        memory.copy(r, src, this.layout.recordSize);
      }
      let res = set_shared_data(key, buf, cas);
      if (res == WasmResultValues.Ok) return true;
      if (res != WasmResultValues.CasMismatch) return false;
    }
    return false;
  }

  /**
   * A ban decided elsewhere (decisions.ts): bans client hi/lo until `until` (a later ban already running
   * is kept), or with until 0 lifts its running ban and refills its buckets (strikes are kept). A newcomer is admitted like a ban moved by a capacity
   * change. Returns false when the host failed or the set had no slot it may take.
   */
  applyBan(cfg: Config, hi: u64, lo: u64, until: u64, now: u64): bool {
    if (this.prevSets != 0) this.drain(this.oldKeyFor(this.setIn(hi, lo, this.prevSets)), cfg, now);
    let key = this.keyFor(this.setOf(hi, lo));
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      let buf = this.readSet(key);
      if (buf === null) return false;
      let cas = this.readCas;
      let base = changetype<usize>(buf);
      let r = this.find(base, hi, lo);
      if (until == 0) {
        if (r == 0 || !rec.isBanned(r, now)) return true;
        rec.setBanUntil(r, now);
        for (let i = 0; i < 3; i++) rec.setTokens(r, i, <f64>cfg.rules[i].requests); // unbanned with a clean slate
        for (let j = 0; j < this.layout.buckets; j++) rec.setCustomTokens(r, j, <f64>cfg.custom.buckets[j].requests);
      } else if (r == 0) {
        r = this.place(base, now, cfg, rec.BANNED, until);
        if (r == 0) return false;
        rec.init(r, hi, lo, now, cfg);
        rec.setBanUntil(r, until);
      } else {
        rec.advance(r, now, cfg);
        if (rec.banUntil(r) >= until) return true;
        rec.setBanUntil(r, until);
      }
      let res = set_shared_data(key, buf, cas);
      if (res == WasmResultValues.Ok) return true;
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
    return this.update(OP_RESPONSE, cfg, hi, lo, true, now);
  }

  /** Counts a response for a client: a matching error when `countError`, and the custom rules' response matches (custom-rules.ts). */
  response(cfg: Config, hi: u64, lo: u64, countError: bool, now: u64): i32 {
    return this.update(OP_RESPONSE, cfg, hi, lo, countError, now);
  }

  private update(op: i32, cfg: Config, hi: u64, lo: u64, uaMatched: bool, now: u64): i32 {
    this.completed = false;
    if (this.prevSets != 0 || this.sets != this.wanted) this.step(cfg, now);
    let ownDrained = false;
    let key = this.keyFor(this.setOf(hi, lo));
    this.conflicts = 0;
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      this.evicted = false;
      this.filledSlot = false;
      this.refused = false;
      this.banRule = -1;
      let buf = readShared(key, this.readBuf);
      let result = sharedResult;
      let cas = sharedCas;
      if ((result == WasmResultValues.NotFound || (result == WasmResultValues.Ok && buf.byteLength == 0)) &&
          this.followMigration()) {
        key = this.keyFor(this.setOf(hi, lo)); // another worker moved the table: use the new geometry
        continue;
      }
      if (result == WasmResultValues.Ok && buf.byteLength > 0 && !this.layout.isOurs(buf) &&
          this.layout.convert(buf, changetype<usize>(this.scratch))) {
        buf = this.scratch; // written under another rule layout: converted, written back with the read's CAS
      } else if (result == WasmResultValues.NotFound || !this.layout.isOurs(buf)) {
        // A never-written set (or a value of another size, which this version cannot read): start empty.
        if (result != WasmResultValues.Ok && result != WasmResultValues.NotFound) return FAILED;
        if (result == WasmResultValues.NotFound) cas = FRESH_CAS;
        buf = this.scratch;
        memory.fill(changetype<usize>(buf), 0, this.layout.valueSize);
        this.layout.stamp(changetype<usize>(buf));
      }
      let base = changetype<usize>(buf);
      let r = this.find(base, hi, lo);
      if (r == 0 && this.prevSets != 0 && !ownDrained) {
        // Not here yet: its record may still be in the old geometry. Merge that set first.
        ownDrained = true;
        this.drain(this.oldKeyFor(this.setIn(hi, lo, this.prevSets)), cfg, now);
        key = this.keyFor(this.setOf(hi, lo));
        attempt--;
        continue;
      }
      if (r == 0) {
        // A newcomer. On a response it brings evidence: the error about to be counted.
        r = this.place(base, now, cfg, op == OP_RESPONSE ? rec.EVIDENCE : rec.PROBATION, 0);
        if (r == 0) {
          this.refused = true;
          return rules.PASS;
        }
        rec.init(r, hi, lo, now, cfg);
      }
      rec.advance(r, now, cfg);
      let decision = rules.PASS;
      if (op == OP_REQUEST) decision = rules.onRequest(r, cfg, uaMatched, now);
      else rules.onResponse(r, cfg, uaMatched, now); // uaMatched: count the error
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

  // The client's record in the set at `base`, or 0.
  private find(base: usize, hi: u64, lo: u64): usize {
    for (let i = 0; i < rec.WAYS; i++) {
      let r = base + <usize>(i * this.layout.recordSize);
      if (rec.isFor(r, hi, lo)) return r;
    }
    return 0;
  }

  // Picks the slot a newcomer of class `admit` (record.PROBATION, EVIDENCE or BANNED, with its ban end
  // `until`) may take in the set at `base` (see the admission policy above), or 0. Sets filledSlot and
  // evicted for the caller.
  private place(base: usize, now: u64, cfg: Config, admit: i32, until: u64): usize {
    let empty: usize = 0, expired: usize = 0, probation: usize = 0, evidence: usize = 0, banned: usize = 0;
    for (let i = 0; i < rec.WAYS; i++) {
      let r = base + <usize>(i * this.layout.recordSize);
      if (!rec.isUsed(r)) { if (empty == 0) empty = r; continue; }
      let c = rec.classify(r, now, cfg);
      if (c == rec.EXPIRED) {
        if (expired == 0) expired = r;
      } else if (c == rec.PROBATION) {
        if (probation == 0 || rec.updated(r) < rec.updated(probation)) probation = r;
      } else if (c == rec.EVIDENCE) {
        if (evidence == 0 || rec.updated(r) < rec.updated(evidence)) evidence = r;
      } else if (banned == 0 || rec.banUntil(r) < rec.banUntil(banned)) {
        banned = r;
      }
    }
    let r = empty != 0 ? empty : expired != 0 ? expired : probation;
    if (r == 0 && admit >= rec.EVIDENCE) r = evidence;
    if (r == 0 && admit == rec.BANNED && banned != 0 && rec.banUntil(banned) < until) r = banned;
    this.filledSlot = r != 0 && empty != 0;
    this.evicted = r != 0 && empty == 0;
    return r;
  }
}

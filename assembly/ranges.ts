// Range escalation (ban.range), in the spirit of CrowdSec's range decisions: when `threshold` distinct
// clients inside one range (an IPv6 /48 or, when enabled, an IPv4 /24 by default) are banned within
// `window`, the whole range is banned for `ban`. Rotating /64s of a free /48, or the addresses of one
// /24, then no longer evade.
//
// State: one shared-data key per plugin, "traffic-guard/<plugin>/r", holding SLOTS entries of ENTRY
// bytes: range address (u64 hi, u64 lo, masked), window start (u64 ms; 0 = unused slot), ban end (u64
// ms), then up to MAX_RANGE_THRESHOLD u32 hashes of the distinct clients banned in the window. It is
// written only when a client ban starts (get -> modify -> set with CAS, like the table). Each worker
// keeps a copy of the running range bans and refreshes it at most every REFRESH_MS, so the request path
// costs one comparison per request and one shared-data read per second; a range ban reaches the other
// workers within REFRESH_MS.

import { get_shared_data, set_shared_data, WasmResultValues } from "@solo-io/proxy-runtime/assembly/runtime";
import { Config, MAX_RANGE_THRESHOLD } from "./config";
import { isV4, maskHi, maskLo } from "./address";
import { FRESH_CAS, MAX_ATTEMPTS, pluginPrefix } from "./table";

/** Ranges tracked at once (candidates and running bans). */
export const SLOTS: i32 = 16;
/** Bytes per range entry. */
export const ENTRY: i32 = 32 + 4 * MAX_RANGE_THRESHOLD;
/** Bytes of the ranges value. */
export const RANGES_SIZE: i32 = SLOTS * ENTRY;
/** How long a worker uses its copy of the running range bans before reading them again, in ms. */
export const REFRESH_MS: u64 = 1000;

// The murmur3 64-bit finaliser (see table.ts).
function fmix(h: u64): u64 {
  h ^= h >> 33; h *= 0xff51afd7ed558ccd;
  h ^= h >> 33; h *= 0xc4ceb9fe1a85ec53;
  return h ^ (h >> 33);
}

/** The range bans of one plugin as seen from one VM. */
export class Ranges {
  private key: ArrayBuffer;
  private scratch: ArrayBuffer = new ArrayBuffer(RANGES_SIZE);
  // Running range bans: hi, lo, ban end, per entry.
  private cache: StaticArray<u64> = new StaticArray<u64>(SLOTS * 3);
  private active: i32 = 0;
  private refreshedAt: u64 = 0;
  private fresh: bool = false;

  /** Range address and prefix length of the last check()/noteBan() call. */
  rangeHi: u64 = 0;
  rangeLo: u64 = 0;
  prefix: i32 = 0;
  /** Ban end of the range ban found by check() or started by noteBan(). */
  banUntil: u64 = 0;
  /** Distinct clients whose bans started the last range ban. */
  clients: i32 = 0;

  constructor(plugin: string) {
    this.key = String.UTF8.encode(pluginPrefix(plugin) + "r");
  }

  // Masks an aggregated client address to its range; returns the prefix length, or 0 (off for its family).
  private rangeOf(cfg: Config, hi: u64, lo: u64): i32 {
    if (isV4(hi, lo)) {
      let bits = cfg.rangePrefixV4;
      if (bits == 0) return 0;
      this.rangeHi = 0;
      this.rangeLo = lo & maskLo(96 + bits);
      this.prefix = bits;
      return bits;
    }
    let bits = cfg.rangePrefixV6;
    if (bits == 0) return 0;
    this.rangeHi = hi & maskHi(bits);
    this.rangeLo = lo & maskLo(bits);
    this.prefix = bits;
    return bits;
  }

  /** Whether the client is inside a banned range (banUntil then holds the range ban's end). */
  check(cfg: Config, hi: u64, lo: u64, now: u64): bool {
    if (this.rangeOf(cfg, hi, lo) == 0) return false; // off for this address family
    if (!this.fresh || now < this.refreshedAt || now - this.refreshedAt >= REFRESH_MS) this.refresh(now);
    if (this.active == 0) return false;
    for (let i = 0; i < this.active; i++) {
      let b = i * 3;
      if (unchecked(this.cache[b]) == this.rangeHi && unchecked(this.cache[b + 1]) == this.rangeLo && unchecked(this.cache[b + 2]) > now) {
        this.banUntil = unchecked(this.cache[b + 2]);
        return true;
      }
    }
    return false;
  }

  // Reads the running range bans into this VM's copy.
  private refresh(now: u64): void {
    this.refreshedAt = now;
    this.fresh = true;
    this.active = 0;
    let sd = get_shared_data(this.key);
    if (sd.result != WasmResultValues.Ok || sd.value.byteLength != RANGES_SIZE) return;
    let base = changetype<usize>(sd.value);
    for (let i = 0; i < SLOTS; i++) this.remember(base + <usize>(i * ENTRY), now);
  }

  // Adds a running ban of the entry at `e` to this VM's copy.
  private remember(e: usize, now: u64): void {
    let until = load<u64>(e, 24);
    if (until <= now || this.active >= SLOTS) return;
    let b = this.active * 3;
    this.cache[b] = load<u64>(e);
    this.cache[b + 1] = load<u64>(e, 8);
    this.cache[b + 2] = until;
    this.active++;
  }

  /**
   * Records that client hi/lo (aggregated) was just banned. Returns true when this ban completed the
   * threshold and started a ban of its range (rangeHi/rangeLo/prefix, banUntil, clients describe it).
   * A failure of the host leaves the range unbanned (fail open).
   */
  noteBan(cfg: Config, hi: u64, lo: u64, now: u64): bool {
    if (cfg.rangeThreshold == 0 || this.rangeOf(cfg, hi, lo) == 0) return false;
    let h = <u32>fmix(hi ^ fmix(lo));
    if (h == 0) h = 1;
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      let sd = get_shared_data(this.key);
      let result = sd.result;
      let cas = sd.cas;
      let buf = sd.value;
      if (result != WasmResultValues.Ok || buf.byteLength != RANGES_SIZE) {
        if (result != WasmResultValues.Ok && result != WasmResultValues.NotFound) return false;
        if (result == WasmResultValues.NotFound) cas = FRESH_CAS;
        buf = this.scratch;
        memory.fill(changetype<usize>(buf), 0, RANGES_SIZE);
      }
      let e = this.entryFor(changetype<usize>(buf), now);
      if (e == 0) return false; // every slot holds a running range ban
      if (load<u64>(e, 24) > now) return false; // the range is banned already
      if (now - load<u64>(e, 16) >= cfg.rangeWindowMs) {
        store<u64>(e, now, 16); // the window has passed: start counting again
        memory.fill(e + 32, 0, 4 * MAX_RANGE_THRESHOLD);
      }
      let n = 0;
      let seen = false;
      for (let i = 0; i < MAX_RANGE_THRESHOLD; i++) {
        let v = load<u32>(e + 32 + <usize>(i * 4));
        if (v == 0) continue;
        n++;
        if (v == h) seen = true;
      }
      if (seen) return false; // the same client banned again: not a new client of the range
      for (let i = 0; i < MAX_RANGE_THRESHOLD; i++) {
        let p = e + 32 + <usize>(i * 4);
        if (load<u32>(p) == 0) { store<u32>(p, h); n++; break; }
      }
      let started = n >= cfg.rangeThreshold;
      if (started) {
        store<u64>(e, now + cfg.rangeBanMs, 24);
        store<u64>(e, now, 16);
        memory.fill(e + 32, 0, 4 * MAX_RANGE_THRESHOLD);
      }
      let res = set_shared_data(this.key, buf, cas);
      if (res == WasmResultValues.CasMismatch) continue;
      if (res != WasmResultValues.Ok) return false;
      if (started) {
        this.banUntil = now + cfg.rangeBanMs;
        this.clients = n;
        this.remember(e, now); // enforced by this worker at once; by the others within REFRESH_MS
      }
      return started;
    }
    return false;
  }

  /**
   * A range ban decided elsewhere (decisions.ts): bans the range at hi/lo (masked to the configured range
   * prefix) until `until`, or with until 0 lifts its running ban. Returns false when the host failed or
   * every slot holds a running range ban.
   */
  applyBan(hi: u64, lo: u64, until: u64, now: u64): bool {
    this.rangeHi = hi;
    this.rangeLo = lo;
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      let sd = get_shared_data(this.key);
      let cas = sd.cas;
      let buf = sd.value;
      if (sd.result != WasmResultValues.Ok || buf.byteLength != RANGES_SIZE) {
        if (sd.result != WasmResultValues.Ok && sd.result != WasmResultValues.NotFound) return false;
        if (sd.result == WasmResultValues.NotFound) cas = FRESH_CAS;
        buf = this.scratch;
        memory.fill(changetype<usize>(buf), 0, RANGES_SIZE);
      }
      let e = this.entryFor(changetype<usize>(buf), now);
      if (e == 0) return false;
      let current = load<u64>(e, 24);
      if (until == 0) {
        if (current <= now) return true;
        store<u64>(e, now, 24);
      } else {
        if (current >= until) return true;
        store<u64>(e, until, 24);
      }
      let res = set_shared_data(this.key, buf, cas);
      if (res == WasmResultValues.CasMismatch) continue;
      if (res != WasmResultValues.Ok) return false;
      this.fresh = false; // this worker reads the change at its next check; the others within REFRESH_MS
      return true;
    }
    return false;
  }

  // The entry of the current range in the value at `base`, or a slot for it (initialised): an unused
  // one, else the one whose window started first among those not banned. 0 when all are banned.
  private entryFor(base: usize, now: u64): usize {
    let free: usize = 0, oldest: usize = 0;
    for (let i = 0; i < SLOTS; i++) {
      let e = base + <usize>(i * ENTRY);
      let start = load<u64>(e, 16);
      if (start == 0) { if (free == 0) free = e; continue; }
      if (load<u64>(e) == this.rangeHi && load<u64>(e, 8) == this.rangeLo) return e;
      if (load<u64>(e, 24) <= now && (oldest == 0 || start < load<u64>(oldest, 16))) oldest = e;
    }
    let e = free != 0 ? free : oldest;
    if (e == 0) return 0;
    memory.fill(e, 0, ENTRY);
    store<u64>(e, this.rangeHi);
    store<u64>(e, this.rangeLo, 8);
    store<u64>(e, now > 0 ? now : 1, 16);
    return e;
  }
}

// A per-worker cache of running bans, so that a banned client's requests are denied without a
// shared-data call (the block path). A ban's end never moves earlier in shared data except when a ban
// is lifted (a lifted decision, see noteBanLifted), so a cached end is exact until it passes; lifts are
// announced through a generation counter in shared data that every worker checks on its tick (about once
// a second), when it empties its cache. A reconfigure starts an empty cache.
//
// The cache is direct-mapped: SLOTS entries of (key high word, key low word, ban end), the slot chosen
// by a hash of the key. A collision only replaces an entry, and a miss falls back to the shared table,
// so a client that aims at the cache can cost the filter nothing but that shared-data read.

import { get_shared_data, set_shared_data, WasmResultValues } from "@solo-io/proxy-runtime/assembly/runtime";

/** Entries in the cache (a power of two). */
export const SLOTS: i32 = 16384;
const SHIFT: u64 = 50; // 64 - log2(SLOTS)
const ENTRY: usize = 24;
const CACHE = memory.data(<i32>(<usize>SLOTS * ENTRY));

let generation: u64 = 0;
let generationKey: ArrayBuffer = new ArrayBuffer(0);

// The slot of a key: a multiplicative hash of both words.
// @ts-ignore: decorator
@inline function slot(hi: u64, lo: u64): usize {
  return CACHE + <usize>(((lo ^ (hi * 0x9e3779b97f4a7c15)) * 0xbf58476d1ce4e5b9) >> SHIFT) * ENTRY;
}

/**
 * The end of a cached ban of the client key (hi, lo) that is still running at `now`, or 0.
 */
export function cachedBanUntil(hi: u64, lo: u64, now: u64): u64 {
  let p = slot(hi, lo);
  let until = load<u64>(p, 16);
  if (until <= now || load<u64>(p) != hi || load<u64>(p, 8) != lo) return 0;
  return until;
}

/** Remembers that the client key (hi, lo) is banned until `until` (shared data said so). */
export function rememberBan(hi: u64, lo: u64, until: u64): void {
  let p = slot(hi, lo);
  store<u64>(p, hi);
  store<u64>(p, lo, 8);
  store<u64>(p, until, 16);
}

/** Empties the cache. */
export function forgetBans(): void {
  memory.fill(CACHE, 0, <usize>SLOTS * ENTRY);
}

// The counter in shared data: u64 little endian; absent = 0.
function readGeneration(): u64 {
  let got = get_shared_data(generationKey);
  if (got.result != WasmResultValues.Ok || got.value.byteLength != 8) return 0;
  return load<u64>(changetype<usize>(got.value));
}

/**
 * Starts the cache for a (re)configured plugin whose shared-data keys begin with `prefix`
 * (table.ts pluginPrefix): empty, at the current lift generation.
 */
export function startBanCache(prefix: string): void {
  generationKey = String.UTF8.encode(prefix + "lifts");
  forgetBans();
  generation = readGeneration();
}

/** On the root context's tick: empties the cache when any worker has lifted a ban since the last check. */
export function checkLifts(): void {
  let g = readGeneration();
  if (g != generation) {
    generation = g;
    forgetBans();
  }
}

/**
 * Announces to every worker of the process that a ban was lifted before its end (their caches are
 * emptied on their next tick), and empties this worker's cache now. Returns whether the counter was
 * written (false: shared data refused it after retries; the lift then reaches other workers' caches
 * only when the cached ban ends).
 */
export function noteBanLifted(): bool {
  forgetBans();
  for (let attempt = 0; attempt < 8; attempt++) {
    let got = get_shared_data(generationKey);
    let cas: u32 = 0;
    let g: u64 = 0;
    if (got.result == WasmResultValues.Ok && got.value.byteLength == 8) {
      g = load<u64>(changetype<usize>(got.value));
      cas = got.cas;
    } else if (got.result != WasmResultValues.NotFound && got.result != WasmResultValues.Ok) {
      return false;
    }
    let buf = new ArrayBuffer(8);
    store<u64>(changetype<usize>(buf), g + 1);
    let res = set_shared_data(generationKey, buf, cas);
    if (res == WasmResultValues.Ok) {
      generation = g + 1;
      return true;
    }
    if (res != WasmResultValues.CasMismatch) return false;
  }
  return false;
}

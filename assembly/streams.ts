// What a stream carries from its request phase to its end (proxy_on_log), kept per VM (Envoy worker) in a
// fixed table in linear memory instead of one SDK context object per stream.
//
// The module exports no proxy_on_context_create and no proxy_on_delete for streams (index.ts): each costs
// Envoy a call into V8 on every request, and cpp-host then leaves the in-VM state to the module. Envoy
// calls proxy_on_log once when a stream ends (after the response, a local reply or a reset; its access-log
// phase, before the filter is destroyed), and the response headers and trailers are readable there, so
// proxy_on_log is both the response phase and the end of the stream.
//
// Context ids come from one counter per VM, so a stream's home slot is its id mod SLOTS; a stream whose
// home slot is held by an open stream takes the first free slot of the PROBE slots from its home, and is
// found again by looking at all of them. A stream that ends frees its slot. Only when all PROBE slots are
// held (thousands of streams open at once on this worker, or streams Envoy never ended) does a stream take
// over the oldest of them; that stream loses its response-phase accounting, and the takeover is counted
// (index.ts).

/** Slots in the table (a power of two). */
export const SLOTS: u32 = 8192;
const SLOT_BYTES: usize = 32;
const TABLE: usize = memory.data(<i32>(SLOTS * <u32>SLOT_BYTES), 8);
/** Slots a stream may use, from its home slot on. */
const PROBE: u32 = 8;

/** The stream's client record was updated in the request phase (its response may count). */
export const TRACKED: u32 = 1;
/** The filter sent a local reply. */
export const REPLIED: u32 = 2;
/** Dry-run: the request would have been denied. */
export const WOULD_DENY: u32 = 4;
/** The client is keyed by its mesh identity. */
export const MESH: u32 = 8;
/** A delay rule holds the request (delay.ts). */
export const HELD: u32 = 16;

/** Flags of the slot found by take(). */
export let flags: u32 = 0;
/** Custom-rule matcher bits left for the response (matchers.ts). */
export let pending: u32 = 0;
/** Index of the stream's root context (index.ts). */
export let root: u32 = 0;
/** High word of the client key. */
export let hi: u64 = 0;
/** Low word of the client key. */
export let lo: u64 = 0;

// @ts-ignore: decorator
@inline
function slotAt(id: u32, k: u32): usize {
  return TABLE + <usize>((id + k) & (SLOTS - 1)) * SLOT_BYTES;
}

/** Saves stream `id`'s state; returns false when it had to take over the slot of a stream still open. */
export function save(id: u32, f: u32, rootIndex: u32, bits: u32, keyHi: u64, keyLo: u64): bool {
  let p: usize = 0;
  let oldest: usize = 0;
  for (let k: u32 = 0; k < PROBE; k++) {
    let q = slotAt(id, k);
    let held = load<u32>(q);
    if (held == 0) {
      p = q;
      break;
    }
    if (oldest == 0 || held < load<u32>(oldest)) oldest = q;
  }
  let free = p != 0;
  if (!free) p = oldest;
  store<u32>(p, id);
  store<u32>(p, f, 4);
  store<u32>(p, bits, 8);
  store<u32>(p, rootIndex, 12);
  store<u64>(p, keyHi, 16);
  store<u64>(p, keyLo, 24);
  return free;
}

/** Loads and frees stream `id`'s state into flags/pending/root/hi/lo; false when it has none. */
export function take(id: u32): bool {
  if (id == 0) return false;
  for (let k: u32 = 0; k < PROBE; k++) {
    let p = slotAt(id, k);
    if (load<u32>(p) != id) continue;
    store<u32>(p, 0);
    flags = load<u32>(p, 4);
    pending = load<u32>(p, 8);
    root = load<u32>(p, 12);
    hi = load<u64>(p, 16);
    lo = load<u64>(p, 24);
    return true;
  }
  return false;
}

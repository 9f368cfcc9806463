// What a stream carries from its request phase to its end (proxy_on_log), kept per VM (Envoy worker) in a
// fixed table in linear memory instead of one SDK context object per stream.
//
// The module exports no proxy_on_context_create and no proxy_on_delete for streams (index.ts): each costs
// Envoy a call into V8 on every request, and cpp-host then leaves the in-VM state to the module. Envoy
// calls proxy_on_log once when a stream ends (after the response, a local reply or a reset; its access-log
// phase, before the filter is destroyed), and the response headers and trailers are readable there, so
// proxy_on_log is both the response phase and the end of the stream.
//
// Context ids come from one counter per VM, so slot = id mod SLOTS, and the slot keeps the id: a stream
// finds its slot only if no stream SLOTS ids younger took it while it was open. A stream that ends frees
// its slot. A slot taken over from a stream that is still open (more than SLOTS streams started on this
// worker during its life) loses that stream's response-phase accounting, and is counted (index.ts).

/** Slots in the table (a power of two). */
export const SLOTS: u32 = 8192;
const SLOT_BYTES: usize = 32;
const TABLE: usize = memory.data(<i32>(SLOTS * <u32>SLOT_BYTES), 8);

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
function slotOf(id: u32): usize {
  return TABLE + <usize>(id & (SLOTS - 1)) * SLOT_BYTES;
}

/** Saves stream `id`'s state; returns false when it took over the slot of a stream still open. */
export function save(id: u32, f: u32, rootIndex: u32, bits: u32, keyHi: u64, keyLo: u64): bool {
  let p = slotOf(id);
  let taken = load<u32>(p) != 0;
  store<u32>(p, id);
  store<u32>(p, f, 4);
  store<u32>(p, bits, 8);
  store<u32>(p, rootIndex, 12);
  store<u64>(p, keyHi, 16);
  store<u64>(p, keyLo, 24);
  return !taken;
}

/** Loads and frees stream `id`'s state into flags/pending/root/hi/lo; false when it has none. */
export function take(id: u32): bool {
  let p = slotOf(id);
  if (id == 0 || load<u32>(p) != id) return false;
  store<u32>(p, 0);
  flags = load<u32>(p, 4);
  pending = load<u32>(p, 8);
  root = load<u32>(p, 12);
  hi = load<u64>(p, 16);
  lo = load<u64>(p, 24);
  return true;
}

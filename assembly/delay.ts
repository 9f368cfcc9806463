// The requests held back by delay rules (custom-rules.ts HOLD), per VM (Envoy worker).
//
// A held stream returned StopAllIterationAndBuffer from onRequestHeaders (Envoy buffers its body); the root
// context's tick releases each one at its time: proxy_set_effective_context(stream) then
// proxy_continue_stream(request), which Envoy turns into continueDecoding() on that stream once the tick
// callback returns. The tick runs every TICK_MS only while something is held, and at the root context's
// idle period otherwise (index.ts). A stream that ends while held (the client went away, a reset) is
// removed when Envoy ends the stream (proxy_on_log, index.ts), so nothing is kept for it. The queue is a
// fixed array: when it is full a request that should wait is let through instead (fail open, counted).

import * as imports from "@solo-io/proxy-runtime/assembly/imports";

/** Most requests one worker holds at once. */
export const MAX_HELD: i32 = 4096;
/** Tick period while requests are held, in ms (Envoy's timers have millisecond resolution). */
export const TICK_MS: u32 = 5;

const ids = new StaticArray<u32>(MAX_HELD);
const untils = new StaticArray<u64>(MAX_HELD);
const sinces = new StaticArray<u64>(MAX_HELD);
const rules = new StaticArray<i32>(MAX_HELD);

/** Requests held now. */
export let held: i32 = 0;
/** Whether this worker asked for the TICK_MS tick (until the tick finds nothing held: slowed()). */
export let fast: bool = false;

/** Notes that the tick went back to the root context's idle period. */
export function slowed(): void {
  fast = false;
}

/** Holds stream `id` until `until` (ms); false when the queue is full. */
export function hold(id: u32, until: u64, now: u64, rule: i32): bool {
  if (held >= MAX_HELD) return false;
  unchecked(ids[held] = id);
  unchecked(untils[held] = until);
  unchecked(sinces[held] = now);
  unchecked(rules[held] = rule);
  held++;
  // The tick goes to the root context of the stream that sets it (the effective context's root).
  if (!fast) {
    fast = true;
    imports.proxy_set_tick_period_milliseconds(TICK_MS);
  }
  return true;
}

// Removes entry k (order does not matter: the tick scans every entry).
function removeAt(k: i32): void {
  held--;
  unchecked(ids[k] = ids[held]);
  unchecked(untils[k] = untils[held]);
  unchecked(sinces[k] = sinces[held]);
  unchecked(rules[k] = rules[held]);
}

/** Forgets stream `id` (it ended while held); false if it was not held. */
export function remove(id: u32): bool {
  for (let k = 0; k < held; k++) {
    if (unchecked(ids[k]) == id) {
      removeAt(k);
      return true;
    }
  }
  return false;
}

/** The stream of the entry popDue returned last. */
export let poppedId: u32 = 0;
/** When that stream was held (ms). */
export let poppedSince: u64 = 0;
/** The delay rule that held it. */
export let poppedRule: i32 = -1;

/** Removes one entry due at `now` into popped*, earliest first; false when none is due. */
export function popDue(now: u64): bool {
  let best = -1;
  for (let k = 0; k < held; k++) {
    let u = unchecked(untils[k]);
    if (u <= now && (best < 0 || u < unchecked(untils[best]))) best = k;
  }
  if (best < 0) return false;
  poppedId = unchecked(ids[best]);
  poppedSince = unchecked(sinces[best]);
  poppedRule = unchecked(rules[best]);
  removeAt(best);
  return true;
}

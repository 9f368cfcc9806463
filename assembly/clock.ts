// The filter's clock: token refills, ban ends and record ages are measured on it, so a step of the
// wall clock (NTP, an operator) neither freezes refills nor ends bans early.
//
// proxy-wasm-cpp-host (which Envoy embeds) implements WASI clock_time_get: clock id 0 is the wall clock
// (the same as proxy_get_current_time_nanoseconds) and id 1 is the monotonic clock, Envoy's
// per-process steady clock, which every worker of one Envoy shares. The ABI itself offers only the wall
// clock. Records in shared data outlive a module reload within the process, so the clock is
// "monotonic time + an offset" where the offset (wall minus monotonic, taken once) is kept in shared
// data and read by every VM: all workers agree, and values look like wall-clock milliseconds, so records
// written by an earlier build that used the wall clock stay meaningful.
// A host without the WASI clock (it returns an error) gets the wall clock, never allowed to go back.

import { get_shared_data, set_shared_data, WasmResultValues } from "@solo-io/proxy-runtime/assembly/runtime";
import { nowMs } from "./host";

// @ts-ignore: decorator
@external("wasi_snapshot_preview1", "clock_time_get")
declare function clock_time_get(id: u32, precision: u64, out: usize): u16;

/** The WASI clock id of the monotonic clock. */
const MONOTONIC: u32 = 1;
const OUT = memory.data(8);
/** Shared-data key holding the clock offset (u64 ms, wall minus monotonic), one per Envoy process. */
export const CLOCK_KEY: string = "traffic-guard/clock";
const KEY = String.UTF8.encode(CLOCK_KEY);

let offset: u64 = 0;
let haveOffset: bool = false;
let noMonotonic: bool = false;
let lastWall: u64 = 0;

/** The host's monotonic clock in milliseconds, or -1 when the host does not offer it. */
export function monotonicMs(): i64 {
  store<u64>(OUT, 0);
  if (clock_time_get(MONOTONIC, 1000, OUT) != 0) return -1;
  return <i64>(load<u64>(OUT) / 1_000_000);
}

function establishOffset(mono: u64): void {
  let got = get_shared_data(KEY);
  if (got.result == WasmResultValues.Ok && got.value.byteLength == 8) {
    offset = load<u64>(changetype<usize>(got.value));
  } else {
    let wall = nowMs();
    offset = wall > mono ? wall - mono : 0;
    let buf = new ArrayBuffer(8);
    store<u64>(changetype<usize>(buf), offset);
    // Two workers starting at once may both write; their offsets differ by the time between their
    // reads, milliseconds at most.
    set_shared_data(KEY, buf, 0);
  }
  haveOffset = true;
}

/** Current time on the filter's clock, in milliseconds (wall-clock-like, but steady). */
export function clockMs(): u64 {
  if (!noMonotonic) {
    let mono = monotonicMs();
    if (mono >= 0) {
      if (!haveOffset) establishOffset(<u64>mono);
      return <u64>mono + offset;
    }
    noMonotonic = true;
  }
  let wall = nowMs();
  if (wall > lastWall) lastWall = wall;
  return lastWall;
}

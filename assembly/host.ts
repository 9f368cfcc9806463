// Thin, allocation-light host calls for the request path. Values the host returns are copied by the host
// into a buffer it obtains from our exported malloc (which pins it); takeBuffer hands that buffer to the
// GC. Nothing here throws: a missing header or property is an empty buffer.

import * as imports from "@solo-io/proxy-runtime/assembly/imports";
import { WasmResultValues } from "@solo-io/proxy-runtime/assembly/runtime";

// Out-parameters written by the host: a pointer and a size (u32 each on wasm32).
const OUT = memory.data(8);
const TIME = memory.data(8);
const EMPTY = new ArrayBuffer(0);

/** HeaderMapType values of the ABI. */
export const REQUEST_HEADERS: i32 = 0;
/** The response header map. */
export const RESPONSE_HEADERS: i32 = 2;

function takeBuffer(): ArrayBuffer {
  let size = load<u32>(OUT, 4);
  if (size == 0) return EMPTY;
  let ptr = <usize>load<u32>(OUT);
  // The host allocated exactly `size` bytes through malloc, which pinned the object.
  __unpin(ptr);
  return changetype<ArrayBuffer>(ptr);
}

/** Returns a header's value bytes, or an empty buffer when the header is absent. */
export function header(map: i32, name: ArrayBuffer): ArrayBuffer {
  store<u64>(OUT, 0);
  let r = imports.proxy_get_header_map_value(map, changetype<usize>(name), name.byteLength, OUT, OUT + 4);
  return r == WasmResultValues.Ok ? takeBuffer() : EMPTY;
}

/** Returns a property's value bytes (path segments separated by NUL), or an empty buffer. */
export function property(path: ArrayBuffer): ArrayBuffer {
  store<u64>(OUT, 0);
  let r = imports.proxy_get_property(changetype<usize>(path), path.byteLength, OUT, OUT + 4);
  return r == WasmResultValues.Ok ? takeBuffer() : EMPTY;
}

/** Wall-clock time in milliseconds, as the host reports it (shared by all workers). */
export function nowMs(): u64 {
  store<u64>(TIME, 0);
  imports.proxy_get_current_time_nanoseconds(TIME);
  return load<u64>(TIME) / 1_000_000;
}

/** Encodes a string once, for use as a header name or property path. */
export function bytes(s: string): ArrayBuffer {
  return String.UTF8.encode(s);
}

/** Whether `buf` starts with the bytes of `prefix`. */
export function startsWith(buf: ArrayBuffer, prefix: ArrayBuffer): bool {
  let n = prefix.byteLength;
  if (buf.byteLength < n) return false;
  return memory.compare(changetype<usize>(buf), changetype<usize>(prefix), n) == 0;
}

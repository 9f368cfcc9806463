// The proxy-wasm host semantics (ABI 0.2.x) every host in this repository shares: `traffic-guard validate`'s
// configure-only host (tools/lib/proxy-wasm-host.ts), the TypeScript emulator the filter tests run on
// (tests/emulator/emulator.ts) and the as-pect mock of the unit specs (tests/unit/mock-host.cjs). Each of them
// decides which imports it offers and how it reads its arguments; what a value, a shared-data entry or a metric
// means, and which result code answers what, is written once, here.
//
// Host behaviour, as Envoy's proxy-wasm-cpp-host implements it:
// - a value handed to the module is copied into memory from the module's exported `malloc`, and its pointer
//   and size are written as u32 little-endian into the two out-parameters; an empty value is not allocated
//   (pointer 0, size 0: cpp-host's copyToPointerSize); a malloc that returns 0 is InvalidMemoryAccess;
// - shared data is one store per process and vm_id under one mutex, so each get and each set is atomic: a get
//   of an absent key is NotFound; a set on an absent key succeeds whatever the CAS; CAS 0 is unconditional; a
//   non-zero CAS must equal the stored one, else CasMismatch; every successful set gets a fresh non-zero CAS;
//   values are bytes, an empty value included; keys are never deleted;
// - stats are keyed by name (every VM that defines a name gets the same stat); a counter only increases
//   (an increment <= 0 is BadArgument), a gauge moves both ways, a histogram is only recorded into; a metric
//   id is `type | n << 2` with n counting from 1 per type;
// - property paths are NUL-separated segments.
//
// This module has no imports, so the CommonJS as-pect mock can load it through tsx's require API.

/** proxy-wasm WasmResult codes (ABI 0.2.x). */
export const WasmResult = {
  Ok: 0,
  NotFound: 1,
  BadArgument: 2,
  SerializationFailure: 3,
  ParseFailure: 4,
  BadExpression: 5,
  InvalidMemoryAccess: 6,
  Empty: 7,
  CasMismatch: 8,
  ResultMismatch: 9,
  InternalFailure: 10,
  BrokenConnection: 11,
  Unimplemented: 12,
} as const;

/** proxy-wasm log level names, index = level number (trace 0 … critical 5). */
export const LOG_LEVEL_NAMES = ["trace", "debug", "info", "warn", "error", "critical"] as const;

/** proxy-wasm buffer types (proxy_get_buffer_bytes); only the two a root context reads are named. */
export const BufferType = { VmConfiguration: 6, PluginConfiguration: 7 } as const;

/** proxy-wasm header map types. */
export const HeaderMapType = { RequestHeaders: 0, RequestTrailers: 1, ResponseHeaders: 2, ResponseTrailers: 3 } as const;

/** FilterHeadersStatus values a filter may return from proxy_on_{request,response}_headers. */
export const FilterHeadersStatus = {
  Continue: 0,
  StopIteration: 1,
  ContinueAndEndStream: 2,
  StopAllIterationAndBuffer: 3,
  StopAllIterationAndWatermark: 4,
} as const;

/** proxy-wasm metric types (proxy_define_metric). */
export const MetricType = { Counter: 0, Gauge: 1, Histogram: 2 } as const;

/** The name of a metric type. */
export type MetricTypeName = "counter" | "gauge" | "histogram";

/** Metric type names, index = the ABI number (see MetricType). */
export const METRIC_TYPE_NAMES: readonly MetricTypeName[] = ["counter", "gauge", "histogram"];

/**
 * The exports a filter needs to run in Envoy's proxy-wasm host (ABI 0.2.x): cpp-host fails a module
 * without malloc, and a filter without proxy_on_vm_start and proxy_on_configure never sees its
 * configuration. proxy_on_context_create is optional: without it cpp-host creates no in-VM context and
 * leaves that state to the module (src/context.cc).
 */
export const REQUIRED_PROXY_WASM_EXPORTS = [
  "memory",
  "malloc",
  "proxy_on_vm_start",
  "proxy_on_configure",
] as const;

/**
 * The export an HTTP filter needs for Envoy to run a request through it. Every other stream callback
 * (context creation, response headers, bodies, trailers, proxy_on_done, proxy_on_log, proxy_on_delete) is optional:
 * cpp-host calls only the callbacks a module exports, and for a missing one acts as if it had returned
 * its default (see STREAM_CALLBACK_DEFAULTS).
 */
export const HTTP_FILTER_EXPORTS = ["proxy_on_request_headers"] as const;

/**
 * What proxy-wasm-cpp-host (src/context.cc) does in place of a stream callback the module does not
 * export: headers, bodies and trailers continue (0), proxy_on_done reports the stream done (1), and
 * proxy_on_log / proxy_on_delete are skipped (0, unused).
 */
export const STREAM_CALLBACK_DEFAULTS: Readonly<Record<string, number>> = {
  proxy_on_request_headers: 0,
  proxy_on_request_body: 0,
  proxy_on_request_trailers: 0,
  proxy_on_response_headers: 0,
  proxy_on_response_body: 0,
  proxy_on_response_trailers: 0,
  proxy_on_done: 1,
  proxy_on_log: 0,
  proxy_on_delete: 0,
};

/** The ABI marker export, e.g. `proxy_abi_version_0_2_0`. */
export const ABI_VERSION_EXPORT = /^proxy_abi_version_\d+_\d+_\d+$/;

/** The required exports (of `required`) missing from a module's export list, `memory` a memory and the rest functions. */
export function missingExports(
  exports: readonly { name: string; kind: string }[],
  required: readonly string[] = REQUIRED_PROXY_WASM_EXPORTS,
): string[] {
  const kinds = new Map(exports.map((e) => [e.name, e.kind]));
  return required.filter((name) => kinds.get(name) !== (name === "memory" ? "memory" : "function"));
}

/** Turns a dotted property path ("source.address") into the NUL-separated form the ABI uses. */
export function propertyPath(dotted: string): string {
  return dotted.split(".").join("\0");
}

// ---------------------------------------------------------------------------------------------
// Module memory

/** What a host needs of an instantiated module to hand it values. */
export interface GuestMemory {
  /** The module's linear memory (read afresh on each use: malloc may grow it). */
  memory(): WebAssembly.Memory;
  /** The module's exported malloc. */
  malloc(size: number): number;
}

/** Why a copy into module memory failed; the result is InvalidMemoryAccess. */
export class GuestMemoryError extends Error {
  override name = "GuestMemoryError";
}

/** A view of module memory after checking that `size` bytes at `ptr` fit; throws GuestMemoryError otherwise. */
function viewFor(guest: GuestMemory, ptr: number, size: number, what: string): DataView {
  const view = new DataView(guest.memory().buffer);
  if ((ptr >>> 0) + size > view.byteLength) throw new GuestMemoryError(`${what} out of bounds`);
  return view;
}

/** Writes a u32 little-endian at `ptr`; throws GuestMemoryError when it does not fit in memory. */
export function writeU32(guest: GuestMemory, ptr: number, value: number, what = "out-param pointer"): void {
  viewFor(guest, ptr, 4, what).setUint32(ptr >>> 0, value >>> 0, true);
}

/** Writes a u64 little-endian at `ptr`; throws GuestMemoryError when it does not fit in memory. */
export function writeU64(guest: GuestMemory, ptr: number, value: bigint, what = "out-param pointer"): void {
  viewFor(guest, ptr, 8, what).setBigUint64(ptr >>> 0, BigInt.asUintN(64, value), true);
}

/**
 * Runs `write` (which throws GuestMemoryError when a pointer is bad) and returns Ok, or InvalidMemoryAccess after
 * passing the reason to `onProblem`.
 */
export function guarded(onProblem: (what: string) => void, write: () => void): number {
  try {
    write();
    return WasmResult.Ok;
  } catch (err) {
    if (!(err instanceof GuestMemoryError)) throw err;
    onProblem(err.message);
    return WasmResult.InvalidMemoryAccess;
  }
}

/**
 * Hands `value` to the module the way cpp-host's copyToPointerSize does: malloc(size) and copy for a non-empty
 * value, nothing allocated for an empty one (pointer 0), then pointer and size into the out-parameters.
 * Returns Ok, or InvalidMemoryAccess after passing the reason to `onProblem`.
 */
export function copyOut(
  guest: GuestMemory,
  value: Uint8Array,
  ptrPtr: number,
  sizePtr: number,
  onProblem: (what: string) => void = () => {},
): number {
  return guarded(onProblem, () => {
    let ptr = 0;
    if (value.length > 0) {
      ptr = Number(guest.malloc(value.length)) >>> 0;
      if (ptr === 0) throw new GuestMemoryError(`malloc(${value.length}) returned 0`);
      const memory = new Uint8Array(guest.memory().buffer); // memory may have grown inside malloc
      if (ptr + value.length > memory.length) throw new GuestMemoryError(`malloc returned ${ptr} beyond memory`);
      memory.set(value, ptr);
    }
    writeU32(guest, ptrPtr, ptr);
    writeU32(guest, sizePtr, value.length);
  });
}

/**
 * proxy_get_buffer_bytes over `buffer`: a start past the end is BadArgument; the range is clamped to the buffer;
 * an empty range is Ok without touching the out-parameters (as cpp-host does); otherwise the bytes are copied out.
 */
export function copyOutRange(
  guest: GuestMemory,
  buffer: Uint8Array,
  start: number,
  length: number,
  ptrPtr: number,
  sizePtr: number,
  onProblem?: (what: string) => void,
): number {
  start >>>= 0;
  length >>>= 0;
  if (start > buffer.length) return WasmResult.BadArgument;
  const end = Math.min(buffer.length, start + length);
  if (end <= start) return WasmResult.Ok;
  return copyOut(guest, buffer.subarray(start, end), ptrPtr, sizePtr, onProblem);
}

// ---------------------------------------------------------------------------------------------
// Shared data

/** One stored shared-data entry. */
export interface SharedEntry {
  value: Uint8Array;
  cas: number;
}

/** The shared-data store of one process and vm_id: get/set with Envoy's CAS rules; keys are never deleted. */
export class SharedData {
  private readonly data = new Map<string, SharedEntry>();
  private nextCas = 1;

  /** The stored entry (not a copy), or undefined when the key was never written. */
  get(key: string): SharedEntry | undefined {
    return this.data.get(key);
  }

  /** Envoy's set: an absent key is always written; CAS 0 is unconditional; else the CAS must match. */
  set(key: string, value: Uint8Array, cas: number): number {
    const cur = this.data.get(key);
    cas >>>= 0;
    if (cur !== undefined && cas !== 0 && cas !== cur.cas) return WasmResult.CasMismatch;
    this.data.set(key, { value: Uint8Array.from(value), cas: this.allocCas() });
    return WasmResult.Ok;
  }

  /** Number of keys ever written. */
  get size(): number {
    return this.data.size;
  }

  /** Every key and entry, in first-write order. */
  entries(): IterableIterator<[string, SharedEntry]> {
    return this.data.entries();
  }

  private allocCas(): number {
    const cas = this.nextCas;
    this.nextCas = (this.nextCas + 1) >>> 0;
    if (this.nextCas === 0) this.nextCas = 1;
    return cas;
  }
}

/**
 * proxy_get_shared_data's answer for `entry` (undefined: the key is absent): NotFound, or the value copied out
 * (an empty one as pointer 0, size 0) and its CAS written to `casPtr`.
 */
export function copyOutSharedEntry(
  guest: GuestMemory,
  entry: SharedEntry | undefined,
  ptrPtr: number,
  sizePtr: number,
  casPtr: number,
  onProblem: (what: string) => void = () => {},
): number {
  if (!entry) return WasmResult.NotFound;
  const result = copyOut(guest, entry.value, ptrPtr, sizePtr, onProblem);
  if (result !== WasmResult.Ok) return result;
  return guarded(onProblem, () => writeU32(guest, casPtr, entry.cas, "cas pointer"));
}

// ---------------------------------------------------------------------------------------------
// Metrics

/** One stat, shared by every VM that defines the same name. */
export interface Stat {
  name: string;
  type: MetricTypeName;
  value: number;
  /** Values recorded into a histogram. */
  samples: number[];
}

/** The stats scope of the plugin: stats keyed by name, with the ABI misuse it saw. */
export class StatsScope {
  private readonly stats = new Map<string, Stat>();
  /** ABI misuse seen on metrics (counter increment <= 0, gauge below zero, type mismatch, unknown id). */
  readonly violations: string[] = [];

  /** Returns the stat for `name`, creating it on first definition; undefined for an unknown type. */
  define(type: number, name: string): Stat | undefined {
    const t = METRIC_TYPE_NAMES[type];
    if (!t) return undefined;
    let s = this.stats.get(name);
    if (!s) {
      s = { name, type: t, value: 0, samples: [] };
      this.stats.set(name, s);
    } else if (s.type !== t) {
      this.violations.push(`metric ${name} defined as ${t} but already exists as ${s.type}`);
    }
    return s;
  }

  /** The stat called `name`, or undefined. */
  stat(name: string): Stat | undefined {
    return this.stats.get(name);
  }

  /** Every stat, in definition order. */
  all(): IterableIterator<Stat> {
    return this.stats.values();
  }
}

/** One VM's metric ids, allocated like Envoy: `type | n << 2`, n counting from 1 per type. */
export class MetricIds {
  private readonly byId = new Map<number, Stat>();
  private readonly next = [4, 5, 6];

  /** A fresh id for `stat`. */
  assign(stat: Stat): number {
    const type = METRIC_TYPE_NAMES.indexOf(stat.type);
    const id = this.next[type];
    this.next[type] += 4;
    this.byId.set(id, stat);
    return id;
  }

  /** The stat behind `id`, or undefined. */
  get(id: number): Stat | undefined {
    return this.byId.get(id >>> 0);
  }
}

/** proxy_define_metric: a fresh id for the stat called `name` (an unknown type is BadArgument, id 0). */
export function defineMetric(scope: StatsScope, ids: MetricIds, type: number, name: string): { result: number; id: number } {
  const stat = scope.define(type, name);
  if (!stat) return { result: WasmResult.BadArgument, id: 0 };
  return { result: WasmResult.Ok, id: ids.assign(stat) };
}

/** proxy_increment_metric: counters only increase (else BadArgument), gauges move both ways, histograms refuse. */
export function incrementMetric(scope: StatsScope, ids: MetricIds, id: number, offset: number | bigint): number {
  const s = ids.get(id);
  const off = Number(offset);
  if (!s) {
    scope.violations.push(`increment of undefined metric id ${id}`);
    return WasmResult.NotFound;
  }
  if (s.type === "counter") {
    if (off <= 0) {
      scope.violations.push(`counter ${s.name} incremented by ${off} (Envoy: BadArgument)`);
      return WasmResult.BadArgument;
    }
    s.value += off;
    return WasmResult.Ok;
  }
  if (s.type === "gauge") {
    s.value += off;
    if (s.value < 0) scope.violations.push(`gauge ${s.name} went below zero (${s.value}); Envoy gauges are unsigned`);
    return WasmResult.Ok;
  }
  scope.violations.push(`increment of histogram ${s.name}`);
  return WasmResult.BadArgument;
}

/** proxy_record_metric: adds to a counter, sets a gauge, records a histogram sample (the value is a u64). */
export function recordMetric(scope: StatsScope, ids: MetricIds, id: number, value: number | bigint): number {
  const s = ids.get(id);
  const v = Number(BigInt.asUintN(64, BigInt(value)));
  if (!s) {
    scope.violations.push(`record of undefined metric id ${id}`);
    return WasmResult.NotFound;
  }
  if (s.type === "counter") s.value += v;
  else if (s.type === "gauge") s.value = v;
  else s.samples.push(v);
  return WasmResult.Ok;
}

/** proxy_get_metric: the value of a counter or gauge (a histogram has none: BadArgument). */
export function getMetric(ids: MetricIds, id: number): { result: number; value: bigint } {
  const s = ids.get(id);
  if (!s) return { result: WasmResult.NotFound, value: 0n };
  if (s.type === "histogram") return { result: WasmResult.BadArgument, value: 0n };
  return { result: WasmResult.Ok, value: BigInt(Math.max(0, s.value)) };
}

// ---------------------------------------------------------------------------------------------
// WASI clock

/** WASI errno values that `clock_time_get` returns. */
export const WasiErrno = { Success: 0, Fault: 21, NotSupported: 58 } as const;

/** WASI clock ids: 0 realtime (wall), 1 monotonic. */
export const WasiClock = { Realtime: 0, Monotonic: 1 } as const;

/**
 * WASI `clock_time_get` as proxy-wasm-cpp-host serves it (src/exports.cc): id 0 is the wall clock, id 1 Envoy's
 * per-process steady clock, anything else ENOTSUP; the time is written as a u64 of nanoseconds at `ptr`.
 * `monotonicNs` undefined models a host without a monotonic clock (id 1 is then ENOTSUP too).
 */
export function wasiClockTimeGet(guest: GuestMemory, id: number, ptr: number, wallNs: bigint, monotonicNs: bigint | undefined): number {
  let value: bigint;
  if (id === WasiClock.Realtime) value = wallNs;
  else if (id === WasiClock.Monotonic && monotonicNs !== undefined) value = monotonicNs;
  else return WasiErrno.NotSupported;
  try {
    writeU64(guest, ptr, value, "clock_time_get time pointer");
    return WasiErrno.Success;
  } catch (err) {
    if (err instanceof GuestMemoryError) return WasiErrno.Fault;
    throw err;
  }
}

/**
 * WASI `random_get` as proxy-wasm-cpp-host serves it (src/exports.cc, BoringSSL RAND_bytes): fills `len` bytes at
 * `ptr` from `fill`; EFAULT when they do not fit in module memory.
 */
export function wasiRandomGet(guest: GuestMemory, ptr: number, len: number, fill: (bytes: Uint8Array) => void): number {
  const memory = guest.memory().buffer;
  ptr >>>= 0;
  len >>>= 0;
  if (ptr + len > memory.byteLength) return WasiErrno.Fault;
  fill(new Uint8Array(memory, ptr, len));
  return WasiErrno.Success;
}

/** Serializes pairs the proxy-wasm way: u32 count, (u32 keylen, u32 valuelen)*, key\0value\0... */
export function serializePairs(pairs: readonly (readonly [string | Uint8Array, string | Uint8Array])[]): Uint8Array {
  const bytes = (v: string | Uint8Array) => (typeof v === "string" ? new TextEncoder().encode(v) : v);
  const enc = pairs.map(([k, v]) => [bytes(k), bytes(v)] as const);
  let size = 4 + 8 * enc.length;
  for (const [k, v] of enc) size += k.length + 1 + v.length + 1;
  const out = new Uint8Array(size);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, enc.length, true);
  let p = 4;
  for (const [k, v] of enc) {
    dv.setUint32(p, k.length, true);
    dv.setUint32(p + 4, v.length, true);
    p += 8;
  }
  for (const [k, v] of enc) {
    out.set(k, p);
    p += k.length + 1;
    out.set(v, p);
    p += v.length + 1;
  }
  return out;
}

/** Parses serialized pairs; throws on a malformed buffer (the host answers BadArgument). */
export function parsePairs(buf: Uint8Array): [string, Uint8Array][] {
  if (buf.length === 0) return [];
  if (buf.length < 4) throw new Error("pairs buffer shorter than its count");
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const n = dv.getUint32(0, true);
  if (4 + 8 * n > buf.length) throw new Error(`pairs buffer too short for ${n} pairs`);
  const sizes: [number, number][] = [];
  for (let i = 0; i < n; i++) sizes.push([dv.getUint32(4 + 8 * i, true), dv.getUint32(8 + 8 * i, true)]);
  let p = 4 + 8 * n;
  const out: [string, Uint8Array][] = [];
  for (const [kl, vl] of sizes) {
    if (p + kl + 1 + vl + 1 > buf.length) throw new Error("pairs buffer truncated");
    const k = new TextDecoder().decode(buf.subarray(p, p + kl));
    p += kl + 1;
    const v = buf.slice(p, p + vl);
    p += vl + 1;
    out.push([k, v]);
  }
  return out;
}

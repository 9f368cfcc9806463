// Thin, allocation-free host calls for the request path, and the allocator the host copies values into.
//
// Every value the host returns costs a call into the module's exported malloc, then a copy. Header and
// property values are client-controlled (a header value can be as large as Envoy's header limit, 60 KiB
// by default), so they never reach the garbage-collected heap: readHeader/readProperty arm a scratch
// region that the next malloc returns instead of a new object. The scratch is one unmanaged block that
// grows to the largest value ever read (bounded by Envoy's max_request_headers_kb, not by the number of
// requests) and is reused by every read, so a value is valid only until the next read. Nothing here
// throws: a missing header or property has length 0.
//
// Every other value the host copies in (shared data, the plugin configuration) is a managed, pinned
// ArrayBuffer as the SDK expects; its bytes are counted in hostBytes, which drives collection (index.ts).

import * as imports from "@solo-io/proxy-runtime/assembly/imports";
import { WasmResultValues } from "@solo-io/proxy-runtime/assembly/runtime";
import { sameBytes } from "./bytes";

// Out-parameters written by the host: a pointer and a size (u32 each on wasm32).
const OUT = memory.data(8);
const TIME = memory.data(8);
const CAS = memory.data(4);
const EMPTY = new ArrayBuffer(0);

// An unmanaged block the host copies values into, reused by every read of its kind: it grows to the largest
// value ever read. heap.* is the runtime's raw allocator: the collector never sees or frees it.
class Region {
  ptr: usize = 0;
  cap: usize = 0;

  /** The block, grown first when it holds fewer than n bytes. */
  fit(n: usize): usize {
    if (n > this.cap) {
      let cap: usize = n < 1024 ? <usize>1024 : (n + <usize>4095) & ~(<usize>4095);
      this.ptr = this.ptr == 0 ? heap.alloc(cap) : heap.realloc(this.ptr, cap);
      this.cap = cap;
    }
    return this.ptr;
  }
}

// Single values (headers, properties): valid until the next read.
const SCRATCH = new Region();
// readPairs' region, so that a request's header map stays readable while single values pass through SCRATCH.
const PAIRS = new Region();
// The region the next malloc returns (set by a read), or null.
let armed: Region | null = null;
// readShared's target: the next malloc of exactly its size returns it instead of a new buffer.
let sharedTarget: usize = 0;
let sharedTargetSize: usize = 0;

/** Bytes the host has copied into managed buffers since the counter was last reset. */
export let hostBytes: usize = 0;

/** Resets hostBytes (after a collection). */
export function resetHostBytes(): void {
  hostBytes = 0;
}

/** Capacity of the scratch region in bytes (the largest header or property value read so far). */
export function scratchCapacity(): usize {
  return SCRATCH.cap;
}

/**
 * Allocator the host calls to copy a value into the module. During readHeader/readProperty it returns
 * the reused scratch region; otherwise a pinned managed ArrayBuffer that the SDK unpins once it holds it.
 */
export function malloc(size: i32): usize {
  let n = <usize>(size < 0 ? 0 : size);
  let region = armed;
  if (region !== null) {
    armed = null;
    return region.fit(n);
  }
  if (sharedTarget != 0) {
    let t = sharedTarget;
    sharedTarget = 0;
    if (n == sharedTargetSize) return t;
  }
  hostBytes += n;
  return __pin(__new(n, idof<ArrayBuffer>()));
}

/** Pointer to the bytes of the value read last by readHeader/readProperty (valid until the next read). */
export let valuePtr: usize = 0;

function finishRead(r: WasmResultValues): i32 {
  armed = null; // the host allocates nothing for an absent or empty value
  let size = load<u32>(OUT, 4);
  if (r != WasmResultValues.Ok || size == 0) {
    valuePtr = 0;
    return 0;
  }
  valuePtr = <usize>load<u32>(OUT);
  return <i32>size;
}

/** HeaderMapType values of the ABI. */
export const REQUEST_HEADERS: i32 = 0;
/** The response header map. */
export const RESPONSE_HEADERS: i32 = 2;
/** The response trailer map. */
export const RESPONSE_TRAILERS: i32 = 3;

/** Reads a header's value into the scratch region; returns its length (0 when absent) and sets valuePtr. */
export function readHeader(map: i32, name: ArrayBuffer): i32 {
  return readHeaderAt(map, changetype<usize>(name), <usize>name.byteLength);
}

/** readHeader with the name's `len` bytes at `name`. */
export function readHeaderAt(map: i32, name: usize, len: usize): i32 {
  store<u64>(OUT, 0);
  armed = SCRATCH;
  return finishRead(imports.proxy_get_header_map_value(map, name, len, OUT, OUT + 4));
}

/**
 * Reads a whole header map (proxy-wasm pairs: a u32 count, count (name length, value length) u32 pairs,
 * then each name and value followed by a NUL) in one host call into its own region, which the next
 * readPairs reuses; returns its length (0 when unavailable) and sets valuePtr. findPair looks headers up in it.
 */
export function readPairs(map: i32): i32 {
  store<u64>(OUT, 0);
  armed = PAIRS;
  return finishRead(imports.proxy_get_header_map_pairs(map, OUT, OUT + 4));
}

// The current request's headers (beginRequest, requestHeader, pickRequestHeaders), and its header map
// once read whole.
let wholeMap = false;
let mapRead = false;
let mapPtr: usize = 0;
let mapLen: i32 = 0;

/**
 * Starts a request's header reads: with `whole` (the configuration may read two or more request headers),
 * the first read takes the whole map in one host call and every later one looks up in it; else each read
 * is one host call. Every value the host returns costs Envoy a call into the module's malloc, so one map
 * read is cheaper than two or more present headers read one by one.
 */
export function beginRequest(whole: bool): void {
  wholeMap = whole;
  mapRead = false;
}

// Reads the current request's header map whole, once per request.
function readRequestMap(): void {
  if (mapRead) return;
  mapRead = true;
  mapLen = readPairs(REQUEST_HEADERS);
  mapPtr = valuePtr;
}

/**
 * Reads request header `name` (lowercase) of the current request (beginRequest); returns its length (0
 * when absent) and sets valuePtr, valid until the next single read, or for the whole request when the map
 * was read whole.
 */
export function requestHeader(name: ArrayBuffer): i32 {
  if (!wholeMap) return readHeader(REQUEST_HEADERS, name);
  readRequestMap();
  return findPair(mapPtr, mapLen, name);
}

/** The names a HeaderNames finds in its one pass over a map (pickPairs); the others are looked up by a walk. */
export const PICK_MAX = 32;

/**
 * A fixed list of request header names (lowercase), compiled once so that one pass over a request's header
 * map finds every one of them (pickPairs): per name length (mod 32), the bits of the names of that length,
 * so that a pair whose name has no such length costs one load, and one that has compares with those names only.
 */
export class HeaderNames {
  /** The names. */
  names: ArrayBuffer[];
  /** By name length mod 32: the bits of the first PICK_MAX names of that length. */
  byLength: StaticArray<u32> = new StaticArray<u32>(32);
  /** The bits of the first PICK_MAX names. */
  all: u32 = 0;

  constructor(names: ArrayBuffer[]) {
    this.names = names;
    for (let i = 0, n = min(names.length, <i32>PICK_MAX); i < n; i++) {
      this.byLength[names[i].byteLength & 31] |= (<u32>1) << <u32>i;
    }
    this.all = names.length >= <i32>PICK_MAX ? <u32>-1 : ((<u32>1) << <u32>names.length) - 1;
  }
}

// The values pickPairs found, per name: [u32 pointer][u32 length]; `picked` has the bits of the names found.
const PICKED = memory.data(<i32>PICK_MAX * 8);
let picked: u32 = 0;
// The names picked last, and whether from a map (pickPairs) or by single reads.
let pickNames: usize = 0;
let pickedFromMap = false;
let pickPtr: usize = 0;
let pickLen: i32 = 0;

/**
 * Picks the values of `names` from the current request (beginRequest) for pickedHeader: with the map read
 * whole, in one pass over it (pickPairs); else each pickedHeader is one host read. `names` is not retained
 * for the collector: its owner (a Plan) keeps it alive.
 */
export function pickRequestHeaders(names: HeaderNames): void {
  if (!wholeMap) {
    pickNames = changetype<usize>(names);
    pickedFromMap = false;
    return;
  }
  readRequestMap();
  pickPairs(mapPtr, mapLen, names);
}

// The pairs in the n-byte block at p (readPairs), or 0 when the block cannot hold its count's table of
// lengths. Malformed blocks, which Envoy never sends, read as holding nothing from there on.
// @ts-ignore: decorator
@inline
function pairCount(p: usize, n: i32): usize {
  if (n < 4) return 0;
  let count = <usize>load<u32>(p);
  return count > (<usize>n - 4) / 8 ? 0 : count;
}

// Whether a pair of an nl-byte name and a vl-byte value, each followed by a NUL, fits between data and end
// (in 64 bits, so that no length wraps around).
// @ts-ignore: decorator
@inline
function pairFits(nl: usize, vl: usize, data: usize, end: usize): bool {
  return <u64>nl + <u64>vl + 2 <= <u64>(end - data);
}

/**
 * Finds the first value of each of `names` in the n pairs bytes at p (readPairs) in one pass, for
 * pickedHeader. Malformed pairs, which Envoy never sends, end the pass there, so that every name answers
 * as findPair would.
 */
export function pickPairs(p: usize, n: i32, names: HeaderNames): void {
  pickNames = changetype<usize>(names);
  pickedFromMap = true;
  pickPtr = p;
  pickLen = n;
  picked = 0;
  let count = pairCount(p, n);
  let end = p + <usize>n;
  let all = names.all;
  let byLength = changetype<usize>(names.byLength);
  let list = names.names;
  // Kept in a local (a register) through the pass, published to `picked` at its end.
  let found: u32 = 0;
  let e = p + 4;
  let data = e + count * 8;
  let lengths = data;
  while (e < lengths) {
    let nl = <usize>load<u32>(e);
    let vl = <usize>load<u32>(e, 4);
    e += 8;
    if (!pairFits(nl, vl, data, end)) break;
    // The names of this length not found yet (a name's first value wins; a name listed twice is picked twice).
    let m = load<u32>(byLength + ((nl & 31) << 2)) & ~found;
    while (m != 0) {
      let k = <usize>ctz(m);
      let name = unchecked(list[<i32>k]);
      if (<usize>name.byteLength == nl && sameBytes(data, changetype<usize>(name), nl)) {
        let v = PICKED + (k << 3);
        store<u32>(v, <u32>(data + nl + 1));
        store<u32>(v, <u32>vl, 4);
        found |= (<u32>1) << <u32>k;
        if (found == all) break;
      }
      m &= m - 1;
    }
    if (found == all) break;
    data += nl + vl + 2;
  }
  picked = found;
}

/** The value of name `id` of the names picked last (pickRequestHeaders, pickPairs): its length (0 when absent); sets valuePtr. */
export function pickedHeader(id: i32): i32 {
  if (!pickedFromMap || id >= <i32>PICK_MAX) {
    let name = unchecked(changetype<HeaderNames>(pickNames).names[id]);
    if (!pickedFromMap) return readHeader(REQUEST_HEADERS, name);
    return findPair(pickPtr, pickLen, name);
  }
  valuePtr = 0;
  if ((picked & ((<u32>1) << <u32>id)) == 0) return 0;
  let v = PICKED + (<usize>id << 3);
  let vl = load<u32>(v, 4);
  if (vl != 0) valuePtr = <usize>load<u32>(v);
  return <i32>vl;
}

/** The bits (by id) of the names the last pickRequestHeaders knows absent without another read: those its pass over the map did not find (none when it read nothing). */
export function pickedAbsent(): u32 {
  return pickedFromMap ? ~picked & changetype<HeaderNames>(pickNames).all : 0;
}

/**
 * Looks up the first header called `name` (lowercase) in the n pairs bytes at p (readPairs); returns its
 * value's length (0 when absent) and sets valuePtr. Malformed pairs, which Envoy never sends, read as absent.
 */
export function findPair(p: usize, n: i32, name: ArrayBuffer): i32 {
  let want = <usize>name.byteLength;
  valuePtr = 0;
  let count = pairCount(p, n);
  let end = p + <usize>n;
  let e = p + 4;
  let data = e + count * 8;
  let lengths = data;
  while (e < lengths) {
    let nl = <usize>load<u32>(e);
    let vl = <usize>load<u32>(e, 4);
    e += 8;
    if (!pairFits(nl, vl, data, end)) return 0;
    if (nl == want && sameBytes(data, changetype<usize>(name), want)) {
      valuePtr = vl == 0 ? 0 : data + nl + 1;
      return <i32>vl;
    }
    data += nl + vl + 2;
  }
  return 0;
}

/** The result (WasmResultValues) of the last readShared. */
export let sharedResult: i32 = 0;
/** The CAS of the last readShared (0 unless the key was found). */
export let sharedCas: u32 = 0;

/**
 * Reads shared-data `key` on the request path without allocating: a value of exactly into.byteLength
 * bytes is copied by the host straight into `into`, which is returned; a value of any other size arrives
 * in a new managed buffer as with the SDK's get_shared_data. Returns an empty buffer when the key is
 * absent or the read failed (see sharedResult, sharedCas).
 */
export function readShared(key: ArrayBuffer, into: ArrayBuffer): ArrayBuffer {
  store<u64>(OUT, 0);
  store<u32>(CAS, 0);
  sharedTarget = changetype<usize>(into);
  sharedTargetSize = <usize>into.byteLength;
  let r = imports.proxy_get_shared_data(changetype<usize>(key), key.byteLength, OUT, OUT + 4, CAS);
  sharedTarget = 0; // nothing was allocated for an absent or empty value
  sharedResult = r;
  let p = <usize>load<u32>(OUT);
  let size = load<u32>(OUT, 4);
  if (r != WasmResultValues.Ok || size == 0 || p == 0) {
    sharedCas = 0;
    if (p != 0 && p != changetype<usize>(into)) __unpin(p);
    return EMPTY;
  }
  sharedCas = load<u32>(CAS);
  if (p == changetype<usize>(into)) return into;
  __unpin(p); // the managed buffer malloc pinned for the host; the caller now holds it
  return changetype<ArrayBuffer>(p);
}

/** Reads a property (path segments separated by NUL) into the scratch region; returns its length and sets valuePtr. */
export function readProperty(path: ArrayBuffer): i32 {
  store<u64>(OUT, 0);
  armed = SCRATCH;
  return finishRead(imports.proxy_get_property(changetype<usize>(path), path.byteLength, OUT, OUT + 4));
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

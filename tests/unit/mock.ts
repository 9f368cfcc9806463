// The AssemblyScript side of the proxy-wasm host mock (tests/unit/mock-host.cjs): imports that let a
// spec set what the host returns (headers, properties, time, shared data, injected failures) and read
// what the module did (logs, metrics, local replies, shared data). Strings returned by the mock are
// allocated and pinned by the mock; the wrappers below unpin them.

/** Header map types of the ABI. */
export const REQUEST: i32 = 0;
/** The response header map. */
export const RESPONSE: i32 = 2;
/** Selects the valid config fixtures. */
export const VALID: i32 = 0;
/** Selects the invalid config fixtures. */
export const INVALID: i32 = 1;

// @ts-ignore: decorator
@external("mock", "reset") declare function _reset(): void;
// @ts-ignore: decorator
@external("mock", "setHeader") declare function _setHeader(map: i32, name: string, value: string): void;
// @ts-ignore: decorator
@external("mock", "setHeaderBytes") declare function _setHeaderBytes(map: i32, name: string, value: ArrayBuffer): void;
// @ts-ignore: decorator
@external("mock", "removeHeader") declare function _removeHeader(map: i32, name: string): void;
// @ts-ignore: decorator
@external("mock", "setProperty") declare function _setProperty(path: string, value: string): void;
// @ts-ignore: decorator
@external("mock", "removeProperty") declare function _removeProperty(path: string): void;
// @ts-ignore: decorator
@external("mock", "setPluginConfig") declare function _setPluginConfig(text: string): void;
// @ts-ignore: decorator
@external("mock", "setTimeMs") declare function _setTimeMs(ms: u64): void;
// @ts-ignore: decorator
@external("mock", "setTimeNs") declare function _setTimeNs(ns: u64): void;
// @ts-ignore: decorator
@external("mock", "clockMs") declare function _clockMs(): f64;
// @ts-ignore: decorator
@external("mock", "mallocCount") declare function _mallocCount(): i32;
// @ts-ignore: decorator
@external("mock", "sharedKeyCount") declare function _sharedKeyCount(): i32;
// @ts-ignore: decorator
@external("mock", "sharedKeyAt") declare function _sharedKeyAt(i: i32): usize;
// @ts-ignore: decorator
@external("mock", "sharedHas") declare function _sharedHas(key: string): bool;
// @ts-ignore: decorator
@external("mock", "sharedValue") declare function _sharedValue(key: string): usize;
// @ts-ignore: decorator
@external("mock", "sharedCas") declare function _sharedCas(key: string): u32;
// @ts-ignore: decorator
@external("mock", "sharedPut") declare function _sharedPut(key: string, value: ArrayBuffer): i32;
// @ts-ignore: decorator
@external("mock", "sharedGets") declare function _sharedGets(): i32;
// @ts-ignore: decorator
@external("mock", "sharedSets") declare function _sharedSets(): i32;
// @ts-ignore: decorator
@external("mock", "failNextSet") declare function _failNextSet(code: i32, times: i32): void;
// @ts-ignore: decorator
@external("mock", "failNextGet") declare function _failNextGet(code: i32, times: i32): void;
// @ts-ignore: decorator
@external("mock", "interfereNextSets") declare function _interfereNextSets(times: i32): void;
// @ts-ignore: decorator
@external("mock", "interfereWith") declare function _interfereWith(key: string, value: ArrayBuffer): void;
// @ts-ignore: decorator
@external("mock", "refuseMetric") declare function _refuseMetric(name: string): void;
// @ts-ignore: decorator
@external("mock", "metricCount") declare function _metricCount(): i32;
// @ts-ignore: decorator
@external("mock", "metricDefined") declare function _metricDefined(name: string): bool;
// @ts-ignore: decorator
@external("mock", "metricType") declare function _metricType(name: string): i32;
// @ts-ignore: decorator
@external("mock", "metricValue") declare function _metricValue(name: string): i64;
// @ts-ignore: decorator
@external("mock", "metricId") declare function _metricId(name: string): u32;
// @ts-ignore: decorator
@external("mock", "logCount") declare function _logCount(): i32;
// @ts-ignore: decorator
@external("mock", "logLevel") declare function _logLevel(i: i32): i32;
// @ts-ignore: decorator
@external("mock", "logMessage") declare function _logMessage(i: i32): usize;
// @ts-ignore: decorator
@external("mock", "replyCount") declare function _replyCount(): i32;
// @ts-ignore: decorator
@external("mock", "replyStatus") declare function _replyStatus(): u32;
// @ts-ignore: decorator
@external("mock", "replyDetails") declare function _replyDetails(): usize;
// @ts-ignore: decorator
@external("mock", "replyBody") declare function _replyBody(): usize;
// @ts-ignore: decorator
@external("mock", "replyGrpc") declare function _replyGrpc(): i32;
// @ts-ignore: decorator
@external("mock", "replyHeaderCount") declare function _replyHeaderCount(): i32;
// @ts-ignore: decorator
@external("mock", "replyHeader") declare function _replyHeader(i: i32): usize;
// @ts-ignore: decorator
@external("mock", "unimplementedCount") declare function _unimplementedCount(): i32;
// @ts-ignore: decorator
@external("mock", "fixtureCount") declare function _fixtureCount(kind: i32): i32;
// @ts-ignore: decorator
@external("mock", "fixtureName") declare function _fixtureName(kind: i32, i: i32): usize;
// @ts-ignore: decorator
@external("mock", "fixtureText") declare function _fixtureText(kind: i32, i: i32): usize;
// @ts-ignore: decorator
@external("mock", "fixtureExpected") declare function _fixtureExpected(kind: i32, i: i32): usize;

// Takes ownership of a string the mock allocated and pinned.
function str(p: usize): string {
  let s = changetype<string>(p);
  __unpin(p);
  return s;
}

/** Forgets everything: headers, properties, time, shared data, metrics, logs, replies, injections. */
export function reset(): void { _reset(); }
/** Sets a header (name matched case-insensitively, value sent as UTF-8). */
export function setHeader(map: i32, name: string, value: string): void { _setHeader(map, name, value); }
/** Sets a header to raw bytes (for values that are not valid UTF-8). */
export function setHeaderBytes(map: i32, name: string, value: ArrayBuffer): void { _setHeaderBytes(map, name, value); }
/** Removes a header. */
export function removeHeader(map: i32, name: string): void { _removeHeader(map, name); }
/** Sets a property; the path is written with dots ("source.address") and sent NUL-separated. */
export function setProperty(path: string, value: string): void { _setProperty(path, value); }
/** Removes a property. */
export function removeProperty(path: string): void { _removeProperty(path); }
/** Sets the plugin configuration returned for buffer type 7. */
export function setPluginConfig(text: string): void { _setPluginConfig(text); }
/** Sets the host clock in milliseconds. */
export function setTimeMs(ms: u64): void { _setTimeMs(ms); }
/** Sets the host clock in nanoseconds. */
export function setTimeNs(ns: u64): void { _setTimeNs(ns); }
/** A real monotonic clock in milliseconds (performance.now()), for timing bounds. */
export function clockMs(): f64 { return _clockMs(); }
/** How many times the host called the module's malloc. */
export function mallocCount(): i32 { return _mallocCount(); }
/** Number of shared-data keys. */
export function sharedKeyCount(): i32 { return _sharedKeyCount(); }
/** The i-th shared-data key, in insertion order. */
export function sharedKeyAt(i: i32): string { return str(_sharedKeyAt(i)); }
/** Whether a shared-data key exists. */
export function sharedHas(key: string): bool { return _sharedHas(key); }
/** A copy of a shared-data value, or null when the key is absent. */
export function sharedValue(key: string): ArrayBuffer | null {
  let p = _sharedValue(key);
  if (p == 0) return null;
  let b = changetype<ArrayBuffer>(p);
  __unpin(p);
  return b;
}
/** The current CAS of a shared-data key (0 when absent). */
export function sharedCas(key: string): u32 { return _sharedCas(key); }
/** Writes a shared-data value directly (as another VM would, unconditionally). */
export function sharedPut(key: string, value: ArrayBuffer): i32 { return _sharedPut(key, value); }
/** Number of proxy_get_shared_data calls. */
export function sharedGets(): i32 { return _sharedGets(); }
/** Number of proxy_set_shared_data calls. */
export function sharedSets(): i32 { return _sharedSets(); }
/** Makes the next `times` proxy_set_shared_data calls return `code` without storing anything. */
export function failNextSet(code: i32, times: i32 = 1): void { _failNextSet(code, times); }
/** Makes the next `times` proxy_get_shared_data calls return `code`. */
export function failNextGet(code: i32, times: i32 = 1): void { _failNextGet(code, times); }
/** Before each of the next `times` sets, another worker rewrites the key (same bytes, new CAS). */
export function interfereNextSets(times: i32): void { _interfereNextSets(times); }
/** Before the next set, another worker writes `value` under `key`. */
export function interfereWith(key: string, value: ArrayBuffer): void { _interfereWith(key, value); }
/** Makes proxy_define_metric refuse this name (BadArgument). */
export function refuseMetric(name: string): void { _refuseMetric(name); }
/** Number of distinct metrics defined. */
export function metricCount(): i32 { return _metricCount(); }
/** Whether a metric with this name was defined. */
export function metricDefined(name: string): bool { return _metricDefined(name); }
/** The metric's type (0 counter, 1 gauge, 2 histogram) or -1. */
export function metricType(name: string): i32 { return _metricType(name); }
/** The metric's value, or -1 when undefined. */
export function metricValue(name: string): i64 { return _metricValue(name); }
/** The id the host gave the latest definition of this metric name, or 0. */
export function metricId(name: string): u32 { return _metricId(name); }
/** Number of proxy_log calls. */
export function logCount(): i32 { return _logCount(); }
/** Level of log line i (0 trace .. 5 critical), -1 if none. */
export function logLevel(i: i32): i32 { return _logLevel(i); }
/** Text of log line i. */
export function logMessage(i: i32): string { return str(_logMessage(i)); }
/** Number of local replies sent. */
export function replyCount(): i32 { return _replyCount(); }
/** Status of the last local reply. */
export function replyStatus(): u32 { return _replyStatus(); }
/** Response code details of the last local reply. */
export function replyDetails(): string { return str(_replyDetails()); }
/** Body of the last local reply. */
export function replyBody(): string { return str(_replyBody()); }
/** gRPC status argument of the last local reply (-1 = none). */
export function replyGrpc(): i32 { return _replyGrpc(); }
/** Number of headers of the last local reply. */
export function replyHeaderCount(): i32 { return _replyHeaderCount(); }
/** Header i of the last local reply as "name: value". */
export function replyHeader(i: i32): string { return str(_replyHeader(i)); }
/** Calls to proxy_* imports the mock does not model. */
export function unimplementedCount(): i32 { return _unimplementedCount(); }
/** Number of config fixtures of a kind (VALID or INVALID). */
export function fixtureCount(kind: i32): i32 { return _fixtureCount(kind); }
/** Name of fixture i (without .json). */
export function fixtureName(kind: i32, i: i32): string { return str(_fixtureName(kind, i)); }
/** Text of fixture i's .json file. */
export function fixtureText(kind: i32, i: i32): string { return str(_fixtureText(kind, i)); }
/** Contents of fixture i's .expected file, trailing newlines removed. */
export function fixtureExpected(kind: i32, i: i32): string { return str(_fixtureExpected(kind, i)); }

/** UTF-8 bytes of a string (for functions that take raw bytes). */
export function utf8(s: string): ArrayBuffer { return String.UTF8.encode(s); }

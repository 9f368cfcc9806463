// A non-allocating reader for etcd's /v3/kv/range answers, which can hold thousands of key-values: it
// checks the whole body is well-formed JSON (depth-bounded, every escape checked) and reports, without
// building a tree, header.revision, count, more, and for each item of kvs the byte spans of its key,
// mod_revision and value. A span is -1 when the field is absent, not a string, or holds an escape
// (base64 and decimal digits never need one). Any other shape is left to the caller to judge.

/** The largest nesting accepted. */
const MAX_DEPTH: i32 = 32;

const C_NONE: i32 = 0;
const C_ROOT: i32 = 1;
const C_HEADER: i32 = 2;
const C_KVS: i32 = 3;
const C_KV: i32 = 4;

/** Receives the items of kvs as they are read. */
export abstract class KvSink {
  /** One item of kvs: byte spans [start, end) into the body, or start -1. `isObject` false for a non-object item. */
  abstract kv(isObject: bool, keyStart: i32, keyEnd: i32, modStart: i32, modEnd: i32, valueStart: i32, valueEnd: i32): void;
}

/** The result of the last scan(). */
export let revStart: i32 = -1;
/** End of header.revision's span. */
export let revEnd: i32 = -1;
/** Span of count, or -1. */
export let countStart: i32 = -1;
/** End of count's span. */
export let countEnd: i32 = -1;
/** Whether `more` is true. */
export let more: bool = false;
/** Whether kvs is present but not an array. */
export let kvsNotArray: bool = false;

let base: usize = 0;
let len: i32 = 0;
let pos: i32 = 0;
let sink: KvSink | null = null;
// Spans of the string just read (strEsc: it held an escape).
let strStart: i32 = 0;
let strEnd: i32 = 0;
let strEsc: bool = false;
// The fields of the kvs item being read.
let kStart: i32 = -1, kEnd: i32 = -1, mStart: i32 = -1, mEnd: i32 = -1, vStart: i32 = -1, vEnd: i32 = -1;

// @ts-ignore: decorator
@inline function at(i: i32): i32 { return <i32>load<u8>(base + <usize>i); }

function ws(): void {
  while (pos < len) {
    let c = at(pos);
    if (c != 0x20 && c != 0x0a && c != 0x0d && c != 0x09) return;
    pos++;
  }
}

// Whether the span [s, e) holds exactly the ASCII text `lit`.
function spanIs(s: i32, e: i32, lit: string): bool {
  if (e - s != lit.length) return false;
  for (let i = 0; i < lit.length; i++) if (at(s + i) != lit.charCodeAt(i)) return false;
  return true;
}

function str(): bool {
  if (pos >= len || at(pos) != 0x22) return false;
  pos++;
  strStart = pos;
  strEsc = false;
  while (pos < len) {
    let c = at(pos);
    if (c == 0x22) { strEnd = pos; pos++; return true; }
    if (c < 0x20) return false;
    if (c == 0x5c) {
      strEsc = true;
      if (pos + 1 >= len) return false;
      let e = at(pos + 1);
      if (e == 0x75) {
        if (pos + 5 >= len) return false;
        for (let k = 2; k < 6; k++) {
          let h = at(pos + k);
          if (!((h >= 0x30 && h <= 0x39) || (h >= 0x61 && h <= 0x66) || (h >= 0x41 && h <= 0x46))) return false;
        }
        pos += 6;
        continue;
      }
      if (e != 0x22 && e != 0x5c && e != 0x2f && e != 0x62 && e != 0x66 && e != 0x6e && e != 0x72 && e != 0x74) return false;
      pos += 2;
      continue;
    }
    pos++;
  }
  return false;
}

function lit(w: string): bool {
  if (pos + w.length > len) return false;
  for (let i = 0; i < w.length; i++) if (at(pos + i) != w.charCodeAt(i)) return false;
  pos += w.length;
  return true;
}

function num(): bool {
  let start = pos;
  if (pos < len && at(pos) == 0x2d) pos++;
  let digits = 0;
  while (pos < len) {
    let c = at(pos);
    if ((c >= 0x30 && c <= 0x39) || c == 0x2e || c == 0x65 || c == 0x45 || c == 0x2b || c == 0x2d) { pos++; digits++; } else break;
  }
  return digits > 0 && pos > start;
}

// Contexts: what the value being read is.
const F_COUNT: i32 = 10;
const F_MORE: i32 = 11;
const F_REVISION: i32 = 12;
const F_KEY: i32 = 13;
const F_MOD: i32 = 14;
const F_VALUE: i32 = 15;

// The context of the value of field [fs, fe) inside an object of context `ctx`.
function fieldContext(ctx: i32, fs: i32, fe: i32): i32 {
  if (ctx == C_ROOT) {
    if (spanIs(fs, fe, "header")) return C_HEADER;
    if (spanIs(fs, fe, "kvs")) return C_KVS;
    if (spanIs(fs, fe, "count")) return F_COUNT;
    if (spanIs(fs, fe, "more")) return F_MORE;
  } else if (ctx == C_HEADER) {
    if (spanIs(fs, fe, "revision")) return F_REVISION;
  } else if (ctx == C_KV) {
    if (spanIs(fs, fe, "key")) return F_KEY;
    if (spanIs(fs, fe, "mod_revision")) return F_MOD;
    if (spanIs(fs, fe, "value")) return F_VALUE;
  }
  return C_NONE;
}

// A value of context `ctx`.
function value(ctx: i32, depth: i32): bool {
  if (depth > MAX_DEPTH) return false;
  ws();
  if (pos >= len) return false;
  let c = at(pos);
  if (c == 0x7b) return object(ctx == C_HEADER || ctx == C_KV ? ctx : C_NONE, depth + 1);
  if (c == 0x5b) return array(ctx == C_KVS ? C_KVS : C_NONE, depth + 1);
  if (ctx == C_KVS) kvsNotArray = true;
  if (c == 0x22) {
    if (!str()) return false;
    let s = strEsc ? -1 : strStart, e = strEsc ? -1 : strEnd;
    if (ctx == F_COUNT) { countStart = s; countEnd = e; }
    else if (ctx == F_REVISION) { revStart = s; revEnd = e; }
    else if (ctx == F_KEY) { kStart = s; kEnd = e; }
    else if (ctx == F_MOD) { mStart = s; mEnd = e; }
    else if (ctx == F_VALUE) { vStart = s; vEnd = e; }
    return true;
  }
  if (c == 0x74) {
    if (!lit("true")) return false;
    if (ctx == F_MORE) more = true;
    return true;
  }
  if (c == 0x66) return lit("false");
  if (c == 0x6e) return lit("null");
  return num();
}

function object(ctx: i32, depth: i32): bool {
  pos++; // {
  let isKv = ctx == C_KV;
  if (isKv) { kStart = kEnd = mStart = mEnd = vStart = vEnd = -1; }
  ws();
  if (pos < len && at(pos) == 0x7d) { pos++; return endObject(isKv); }
  for (;;) {
    ws();
    if (!str()) return false;
    let fs = strStart, fe = strEnd;
    ws();
    if (pos >= len || at(pos) != 0x3a) return false;
    pos++;
    if (!value(strEsc ? C_NONE : fieldContext(ctx, fs, fe), depth)) return false;
    ws();
    if (pos >= len) return false;
    let d = at(pos);
    pos++;
    if (d == 0x2c) continue;
    if (d == 0x7d) return endObject(isKv);
    return false;
  }
}

function endObject(isKv: bool): bool {
  if (isKv && sink !== null) changetype<KvSink>(sink).kv(true, kStart, kEnd, mStart, mEnd, vStart, vEnd);
  return true;
}

function array(ctx: i32, depth: i32): bool {
  pos++; // [
  ws();
  if (pos < len && at(pos) == 0x5d) { pos++; return true; }
  for (;;) {
    ws();
    if (ctx == C_KVS && pos < len && at(pos) == 0x7b) {
      if (!value(C_KV, depth)) return false;
    } else {
      if (!value(C_NONE, depth)) return false;
      if (ctx == C_KVS && sink !== null) changetype<KvSink>(sink).kv(false, -1, -1, -1, -1, -1, -1);
    }
    ws();
    if (pos >= len) return false;
    let d = at(pos);
    pos++;
    if (d == 0x2c) continue;
    if (d == 0x5d) return true;
    return false;
  }
}

/**
 * Reads a range answer in the n bytes at p, reporting each kvs item to `to` as it goes; returns whether
 * the body is one well-formed JSON object (the items reported before a syntax error stand).
 */
export function scan(p: usize, n: i32, to: KvSink): bool {
  base = p;
  len = n;
  pos = 0;
  sink = to;
  revStart = revEnd = countStart = countEnd = -1;
  more = false;
  kvsNotArray = false;
  ws();
  if (pos >= len || at(pos) != 0x7b) { sink = null; return false; }
  let ok = object(C_ROOT, 1);
  ws();
  sink = null;
  return ok && pos == len;
}

/** The decimal digits of [s, e) as a number, or -1 when the span is absent, empty, too long or not digits. */
export function spanDecimal(p: usize, s: i32, e: i32): i64 {
  if (s < 0 || e <= s || e - s > 18) return -1;
  let v: i64 = 0;
  for (let i = s; i < e; i++) {
    let c = <i32>load<u8>(p + <usize>i) - 0x30;
    if (c < 0 || c > 9) return -1;
    v = v * 10 + c;
  }
  return v;
}

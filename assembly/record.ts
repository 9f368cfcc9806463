// One tracked client: a 48-byte record inside a set of the shared table (see table.ts).
//
//   0  u64 address high word      8  u64 address low word (IPv4 as ::ffff:a.b.c.d)
//  16  u64 updated (ms)           24  u64 banUntil (ms; 0 = never banned)
//  32  f32 rate tokens            36  f32 userAgent tokens        40  f32 errors tokens
//  44  u8  strikes (bans so far)  45  u8  rule of the last ban    46  u8 flags (bit 0: used)  47 spare
//
//  48  f32 tokens of each custom-rule bucket (rule-config.ts), 4 bytes per bucket, in the configuration's
//      bucket order; a set value with custom buckets ends in a 4-byte layout tag (layout.ts)
//
// Little endian, as wasm memory is; the bytes are only ever read by this module.

import { Config, RULE_ERRORS } from "./config";
import { refill, refillWith } from "./bucket";

/** Bytes per tracked client without custom rules (the header and the three built-in buckets). */
export const RECORD_SIZE: i32 = 48;
/** Bytes per custom-rule bucket. */
export const BUCKET_SIZE: i32 = 4;
/** Records per set (per shared-data key). */
export const WAYS: i32 = 8;
/** Bytes of one set's value. */
export const SET_SIZE: i32 = RECORD_SIZE * WAYS;

const O_HI = 0;
const O_LO = 8;
const O_UPDATED = 16;
const O_BAN_UNTIL = 24;
const O_TOKENS = 32;
const O_STRIKES = 44;
const O_RULE = 45;
const O_FLAGS = 46;
const FLAG_USED: u8 = 1;

/** Whether the record slot holds a client. */
// @ts-ignore: decorator
@inline export function isUsed(r: usize): bool { return (load<u8>(r, O_FLAGS) & FLAG_USED) != 0; }
/** Whether the record belongs to this address. */
// @ts-ignore: decorator
@inline export function isFor(r: usize, hi: u64, lo: u64): bool {
  return isUsed(r) && load<u64>(r, O_HI) == hi && load<u64>(r, O_LO) == lo;
}
/** The address high word. */
// @ts-ignore: decorator
@inline export function addrHi(r: usize): u64 { return load<u64>(r, O_HI); }
/** The address low word. */
// @ts-ignore: decorator
@inline export function addrLo(r: usize): u64 { return load<u64>(r, O_LO); }
/** When the buckets were last brought up to date, in ms. */
// @ts-ignore: decorator
@inline export function updated(r: usize): u64 { return load<u64>(r, O_UPDATED); }
/** When the current or last ban ends, in ms (0 if never banned). */
// @ts-ignore: decorator
@inline export function banUntil(r: usize): u64 { return load<u64>(r, O_BAN_UNTIL); }
/** Sets the ban end. */
// @ts-ignore: decorator
@inline export function setBanUntil(r: usize, v: u64): void { store<u64>(r, v, O_BAN_UNTIL); }
/** The token level of bucket `rule`. */
// @ts-ignore: decorator
@inline export function tokens(r: usize, rule: i32): f64 { return <f64>load<f32>(r + O_TOKENS + (<usize>rule << 2)); }
/** Sets the token level of bucket `rule`. */
// @ts-ignore: decorator
@inline export function setTokens(r: usize, rule: i32, v: f64): void { store<f32>(r + O_TOKENS + (<usize>rule << 2), <f32>v); }
/** How many bans this client has had (within forgetAfter). */
// @ts-ignore: decorator
@inline export function strikes(r: usize): i32 { return <i32>load<u8>(r, O_STRIKES); }
/** Sets the ban count. */
// @ts-ignore: decorator
@inline export function setStrikes(r: usize, v: i32): void { store<u8>(r, <u8>(v > 255 ? 255 : v), O_STRIKES); }
/** The rule index of the last ban. */
// @ts-ignore: decorator
@inline export function banRule(r: usize): i32 { return <i32>load<u8>(r, O_RULE); }
/** Sets the rule index of the last ban. */
// @ts-ignore: decorator
@inline export function setBanRule(r: usize, v: i32): void { store<u8>(r, <u8>v, O_RULE); }

/** Bytes per tracked client under `cfg`: the base record and one bucket per custom bucket. */
export function recordSize(cfg: Config): i32 {
  return RECORD_SIZE + BUCKET_SIZE * cfg.custom.buckets.length;
}
/** The token level of custom bucket `j`. */
// @ts-ignore: decorator
@inline export function customTokens(r: usize, j: i32): f64 { return <f64>load<f32>(r + <usize>(RECORD_SIZE + (j << 2))); }
/** Sets the token level of custom bucket `j`. */
// @ts-ignore: decorator
@inline export function setCustomTokens(r: usize, j: i32, v: f64): void { store<f32>(r + <usize>(RECORD_SIZE + (j << 2)), <f32>v); }

/** Starts a fresh record for an address: buckets full, no ban history. */
export function init(r: usize, hi: u64, lo: u64, now: u64, cfg: Config): void {
  memory.fill(r, 0, recordSize(cfg));
  let buckets = cfg.custom.buckets;
  for (let j = 0, n = buckets.length; j < n; j++) setCustomTokens(r, j, <f64>unchecked(buckets[j]).requests);
  store<u64>(r, hi, O_HI);
  store<u64>(r, lo, O_LO);
  store<u64>(r, now, O_UPDATED);
  for (let i = 0; i < 3; i++) setTokens(r, i, <f64>cfg.rules[i].requests);
  store<u8>(r, FLAG_USED, O_FLAGS);
}

/** Brings every bucket up to `now` and forgets ban history older than forgetAfter. */
export function advance(r: usize, now: u64, cfg: Config): void {
  let last = updated(r);
  // No time passed (or the clock stepped back): refill then only clamps tokens above a (possibly lowered)
  // capacity, so that a reconfigure takes effect at once. refill never returns more than the capacity.
  let elapsed = now > last ? now - last : 0;
  for (let i = 0; i < 3; i++) setTokens(r, i, refill(tokens(r, i), elapsed, cfg.rules[i]));
  let custom = cfg.custom;
  let params = changetype<usize>(custom.params);
  let caps = changetype<usize>(custom.capBits);
  let b = r + <usize>RECORD_SIZE;
  let n = <usize>custom.capBits.length;
  for (let j: usize = 0; j < n; j++) {
    // Most buckets of most clients are full (their rule matches rarely): a full bucket's f32 is exactly
    // its capacity's, and it stays so. Two of them are checked with one compare.
    if (j + 1 < n && load<u64>(b + (j << 2)) == load<u64>(caps + (j << 2))) {
      j++;
      continue;
    }
    if (load<u32>(b + (j << 2)) == load<u32>(caps + (j << 2))) continue;
    let q = params + j * 24;
    setCustomTokens(r, <i32>j, refillWith(customTokens(r, <i32>j), elapsed, load<f64>(q), load<f64>(q, 8), load<f64>(q, 16)));
  }
  if (elapsed > 0) store<u64>(r, now, O_UPDATED);
  let until = banUntil(r);
  if (strikes(r) > 0 && now >= until && now - until >= cfg.forgetAfterMs) setStrikes(r, 0);
}

/** Whether the client is banned at `now`. */
// @ts-ignore: decorator
@inline export function isBanned(r: usize, now: u64): bool { return banUntil(r) > now; }

/** Whether the record has decayed to nothing: no ban, no remembered bans, every bucket full again. */
export function isExpired(r: usize, now: u64, cfg: Config): bool {
  if (!isUsed(r)) return true;
  let until = banUntil(r);
  if (until > now) return false;
  if (strikes(r) > 0 && now - until < cfg.forgetAfterMs) return false;
  let elapsed = now > updated(r) ? now - updated(r) : 0;
  for (let i = 0; i < 3; i++) {
    let rule = cfg.rules[i];
    if (refill(tokens(r, i), elapsed, rule) < <f64>rule.requests) return false;
  }
  let buckets = cfg.custom.buckets;
  for (let j = 0, n = buckets.length; j < n; j++) {
    let rule = unchecked(buckets[j]);
    if (refill(customTokens(r, j), elapsed, rule) < <f64>rule.requests) return false;
  }
  return true;
}

/** classify(): a record that has decayed to nothing (see isExpired); any newcomer may take its slot. */
export const EXPIRED: i32 = 0;
/** classify(): a live record without evidence (at most one token spent per bucket, no error, no ban). */
export const PROBATION: i32 = 1;
/** classify(): a record holding evidence: an error counted, more than one token spent, or strikes. */
export const EVIDENCE: i32 = 2;
/** classify(): a record whose ban is running. */
export const BANNED: i32 = 3;

/**
 * How much a record is worth keeping against a newcomer (see table.ts, admission). A client seen once
 * has spent one token of `rate` (and of `userAgent` when it matched), which is no evidence: a flood of
 * one-request addresses looks exactly like that. A counted error response, a second token spent
 * within the refill window, a ban or a remembered ban (strikes) is evidence.
 */
export function classify(r: usize, now: u64, cfg: Config): i32 {
  let until = banUntil(r);
  if (until > now) return BANNED;
  let evidence = strikes(r) > 0 && now - until < cfg.forgetAfterMs;
  let elapsed = now > updated(r) ? now - updated(r) : 0;
  let full = true;
  for (let i = 0; i < 3; i++) {
    let rule = cfg.rules[i];
    let deficit = <f64>rule.requests - refill(tokens(r, i), elapsed, rule);
    if (deficit > 0) {
      full = false;
      if (i == RULE_ERRORS || deficit > 1.0) evidence = true;
    }
  }
  let buckets = cfg.custom.buckets;
  for (let j = 0, n = buckets.length; j < n; j++) {
    let rule = unchecked(buckets[j]);
    let deficit = <f64>rule.requests - refill(customTokens(r, j), elapsed, rule);
    if (deficit > 0) {
      full = false;
      if (deficit > 1.0) evidence = true;
    }
  }
  if (evidence) return EVIDENCE;
  return full ? EXPIRED : PROBATION;
}

/**
 * Merges another record of the same client into `r`, both brought up to the same time and of the same
 * layout with `buckets` custom buckets: the later ban (with its rule), the higher strike count, the fewer
 * tokens in each bucket. Returns whether `r` changed.
 */
export function merge(r: usize, src: usize, buckets: i32 = 0): bool {
  let changed = false;
  if (banUntil(src) > banUntil(r)) {
    setBanUntil(r, banUntil(src));
    setBanRule(r, banRule(src));
    changed = true;
  }
  if (strikes(src) > strikes(r)) {
    setStrikes(r, strikes(src));
    changed = true;
  }
  for (let i = 0; i < 3; i++) {
    if (tokens(src, i) < tokens(r, i)) {
      setTokens(r, i, tokens(src, i));
      changed = true;
    }
  }
  for (let j = 0; j < buckets; j++) {
    if (customTokens(src, j) < customTokens(r, j)) {
      setCustomTokens(r, j, customTokens(src, j));
      changed = true;
    }
  }
  return changed;
}

// The custom rules (rules.custom, rules.presets; rule-config.ts) applied to one client record. Like rules.ts,
// these functions only change the record in memory; the table writes it back with CAS, and the caller
// performs side effects (hold, metrics, logs) once the write has landed.
//
// The caller sets `bits` before the table update: the matcher bits (matchers.ts, 2i take and 2i+1 give of
// rule i) that decide in this phase. A request matching both a rule's take and its give does neither.

import { Config } from "./config";
import { CustomRule } from "./rule-config";
import { hasToken, take, banDuration, EPSILON } from "./bucket";
import * as rec from "./record";

/** Let the request through. */
export const PASS: i32 = 0;
/** Deny the request (deniedRule names the rule). */
export const DENY: i32 = 1;
/** Hold the request for holdMs (holdRule names the rule; delay.ts). */
export const HOLD: i32 = 2;

/** The matcher bits deciding in this phase (set by the caller before the table update). */
export let bits: u32 = 0;
/** Whether the last evaluation changed the record. */
export let dirty: bool = false;
/** The rule (index into cfg.custom.rules) whose ban the last evaluation started, or -1. */
export let banRule: i32 = -1;
/** Whether that ban came from the rule's `then` limit. */
export let banByThen: bool = false;
/** The rule that denied, or -1. */
export let deniedRule: i32 = -1;
/** How long to hold the request (HOLD), in ms. */
export let holdMs: u64 = 0;
/** The delay rule that holds it. */
export let holdRule: i32 = -1;

/** Sets the matcher bits of this phase. */
export function setBits(b: u32): void {
  bits = b;
}

function reset(): void {
  dirty = false;
  banRule = -1;
  banByThen = false;
  deniedRule = -1;
  holdMs = 0;
  holdRule = -1;
}

// Bans the client for the escalated ban of rule i (its `then` ban when byThen).
function ban(r: usize, i: i32, banMs: u64, byThen: bool, now: u64, cfg: Config): void {
  let strike = rec.strikes(r) + 1;
  rec.setStrikes(r, strike);
  rec.setBanRule(r, 3 + i);
  rec.setBanUntil(r, now + banDuration(banMs, strike, cfg.escalation, cfg.banMaxMs));
  banRule = i;
  banByThen = byThen;
  dirty = true;
}

// Spends a token of bucket j; on an empty bucket bans (banMs > 0) and returns false.
function spend(r: usize, i: i32, j: i32, banMs: u64, byThen: bool, now: u64, cfg: Config): bool {
  let level = rec.customTokens(r, j);
  if (hasToken(level)) {
    rec.setCustomTokens(r, j, take(level));
    dirty = true;
    return true;
  }
  if (banMs > 0) ban(r, i, banMs, byThen, now, cfg);
  return false;
}

// Returns one token to bucket j, up to the capacity.
function give(r: usize, j: i32, rule: CustomRule): void {
  let cap = <f64>rule.limit.requests;
  let level = rec.customTokens(r, j);
  if (level >= cap) return;
  let v = level + 1.0;
  rec.setCustomTokens(r, j, v > cap ? cap : v);
  dirty = true;
}

// A delay rule's take: the hard `then` bucket first, then the soft bucket, which may go into debt by up to
// delay.max of refill: a request that finds no whole token waits until its token has refilled.
function takeDelayed(r: usize, i: i32, rule: CustomRule, now: u64, cfg: Config): i32 {
  let then = rule.then;
  if (then !== null && !spend(r, i, rule.thenBucket, then.banMs, true, now, cfg)) return DENY;
  let j = rule.bucket;
  let level = rec.customTokens(r, j);
  if (hasToken(level)) {
    rec.setCustomTokens(r, j, level - 1.0);
    dirty = true;
    return PASS;
  }
  let waitMs = <u64>Math.ceil((1.0 - EPSILON - level) / rule.limit.refillPerMs);
  if (waitMs > rule.delayMaxMs) {
    if (rule.limit.banMs > 0) ban(r, i, rule.limit.banMs, false, now, cfg);
    return DENY;
  }
  rec.setCustomTokens(r, j, level - 1.0); // the held request's token, taken in advance
  dirty = true;
  if (waitMs > holdMs) {
    holdMs = waitMs;
    holdRule = i;
  }
  return HOLD;
}

/** Applies the request-phase matches in `bits` to an up-to-date, unbanned record: PASS, DENY or HOLD. */
export function onRequest(r: usize, cfg: Config, now: u64): i32 {
  reset();
  if (bits == 0) return PASS;
  let rules = cfg.custom.rules;
  let result = PASS;
  for (let i = 0, n = rules.length; i < n; i++) {
    let b = (bits >> (<u32>i << 1)) & 3;
    if (b == 0 || b == 3) continue; // no match, or take and give at once
    let rule = unchecked(rules[i]);
    if (b == 2) {
      give(r, rule.bucket, rule);
      continue;
    }
    if (rule.delayMaxMs > 0) {
      let d = takeDelayed(r, i, rule, now, cfg);
      if (d == DENY) {
        deniedRule = i;
        return DENY;
      }
      if (d == HOLD) result = HOLD;
      continue;
    }
    if (!spend(r, i, rule.bucket, rule.limit.banMs, false, now, cfg)) {
      deniedRule = i;
      return DENY;
    }
  }
  return result;
}

/** Applies the response-phase matches in `bits` to an up-to-date, unbanned record (an empty bucket bans). */
export function onResponse(r: usize, cfg: Config, now: u64): void {
  reset();
  if (bits == 0) return;
  let rules = cfg.custom.rules;
  for (let i = 0, n = rules.length; i < n; i++) {
    let b = (bits >> (<u32>i << 1)) & 3;
    if (b == 0 || b == 3) continue;
    let rule = unchecked(rules[i]);
    if (b == 2) give(r, rule.bucket, rule);
    else if (!spend(r, i, rule.bucket, rule.limit.banMs, false, now, cfg)) return;
  }
}

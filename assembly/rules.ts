// The three rules applied to one client record. These functions only change the record in memory; the
// table writes it back with CAS and performs side effects (metrics, logs) once the write has landed.

import { Config, RULE_RATE, RULE_UA, RULE_ERRORS } from "./config";
import { hasToken, take, banDuration } from "./bucket";
import * as rec from "./record";
import * as custom from "./custom-rules";

/** Let the request through. */
export const PASS: i32 = 0;
/** Denied: the rate bucket was empty. */
export const DENY_RATE: i32 = 1;
/** Denied: the User-Agent matched and its bucket was empty. */
export const DENY_UA: i32 = 2;
/** Denied: the errors bucket is empty and errors.ban is 0s (plain limiting of error-producing clients). */
export const DENY_ERRORS: i32 = 3;
/** Denied: the client is banned. */
export const DENY_BANNED: i32 = 4;
/** Denied: the address is on the deny list. */
export const DENY_LIST: i32 = 5;

/** Denied by a custom rule (custom-rules.ts deniedRule names it). */
export const DENY_CUSTOM: i32 = 6;
/** Held back by a delay rule (custom-rules.ts holdMs, holdRule); not a denial. */
export const HOLD: i32 = 7;
/** banStartedRule of a custom rule i is CUSTOM_BASE + i. */
export const CUSTOM_BASE: i32 = 3;

/** Set by the evaluators when a ban was started: its rule index (CUSTOM_BASE + i for custom rule i), or -1. */
export let banStartedRule: i32 = -1;
/** Whether the evaluators took a token or started a ban (so the record must be written back). */
export let dirty: bool = false;

/** Bans the client for the next escalated duration of `rule`. */
export function startBan(r: usize, rule: i32, now: u64, cfg: Config): void {
  let strike = rec.strikes(r) + 1;
  rec.setStrikes(r, strike);
  rec.setBanRule(r, rule);
  rec.setBanUntil(r, now + banDuration(cfg.rules[rule].banMs, strike, cfg.escalation, cfg.banMaxMs));
  banStartedRule = rule;
}

// Takes a token from `rule`'s bucket; on an empty bucket bans (ban > 0) and returns false.
function consume(r: usize, rule: i32, now: u64, cfg: Config): bool {
  let level = rec.tokens(r, rule);
  if (hasToken(level)) {
    rec.setTokens(r, rule, take(level));
    dirty = true;
    return true;
  }
  if (cfg.rules[rule].banMs > 0) {
    startBan(r, rule, now, cfg);
    dirty = true;
  }
  return false;
}

/**
 * Applies the request-time checks to an up-to-date record (see record.advance): an active ban, the
 * errors bucket when errors.ban is 0s, then `rate` and, if the User-Agent matched, `userAgent`.
 * Returns PASS or a DENY_* reason.
 */
export function onRequest(r: usize, cfg: Config, uaMatched: bool, now: u64): i32 {
  banStartedRule = -1;
  dirty = false;
  if (rec.isBanned(r, now)) return DENY_BANNED;
  let errors = cfg.rules[RULE_ERRORS];
  if (errors.enabled && errors.banMs == 0 && !hasToken(rec.tokens(r, RULE_ERRORS))) return DENY_ERRORS;
  // Only a taken token or a started ban is written back: a refill alone is recomputed from the same
  // timestamps by the next reader, so skipping its write loses nothing.
  if (cfg.rules[RULE_RATE].enabled && !consume(r, RULE_RATE, now, cfg)) return DENY_RATE;
  if (uaMatched && cfg.rules[RULE_UA].enabled && !consume(r, RULE_UA, now, cfg)) return DENY_UA;
  if (custom.bits == 0) return PASS;
  let d = custom.onRequest(r, cfg, now);
  if (custom.dirty) dirty = true;
  if (custom.banRule >= 0) banStartedRule = CUSTOM_BASE + custom.banRule;
  return d == custom.DENY ? DENY_CUSTOM : d == custom.HOLD ? HOLD : PASS;
}

/**
 * Counts one matching error response against the errors bucket. An empty bucket is a violation that
 * starts the ban (when errors.ban > 0); the response itself is not affected.
 */
export function onErrorResponse(r: usize, cfg: Config, now: u64): void {
  banStartedRule = -1;
  dirty = false;
  if (rec.isBanned(r, now)) return; // already banned: nothing more to learn from this response
  consume(r, RULE_ERRORS, now, cfg);
}

/**
 * A response of the tracked client: a matching error when `countError`, else the custom rules' response
 * matches (custom-rules.ts bits, set by the caller for this update only).
 */
export function onResponse(r: usize, cfg: Config, countError: bool, now: u64): void {
  banStartedRule = -1;
  dirty = false;
  if (rec.isBanned(r, now)) return;
  if (countError) {
    consume(r, RULE_ERRORS, now, cfg);
    return;
  }
  if (custom.bits == 0) return;
  custom.onResponse(r, cfg, now);
  if (custom.dirty) dirty = true;
  if (custom.banRule >= 0) banStartedRule = CUSTOM_BASE + custom.banRule;
}

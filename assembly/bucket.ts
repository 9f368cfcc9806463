// Token-bucket math. A bucket of capacity N refills continuously at N per `per`; levels are stored as f32
// tokens in the state record together with one "updated" timestamp shared by the client's buckets.
// An idle client's buckets refill to full, so its state decays to nothing ("token-bucket expiry").

import { Rule } from "./config";

/** Tolerance for float rounding when deciding whether a whole token is available. */
export const EPSILON: f64 = 1e-6;

/** The level of a bucket after `elapsedMs` of refill, capped at the rule's capacity. */
export function refill(level: f64, elapsedMs: u64, rule: Rule): f64 {
  return refillWith(level, elapsedMs, <f64>rule.requests, <f64>rule.perMs, rule.refillPerMs);
}

/** refill with the rule's capacity, window (ms) and refill per ms given as numbers. */
// @ts-ignore: decorator
@inline
export function refillWith(level: f64, elapsedMs: u64, cap: f64, perMs: f64, refillPerMs: f64): f64 {
  if (<f64>elapsedMs >= perMs && level >= 0) return cap; // a full window refills any bucket not in debt (delay.ts)
  let v = level + <f64>elapsedMs * refillPerMs;
  return v > cap ? cap : v;
}

/** Whether a bucket at `level` holds at least one whole token. */
// @ts-ignore: decorator
@inline
export function hasToken(level: f64): bool {
  return level >= 1.0 - EPSILON;
}

/** The level after taking one token (never below zero). */
// @ts-ignore: decorator
@inline
export function take(level: f64): f64 {
  let v = level - 1.0;
  return v > 0 ? v : 0;
}

/** The ban length for the n-th ban (n >= 1): ban × escalation^(n-1), capped at max. */
export function banDuration(banMs: u64, strike: i32, escalation: f64, maxMs: u64): u64 {
  let d = <f64>banMs;
  for (let i = 1; i < strike && d < <f64>maxMs; i++) d *= escalation;
  if (d >= <f64>maxMs) return maxMs;
  return <u64>d;
}

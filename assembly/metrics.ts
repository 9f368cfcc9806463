// Metrics, defined once by the root context at configure time. Envoy keeps one stat per name for the whole
// plugin, so the VMs of all workers add to the same counters. Names (as shown at /stats/prometheus):
//
//   traffic_guard_requests_total                 requests seen
//   traffic_guard_denied_rate_total              denied by the rate rule
//   traffic_guard_denied_user_agent_total        denied by the userAgent rule
//   traffic_guard_denied_errors_total            denied while the errors bucket is empty (errors.ban 0s)
//   traffic_guard_denied_banned_total            denied because the client is banned
//   traffic_guard_denied_deny_total              denied by the deny list
//   traffic_guard_bans_rate_total                bans started by rate
//   traffic_guard_bans_user_agent_total          bans started by userAgent
//   traffic_guard_bans_errors_total              bans started by errors
//   traffic_guard_dry_run_would_deny_total       requests dry-run let through that enforce would deny
//   traffic_guard_evictions_total                client records replaced to make room
//   traffic_guard_internal_errors_total          fail-open events
//   traffic_guard_client_address_fallbacks_total unusable address header, peer address used
//   traffic_guard_untrusted_address_headers_total an address header from a peer not in trustedPeers, ignored
//   traffic_guard_admissions_refused_total       requests of new clients left untracked: every record of
//                                                their set held evidence or a ban (see table.ts)
//   traffic_guard_range_bans_total               ranges banned by ban.range escalation (see ranges.ts)
//   traffic_guard_decisions_published_total      bans this proxy published to the shared store (decisions.ts)
//   traffic_guard_decisions_applied_total        bans of other proxies (or operators) applied from the store
//   traffic_guard_decisions_lifted_total         bans lifted because their decision was deleted or expired
//   traffic_guard_decisions_sync_errors_total    failed store calls, unreadable responses, malformed records
//   traffic_guard_tracked_clients (gauge)        occupied client records
//   traffic_guard_decisions_active (gauge)       shared decisions in force on this proxy (set by the syncing worker)
//
// Per custom rule (rules.custom, rules.presets), named after the rule, '-' written '_' (Envoy's Wasm stats carry
// no Prometheus labels without a bootstrap stats_tags entry, see docs/rules.md):
//
//   traffic_guard_rule_<name>_denied_total       requests the rule denied (an empty bucket, or a violation starting a ban)
//   traffic_guard_rule_<name>_bans_total         bans the rule started (its `then` limit included)
//   traffic_guard_rule_<name>_delayed_total      requests a delay rule held back and then released
//   traffic_guard_rule_<name>_delayed_ms_total   total time those requests were held, in ms

import { define_metric, increment_metric, record_metric, MetricTypeValues, WasmResultValues } from "@solo-io/proxy-runtime/assembly/runtime";

/** Counter names indexed by the Metric* constants below. */
export const COUNTER_NAMES: string[] = [
  "traffic_guard_requests_total",
  "traffic_guard_denied_rate_total",
  "traffic_guard_denied_user_agent_total",
  "traffic_guard_denied_errors_total",
  "traffic_guard_denied_banned_total",
  "traffic_guard_denied_deny_total",
  "traffic_guard_bans_rate_total",
  "traffic_guard_bans_user_agent_total",
  "traffic_guard_bans_errors_total",
  "traffic_guard_dry_run_would_deny_total",
  "traffic_guard_evictions_total",
  "traffic_guard_internal_errors_total",
  "traffic_guard_client_address_fallbacks_total",
  "traffic_guard_untrusted_address_headers_total",
  "traffic_guard_admissions_refused_total",
  "traffic_guard_range_bans_total",
  "traffic_guard_decisions_published_total",
  "traffic_guard_decisions_applied_total",
  "traffic_guard_decisions_lifted_total",
  "traffic_guard_decisions_sync_errors_total",
];
/** The gauge's name. */
export const GAUGE_TRACKED = "traffic_guard_tracked_clients";

/** Index of traffic_guard_requests_total. */
export const REQUESTS: i32 = 0;
/** Index of the first denied_* counter; add a rules.DENY_* reason minus one. */
export const DENIED_BASE: i32 = 1;
/** Index of the first bans_* counter; add a rule index. */
export const BANS_BASE: i32 = 6;
/** Index of traffic_guard_dry_run_would_deny_total. */
export const WOULD_DENY: i32 = 9;
/** Index of traffic_guard_evictions_total. */
export const EVICTIONS: i32 = 10;
/** Index of traffic_guard_internal_errors_total. */
export const INTERNAL_ERRORS: i32 = 11;
/** Index of traffic_guard_client_address_fallbacks_total. */
export const FALLBACKS: i32 = 12;
/** Index of traffic_guard_untrusted_address_headers_total. */
export const UNTRUSTED: i32 = 13;
/** Index of traffic_guard_admissions_refused_total. */
export const ADMISSIONS_REFUSED: i32 = 14;
/** Index of traffic_guard_range_bans_total. */
export const RANGE_BANS: i32 = 15;
/** Index of traffic_guard_decisions_published_total. */
export const DECISIONS_PUBLISHED: i32 = 16;
/** Index of traffic_guard_decisions_applied_total. */
export const DECISIONS_APPLIED: i32 = 17;
/** Index of traffic_guard_decisions_lifted_total. */
export const DECISIONS_LIFTED: i32 = 18;
/** Index of traffic_guard_decisions_sync_errors_total. */
export const DECISIONS_SYNC_ERRORS: i32 = 19;
/** The shared-decisions gauge's name. */
export const GAUGE_DECISIONS_ACTIVE = "traffic_guard_decisions_active";

/** Prefix of the per-rule counters. */
export const RULE_METRIC_PREFIX = "traffic_guard_rule_";
/** Suffixes of the per-rule counters, indexed by RULE_DENIED, RULE_BANS, RULE_DELAYED, RULE_DELAYED_MS. */
export const RULE_COUNTER_SUFFIXES: string[] = ["_denied_total", "_bans_total", "_delayed_total", "_delayed_ms_total"];
/** Per-rule counter kinds. */
export const RULE_DENIED: i32 = 0;
/** Bans started by the rule. */
export const RULE_BANS: i32 = 1;
/** Requests held and released by a delay rule. */
export const RULE_DELAYED: i32 = 2;
/** Milliseconds those requests were held. */
export const RULE_DELAYED_MS: i32 = 3;

/** The counter name of kind `kind` for custom rule `rule`. */
export function ruleMetricName(rule: string, kind: i32): string {
  return RULE_METRIC_PREFIX + rule.split("-").join("_") + RULE_COUNTER_SUFFIXES[kind];
}

/** Per-rule counter ids of one VM (defined at configure time; a counter not defined is skipped). */
export class RuleMetrics {
  ids: StaticArray<u32> = new StaticArray<u32>(64);
  ok: StaticArray<bool> = new StaticArray<bool>(64);

  /** Defines the counters of each rule (the delayed ones only for delay rules); false if the host refused any. */
  define(names: string[], delays: bool[]): bool {
    let all = true;
    for (let i = 0; i < names.length && i < 16; i++) {
      for (let k = 0; k < 4; k++) {
        this.ok[i * 4 + k] = false;
        if (k >= RULE_DELAYED && !delays[i]) continue;
        let r = define_metric(MetricTypeValues.Counter, ruleMetricName(names[i], k));
        this.ok[i * 4 + k] = r.result == WasmResultValues.Ok;
        this.ids[i * 4 + k] = r.metric_id;
        all = all && r.result == WasmResultValues.Ok;
      }
    }
    return all;
  }

  /** Adds `by` (> 0) to counter `kind` of rule i. */
  add(i: i32, kind: i32, by: u64): void {
    let k = (i << 2) + kind;
    if (unchecked(this.ok[k]) && by > 0) increment_metric(unchecked(this.ids[k]), <i64>by);
  }
}

/** Metric ids of one VM. A metric the host refused to define has id 0 and is skipped. */
export class Metrics {
  counters: StaticArray<u32> = new StaticArray<u32>(COUNTER_NAMES.length);
  tracked: u32 = 0;
  ok: StaticArray<bool> = new StaticArray<bool>(COUNTER_NAMES.length);
  trackedOk: bool = false;
  active: u32 = 0;
  activeOk: bool = false;

  /** Defines every metric; returns false if the host refused any (they are then skipped). */
  define(): bool {
    let all = true;
    for (let i = 0; i < COUNTER_NAMES.length; i++) {
      let r = define_metric(MetricTypeValues.Counter, COUNTER_NAMES[i]);
      this.ok[i] = r.result == WasmResultValues.Ok;
      this.counters[i] = r.metric_id;
      all = all && this.ok[i];
    }
    let g = define_metric(MetricTypeValues.Gauge, GAUGE_TRACKED);
    this.trackedOk = g.result == WasmResultValues.Ok;
    this.tracked = g.metric_id;
    let a = define_metric(MetricTypeValues.Gauge, GAUGE_DECISIONS_ACTIVE);
    this.activeOk = a.result == WasmResultValues.Ok;
    this.active = a.metric_id;
    return all && this.trackedOk && this.activeOk;
  }

  /** Adds one to counter `i` (counter increments must be positive). */
  inc(i: i32): void {
    if (unchecked(this.ok[i])) increment_metric(unchecked(this.counters[i]), 1);
  }

  /** Moves the tracked-clients gauge by `delta` (gauges may go down). */
  trackDelta(delta: i32): void {
    if (this.trackedOk && delta != 0) increment_metric(this.tracked, <i64>delta);
  }

  /** Adds one to the tracked-clients gauge. */
  trackOne(): void {
    if (this.trackedOk) increment_metric(this.tracked, 1);
  }

  /** Sets the shared-decisions gauge. */
  setActive(n: i32): void {
    if (this.activeOk) record_metric(this.active, <u64>(n < 0 ? 0 : n));
  }
}

// Metrics (assembly/metrics.ts): the exact names and types of docs/metrics-and-logs.md, defined through the host,
// incremented by index, and skipped (not fatal) when the host refuses one.

import * as m from "../../assembly/metrics";
import * as rules from "../../assembly/rules";
import { RULE_RATE, RULE_UA, RULE_ERRORS } from "../../assembly/config";
import * as mock from "./mock";

const COUNTERS = [
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

// The counters that are non-zero, as "name=value".
function nonZero(): string {
  let out: string[] = [];
  for (let i = 0; i < COUNTERS.length; i++) {
    let v = mock.metricValue(COUNTERS[i]);
    if (mock.metricDefined(COUNTERS[i]) && v != 0) out.push(COUNTERS[i] + "=" + v.toString());
  }
  let g = mock.metricValue("traffic_guard_tracked_clients");
  if (mock.metricDefined("traffic_guard_tracked_clients") && g != 0) out.push("traffic_guard_tracked_clients=" + g.toString());
  return out.join(" ");
}

describe("metric definitions", () => {
  beforeEach(() => { mock.reset(); });

  it("defines the twenty counters and the two gauges of the design, with their exact names", () => {
    let metrics = new m.Metrics();
    expect(metrics.define()).toBe(true);
    expect(mock.metricCount()).toBe(22);
    for (let i = 0; i < COUNTERS.length; i++) {
      expect(mock.metricType(COUNTERS[i])).toBe(0, COUNTERS[i] + " is a counter");
    }
    expect(mock.metricType("traffic_guard_tracked_clients")).toBe(1, "a gauge");
    expect(m.COUNTER_NAMES.join(",")).toBe(COUNTERS.join(","));
    expect(m.GAUGE_TRACKED).toBe("traffic_guard_tracked_clients");
    expect(mock.metricType("traffic_guard_decisions_active")).toBe(1, "a gauge");
    expect(m.GAUGE_DECISIONS_ACTIVE).toBe("traffic_guard_decisions_active");
  });

  it("starts every metric at zero (defining is not counting)", () => {
    new m.Metrics().define();
    expect(nonZero()).toBe("");
  });

  it("maps each index constant to its counter", () => {
    let metrics = new m.Metrics();
    metrics.define();
    metrics.inc(m.REQUESTS);
    metrics.inc(m.DENIED_BASE + rules.DENY_RATE - 1);
    metrics.inc(m.DENIED_BASE + rules.DENY_UA - 1);
    metrics.inc(m.DENIED_BASE + rules.DENY_UA - 1);
    expect(nonZero()).toBe("traffic_guard_requests_total=1 traffic_guard_denied_rate_total=1 traffic_guard_denied_user_agent_total=2");
    mock.reset();
    metrics = new m.Metrics();
    metrics.define();
    metrics.inc(m.DENIED_BASE + rules.DENY_ERRORS - 1);
    metrics.inc(m.DENIED_BASE + rules.DENY_BANNED - 1);
    metrics.inc(m.DENIED_BASE + rules.DENY_LIST - 1);
    expect(nonZero()).toBe("traffic_guard_denied_errors_total=1 traffic_guard_denied_banned_total=1 traffic_guard_denied_deny_total=1");
    mock.reset();
    metrics = new m.Metrics();
    metrics.define();
    metrics.inc(m.BANS_BASE + RULE_RATE);
    metrics.inc(m.BANS_BASE + RULE_UA);
    metrics.inc(m.BANS_BASE + RULE_ERRORS);
    expect(nonZero()).toBe("traffic_guard_bans_rate_total=1 traffic_guard_bans_user_agent_total=1 traffic_guard_bans_errors_total=1");
    mock.reset();
    metrics = new m.Metrics();
    metrics.define();
    metrics.inc(m.WOULD_DENY);
    metrics.inc(m.EVICTIONS);
    metrics.inc(m.INTERNAL_ERRORS);
    metrics.inc(m.FALLBACKS);
    expect(nonZero()).toBe("traffic_guard_dry_run_would_deny_total=1 traffic_guard_evictions_total=1 traffic_guard_internal_errors_total=1 traffic_guard_client_address_fallbacks_total=1");
  });

  it("moves the tracked-clients gauge up and down", () => {
    let metrics = new m.Metrics();
    metrics.define();
    metrics.trackOne();
    metrics.trackOne();
    metrics.trackOne();
    expect(mock.metricValue("traffic_guard_tracked_clients")).toBe(3);
    metrics.trackDelta(-2);
    expect(mock.metricValue("traffic_guard_tracked_clients")).toBe(1);
    metrics.trackDelta(0);
    metrics.trackDelta(5);
    expect(mock.metricValue("traffic_guard_tracked_clients")).toBe(6);
  });

  it("shares one stat per name between two VMs' Metrics, as Envoy does", () => {
    let a = new m.Metrics(), b = new m.Metrics();
    a.define();
    b.define();
    expect(mock.metricCount()).toBe(22);
    a.inc(m.REQUESTS);
    b.inc(m.REQUESTS);
    expect(mock.metricValue("traffic_guard_requests_total")).toBe(2);
  });

  it("reports a refused definition and skips that metric while the others keep counting", () => {
    mock.refuseMetric("traffic_guard_evictions_total");
    let metrics = new m.Metrics();
    expect(metrics.define()).toBe(false);
    metrics.inc(m.EVICTIONS);
    metrics.inc(m.REQUESTS);
    expect(mock.metricDefined("traffic_guard_evictions_total")).toBe(false);
    expect(mock.metricValue("traffic_guard_requests_total")).toBe(1);
  });

  it("skips the gauge when the host refuses it", () => {
    mock.refuseMetric("traffic_guard_tracked_clients");
    let metrics = new m.Metrics();
    expect(metrics.define()).toBe(false);
    metrics.trackOne();
    metrics.trackDelta(3);
    metrics.inc(m.REQUESTS);
    expect(mock.metricDefined("traffic_guard_tracked_clients")).toBe(false);
    expect(nonZero()).toBe("traffic_guard_requests_total=1");
  });
});

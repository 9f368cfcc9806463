// Synthetic series for `promtool test rules`: each scenario is a service's traffic-guard counters as Prometheus stores
// them after the PodMonitor's metric relabelling (traffic_guard_denied_total{reason}, traffic_guard_bans_total{rule}),
// one sample a minute, and the alerts expected at chosen times. Series notation is promtool's: "a+bxn" is n+1
// samples starting at a, growing by b; "_" is a missing sample.
import { ALERTS } from "../../tools/lib/monitoring.ts";

/** One alert expected to be firing at a time. */
export interface ExpectedAlert {
  alert: (typeof ALERTS)[number];
  severity: "warning" | "info";
}

/** A scenario: its series and, per evaluation time, the alerts that must be firing (all others silent). */
export interface Scenario {
  name: string;
  series: Array<{ series: string; values: string }>;
  /** Minutes since the start -> alerts firing then; every alert not listed must be silent. */
  expect: Record<number, ExpectedAlert[]>;
}

const WEB = 'namespace="shop", workload="web", pod="web-1"';
const s = (metric: string, values: string, extra = "", labels = WEB) => ({ series: `${metric}{${labels}${extra}}`, values });
/** The counters of a service whose only activity is requests (everything else stays at zero for two hours). */
const quietCounters = (except: string[] = [], labels = WEB) => [
  s("traffic_guard_tracked_clients", "50x120", "", labels),
  ...["traffic_guard_evictions_total", "traffic_guard_internal_errors_total", "traffic_guard_dry_run_would_deny_total"]
    .filter((m) => !except.includes(m)).map((m) => s(m, "0x120", "", labels)),
];

/** Every scenario of tests/monitoring/alerts.test.ts. */
export const SCENARIOS: Scenario[] = [
  {
    name: "a quiet service with one ban: a burst of 5 denials, one ban, the banned client retrying 20 times; no alert",
    series: [
      s("traffic_guard_requests_total", "0+10x120"),
      s("traffic_guard_denied_total", "0x60 5x60", ', reason="rate"'),
      s("traffic_guard_denied_total", "0x60 0 10 20x59", ', reason="banned"'),
      s("traffic_guard_bans_total", "0x60 1x60", ', rule="rate"'),
      ...quietCounters(),
    ],
    expect: { 61: [], 62: [], 63: [], 65: [], 66: [], 67: [], 70: [], 90: [] },
  },
  {
    name: "a steady busy service: 1 denial/s, 1 ban/min, 0.05 evictions/s for two hours; no alert",
    series: [
      s("traffic_guard_requests_total", "0+6000x120"),
      s("traffic_guard_denied_total", "0+60x120", ', reason="rate"'),
      s("traffic_guard_bans_total", "0+1x120", ', rule="rate"'),
      s("traffic_guard_evictions_total", "0+3x120"),
      ...quietCounters(["traffic_guard_evictions_total"]),
    ],
    expect: { 30: [], 60: [], 90: [], 120: [] },
  },
  {
    name: "a busy service whose proxy restarts at minute 61 (counters reset to zero, same pod); no alert",
    series: [
      s("traffic_guard_requests_total", "0+6000x60 0+6000x59"),
      s("traffic_guard_denied_total", "0+60x60 0+60x59", ', reason="rate"'),
      s("traffic_guard_bans_total", "0+1x60 0+1x59", ', rule="rate"'),
      s("traffic_guard_evictions_total", "0+3x60 0+3x59"),
      s("traffic_guard_tracked_clients", "900x60 0+100x9 900x49"),
      s("traffic_guard_internal_errors_total", "0x60 0x59"),
      s("traffic_guard_dry_run_would_deny_total", "0x60 0x59"),
    ],
    expect: { 61: [], 62: [], 63: [], 65: [], 70: [], 90: [], 119: [] },
  },
  {
    name: "a busy service whose pod is replaced at minute 61 (old series end, new pod's start at zero); no alert",
    series: [
      s("traffic_guard_denied_total", "0+60x60 _x59", ', reason="rate"'),
      s("traffic_guard_bans_total", "0+1x60 _x59", ', rule="rate"'),
      s("traffic_guard_denied_total", "_x60 0+60x59", ', reason="rate"', 'namespace="shop", workload="web", pod="web-2"'),
      s("traffic_guard_bans_total", "_x60 0+1x59", ', rule="rate"', 'namespace="shop", workload="web", pod="web-2"'),
    ],
    expect: { 61: [], 63: [], 65: [], 70: [], 90: [], 119: [] },
  },
  {
    name: "an attack from minute 61 to 75 on a service that usually denies 0.1/s: BlockRateSpike and BanStorm fire, then resolve",
    series: [
      s("traffic_guard_requests_total", "0+600x60 1200+1200x14 18000+600x44"),
      s("traffic_guard_denied_total", "0+6x60 960+600x14 9366+6x44", ', reason="rate"'),
      s("traffic_guard_bans_total", "0x60 5+5x14 75x45", ', rule="rate"'),
      ...quietCounters(),
    ],
    expect: {
      60: [],
      70: [{ alert: "TrafficGuardBlockRateSpike", severity: "warning" }, { alert: "TrafficGuardBanStorm", severity: "warning" }],
      95: [],
    },
  },
  {
    name: "one fail-open event at minute 61: InternalErrors fires, and clears once it leaves the window",
    series: [s("traffic_guard_internal_errors_total", "0x60 1x60"), ...quietCounters(["traffic_guard_internal_errors_total"])],
    expect: { 60: [], 63: [{ alert: "TrafficGuardInternalErrors", severity: "warning" }], 70: [] },
  },
  {
    name: "1 eviction/s for half an hour: TableSaturated fires after 15 minutes",
    series: [s("traffic_guard_evictions_total", "0x30 0+60x60"), ...quietCounters(["traffic_guard_evictions_total"])],
    expect: { 35: [], 60: [{ alert: "TrafficGuardTableSaturated", severity: "warning" }] },
  },
  {
    name: "dry-run lets through a request enforce would deny each minute: DryRunWouldBlock (info) fires",
    series: [s("traffic_guard_dry_run_would_deny_total", "0x60 0+1x60"), ...quietCounters(["traffic_guard_dry_run_would_deny_total"])],
    expect: { 60: [], 70: [{ alert: "TrafficGuardDryRunWouldBlock", severity: "info" }] },
  },
  {
    name: "etcd unreachable for 3 minutes (sync errors, then none): DecisionsSyncFailing stays silent",
    series: [s("traffic_guard_decisions_sync_errors_total", "0x60 0+2x3 6x57"), ...quietCounters()],
    expect: { 63: [], 66: [], 80: [], 100: [] },
  },
  {
    name: "etcd unreachable from minute 60 (2 sync errors a minute): DecisionsSyncFailing fires after 15 minutes",
    series: [s("traffic_guard_decisions_sync_errors_total", "0x60 0+2x60"), ...quietCounters()],
    expect: { 70: [], 90: [{ alert: "TrafficGuardDecisionsSyncFailing", severity: "warning" }] },
  },
];

/** The promtool unit-test file for `rulesFile` (beside it): every alert checked at every listed time. */
export function promtoolTests(rulesFile: string): Record<string, unknown> {
  return {
    rule_files: [rulesFile],
    evaluation_interval: "30s",
    tests: SCENARIOS.map((scenario) => ({
      name: scenario.name,
      interval: "1m",
      input_series: scenario.series,
      alert_rule_test: Object.entries(scenario.expect).flatMap(([minute, firing]) =>
        ALERTS.map((alert) => ({
          eval_time: `${minute}m`,
          alertname: alert,
          exp_alerts: firing.filter((f) => f.alert === alert).map((f) => ({
            exp_labels: { severity: f.severity, namespace: "shop", workload: "web" },
          })),
        }))),
    })),
  };
}

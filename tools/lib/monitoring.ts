// Building the monitoring objects for traffic-guard: a PrometheusRule with the alerts, a PodMonitor that scrapes the
// sidecars' merged metrics endpoint, and a Grafana dashboard (built with @grafana/grafana-foundation-sdk) in a
// ConfigMap for Grafana's dashboard sidecar. Pure functions, no I/O; docs/monitoring.md explains every choice.
//
// Labels: Envoy's Wasm ABI defines a metric by name only (Envoy's Context::defineMetric prefixes the name with the
// "wasmcustom" namespace and attaches no tags; /stats/prometheus strips the prefix again). So the reason and the rule
// live in the metric names (traffic_guard_denied_<reason>_total, traffic_guard_bans_<rule>_total, see
// assembly/metrics.ts), and the PodMonitor's metric relabelling turns them into labels at scrape time:
// traffic_guard_denied_total{reason="…"} and traffic_guard_bans_total{rule="…"}. The pod, namespace and workload
// labels come from Kubernetes service discovery in the same PodMonitor; the proxy exports none of them.
//
// PrometheusRule and PodMonitor are validated with @kubernetes-models/prometheus-operator (the CRDs' OpenAPI schemas
// compiled to validators), the ConfigMap by its metadata and data keys, like the WasmPlugin in manifests.ts.
import { PodMonitor, PrometheusRule, type IPodMonitor, type IPrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";
import * as dashboard from "@grafana/grafana-foundation-sdk/dashboard";
import * as prometheus from "@grafana/grafana-foundation-sdk/prometheus";
import * as timeseries from "@grafana/grafana-foundation-sdk/timeseries";
import { UserError } from "./errors.ts";
import { VERSION } from "./manifests.ts";

/** Where the runbook lives; each alert's runbook_url is this plus "#" and the alert name in lower case. */
export const DEFAULT_RUNBOOK_URL = "https://github.com/traffic-guard/traffic-guard/blob/main/docs/monitoring.md";

/** Metric-name prefixes whose remainder (before `_total`) becomes a label at scrape time. */
export const NAME_LABELS = [
  { prefix: "traffic_guard_denied_", label: "reason", metric: "traffic_guard_denied_total" },
  { prefix: "traffic_guard_bans_", label: "rule", metric: "traffic_guard_bans_total" },
] as const;

/** The Envoy port and path of istio-agent's merged endpoint (application and Envoy metrics together). */
export const MERGED_ENDPOINT = { port: 15020, path: "/stats/prometheus" };

/** The filter's default table capacity (assembly/config.ts), the default of the dashboard's capacity variable. */
export const DEFAULT_CAPACITY = 65536;

/** Windows, `for:` durations and the evaluation interval of the alerts; tests use a shortened variant. */
export interface RuleTiming {
  /** Rule group evaluation interval. */
  interval: string;
  /** Short window of the block-rate spike (the "now" rate). */
  spikeWindow: string;
  /** Long window of the block-rate spike (the baseline). */
  baselineWindow: string;
  spikeFor: string;
  /** Window over which bans are counted. */
  banWindow: string;
  banFor: string;
  /** Window over which fail-open events are counted. */
  errorsWindow: string;
  errorsFor: string;
  /** Window of the eviction rate. */
  evictionWindow: string;
  evictionFor: string;
  /** Window over which dry-run would-deny events are counted. */
  dryRunWindow: string;
  dryRunFor: string;
}

/** The shipped timing; docs/monitoring.md justifies each value. */
export const DEFAULT_TIMING: RuleTiming = {
  interval: "30s",
  spikeWindow: "5m",
  baselineWindow: "1h",
  spikeFor: "5m",
  banWindow: "5m",
  banFor: "2m",
  errorsWindow: "5m",
  errorsFor: "1m",
  evictionWindow: "10m",
  evictionFor: "15m",
  dryRunWindow: "15m",
  dryRunFor: "5m",
};

/** Thresholds of the alerts. */
export const THRESHOLDS = {
  /** The short-window denied rate must exceed this multiple of the baseline rate... */
  spikeFactor: 5,
  /** ...and this many denied requests per second (30 a minute), so a quiet service's single ban is no spike. */
  spikeFloorPerSecond: 0.5,
  /** More bans than this within banWindow is a storm. */
  bansPerWindow: 10,
  /** Evictions per second sustained for evictionFor. */
  evictionsPerSecond: 0.1,
};

/** Where and how the monitoring objects are emitted. */
export interface MonitoringInput {
  /** Namespace of the PrometheusRule, PodMonitor and dashboard ConfigMap. */
  namespace: string;
  /** Extra labels on every object, e.g. the `release` label a Prometheus' ruleSelector wants. */
  labels?: Record<string, string>;
  /** Base URL of docs/monitoring.md. */
  runbookUrl?: string;
  /** Value of the app.kubernetes.io/version label; default the CLI version. */
  version?: string;
  /** Alert timing; default DEFAULT_TIMING. */
  timing?: RuleTiming;
}

/** The names of the objects. */
export const NAMES = { rule: "traffic-guard", podMonitor: "traffic-guard", dashboard: "traffic-guard-dashboard" };

/** The alert names, in the order they are emitted. */
export const ALERTS = [
  "TrafficGuardBlockRateSpike", "TrafficGuardBanStorm", "TrafficGuardInternalErrors", "TrafficGuardTableSaturated", "TrafficGuardDryRunWouldBlock",
  "TrafficGuardDecisionsSyncFailing",
] as const;

/** Window and hold of TrafficGuardDecisionsSyncFailing: errors in every 10-minute window for 15 minutes. */
export const DECISIONS_SYNC_TIMING = { window: "10m", for: "15m" };

const BY = "namespace, workload";
const WHO = "{{ $labels.workload }} in namespace {{ $labels.namespace }}";

function labelsFor(input: MonitoringInput): Record<string, string> {
  return {
    ...(input.labels ?? {}),
    "app.kubernetes.io/name": "traffic-guard",
    "app.kubernetes.io/managed-by": "traffic-guard",
    "app.kubernetes.io/version": input.version ?? VERSION,
  };
}

/** The alerting rules (one group), as they go into PrometheusRule.spec and a plain Prometheus rule file alike. */
export function ruleGroups(input: Pick<MonitoringInput, "runbookUrl" | "timing"> = {}): Array<Record<string, unknown>> {
  const t = input.timing ?? DEFAULT_TIMING;
  const runbook = (alert: string): string => `${input.runbookUrl ?? DEFAULT_RUNBOOK_URL}#${alert.toLowerCase()}`;
  const denied = (w: string): string => `sum by (${BY}) (rate(traffic_guard_denied_total[${w}]))`;
  const rule = (alert: string, expr: string, forDuration: string, severity: string, summary: string, description: string) => ({
    alert,
    expr,
    for: forDuration,
    labels: { severity },
    annotations: { summary, description, runbook_url: runbook(alert) },
  });
  return [{
    name: "traffic-guard",
    interval: t.interval,
    rules: [
      rule(
        "TrafficGuardBlockRateSpike",
        `${denied(t.spikeWindow)}\n  > ${THRESHOLDS.spikeFactor} * ${denied(t.baselineWindow)}\nand\n${denied(t.spikeWindow)} > ${THRESHOLDS.spikeFloorPerSecond}`,
        t.spikeFor, "warning",
        `traffic-guard is denying far more requests than usual for ${WHO}`,
        `${WHO} denies {{ $value | humanize }} requests/s over ${t.spikeWindow}, more than ${THRESHOLDS.spikeFactor}x its ${t.baselineWindow} rate: an attack, or a rule now catching normal traffic.`,
      ),
      rule(
        "TrafficGuardBanStorm",
        `sum by (${BY}) (increase(traffic_guard_bans_total[${t.banWindow}])) > ${THRESHOLDS.bansPerWindow}`,
        t.banFor, "warning",
        `traffic-guard is banning many clients for ${WHO}`,
        `${WHO} started {{ $value | humanize }} bans in ${t.banWindow}: many clients misbehave at once, or a rule is too strict.`,
      ),
      rule(
        "TrafficGuardInternalErrors",
        `sum by (${BY}) (increase(traffic_guard_internal_errors_total[${t.errorsWindow}])) > 0`,
        t.errorsFor, "warning",
        `traffic-guard failed open for ${WHO}`,
        `${WHO} let {{ $value | humanize }} requests through unchecked in ${t.errorsWindow} because of internal errors; read the proxy logs.`,
      ),
      rule(
        "TrafficGuardTableSaturated",
        `sum by (${BY}) (rate(traffic_guard_evictions_total[${t.evictionWindow}])) > ${THRESHOLDS.evictionsPerSecond}`,
        t.evictionFor, "warning",
        `traffic-guard's client table is full for ${WHO}`,
        `${WHO} evicts {{ $value | humanize }} client records/s: the table capacity is too small for the traffic, or a flood from many distinct addresses is under way.`,
      ),
      rule(
        "TrafficGuardDryRunWouldBlock",
        `sum by (${BY}) (increase(traffic_guard_dry_run_would_deny_total[${t.dryRunWindow}])) > 0`,
        t.dryRunFor, "info",
        `traffic-guard in dry-run would have denied requests for ${WHO}`,
        `${WHO} let through {{ $value | humanize }} requests in ${t.dryRunWindow} that enforce mode would deny; review them before switching to enforce.`,
      ),
      rule(
        "TrafficGuardDecisionsSyncFailing",
        `sum by (${BY}) (increase(traffic_guard_decisions_sync_errors_total[${DECISIONS_SYNC_TIMING.window}])) > 0`,
        DECISIONS_SYNC_TIMING.for, "warning",
        `traffic-guard cannot sync mesh-wide decisions for ${WHO}`,
        `${WHO} counted {{ $value | humanize }} decisions sync errors in ${DECISIONS_SYNC_TIMING.window}, without pause for ${DECISIONS_SYNC_TIMING.for}: etcd is unreachable or refuses the proxies, or holds malformed records. Local bans still work; remote ones are not applied or lifted.`,
      ),
    ],
  }];
}

/** Turns the validator's errors into `spec.x: message` lines. */
function schemaProblems(model: { validate(): void }): string[] {
  try {
    model.validate();
    return [];
  } catch (err) {
    const errors = (err as { errors?: Array<{ instancePath: string; message?: string }> }).errors;
    if (!Array.isArray(errors)) return [(err as Error).message];
    return errors.map((e) => `${e.instancePath.replace(/^\//, "").replace(/\//g, ".") || "(object)"}: ${e.message ?? "is invalid"}`);
  }
}

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const LABEL_NAME = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;

/** Problems with the namespace and labels, which the OpenAPI schemas leave to the API server. */
function metadataProblems(meta: { namespace?: string; labels?: Record<string, string> }): string[] {
  const problems: string[] = [];
  const ns = meta.namespace ?? "";
  if (!DNS1123_LABEL.test(ns) || ns.length > 63) problems.push(`metadata.namespace: "${ns}" must be a lowercase DNS-1123 label of at most 63 characters`);
  for (const [key, value] of Object.entries(meta.labels ?? {})) {
    if (!LABEL_NAME.test(key) || key.split("/").at(-1)!.length > 63) problems.push(`metadata.labels: invalid label key "${key}"`);
    if (!LABEL_VALUE.test(value) || value.length > 63) problems.push(`metadata.labels.${key}: invalid label value "${value}"`);
  }
  return problems;
}

/** Validates a PrometheusRule (typed model schema and metadata); returns the problems, empty when valid. */
export function prometheusRuleProblems(object: unknown): string[] {
  const obj = object as IPrometheusRule;
  if (!obj || typeof obj !== "object") return ["(object): expected a mapping"];
  const problems: string[] = [];
  if (obj.apiVersion !== PrometheusRule.apiVersion || obj.kind !== PrometheusRule.kind) problems.push(`apiVersion/kind: expected ${PrometheusRule.apiVersion} ${PrometheusRule.kind}`);
  problems.push(...schemaProblems(new PrometheusRule(obj)), ...metadataProblems(obj.metadata ?? {} as never));
  return problems;
}

/** Validates a PodMonitor (typed model schema and metadata); returns the problems, empty when valid. */
export function podMonitorProblems(object: unknown): string[] {
  const obj = object as IPodMonitor;
  if (!obj || typeof obj !== "object") return ["(object): expected a mapping"];
  const problems: string[] = [];
  if (obj.apiVersion !== PodMonitor.apiVersion || obj.kind !== PodMonitor.kind) problems.push(`apiVersion/kind: expected ${PodMonitor.apiVersion} ${PodMonitor.kind}`);
  problems.push(...schemaProblems(new PodMonitor(obj)), ...metadataProblems(obj.metadata ?? {} as never));
  return problems;
}

/** Builds the validated PrometheusRule; throws a UserError listing every problem. */
export function buildPrometheusRule(input: MonitoringInput): PrometheusRule {
  const object = {
    apiVersion: PrometheusRule.apiVersion,
    kind: PrometheusRule.kind,
    metadata: { name: NAMES.rule, namespace: input.namespace, labels: labelsFor(input) },
    spec: { groups: ruleGroups(input) },
  } as unknown as IPrometheusRule;
  const problems = prometheusRuleProblems(object);
  if (problems.length > 0) throw new UserError("the PrometheusRule is invalid", problems);
  return new PrometheusRule(object);
}

/**
 * The metric relabelling of the PodMonitor, in prometheus-operator's spelling: keep only traffic_guard_*, then turn
 * the reason and rule in the names into labels (see the file comment). The order matters: the label is read from the
 * name before the name is rewritten.
 */
export function metricRelabelings(): Array<Record<string, unknown>> {
  const steps: Array<Record<string, unknown>> = [{ sourceLabels: ["__name__"], regex: "traffic_guard_.+", action: "keep" }];
  for (const { prefix, label, metric } of NAME_LABELS) {
    steps.push(
      { sourceLabels: ["__name__"], regex: `${prefix}(.+)_total`, targetLabel: label, replacement: "$1", action: "replace" },
      { sourceLabels: ["__name__"], regex: `${prefix}.+_total`, targetLabel: "__name__", replacement: metric, action: "replace" },
    );
  }
  return steps;
}

/** metricRelabelings() in Prometheus' own configuration spelling (metric_relabel_configs). */
export function metricRelabelConfigs(): Array<Record<string, unknown>> {
  const snake: Record<string, string> = { sourceLabels: "source_labels", targetLabel: "target_label" };
  return metricRelabelings().map((step) => Object.fromEntries(Object.entries(step).map(([k, v]) => [snake[k] ?? k, v])));
}

/** Builds the validated PodMonitor that scrapes every sidecar's merged endpoint; throws a UserError on problems. */
export function buildPodMonitor(input: MonitoringInput): PodMonitor {
  const object = {
    apiVersion: PodMonitor.apiVersion,
    kind: PodMonitor.kind,
    metadata: { name: NAMES.podMonitor, namespace: input.namespace, labels: labelsFor(input) },
    spec: {
      // Every pod in every namespace; the relabelling keeps only pods with an istio-proxy container that opted in to
      // metrics merging (Istio's injector writes the prometheus.io annotations then).
      selector: {},
      namespaceSelector: { any: true },
      jobLabel: "traffic-guard",
      podMetricsEndpoints: [{
        path: MERGED_ENDPOINT.path,
        interval: "30s",
        relabelings: [
          { sourceLabels: ["__meta_kubernetes_pod_container_name"], regex: "istio-proxy", action: "keep" },
          { sourceLabels: ["__meta_kubernetes_pod_annotationpresent_prometheus_io_scrape"], regex: "true", action: "keep" },
          {
            sourceLabels: ["__address__", "__meta_kubernetes_pod_annotation_prometheus_io_port"],
            regex: "([^:]+)(?::\\d+)?;(\\d+)", replacement: "$1:$2", targetLabel: "__address__", action: "replace",
          },
          { sourceLabels: ["__meta_kubernetes_namespace"], targetLabel: "namespace", action: "replace" },
          { sourceLabels: ["__meta_kubernetes_pod_name"], targetLabel: "pod", action: "replace" },
          { sourceLabels: ["__meta_kubernetes_pod_label_service_istio_io_canonical_name"], targetLabel: "workload", action: "replace" },
        ],
        metricRelabelings: metricRelabelings(),
      }],
    },
  } as IPodMonitor;
  const problems = podMonitorProblems(object);
  if (problems.length > 0) throw new UserError("the PodMonitor is invalid", problems);
  return new PodMonitor(object);
}

/** The Grafana dashboard (the SDK's typed model, serialised as JSON into the ConfigMap). */
export function buildDashboard(): dashboard.Dashboard {
  const ds = { type: "prometheus", uid: "${datasource}" };
  const sel = 'namespace=~"$namespace", workload=~"$workload"';
  const query = (expr: string, legend: string) => new prometheus.DataqueryBuilder().expr(expr).legendFormat(legend);
  let y = 0;
  const panel = (title: string, description: string, unit: string, targets: prometheus.DataqueryBuilder[], x: number) => {
    const p = new timeseries.PanelBuilder().title(title).description(description).unit(unit).datasource(ds).min(0)
      .gridPos({ x, y, w: 12, h: 8 });
    for (const target of targets) p.withTarget(target);
    if (x === 12) y += 8;
    return p;
  };
  const builder = new dashboard.DashboardBuilder("traffic-guard")
    .uid("traffic-guard")
    .tags(["traffic-guard", "envoy", "istio"])
    .description("Requests, denials, bans, the client table and fail-open events of the traffic-guard Envoy filter.")
    .refresh("30s")
    .time({ from: "now-6h", to: "now" })
    .withVariable(new dashboard.DatasourceVariableBuilder("datasource").label("Data source").type("prometheus"))
    .withVariable(new dashboard.QueryVariableBuilder("namespace").label("Namespace").datasource(ds)
      .query("label_values(traffic_guard_requests_total, namespace)").multi(true).includeAll(true).refresh(dashboard.VariableRefresh.OnTimeRangeChanged))
    .withVariable(new dashboard.QueryVariableBuilder("workload").label("Workload").datasource(ds)
      .query('label_values(traffic_guard_requests_total{namespace=~"$namespace"}, workload)').multi(true).includeAll(true).refresh(dashboard.VariableRefresh.OnTimeRangeChanged))
    .withVariable(new dashboard.TextBoxVariableBuilder("capacity").label("Table capacity (policy capacity)").defaultValue(String(DEFAULT_CAPACITY)));
  const panels = [
    panel("Requests", "Requests seen by traffic-guard, per workload.", "reqps",
      [query(`sum by (workload) (rate(traffic_guard_requests_total{${sel}}[$__rate_interval]))`, "{{workload}}")], 0),
    panel("Denied by reason", "Denied requests per second by reason (rate, user_agent, errors, banned, deny).", "reqps",
      [query(`sum by (reason) (rate(traffic_guard_denied_total{${sel}}[$__rate_interval]))`, "{{reason}}")], 12),
    panel("Bans by rule", "Bans started, per rule, in each interval.", "short",
      [query(`sum by (rule) (increase(traffic_guard_bans_total{${sel}}[$__rate_interval]))`, "{{rule}}")], 0),
    panel("Tracked clients against capacity", "Occupied client records per proxy; the table of each Envoy process holds at most the policy's capacity.", "short",
      [query(`max by (pod) (traffic_guard_tracked_clients{${sel}})`, "{{pod}}"), query("max(vector($capacity))", "capacity")], 12),
    panel("Evictions", "Client records replaced to make room, per proxy. Sustained evictions: capacity too small, or a distinct-address flood.", "ops",
      [query(`sum by (pod) (rate(traffic_guard_evictions_total{${sel}}[$__rate_interval]))`, "{{pod}}")], 0),
    panel("Internal errors (fail-open)", "Requests let through unchecked because of an internal error, and unusable address headers (peer address used).", "short",
      [
        query(`sum by (pod) (increase(traffic_guard_internal_errors_total{${sel}}[$__rate_interval]))`, "fail-open {{pod}}"),
        query(`sum by (pod) (increase(traffic_guard_client_address_fallbacks_total{${sel}}[$__rate_interval]))`, "address fallback {{pod}}"),
      ], 12),
    panel("Dry-run would deny", "Requests dry-run let through that enforce mode would deny, per workload.", "reqps",
      [query(`sum by (workload) (rate(traffic_guard_dry_run_would_deny_total{${sel}}[$__rate_interval]))`, "{{workload}}")], 0),
  ];
  for (const p of panels) builder.withPanel(p);
  return builder.build();
}

/** The ConfigMap Grafana's dashboard sidecar loads (it watches ConfigMaps labelled grafana_dashboard: "1"). */
export function buildDashboardConfigMap(input: MonitoringInput): Record<string, unknown> {
  const object = {
    apiVersion: "v1",
    kind: "ConfigMap",
    metadata: { name: NAMES.dashboard, namespace: input.namespace, labels: { ...labelsFor(input), grafana_dashboard: "1" } },
    data: { "traffic-guard.json": `${JSON.stringify(buildDashboard(), null, 2)}\n` },
  };
  const problems = metadataProblems(object.metadata);
  if (problems.length > 0) throw new UserError("the dashboard ConfigMap is invalid", problems);
  return object;
}

/** Every monitoring object, in the order they are printed. */
export function buildMonitoring(input: MonitoringInput): Array<Record<string, unknown>> {
  return [buildPrometheusRule(input).toJSON(), buildPodMonitor(input).toJSON(), buildDashboardConfigMap(input)] as Array<Record<string, unknown>>;
}

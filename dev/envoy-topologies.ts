/**
 * The concrete Envoy setups of this project, all parameterisations of the one template in
 * dev/envoy-config.ts: the edge proxy of topology A (also the demo), the Istio-like ingress
 * gateway and sidecar of topology B, and the benchmark's five configurations.
 */
import type { DownstreamTlsSpec, EnvoySpec, HttpFilterSpec, ListenerSpec, TlsFiles, WasmFilterSpec } from "./envoy-config.ts";
import type { RunningEnvoy } from "./envoy-process.ts";

/**
 * Topology A: the filter on the proxy that clients reach directly, configured as an edge proxy
 * (Istio's ingress gateway settings: use_remote_address true, xff_num_trusted_hops 0), listening on
 * 127.0.0.1 and, when asked, ::1.
 */
export function edgeSpec(opts: { upstreamPort: number; filters: HttpFilterSpec[]; ipv6?: boolean; port?: number }): EnvoySpec {
  return {
    listeners: [
      {
        name: "edge",
        ipv4: "127.0.0.1",
        ipv6: opts.ipv6 ? "::1" : undefined,
        port: opts.port,
        useRemoteAddress: true,
        xffNumTrustedHops: 0,
        filters: opts.filters,
        route: { kind: "cluster", host: "127.0.0.1", port: opts.upstreamPort },
      },
    ],
  };
}

/**
 * Topology B, first hop: an "ingress gateway" Envoy as istiod renders one by default — HCM
 * use_remote_address true, xff_num_trusted_hops 0 (meshConfig gatewayTopology.numTrustedProxies
 * unset) and no internal_address_config (istiod only sets one from meshNetworks). `internalCidrs`
 * reproduces the meshNetworks case, where the listed ranges count as internal. `sidecarTls` makes the
 * gateway originate mTLS to the sidecar with that (gateway workload) certificate, as Istio does.
 */
export function gatewaySpec(opts: { sidecarPort: number; internalCidrs?: string[]; sidecarTls?: TlsFiles }): EnvoySpec {
  return {
    nodeId: "router~127.0.0.1~istio-ingressgateway.istio-system~istio-system.svc.cluster.local",
    listeners: [
      {
        name: "gateway",
        ipv4: "127.0.0.1",
        useRemoteAddress: true,
        xffNumTrustedHops: 0,
        internalCidrs: opts.internalCidrs,
        filters: [],
        route: { kind: "cluster", host: "127.0.0.1", port: opts.sidecarPort, tls: opts.sidecarTls },
      },
    ],
  };
}

/**
 * Topology B, second hop: the workload's sidecar (use_remote_address false) carrying the filter. With
 * `tls` it is configured like Istio's inbound listener: mTLS with the workload certificate, client
 * certificates required (STRICT, or PERMISSIVE with a plaintext chain), XFCC APPEND_FORWARD.
 */
export function sidecarSpec(opts: { upstreamPort: number; filters: HttpFilterSpec[]; tls?: DownstreamTlsSpec }): EnvoySpec {
  return {
    nodeId: "sidecar~127.0.0.1~app.default~default.svc.cluster.local",
    listeners: [
      {
        name: "sidecar",
        ipv4: "127.0.0.1",
        useRemoteAddress: false,
        xffNumTrustedHops: 0,
        filters: opts.filters,
        route: { kind: "cluster", host: "127.0.0.1", port: opts.upstreamPort },
        tls: opts.tls,
        forwardClientCertDetails: opts.tls ? "APPEND_FORWARD" : undefined,
      },
    ],
  };
}

/** The benchmark configurations, in the order docs/benchmark.md lists them. */
export const BENCH_CONFIGS = ["raw-floor", "no-filter", "native-local-ratelimit", "guard-allow", "guard-block", "noop-wasm", "guard-custom"] as const;

/** The configurations `npm run bench -- --baseline <rev>` adds: traffic-guard at another revision, same pluginConfigs. */
export const BASELINE_CONFIGS = ["baseline-allow", "baseline-block", "baseline-custom"] as const;

/** One of {@link BENCH_CONFIGS} or {@link BASELINE_CONFIGS}. */
export type BenchConfig = (typeof BENCH_CONFIGS)[number] | (typeof BASELINE_CONFIGS)[number];

/** Inputs of {@link benchListener}. */
export interface BenchInputs {
  guardWasm: string;
  noopWasm: string;
  /** The raw-ABI floor module (bench/floor/floor.wat, assembled). */
  floorWasm: string;
  /** The filter built at the baseline revision (BASELINE_CONFIGS only). */
  baselineWasm?: string;
  /** traffic-guard's clientAddress source: "peer" for one client, "xff" for the XFF-churn run. */
  source: "peer" | "xff";
}

/**
 * The benchmark's clientAddress: the TCP peer, or for the churn run the XFF entry left of the one the
 * traffic-guard listener (use_remote_address true, see benchListener) appends for wrk, believed because
 * wrk's loopback address is a trusted peer.
 */
function benchClientAddress(source: "peer" | "xff"): object {
  return source === "peer" ? { source } : { source, trustedHops: 1, trustedPeers: ["127.0.0.0/8"] };
}

/**
 * pluginConfig of the allow path: every rule on, limits (the maximum the contract accepts,
 * 1 000 000 per second) that a single benchmark client cannot reach.
 */
export function allowPathConfig(source: "peer" | "xff"): object {
  const never = { requests: 1_000_000, per: "1s" };
  return {
    clientAddress: benchClientAddress(source),
    rules: {
      rate: { limit: never, ban: "1h" },
      userAgent: { limit: never, ban: "1h" },
      errors: { limit: never, ban: "1h" },
    },
  };
}

/**
 * Ten custom rules (docs/rules.md) that a benchmark request (GET / from wrk, no cookie, no Sec-Fetch
 * headers) never matches, but that make the filter read what such rules read: the method, the path, the
 * User-Agent, three headers and, for the response rule, the status.
 */
export const BENCH_CUSTOM_RULES: object[] = [
  { name: "sensitive", take: { request: { path: ["/.env", "/.git/*", "*.bak", "*.sql"] } }, limit: { requests: 3, per: "1h" }, ban: "1h" },
  { name: "deletes", take: { request: { method: ["DELETE"] } }, limit: { requests: 10, per: "1m" } },
  { name: "probe-header", take: { request: { header: { "x-probe": "present" } } }, limit: { requests: 1, per: "1h" }, ban: "1h" },
  { name: "scanners", take: { request: { userAgent: ["*sqlmap*", "*nikto*", "*nuclei*"] } }, limit: { requests: 1, per: "1m" }, ban: "1h" },
  { name: "pages-without-api", take: { request: { header: { "sec-fetch-mode": "navigate" } } }, give: { request: { path: ["/api/*"] } }, limit: { requests: 30, per: "5m" }, ban: "15m" },
  { name: "admin", take: { request: { path: ["/admin/*", "/wp-admin/*"] } }, limit: { requests: 5, per: "1m" }, ban: "10m" },
  { name: "search-scrapers", take: { request: { path: ["/search"], query: "present" } }, limit: { requests: 20, per: "1m" } },
  { name: "cookie-pages", take: { request: { header: { cookie: "present", accept: "text/html*" } } }, limit: { requests: 100, per: "1m" } },
  { name: "redirects", take: { response: { status: [301, 302, 307, 308] } }, limit: { requests: 50, per: "1m" }, ban: "5m" },
  { name: "wordpress", take: { request: { path: ["/wp-login.php", "/xmlrpc.php"] } }, limit: { requests: 2, per: "1h" }, ban: "1h" },
];

/**
 * The listener with its Wasm plugins named after configuration `c` and in a Wasm VM of their own, so that
 * two configurations in one Envoy keep their own shared-data keys and stats, and each runs as it would
 * alone in a proxy: two plugins of one module would otherwise share one VM (docs/benchmark.md, Method).
 */
export function namedFor(listener: ListenerSpec, c: BenchConfig): ListenerSpec {
  return { ...listener, filters: listener.filters.map((f): HttpFilterSpec => (f.kind === "wasm" ? { ...f, name: `${f.name}-${c}`, pluginName: `${f.pluginName}-${c}`, vmId: c } : f)) };
}

/** pluginConfig of the allow path with BENCH_CUSTOM_RULES beside the built-in rules. */
export function customRulesConfig(source: "peer" | "xff"): object {
  const base = allowPathConfig(source) as { rules: object };
  return { ...base, rules: { ...base.rules, custom: BENCH_CUSTOM_RULES } };
}

/** pluginConfig of the block path: one request per hour, then a day-long ban. */
export function blockPathConfig(source: "peer" | "xff"): object {
  return { clientAddress: benchClientAddress(source), rules: { rate: { limit: { requests: 1, per: "1h" }, ban: "24h" } } };
}

/** The name of configuration `c`'s benchmark listener (Envoy listener names take no '-'). */
export function benchListenerName(c: BenchConfig): string {
  return c.replace(/-/g, "_");
}

/** The IPv4 port of configuration `c`'s benchmark listener in Envoy `e`. */
export function benchPort(e: RunningEnvoy, c: BenchConfig): number {
  return e.ports.get(benchListenerName(c))!.ipv4;
}

/**
 * One benchmark listener: `--concurrency 1` Envoy answers with a direct_response so the upstream
 * costs nothing; only the filter differs between configurations. use_remote_address stays false
 * so that, in the churn run, Envoy's own remote address (and so the native limiter's
 * remote_address descriptor) also comes from x-forwarded-for, like traffic-guard's `xff` source.
 * The traffic-guard listeners of the churn run are the exception: traffic-guard believes XFF only
 * from a trusted peer, and with use_remote_address false Envoy hides the TCP peer behind the XFF
 * entry, so there Envoy keeps the TCP peer (use_remote_address true) and appends it to XFF.
 */
export function benchListener(config: BenchConfig, inputs: BenchInputs): ListenerSpec {
  const wasm = (pluginConfig: object | string, wasmPath: string, name: string, pluginName: string): WasmFilterSpec => ({
    kind: "wasm",
    namespace: "bench",
    name,
    pluginName,
    pluginConfig: typeof pluginConfig === "string" ? pluginConfig : JSON.stringify(pluginConfig),
    wasmPath,
  });
  const filters: Record<BenchConfig, HttpFilterSpec[]> = {
    "raw-floor": [wasm("", inputs.floorWasm, "floor", "floor")],
    "no-filter": [],
    "native-local-ratelimit": [{ kind: "local_ratelimit", maxDynamicDescriptors: 20_000, tokensPerSecond: 1_000_000_000 }],
    "guard-allow": [wasm(allowPathConfig(inputs.source), inputs.guardWasm, "traffic-guard", "traffic-guard")],
    "guard-block": [wasm(blockPathConfig(inputs.source), inputs.guardWasm, "traffic-guard", "traffic-guard")],
    "noop-wasm": [wasm("", inputs.noopWasm, "noop", "noop")],
    "baseline-allow": inputs.baselineWasm ? [wasm(allowPathConfig(inputs.source), inputs.baselineWasm, "traffic-guard", "traffic-guard")] : [],
    "baseline-block": inputs.baselineWasm ? [wasm(blockPathConfig(inputs.source), inputs.baselineWasm, "traffic-guard", "traffic-guard")] : [],
    "guard-custom": [wasm(customRulesConfig(inputs.source), inputs.guardWasm, "traffic-guard", "traffic-guard")],
    "baseline-custom": inputs.baselineWasm ? [wasm(customRulesConfig(inputs.source), inputs.baselineWasm, "traffic-guard", "traffic-guard")] : [],
  };
  return {
    name: benchListenerName(config),
    ipv4: "127.0.0.1",
    useRemoteAddress: inputs.source === "xff" && (config.startsWith("guard-") || config.startsWith("baseline-")),
    filters: filters[config],
    route: { kind: "direct_response", status: 200, body: "ok\n" },
  };
}

/**
 * A static HTTP/1.1 cluster to a loopback port, as the `decisions` block's callouts reach etcd's JSON
 * gateway (an Istio mesh renders the etcd Service as the outbound cluster instead).
 */
export function staticCluster(name: string, port: number, host = "127.0.0.1"): object {
  return {
    name,
    type: "STATIC",
    connect_timeout: "1s",
    load_assignment: { cluster_name: name, endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: host, port_value: port } } } }] }] },
  };
}

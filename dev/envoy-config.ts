/**
 * The one template every Envoy configuration of this project is generated from: the end-to-end
 * topologies, the demo and the five benchmark configurations. Every generated file is checked with
 * `envoy --mode validate` before it is used (see dev/envoy-process.ts).
 *
 * The Wasm filter is rendered exactly as Istio's WasmPlugin translation renders it
 * (istio/istio pilot/pkg/model/extensions.go): an `envoy.filters.http.wasm` filter named
 * `<namespace>.<name>`, `config.name` = the same, `root_id` = `pluginName`, `configuration` a
 * `google.protobuf.StringValue` holding the pluginConfig JSON, `vm_config.runtime`
 * `envoy.wasm.runtime.v8`, no `vm_id` (only the benchmark sets one, see `vmId`), code from a local file (Istio's `file://` URL form), and the
 * ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION environment variable Istio always adds.
 */

/** A proxy-wasm filter configured the way Istio configures a WasmPlugin. */
export interface WasmFilterSpec {
  kind: "wasm";
  /** WasmPlugin metadata.namespace. */
  namespace: string;
  /** WasmPlugin metadata.name. */
  name: string;
  /** WasmPlugin spec.pluginName, rendered as root_id. */
  pluginName: string;
  /** The pluginConfig JSON text (the bytes the filter receives in onConfigure). Empty = no configuration. */
  pluginConfig: string;
  /** Absolute path of the .wasm module. */
  wasmPath: string;
  /**
   * Istio's WasmPlugin failStrategy. Istio 1.25+ always renders it as PluginConfig.failure_policy
   * (FAIL_CLOSE -> FAIL_CLOSED, the default; FAIL_OPEN -> FAIL_OPEN; FAIL_RELOAD -> FAIL_RELOAD).
   */
  failStrategy?: "FAIL_CLOSE" | "FAIL_OPEN" | "FAIL_RELOAD";
  /**
   * Deliver the filter the way istiod does, through extension config discovery (ECDS): the HCM
   * names the filter and points at a config source; the Wasm config itself lives in this file
   * (a DiscoveryResponse written with {@link writeEcdsFile}), which Envoy watches for updates.
   * Undefined renders the Wasm config inline.
   */
  ecdsPath?: string;
  /**
   * vm_config.vm_id. Istio sets none, so every plugin of one module shares one Wasm VM per worker; the
   * benchmark gives each configuration its own, so that each runs as it would alone in a proxy.
   */
  vmId?: string;
}

/**
 * Envoy's native local rate limiter with one token bucket per client address (a dynamic
 * `remote_address` descriptor), sized so that it never limits: the benchmark's native baseline.
 */
export interface LocalRateLimitSpec {
  kind: "local_ratelimit";
  /** How many per-address buckets Envoy keeps (LRU). */
  maxDynamicDescriptors: number;
  /** Tokens per address per second (and bucket size). */
  tokensPerSecond: number;
}

/** An HTTP filter placed before the router. */
export type HttpFilterSpec = WasmFilterSpec | LocalRateLimitSpec;

/** PEM files of one side of a TLS connection: its certificate chain and key, and the CA it trusts. */
export interface TlsFiles {
  certChain: string;
  privateKey: string;
  /** CA certificate that the other side's certificate must chain to. */
  caCert: string;
}

/**
 * A listener's downstream TLS, as Istio renders an inbound listener: the workload certificate, client
 * certificates required and validated against the mesh CA. STRICT accepts only mTLS; PERMISSIVE adds a
 * plaintext filter chain chosen by the TLS inspector (Istio's PeerAuthentication PERMISSIVE).
 */
export interface DownstreamTlsSpec extends TlsFiles {
  mode: "STRICT" | "PERMISSIVE";
}

/** Where the listener sends requests. `tls` originates mTLS to the upstream with that certificate. */
export type RouteSpec =
  | { kind: "cluster"; host: string; port: number; timeoutSeconds?: number; tls?: TlsFiles; /** Speak HTTP/2 (h2c) to the upstream, as to a gRPC server. */ http2?: boolean }
  | { kind: "direct_response"; status: number; body: string };

/** One HTTP listener with its connection manager. */
export interface ListenerSpec {
  /** Listener name and HCM stat_prefix. */
  name: string;
  /** IPv4 bind address (loopback only in this project). */
  ipv4: string;
  /** Optional IPv6 bind address (`::1`), as an additional address of the same listener. */
  ipv6?: string;
  /** Fixed port, or 0 for an ephemeral one (read back from the admin API). */
  port?: number;
  /** HCM use_remote_address. */
  useRemoteAddress: boolean;
  /** HCM xff_num_trusted_hops (default 0). */
  xffNumTrustedHops?: number;
  /**
   * HCM internal_address_config.cidr_ranges. Undefined leaves the field out, which is what Istio
   * renders for a gateway unless meshNetworks is configured.
   */
  internalCidrs?: string[];
  /** HTTP filters in order; the router is appended. */
  filters: HttpFilterSpec[];
  route: RouteSpec;
  /** Downstream (m)TLS; undefined = plaintext only. */
  tls?: DownstreamTlsSpec;
  /**
   * HCM forward_client_cert_details (Istio's inbound listeners: APPEND_FORWARD, with the URI SAN in
   * set_current_client_cert_details). Undefined leaves Envoy's default (SANITIZE).
   */
  forwardClientCertDetails?: "APPEND_FORWARD" | "SANITIZE_SET" | "SANITIZE";
}

/** A whole Envoy bootstrap. */
export interface EnvoySpec {
  listeners: ListenerSpec[];
  /** Admin port; 0 picks an ephemeral one, read back through --admin-address-path. */
  adminPort?: number;
  /** node.id (default `traffic-guard-e2e`). */
  nodeId?: string;
  /** Extra static clusters (e.g. one a filter's HTTP callouts reach), rendered as given. */
  clusters?: object[];
}

const ROUTER = {
  name: "envoy.filters.http.router",
  typed_config: { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" },
};

function socket(address: string, port: number) {
  return { socket_address: { address, port_value: port } };
}

function cidr(range: string) {
  const [prefix, len] = range.split("/");
  if (!prefix || len === undefined || !/^\d+$/.test(len)) throw new Error(`internalCidrs: expected a CIDR like "10.0.0.0/8", got "${range}"`);
  return { address_prefix: prefix, prefix_len: Number(len) };
}

/** Renders a WasmPlugin the way istiod does (see the module comment). */
export function wasmFilter(spec: WasmFilterSpec): object {
  const filterName = `${spec.namespace}.${spec.name}`;
  const config: Record<string, unknown> = {
    name: filterName,
    root_id: spec.pluginName,
    vm_config: {
      runtime: "envoy.wasm.runtime.v8",
      code: { local: { filename: spec.wasmPath } },
      environment_variables: { key_values: { ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION: "1" } },
      ...(spec.vmId === undefined ? {} : { vm_id: spec.vmId }),
    },
  };
  // Istio leaves configuration unset when pluginConfig is empty.
  if (spec.pluginConfig !== "") {
    config.configuration = { "@type": "type.googleapis.com/google.protobuf.StringValue", value: spec.pluginConfig };
  }
  const policy = { FAIL_CLOSE: "FAIL_CLOSED", FAIL_OPEN: "FAIL_OPEN", FAIL_RELOAD: "FAIL_RELOAD" } as const;
  config.failure_policy = policy[spec.failStrategy ?? "FAIL_CLOSE"];
  return {
    name: filterName,
    typed_config: { "@type": WASM_TYPE, config },
  };
}

const WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";

/** The HCM entry of an ECDS-delivered Wasm filter, as istiod renders it (type URL list included). */
function ecdsFilter(spec: WasmFilterSpec & { ecdsPath: string }): object {
  const dir = spec.ecdsPath.slice(0, spec.ecdsPath.lastIndexOf("/"));
  return {
    name: `${spec.namespace}.${spec.name}`,
    config_discovery: {
      config_source: {
        path_config_source: { path: spec.ecdsPath, watched_directory: { path: dir } },
        resource_api_version: "V3",
        // istiod blocks listener readiness until the plugin arrives (initial_fetch_timeout 0s).
        initial_fetch_timeout: "0s",
      },
      type_urls: [WASM_TYPE],
    },
  };
}

/** The DiscoveryResponse body that an ECDS file holds for one Wasm filter. */
export function ecdsResponse(spec: WasmFilterSpec, version: string): object {
  const filter = wasmFilter(spec) as { name: string; typed_config: object };
  return {
    version_info: version,
    resources: [
      {
        "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
        name: filter.name,
        typed_config: filter.typed_config,
      },
    ],
  };
}

/** Renders Envoy's local_ratelimit with a dynamic per-remote_address descriptor that never limits. */
export function localRateLimitFilter(spec: LocalRateLimitSpec): object {
  const bucket = { max_tokens: spec.tokensPerSecond, tokens_per_fill: spec.tokensPerSecond, fill_interval: "1s" };
  return {
    name: "envoy.filters.http.local_ratelimit",
    typed_config: {
      "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
      stat_prefix: "native_per_client",
      token_bucket: bucket,
      filter_enabled: { runtime_key: "native_rl_enabled", default_value: { numerator: 100, denominator: "HUNDRED" } },
      filter_enforced: { runtime_key: "native_rl_enforced", default_value: { numerator: 100, denominator: "HUNDRED" } },
      // A descriptor entry without a value is dynamic: one bucket per distinct remote address.
      descriptors: [{ entries: [{ key: "remote_address" }], token_bucket: bucket }],
      rate_limits: [{ actions: [{ remote_address: {} }] }],
      max_dynamic_descriptors: spec.maxDynamicDescriptors,
      always_consume_default_token_bucket: false,
    },
  };
}

function httpFilter(spec: HttpFilterSpec): object {
  if (spec.kind === "local_ratelimit") return localRateLimitFilter(spec);
  return spec.ecdsPath ? ecdsFilter({ ...spec, ecdsPath: spec.ecdsPath }) : wasmFilter(spec);
}

function routeAction(route: RouteSpec, clusterName: string): object {
  if (route.kind === "direct_response") {
    return { direct_response: { status: route.status, body: { inline_string: route.body } } };
  }
  return { route: { cluster: clusterName, timeout: `${route.timeoutSeconds ?? 15}s` } };
}

/** Renders one listener (HCM + filters + route). */
export function listener(spec: ListenerSpec): object {
  const clusterName = `${spec.name}_upstream`;
  const hcm: Record<string, unknown> = {
    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    stat_prefix: spec.name,
    codec_type: "AUTO",
    use_remote_address: spec.useRemoteAddress,
    xff_num_trusted_hops: spec.xffNumTrustedHops ?? 0,
    route_config: {
      name: `${spec.name}_routes`,
      virtual_hosts: [{ name: "all", domains: ["*"], routes: [{ match: { prefix: "/" }, ...routeAction(spec.route, clusterName) }] }],
    },
    http_filters: [...spec.filters.map(httpFilter), ROUTER],
  };
  if (spec.internalCidrs !== undefined) hcm.internal_address_config = { cidr_ranges: spec.internalCidrs.map(cidr) };
  if (spec.forwardClientCertDetails !== undefined) {
    hcm.forward_client_cert_details = spec.forwardClientCertDetails;
    hcm.set_current_client_cert_details = { uri: true };
  }
  const filters = [{ name: "envoy.filters.network.http_connection_manager", typed_config: hcm }];
  const out: Record<string, unknown> = {
    name: spec.name,
    // Listener stats (including the per-worker ones) are named listener.<name>.*.
    stat_prefix: spec.name,
    address: socket(spec.ipv4, spec.port ?? 0),
    filter_chains: [{ filters }],
  };
  if (spec.tls) {
    const tlsChain = { filter_chain_match: { transport_protocol: "tls" }, filters, transport_socket: downstreamTls(spec.tls) };
    out.listener_filters = [{ name: "envoy.filters.listener.tls_inspector", typed_config: { "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector" } }];
    out.filter_chains = spec.tls.mode === "STRICT" ? [tlsChain] : [tlsChain, { name: "plaintext", filters }];
  }
  if (spec.ipv6) out.additional_addresses = [{ address: socket(spec.ipv6, spec.port ?? 0) }];
  return out;
}

function tlsCertificate(files: TlsFiles) {
  return { certificate_chain: { filename: files.certChain }, private_key: { filename: files.privateKey } };
}

/** A downstream TLS transport socket requiring a client certificate that chains to the CA. */
function downstreamTls(tls: DownstreamTlsSpec): object {
  return {
    name: "envoy.transport_sockets.tls",
    typed_config: {
      "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
      require_client_certificate: true,
      common_tls_context: {
        tls_certificates: [tlsCertificate(tls)],
        validation_context: { trusted_ca: { filename: tls.caCert } },
      },
    },
  };
}

/** An upstream TLS transport socket presenting a client certificate and validating the server's. */
function upstreamTls(tls: TlsFiles): object {
  return {
    name: "envoy.transport_sockets.tls",
    typed_config: {
      "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
      common_tls_context: {
        tls_certificates: [tlsCertificate(tls)],
        validation_context: { trusted_ca: { filename: tls.caCert } },
      },
    },
  };
}

function cluster(spec: ListenerSpec): object | undefined {
  if (spec.route.kind !== "cluster") return undefined;
  const tls = spec.route.tls ? { transport_socket: upstreamTls(spec.route.tls) } : {};
  return {
    ...tls,
    name: `${spec.name}_upstream`,
    type: "STATIC",
    connect_timeout: "1s",
    load_assignment: {
      cluster_name: `${spec.name}_upstream`,
      endpoints: [{ lb_endpoints: [{ endpoint: { address: socket(spec.route.host, spec.route.port) } }] }],
    },
    ...(spec.route.http2
      ? {
          typed_extension_protocol_options: {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
              "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
              explicit_http_config: { http2_protocol_options: {} },
            },
          },
        }
      : {}),
  };
}

/** Renders the full bootstrap (JSON object; Envoy reads it from a .json file). */
export function envoyBootstrap(spec: EnvoySpec): object {
  const names = new Set<string>();
  for (const l of spec.listeners) {
    if (names.has(l.name)) throw new Error(`listeners: duplicate name "${l.name}"`);
    names.add(l.name);
  }
  return {
    // ECDS (like any xDS) requires a node identity; istiod's proxies carry one too.
    node: { id: spec.nodeId ?? "traffic-guard-e2e", cluster: "traffic-guard" },
    admin: { address: socket("127.0.0.1", spec.adminPort ?? 0) },
    static_resources: {
      listeners: spec.listeners.map(listener),
      clusters: [...spec.listeners.map(cluster).filter((c) => c !== undefined), ...(spec.clusters ?? [])],
    },
  };
}

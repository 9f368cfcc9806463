// Building the Istio objects that deploy traffic-guard. Pure functions, no I/O: `traffic-guard manifests` prints
// what they return and `traffic-guard sync` (per-namespace opt-in) reuses buildWasmPlugin for each namespace.
//
// WasmPlugin objects are validated with @kubernetes-models/istio (the CRD's OpenAPI schema compiled to a validator).
// That schema cannot express the CRD's CEL rules (x-kubernetes-validations), so the few that apply here are checked
// by hand below: url scheme, selector keys and values without "*", at most one of selector/targetRef(s).
//
// TrafficExtension (Istio's newer kind) has no model in @kubernetes-models/istio 3.0.1. Its `spec.wasm` carries the
// same fields, with the same schema, as WasmPlugin's spec, and phase/priority/match/selector sit beside it. It is
// validated by (1) checking its structure against the field lists of the TrafficExtension CRD (required wasm.url,
// no unknown fields, exactly one of wasm/lua, at most one of selector/targetRefs, its own phase enum) and then
// (2) running the WasmPlugin validator over the equivalent WasmPlugin spec, reporting paths as TrafficExtension
// paths. tests/cli also checks the emitted objects against the real CRD schema from ../shared/reference.
import { WasmPlugin, type IWasmPlugin } from "@kubernetes-models/istio/extensions.istio.io/v1alpha1/WasmPlugin";
import { stringify } from "yaml";
import pkg from "../../package.json" with { type: "json" };
import { UserError } from "./errors.ts";

/** The CLI's version; it goes into the `app.kubernetes.io/version` label. */
export const VERSION: string = pkg.version;

/** WasmPlugin.spec.phase values traffic-guard accepts. */
export const PHASES = ["AUTHN", "AUTHZ", "STATS"] as const;
/** WasmPlugin.spec.failStrategy values. */
export const FAIL_STRATEGIES = ["FAIL_OPEN", "FAIL_CLOSE", "FAIL_RELOAD"] as const;
/** WasmPlugin.spec.imagePullPolicy values. */
export const PULL_POLICIES = ["IfNotPresent", "Always"] as const;
/** WasmPlugin.spec.match[].mode values. */
export const MATCH_MODES = ["SERVER", "CLIENT", "CLIENT_AND_SERVER"] as const;
/** The filter's `mode` values (pluginConfig.mode). */
export const POLICY_MODES = ["enforce", "dry-run"] as const;

/** Istio phase. */
export type Phase = (typeof PHASES)[number];
/** Istio failure strategy. */
export type FailStrategy = (typeof FAIL_STRATEGIES)[number];
/** Istio pull policy. */
export type PullPolicy = (typeof PULL_POLICIES)[number];
/** Istio traffic direction. */
export type MatchMode = (typeof MATCH_MODES)[number];
/** Filter mode. */
export type PolicyMode = (typeof POLICY_MODES)[number];

/** Defaults used when an option is not given; docs/deploy-istio.md explains each choice. */
export const DEFAULTS = {
  name: "traffic-guard",
  pluginName: "traffic-guard",
  /** Before Istio's authentication filters: an abusive client costs no JWT or mTLS-policy work. */
  phase: "AUTHN" as Phase,
  /** A broken or unreachable module lets traffic through rather than failing every request. */
  failStrategy: "FAIL_OPEN" as FailStrategy,
  /** Higher runs first within the phase; 1000 puts traffic-guard ahead of plugins at the default (0). */
  priority: 1000,
  imagePullPolicy: "IfNotPresent" as PullPolicy,
  /** Sidecars: inbound traffic only. Gateways need CLIENT (see GATEWAY). */
  matchMode: "SERVER" as MatchMode,
  /** Istio's root namespace: a WasmPlugin there without a selector covers the whole mesh. */
  rootNamespace: "istio-system",
};

/** The default ingress gateway: Istio classifies gateway listeners as CLIENT traffic, so SERVER would never match. */
export const GATEWAY = {
  namespace: "istio-system",
  name: "traffic-guard-ingressgateway",
  selector: { istio: "ingressgateway" } as Record<string, string>,
  matchMode: "CLIENT" as MatchMode,
};

/** Everything that goes into one plugin object, besides where it lives. */
export interface PluginSpecInput {
  /** `oci://registry/repo:tag[@sha256:…]`, `https://…/traffic-guard.wasm` or `file:///…`. */
  url: string;
  /** Hex digest: for OCI the image manifest digest, for http(s)/file the digest of the .wasm file. */
  sha256?: string;
  /** The policy (pluginConfig). It must already be accepted by the filter; see checkPolicy in policy.ts. */
  pluginConfig: Record<string, unknown>;
  /** Overrides pluginConfig.mode (sync uses it to roll a namespace out in dry-run first). */
  mode?: PolicyMode;
  phase?: Phase;
  failStrategy?: FailStrategy;
  priority?: number;
  imagePullPolicy?: PullPolicy;
  imagePullSecret?: string;
  matchMode?: MatchMode;
  /** Workload selector (matchLabels); none: every workload in the namespace. */
  selector?: Record<string, string>;
  /** Object name; default `traffic-guard`. */
  name?: string;
  /** Value of the app.kubernetes.io/version label; default the CLI version. */
  version?: string;
  /** Extra labels (sync adds its own); the traffic-guard labels always win. */
  labels?: Record<string, string>;
}

/** Input for one namespaced object. */
export interface PluginObjectInput extends PluginSpecInput {
  namespace: string;
}

/** A TrafficExtension object (no typed model exists for it; see the file comment). */
export interface TrafficExtension {
  apiVersion: "extensions.istio.io/v1alpha1";
  kind: "TrafficExtension";
  metadata: { name: string; namespace: string; labels: Record<string, string> };
  spec: Record<string, unknown>;
}

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const LABEL_NAME = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;

/** Problems with Kubernetes names and labels, which the OpenAPI schema leaves to the API server. */
function metadataProblems(name: string, namespace: string, labels: Record<string, string>): string[] {
  const problems: string[] = [];
  if (!DNS1123_SUBDOMAIN.test(name) || name.length > 253) {
    problems.push(`metadata.name: "${name}" must be a lowercase DNS-1123 subdomain (a-z, 0-9, "-", ".")`);
  }
  if (!DNS1123_LABEL.test(namespace) || namespace.length > 63) {
    problems.push(`metadata.namespace: "${namespace}" must be a lowercase DNS-1123 label of at most 63 characters`);
  }
  for (const [key, value] of Object.entries(labels)) {
    if (!LABEL_NAME.test(key) || key.split("/").at(-1)!.length > 63) problems.push(`metadata.labels: invalid label key "${key}"`);
    if (!LABEL_VALUE.test(value) || value.length > 63) problems.push(`metadata.labels.${key}: invalid label value "${value}"`);
  }
  return problems;
}

/** The CEL rules of the CRDs that apply to what traffic-guard emits (x-kubernetes-validations). */
function celProblems(spec: Record<string, unknown>, prefix: string, urlPath: string): string[] {
  const problems: string[] = [];
  const url = spec.__url as string | undefined;
  if (typeof url === "string") {
    const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(url)?.[1]?.toLowerCase() ?? "";
    if (!["", "http", "https", "oci", "file"].includes(scheme)) problems.push(`${urlPath}: url must have schema one of [http, https, file, oci]`);
  }
  const selector = spec.selector as { matchLabels?: Record<string, string> } | undefined;
  for (const [key, value] of Object.entries(selector?.matchLabels ?? {})) {
    if (key.length === 0) problems.push(`${prefix}selector.matchLabels: key must not be empty`);
    if (key.includes("*")) problems.push(`${prefix}selector.matchLabels: wildcard not allowed in label key match ("${key}")`);
    if (String(value).includes("*")) problems.push(`${prefix}selector.matchLabels.${key}: wildcard not allowed in label value match`);
  }
  const targets = ["selector", "targetRef", "targetRefs"].filter((k) => spec[k] !== undefined);
  if (targets.length > 1) problems.push(`${prefix.replace(/\.$/, "") || "spec"}: only one of targetRefs or selector can be set`);
  return problems;
}

/** Turns the validator's errors (`/spec/phase must be …`) into `spec.phase: must be …` lines. */
function schemaProblems(model: WasmPlugin, mapPath: (path: string) => string = (p) => p): string[] {
  try {
    model.validate();
    return [];
  } catch (err) {
    const errors = (err as { errors?: Array<{ instancePath: string; message?: string; params?: Record<string, unknown> }> }).errors;
    if (!Array.isArray(errors)) return [(err as Error).message];
    return errors.map((e) => {
      const path = mapPath(e.instancePath.replace(/^\//, "").replace(/\//g, "."));
      const allowed = Array.isArray(e.params?.allowedValues) ? ` (${(e.params!.allowedValues as string[]).join(", ")})` : "";
      return `${path || "(object)"}: ${e.message ?? "is invalid"}${allowed}`;
    });
  }
}

function labelsFor(input: PluginSpecInput): Record<string, string> {
  return {
    ...(input.labels ?? {}),
    "app.kubernetes.io/name": "traffic-guard",
    "app.kubernetes.io/managed-by": "traffic-guard",
    "app.kubernetes.io/version": input.version ?? VERSION,
  };
}

function normaliseSha256(sha?: string): string | undefined {
  if (sha === undefined) return undefined;
  return sha.replace(/^sha256:/, "").toLowerCase();
}

function pluginConfigFor(input: PluginSpecInput): Record<string, unknown> {
  return input.mode ? { ...input.pluginConfig, mode: input.mode } : { ...input.pluginConfig };
}

/** The fields shared by WasmPlugin.spec and TrafficExtension.spec.wasm, in the order they are printed. */
function wasmFields(input: PluginSpecInput): Record<string, unknown> {
  return {
    url: input.url,
    ...(input.sha256 !== undefined ? { sha256: normaliseSha256(input.sha256) } : {}),
    imagePullPolicy: input.imagePullPolicy ?? DEFAULTS.imagePullPolicy,
    ...(input.imagePullSecret !== undefined ? { imagePullSecret: input.imagePullSecret } : {}),
    pluginName: DEFAULTS.pluginName,
    failStrategy: input.failStrategy ?? DEFAULTS.failStrategy,
    pluginConfig: pluginConfigFor(input),
  };
}

function placementFields(input: PluginSpecInput): Record<string, unknown> {
  return {
    ...(input.selector ? { selector: { matchLabels: { ...input.selector } } } : {}),
    phase: input.phase ?? DEFAULTS.phase,
    priority: input.priority ?? DEFAULTS.priority,
    match: [{ mode: input.matchMode ?? DEFAULTS.matchMode }],
  };
}

/** Validates a WasmPlugin object (typed model schema + metadata + CEL rules); returns the problems, empty when valid. */
export function wasmPluginProblems(object: unknown): string[] {
  const obj = object as IWasmPlugin & { apiVersion?: string; kind?: string };
  if (!obj || typeof obj !== "object") return ["(object): expected a mapping"];
  const problems: string[] = [];
  if (obj.apiVersion !== WasmPlugin.apiVersion) problems.push(`apiVersion: expected ${WasmPlugin.apiVersion}`);
  if (obj.kind !== WasmPlugin.kind) problems.push(`kind: expected ${WasmPlugin.kind}`);
  problems.push(...schemaProblems(new WasmPlugin(obj as IWasmPlugin)));
  const meta = obj.metadata ?? {};
  problems.push(...metadataProblems(meta.name ?? "", meta.namespace ?? "", (meta.labels ?? {}) as Record<string, string>));
  if (obj.spec && typeof obj.spec === "object") {
    problems.push(...celProblems({ ...obj.spec, __url: obj.spec.url }, "spec.", "spec.url"));
  }
  return problems;
}

/** Builds one validated WasmPlugin; throws a UserError listing every problem. */
export function buildWasmPlugin(input: PluginObjectInput): WasmPlugin {
  const object = {
    apiVersion: WasmPlugin.apiVersion,
    kind: WasmPlugin.kind,
    metadata: { name: input.name ?? DEFAULTS.name, namespace: input.namespace, labels: labelsFor(input) },
    spec: wasmPluginSpec(input),
  };
  const plugin = new WasmPlugin(object as IWasmPlugin);
  const problems = wasmPluginProblems(plugin.toJSON());
  if (problems.length > 0) {
    throw new UserError(`the WasmPlugin for namespace ${input.namespace} is invalid`, problems);
  }
  return plugin;
}

// WasmPlugin.spec reads best as: selector, url/sha/pull, plugin name, phase/priority, failStrategy, match, config.
function wasmPluginSpec(input: PluginSpecInput): Record<string, unknown> {
  const p = placementFields(input);
  const w = wasmFields(input);
  return {
    ...(p.selector ? { selector: p.selector } : {}),
    url: w.url,
    ...(w.sha256 !== undefined ? { sha256: w.sha256 } : {}),
    imagePullPolicy: w.imagePullPolicy,
    ...(w.imagePullSecret !== undefined ? { imagePullSecret: w.imagePullSecret } : {}),
    pluginName: w.pluginName,
    phase: p.phase,
    priority: p.priority,
    failStrategy: w.failStrategy,
    match: p.match,
    pluginConfig: w.pluginConfig,
  };
}

const TE_SPEC_FIELDS = new Set(["lua", "match", "phase", "priority", "selector", "targetRefs", "wasm"]);
const TE_WASM_FIELDS = new Set([
  "failStrategy", "imagePullPolicy", "imagePullSecret", "pluginConfig", "pluginName", "sha256", "type", "url", "verificationKey", "vmConfig",
]);
const TE_PHASES = ["UNSPECIFIED", "AUTHN", "AUTHZ", "STATS"];

/** Validates a TrafficExtension object (see the file comment for how); returns the problems, empty when valid. */
export function trafficExtensionProblems(object: unknown): string[] {
  const obj = object as Partial<TrafficExtension>;
  if (!obj || typeof obj !== "object") return ["(object): expected a mapping"];
  const problems: string[] = [];
  if (obj.apiVersion !== "extensions.istio.io/v1alpha1") problems.push("apiVersion: expected extensions.istio.io/v1alpha1");
  if (obj.kind !== "TrafficExtension") problems.push("kind: expected TrafficExtension");
  const meta = obj.metadata ?? ({} as TrafficExtension["metadata"]);
  problems.push(...metadataProblems(meta.name ?? "", meta.namespace ?? "", meta.labels ?? {}));
  const spec = obj.spec;
  if (!spec || typeof spec !== "object" || Array.isArray(spec)) return [...problems, "spec: required, a mapping"];
  for (const key of Object.keys(spec)) if (!TE_SPEC_FIELDS.has(key)) problems.push(`spec.${key}: unknown field`);
  if ((spec.wasm === undefined) === (spec.lua === undefined)) problems.push("spec: exactly one of wasm or lua must be set");
  if (spec.lua !== undefined) problems.push("spec.lua: traffic-guard is a Wasm extension; lua is not expected here");
  if (spec.phase !== undefined && !TE_PHASES.includes(spec.phase as string)) {
    problems.push(`spec.phase: must be equal to one of the allowed values (${TE_PHASES.join(", ")})`);
  }
  const wasm = spec.wasm as Record<string, unknown> | undefined;
  if (wasm !== undefined) {
    if (!wasm || typeof wasm !== "object" || Array.isArray(wasm)) return [...problems, "spec.wasm: must be a mapping"];
    for (const key of Object.keys(wasm)) if (!TE_WASM_FIELDS.has(key)) problems.push(`spec.wasm.${key}: unknown field`);
    if (wasm.url === undefined) problems.push("spec.wasm.url: required");
    // The equivalent WasmPlugin: same wasm fields, same placement fields; phase names differ only for "unspecified".
    const equivalent = {
      apiVersion: WasmPlugin.apiVersion,
      kind: WasmPlugin.kind,
      metadata: { name: "x", namespace: "x" },
      spec: {
        ...wasm,
        ...(spec.match !== undefined ? { match: spec.match } : {}),
        ...(spec.priority !== undefined ? { priority: spec.priority } : {}),
        ...(spec.selector !== undefined ? { selector: spec.selector } : {}),
        ...(spec.targetRefs !== undefined ? { targetRefs: spec.targetRefs } : {}),
        ...(spec.phase !== undefined && TE_PHASES.includes(spec.phase as string)
          ? { phase: spec.phase === "UNSPECIFIED" ? "UNSPECIFIED_PHASE" : spec.phase }
          : {}),
      },
    };
    const mapPath = (p: string): string => {
      const field = p.split(".")[1];
      return field !== undefined && TE_WASM_FIELDS.has(field) ? p.replace(/^spec\./, "spec.wasm.") : p;
    };
    problems.push(...schemaProblems(new WasmPlugin(equivalent as IWasmPlugin), mapPath).filter((p) => !/^spec: must have required property 'url'/.test(p)));
    problems.push(...celProblems({ ...spec, __url: wasm.url }, "spec.", "spec.wasm.url"));
  }
  return problems;
}

/** Builds one validated TrafficExtension (the newer Istio kind) for a namespace; throws a UserError listing every problem. */
export function buildTrafficExtension(input: PluginObjectInput): TrafficExtension {
  const placement = placementFields(input);
  const object: TrafficExtension = {
    apiVersion: "extensions.istio.io/v1alpha1",
    kind: "TrafficExtension",
    metadata: { name: input.name ?? DEFAULTS.name, namespace: input.namespace, labels: labelsFor(input) },
    spec: {
      ...(placement.selector ? { selector: placement.selector } : {}),
      phase: placement.phase,
      priority: placement.priority,
      match: placement.match,
      wasm: wasmFields(input),
    },
  };
  const problems = trafficExtensionProblems(object);
  if (problems.length > 0) throw new UserError(`the TrafficExtension for namespace ${input.namespace} is invalid`, problems);
  return object;
}

/** Renders objects as a multi-document YAML stream that also reads the same under YAML 1.1 (kubectl's parser). */
export function renderYaml(objects: Array<WasmPlugin | TrafficExtension | Record<string, unknown>>, header?: string): string {
  const docs = objects.map((o) => {
    const plain = o instanceof WasmPlugin ? o.toJSON() : o;
    // version 1.1 makes the writer quote strings that YAML 1.1 would read as booleans or numbers ("on", "1:30").
    return stringify(plain, { version: "1.1", lineWidth: 0, indentSeq: true });
  });
  const head = header ? header.split("\n").map((l) => `# ${l}`.trimEnd()).join("\n") + "\n" : "";
  return head + docs.map((d) => `---\n${d}`).join("");
}

// `traffic-guard sync`: keep one WasmPlugin named traffic-guard in every namespace that opts in with a label.
//
// Istio's WasmPlugin has no namespace selector, so per-namespace opt-in means one object per namespace. The
// reconciler is level-triggered: for a namespace it compares what the label asks for with what exists, and
//   - opted in (label value `enabled`, or `dry-run` which forces the filter's mode to dry-run): server-side apply
//     of the object buildWasmPlugin (tools/lib/manifests.ts, shared with `traffic-guard manifests`) returns, with
//     field manager `traffic-guard`;
//   - not opted in (no label, namespace gone or terminating): delete the WasmPlugins sync applied there;
//   - any other label value: reported as an error for that namespace; its objects are left as they are, so a typo
//     in a label never removes protection.
// Objects sync does not manage are never modified or deleted. "Managed" means labelled
// app.kubernetes.io/managed-by=traffic-guard; sync only deletes managed objects whose managedFields also show an
// Apply by field manager `traffic-guard`, i.e. objects sync itself applied, so that a WasmPlugin someone applied
// from `traffic-guard manifests` (for example the mesh-wide one in istio-system) is never removed by sync. A
// conflicting unmanaged object named traffic-guard in an opted-in namespace is reported as skipped.
//
// --watch runs the same per-namespace reconcile from two client-node ListWatch caches (namespaces carrying the
// label key, and all WasmPlugins). ListWatch lists, then watches from the list's resourceVersion; when the watch
// ends it resumes from the last resourceVersion it saw, and when the API server answers 410 Gone (after a restart
// or etcd compaction) it relists and reports the differences as add/update/delete events. An error stops the
// ListWatch; we restart it after a backoff, which resumes from the same resourceVersion. Every event queues its
// namespace, so nothing that changed while the connection was down is missed: the relist or the resumed watch
// delivers it. A periodic resync requeues everything as a last line of defence.
//
// With a PolicySource (`--policy-configmap`, how the in-cluster controller runs) a third ListWatch follows one
// ConfigMap: nothing is reconciled until its policy has loaded and passed the filter's own validation, and every
// accepted change requeues every namespace, so each managed WasmPlugin gets the new pluginConfig. A rejected or
// deleted policy is reported and the last accepted one stays in force: a bad edit never removes protection.
import {
  CoreV1Api, CustomObjectsApi, KubernetesObjectApi, ListWatch, PatchStrategy, Watch,
  type KubernetesListObject, type KubernetesObject, type V1ConfigMap, type V1Namespace,
} from "@kubernetes/client-node";
import { isDeepStrictEqual } from "node:util";
import type { WatchObserver } from "./controller-http.ts";
import { describeError, UserError } from "./errors.ts";
import { buildWasmPlugin, DEFAULTS, type PluginSpecInput, type PolicyMode } from "./manifests.ts";
import { connectionError, describeKubeError, isTransportError, statusCode, type LoadedKubeConfig } from "./kube.ts";

/** Field manager for server-side apply. */
export const FIELD_MANAGER = "traffic-guard";
/** The label that marks objects traffic-guard manages, and its value. */
export const MANAGED_BY_LABEL = "app.kubernetes.io/managed-by";
/** Value of MANAGED_BY_LABEL on traffic-guard's objects. */
export const MANAGED_BY_VALUE = "traffic-guard";
/** Default namespace label key. */
export const DEFAULT_LABEL = "traffic-guard";
/** Label values that opt a namespace in, and the filter mode each one gives (undefined: the policy's own mode). */
export const LABEL_VALUES: Readonly<Record<string, PolicyMode | undefined>> = { enabled: undefined, "dry-run": "dry-run" };

const GROUP = "extensions.istio.io";
const VERSION = "v1alpha1";
const PLURAL = "wasmplugins";
const CRD_NAME = `${PLURAL}.${GROUP}`;

/** A WasmPlugin as read from the API server. */
export interface WasmPluginObject extends KubernetesObject {
  spec?: Record<string, unknown>;
}

/** What sync needs besides the cluster. */
export interface SyncSettings {
  /** Namespace label key (`--label`). */
  label: string;
  /** Everything that goes into the WasmPlugin except namespace and mode (same input as `manifests`). */
  plugin: PluginSpecInput;
  /** Server-side dry run: report, change nothing. */
  dryRun: boolean;
}

/** What happened (or, in a dry run, would happen) to one namespace's WasmPlugin. */
export type Action = "created" | "updated" | "unchanged" | "deleted" | "skipped" | "failed";

/** One line of the report. */
export interface Outcome {
  namespace: string;
  name: string;
  action: Action;
  /** Mode for created/updated/unchanged, the reason for deleted/skipped/failed. */
  detail: string;
}

/** The result of one pass. */
export interface PassReport {
  outcomes: Outcome[];
  /** Namespaces whose label opts them in (valid value). */
  optedIn: number;
}

type Intent =
  | { kind: "present"; mode: PolicyMode | undefined; value: string }
  | { kind: "absent"; reason: string }
  | { kind: "invalid"; reason: string };

/** What the namespace's label asks for. */
export function intentFor(ns: V1Namespace | undefined, label: string): Intent {
  if (!ns) return { kind: "absent", reason: "namespace no longer opts in" };
  if (ns.metadata?.deletionTimestamp) return { kind: "absent", reason: "namespace is being deleted" };
  const value = ns.metadata?.labels?.[label];
  if (value === undefined) return { kind: "absent", reason: "namespace no longer opts in" };
  if (Object.hasOwn(LABEL_VALUES, value)) return { kind: "present", mode: LABEL_VALUES[value], value };
  return {
    kind: "invalid",
    reason: `label ${label}=${value} is not one of ${Object.keys(LABEL_VALUES).join(", ")}; namespace left as it is`,
  };
}

/** True when the object carries traffic-guard's managed-by label. */
export function isManaged(obj: KubernetesObject): boolean {
  return obj.metadata?.labels?.[MANAGED_BY_LABEL] === MANAGED_BY_VALUE;
}

/** True when sync applied the object: managed, and server-side applied by field manager traffic-guard. */
export function isAppliedBySync(obj: KubernetesObject): boolean {
  return isManaged(obj) && (obj.metadata?.managedFields ?? []).some((f) => f.manager === FIELD_MANAGER && f.operation === "Apply");
}

function effectiveMode(plugin: PluginSpecInput, mode: PolicyMode | undefined): string {
  const m = mode ?? (plugin.pluginConfig.mode as string | undefined) ?? "enforce";
  return `mode ${m}`;
}

/**
 * True when `have` already is what applying `want` would give: the same spec (exactly, so that a field sync
 * stopped setting, like pluginConfig.mode after a relabel from dry-run to enabled, counts as a difference) and at
 * least sync's labels. Other managers' labels and annotations do not matter. A false "different" only costs an
 * apply that the API server turns into a no-op.
 */
function alreadyApplied(have: WasmPluginObject, want: WasmPluginObject): boolean {
  const labels = have.metadata?.labels ?? {};
  return (
    Object.entries(want.metadata?.labels ?? {}).every(([k, v]) => labels[k] === v) &&
    isDeepStrictEqual(have.spec ?? {}, want.spec ?? {})
  );
}

/** The API calls sync makes; one instance per kubeconfig. */
export class SyncClient {
  readonly loaded: LoadedKubeConfig;
  readonly core: CoreV1Api;
  readonly custom: CustomObjectsApi;
  readonly objects: KubernetesObjectApi;

  constructor(loaded: LoadedKubeConfig) {
    this.loaded = loaded;
    this.core = loaded.kc.makeApiClient(CoreV1Api);
    this.custom = loaded.kc.makeApiClient(CustomObjectsApi);
    this.objects = KubernetesObjectApi.makeApiClient(loaded.kc);
  }

  /** Namespaces that carry the label key (any value). */
  listNamespaces(label: string): Promise<KubernetesListObject<V1Namespace>> {
    return this.core.listNamespace({ labelSelector: label });
  }

  /** Every WasmPlugin in the cluster. */
  async listWasmPlugins(): Promise<KubernetesListObject<WasmPluginObject>> {
    return (await this.custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural: PLURAL })) as KubernetesListObject<WasmPluginObject>;
  }

  /**
   * Checks that the cluster is reachable, the credentials work, the WasmPlugin CRD is installed and sync may list
   * what it needs; throws a UserError saying which of these failed.
   */
  async preflight(label: string): Promise<void> {
    try {
      await this.listNamespaces(label);
    } catch (err) {
      throw connectionError(err, "list namespaces", this.loaded);
    }
    try {
      await this.listWasmPlugins();
    } catch (err) {
      if (statusCode(err) === 404) {
        throw new UserError(
          `the WasmPlugin CRD (${CRD_NAME}) is not installed in the cluster at ${this.loaded.server}: install Istio (or its base chart) first`,
        );
      }
      throw connectionError(err, `list ${CRD_NAME}`, this.loaded);
    }
  }

  /** Server-side apply of `desired` (field manager traffic-guard); `force` takes back fields edited by hand. */
  async apply(desired: WasmPluginObject, force: boolean, dryRun: boolean): Promise<WasmPluginObject> {
    return (await this.objects.patch(
      desired,
      undefined,
      dryRun ? "All" : undefined,
      FIELD_MANAGER,
      force,
      PatchStrategy.ServerSideApply,
    )) as WasmPluginObject;
  }

  /** Deletes `obj`, but only if it is still the version we looked at (no racing with someone relabelling it). */
  async delete(obj: WasmPluginObject, dryRun: boolean): Promise<void> {
    await this.custom.deleteNamespacedCustomObject({
      group: GROUP,
      version: VERSION,
      plural: PLURAL,
      namespace: obj.metadata!.namespace!,
      name: obj.metadata!.name!,
      // dryRun must be in the DeleteOptions body: when a DELETE has a body, the API server takes the options from
      // it and ignores the dryRun query parameter, so a query-only dry run would really delete.
      dryRun: dryRun ? "All" : undefined,
      body: {
        ...(dryRun ? { dryRun: ["All"] } : {}),
        preconditions: { uid: obj.metadata!.uid, resourceVersion: obj.metadata!.resourceVersion },
      },
    });
  }
}

/** Reconciles one namespace from what is known about it; never throws (failures become "failed" outcomes). */
export async function reconcileNamespace(
  client: SyncClient,
  settings: SyncSettings,
  namespace: string,
  ns: V1Namespace | undefined,
  plugins: readonly WasmPluginObject[],
): Promise<Outcome[]> {
  const intent = intentFor(ns, settings.label);
  const name = settings.plugin.name ?? DEFAULTS.name;
  if (intent.kind === "invalid") return [{ namespace, name, action: "failed", detail: intent.reason }];

  if (intent.kind === "absent") {
    const outcomes: Outcome[] = [];
    for (const plugin of plugins.filter(isAppliedBySync)) {
      const pluginName = plugin.metadata!.name!;
      try {
        await client.delete(plugin, settings.dryRun);
        outcomes.push({ namespace, name: pluginName, action: "deleted", detail: intent.reason });
      } catch (err) {
        if (statusCode(err) === 404) continue; // already gone: nothing to do
        outcomes.push({ namespace, name: pluginName, action: "failed", detail: `delete: ${describeKubeError(err)}` });
      }
    }
    return outcomes;
  }

  const existing = plugins.find((p) => p.metadata?.name === name);
  if (existing && !isManaged(existing)) {
    return [{
      namespace, name, action: "skipped",
      detail: `a WasmPlugin named ${name} that traffic-guard does not manage exists (no label ${MANAGED_BY_LABEL}=${MANAGED_BY_VALUE}); left alone`,
    }];
  }
  let desired: WasmPluginObject;
  try {
    desired = buildWasmPlugin({ ...settings.plugin, namespace, mode: intent.mode }).toJSON() as WasmPluginObject;
  } catch (err) {
    const details = err instanceof UserError ? `: ${err.details.join("; ")}` : "";
    return [{ namespace, name, action: "failed", detail: `${(err as Error).message}${details}` }];
  }
  const mode = effectiveMode(settings.plugin, intent.mode);
  // Already as desired and already ours: no request at all, so a second pass (and every watch echo of our own
  // write) is free. A managed object someone applied by hand from `manifests` is applied once, so that sync owns
  // it from then on and removes it when the namespace opts out.
  if (existing && isAppliedBySync(existing) && alreadyApplied(existing, desired)) {
    return [{ namespace, name, action: "unchanged", detail: mode }];
  }
  try {
    // Force only on our own object: it reclaims fields someone edited by hand. A new object is applied without
    // force, so if an unmanaged one appeared in the meantime its conflicting fields make the apply fail instead.
    const result = await client.apply(desired, existing !== undefined, settings.dryRun);
    let action: Action;
    if (!existing) action = "created";
    // A dry-run response is the object as it would be stored; a real one has a new resourceVersion only if written.
    else if (settings.dryRun) action = alreadyApplied(existing, result) && alreadyApplied(result, existing) ? "unchanged" : "updated";
    else action = result.metadata?.resourceVersion === existing.metadata?.resourceVersion ? "unchanged" : "updated";
    return [{ namespace, name, action, detail: mode }];
  } catch (err) {
    return [{ namespace, name, action: "failed", detail: `apply: ${describeKubeError(err)}` }];
  }
}

function byNamespace(plugins: WasmPluginObject[]): Map<string, WasmPluginObject[]> {
  const map = new Map<string, WasmPluginObject[]>();
  for (const p of plugins) {
    const ns = p.metadata?.namespace ?? "";
    map.set(ns, [...(map.get(ns) ?? []), p]);
  }
  return map;
}

/** Namespaces a pass must look at: every labelled one, and every one holding a WasmPlugin sync cares about. */
function namespacesToVisit(namespaces: readonly V1Namespace[], plugins: readonly WasmPluginObject[], name: string): string[] {
  const set = new Set<string>();
  for (const ns of namespaces) set.add(ns.metadata!.name!);
  for (const p of plugins) if (isAppliedBySync(p) || p.metadata?.name === name) set.add(p.metadata!.namespace!);
  return [...set].sort();
}

async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]);
    }
  });
  await Promise.all(workers);
  return results;
}

function countOptedIn(namespaces: readonly V1Namespace[], label: string): number {
  return namespaces.filter((ns) => intentFor(ns, label).kind === "present").length;
}

/** One pass over the whole cluster: list, then reconcile every namespace that needs a look. */
export async function syncOnce(client: SyncClient, settings: SyncSettings): Promise<PassReport> {
  await client.preflight(settings.label);
  let namespaces: V1Namespace[];
  let plugins: WasmPluginObject[];
  try {
    namespaces = (await client.listNamespaces(settings.label)).items;
    plugins = (await client.listWasmPlugins()).items;
  } catch (err) {
    throw connectionError(err, "list namespaces and WasmPlugins", client.loaded);
  }
  const nsByName = new Map(namespaces.map((ns) => [ns.metadata!.name!, ns]));
  const pluginsByNs = byNamespace(plugins);
  const name = settings.plugin.name ?? DEFAULTS.name;
  const results = await mapLimit(namespacesToVisit(namespaces, plugins, name), 8, (namespace) =>
    reconcileNamespace(client, settings, namespace, nsByName.get(namespace), pluginsByNs.get(namespace) ?? []),
  );
  return { outcomes: results.flat(), optedIn: countOptedIn(namespaces, settings.label) };
}

const DRY_RUN_VERBS: Record<Action, string> = {
  created: "would create",
  updated: "would update",
  unchanged: "unchanged",
  deleted: "would delete",
  skipped: "skipped",
  failed: "failed",
};

/** One report line: `created    shop/traffic-guard (mode enforce)`. */
export function formatOutcome(o: Outcome, dryRun: boolean): string {
  const verb = dryRun ? DRY_RUN_VERBS[o.action] : o.action;
  const sep = o.action === "skipped" || o.action === "failed" ? ": " : " ";
  const detail = o.action === "skipped" || o.action === "failed" ? o.detail : `(${o.detail})`;
  return `${verb.padEnd(13)}${o.namespace}/${o.name}${sep}${detail}`;
}

/** The summary line after the report. */
export function formatSummary(report: PassReport, label: string, dryRun: boolean): string {
  const count = (a: Action) => report.outcomes.filter((o) => o.action === a).length;
  const parts = (["created", "updated", "unchanged", "deleted", "skipped", "failed"] as Action[]).map(
    (a) => `${count(a)} ${dryRun ? DRY_RUN_VERBS[a].replace("would ", "to ") : a}`,
  );
  const head = `${report.optedIn} namespace${report.optedIn === 1 ? "" : "s"} opt in with label ${label}`;
  return `${head}: ${parts.join(", ")}${dryRun ? " (dry run: nothing was changed)" : ""}`;
}

/** Exit code for a report: 1 when any namespace failed. */
export function exitCodeFor(outcomes: Outcome[]): number {
  return outcomes.some((o) => o.action === "failed") ? 1 : 0;
}

/** Output channel of the watcher. */
export interface WatchLog {
  /** Report lines (stdout). */
  out: (line: string) => void;
  /** Progress and errors (stderr). */
  err: (line: string) => void;
}

/** Backoff and resync timings of the watcher. */
export interface WatchTimings {
  /** First retry delay after a watch or reconcile error, doubled up to maxBackoffMs. */
  backoffMs: number;
  maxBackoffMs: number;
  /** Full resync interval. */
  resyncMs: number;
}

const DEFAULT_TIMINGS: WatchTimings = { backoffMs: 500, maxBackoffMs: 30_000, resyncMs: 5 * 60_000 };

/** A policy kept in a ConfigMap and followed while watching (`sync --watch --policy-configmap`). */
export interface PolicySource {
  namespace: string;
  name: string;
  /** The data key holding the policy (YAML or JSON). */
  key: string;
  /** Turns the key's text into a pluginConfig the filter accepts, or throws a UserError naming the problems. */
  load: (text: string) => Promise<Record<string, unknown>>;
}

/** Optional parts of the watcher: a policy ConfigMap, an observer (metrics, readiness) and access to its counts. */
export interface WatchExtras {
  policy?: PolicySource;
  observer?: WatchObserver;
  /** Called once with functions that count from the watcher's caches (what the gauges read). */
  counts?: (counts: WatchCounts) => void;
}

/** Namespaces whose label opts them in, and namespaces holding a WasmPlugin sync applied (for the gauges). */
export interface WatchCounts {
  optedIn(): number;
  managed(): number;
}

/**
 * Runs sync continuously until `signal` aborts; resolves with the exit code (0 after a clean stop).
 * The first pass prints the full report; later passes print only what changed.
 */
export async function syncWatch(
  client: SyncClient,
  settings: SyncSettings,
  log: WatchLog,
  signal: AbortSignal,
  timings: WatchTimings = DEFAULT_TIMINGS,
  extras: WatchExtras = {},
): Promise<number> {
  await client.preflight(settings.label);
  const name = settings.plugin.name ?? DEFAULTS.name;
  const { policy, observer } = extras;
  // The settings every reconcile uses; a policy ConfigMap replaces pluginConfig as it changes.
  let current: SyncSettings = settings;
  let policyLoaded = policy === undefined;
  const watch = new Watch(client.loaded.kc);
  // ListWatch lists on its first start and again whenever its resourceVersion is gone (410); say so on relists.
  const lists = { namespaces: 0, WasmPlugins: 0 };
  const logged = async <T extends KubernetesListObject<KubernetesObject>>(what: keyof typeof lists, list: () => Promise<T>): Promise<T> => {
    const result = await list();
    if (lists[what]++ > 0) log.err(`watch ${what}: relisted at resourceVersion ${result.metadata?.resourceVersion ?? "?"}`);
    return result;
  };
  const nsCache = new ListWatch<V1Namespace>(
    "/api/v1/namespaces", watch, () => logged("namespaces", () => client.listNamespaces(settings.label)), false, settings.label,
  );
  const pluginCache = new ListWatch<WasmPluginObject>(
    `/apis/${GROUP}/${VERSION}/${PLURAL}`, watch, () => logged("WasmPlugins", () => client.listWasmPlugins()), false,
  );
  const policyField = policy ? `metadata.name=${policy.name}` : "";
  const policyCache = policy
    ? new ListWatch<V1ConfigMap>(
        `/api/v1/namespaces/${policy.namespace}/configmaps`, watch,
        () => client.core.listNamespacedConfigMap({ namespace: policy.namespace, fieldSelector: policyField }), false, undefined, policyField,
      )
    : undefined;
  extras.counts?.({
    optedIn: () => countOptedIn(nsCache.list(), settings.label),
    managed: () => new Set(pluginCache.list().filter(isAppliedBySync).map((p) => p.metadata?.namespace)).size,
  });

  const queue = new Set<string>();
  const retries = new Map<string, { attempt: number; timer?: NodeJS.Timeout }>();
  const listed = { namespaces: false, plugins: false, policy: policy === undefined };
  let initialDone = false;
  let wake: (() => void) | undefined;
  const kick = () => {
    wake?.();
    wake = undefined;
  };
  const enqueue = (namespace: string | undefined) => {
    if (!namespace) return;
    queue.add(namespace);
    kick();
  };
  const enqueueAll = () => {
    for (const ns of namespacesToVisit(nsCache.list(), pluginCache.list(), name)) queue.add(ns);
    kick();
  };

  // Wire one ListWatch: every event queues its namespace; errors restart it after a backoff.
  interface Informer {
    what: string;
    lw: ListWatch<KubernetesObject>;
    key: keyof typeof listed;
    timer?: NodeJS.Timeout;
    /** Consecutive failures (drives the backoff); errors counts all of them. */
    attempt: number;
    errors: number;
  }
  const informers: Informer[] = [
    { what: "namespaces", lw: nsCache as unknown as ListWatch<KubernetesObject>, key: "namespaces", attempt: 0, errors: 0 },
    { what: "WasmPlugins", lw: pluginCache as unknown as ListWatch<KubernetesObject>, key: "plugins", attempt: 0, errors: 0 },
  ];
  const policyInformer: Informer | undefined = policyCache
    ? { what: "policy ConfigMap", lw: policyCache as unknown as ListWatch<KubernetesObject>, key: "policy", attempt: 0, errors: 0 }
    : undefined;

  // Policy changes are loaded one at a time, in the order they arrive.
  const policyRef = policy ? `ConfigMap ${policy.namespace}/${policy.name}` : "";
  let policyChain = Promise.resolve();
  const policyFailed = (why: string) => {
    observer?.error("policy");
    log.err(`policy: ${why}; ${policyLoaded ? "keeping the last accepted policy" : "nothing is reconciled until it is fixed"}`);
  };
  const loadPolicy = async (cm: V1ConfigMap) => {
    const text = cm.data?.[policy!.key];
    if (text === undefined) return policyFailed(`${policyRef} has no key ${policy!.key}`);
    let pluginConfig: Record<string, unknown>;
    try {
      pluginConfig = await policy!.load(text);
    } catch (err) {
      const details = err instanceof UserError && err.details.length > 0 ? `: ${err.details.join("; ")}` : "";
      // The loader's message names the ConfigMap and key already ("policy ConfigMap ns/name key k is rejected …").
      return policyFailed(`${describeError(err).replace(/^policy /, "")}${details}`);
    }
    const changed = !policyLoaded || !isDeepStrictEqual(pluginConfig, current.plugin.pluginConfig);
    current = { ...current, plugin: { ...current.plugin, pluginConfig } };
    if (!changed) return;
    log.out(`policy       ${policy!.namespace}/${policy!.name} (resourceVersion ${cm.metadata?.resourceVersion ?? "?"}): ${policyLoaded ? "changed, reconciling every namespace" : "loaded"}`);
    policyLoaded = true;
    enqueueAll();
  };
  if (policyInformer && policyCache) {
    const onPolicy = (cm: V1ConfigMap) => {
      policyInformer.attempt = 0;
      policyChain = policyChain.then(() => loadPolicy(cm));
    };
    policyCache.on("add", onPolicy);
    policyCache.on("update", onPolicy);
    policyCache.on("delete", () => policyFailed(`${policyRef} was deleted`));
    policyCache.on("error", (err?: unknown) => onInformerError(policyInformer, err));
  }
  for (const inf of informers) {
    const keyOf = (obj: KubernetesObject) => (inf.key === "namespaces" ? obj.metadata?.name : obj.metadata?.namespace);
    const onEvent = (obj: KubernetesObject) => {
      inf.attempt = 0;
      enqueue(keyOf(obj));
    };
    inf.lw.on("add", onEvent);
    inf.lw.on("update", onEvent);
    inf.lw.on("delete", onEvent);
    inf.lw.on("error", (err?: unknown) => onInformerError(inf, err));
  }
  function onInformerError(inf: Informer, err: unknown): void {
    if (signal.aborted) return; // stop() aborts the watch request, which reports an error
    inf.errors++;
    observer?.error("watch");
    const delay = Math.min(timings.backoffMs * 2 ** inf.attempt, timings.maxBackoffMs);
    inf.attempt++;
    const why = isTransportError(err) ? `API server unreachable (${describeKubeError(err)})` : describeKubeError(err);
    log.err(`watch ${inf.what}: ${why}; resuming in ${(delay / 1000).toFixed(1)}s`);
    clearTimeout(inf.timer);
    inf.timer = setTimeout(() => void startInformer(inf), delay);
  }
  const startInformer = async (inf: Informer) => {
    if (signal.aborted) return;
    const errorsBefore = inf.errors;
    const recovering = inf.attempt > 0;
    // start() lists only when it has no resourceVersion yet (first start, or after 410 Gone); otherwise it
    // resumes the watch from the last resourceVersion it saw. List and watch failures arrive as "error" events;
    // anything thrown here (for example reading a rotated token file) is handled the same way.
    try {
      await inf.lw.start();
    } catch (err) {
      onInformerError(inf, err);
      return;
    }
    if (inf.errors !== errorsBefore || signal.aborted) return; // failed again: the error handler rescheduled it
    if (recovering) {
      inf.attempt = 0;
      log.err(`watch ${inf.what}: resumed at resourceVersion ${inf.lw.latestResourceVersion()}`);
    }
    if (inf.lw.latestResourceVersion() !== "" && !listed[inf.key]) {
      listed[inf.key] = true;
      if (inf === policyInformer && policyCache!.list().length === 0) policyFailed(`${policyRef} does not exist`);
      kick();
    }
  };

  const resync = setInterval(enqueueAll, timings.resyncMs);
  const stopped = new Promise<void>((resolve) => {
    if (signal.aborted) resolve();
    signal.addEventListener("abort", () => resolve(), { once: true });
  });
  signal.addEventListener("abort", kick, { once: true });

  const all = policyInformer ? [...informers, policyInformer] : informers;
  for (const inf of all) void startInformer(inf);

  try {
    while (!signal.aborted) {
      // Wait for both caches' first list; after the first (possibly empty) pass, wait for queued work.
      if (!listed.namespaces || !listed.plugins || !listed.policy || !policyLoaded || (initialDone && queue.size === 0)) {
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
        continue;
      }
      const first = !initialDone;
      if (first) enqueueAll();
      const batch = [...queue].sort();
      queue.clear();
      const nsByName = new Map(nsCache.list().map((ns) => [ns.metadata!.name!, ns]));
      const outcomes = (
        await mapLimit(batch, 8, (namespace) =>
          reconcileNamespace(client, current, namespace, nsByName.get(namespace), pluginCache.list(namespace)),
        )
      ).flat();
      for (const o of outcomes) {
        if (first || o.action !== "unchanged") log.out(formatOutcome(o, settings.dryRun));
        observer?.reconciled(o.action);
        if (o.action === "failed") observer?.error("reconcile");
        const r = retries.get(o.namespace);
        if (o.action === "failed" && intentFor(nsByName.get(o.namespace), settings.label).kind !== "invalid") {
          // Transient failures (API down mid-apply, delete precondition raced) are retried with a backoff.
          const attempt = r?.attempt ?? 0;
          const delay = Math.min(timings.backoffMs * 2 ** attempt, timings.maxBackoffMs);
          clearTimeout(r?.timer);
          retries.set(o.namespace, { attempt: attempt + 1, timer: setTimeout(() => enqueue(o.namespace), delay) });
        } else if (r && o.action !== "failed") {
          clearTimeout(r.timer);
          retries.delete(o.namespace);
        }
      }
      if (first) {
        initialDone = true;
        log.out(formatSummary({ outcomes, optedIn: countOptedIn(nsCache.list(), settings.label) }, settings.label, settings.dryRun));
        log.err(`watching namespaces labelled ${settings.label}${policy ? `, WasmPlugins and ${policyRef}` : " and WasmPlugins"} (Ctrl-C or SIGTERM to stop)`);
        observer?.ready(true);
      }
    }
  } finally {
    observer?.ready(false);
    clearInterval(resync);
    for (const inf of all) {
      clearTimeout(inf.timer);
      await inf.lw.stop();
    }
    for (const r of retries.values()) clearTimeout(r.timer);
  }
  await stopped;
  return 0;
}

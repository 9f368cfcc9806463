// Connecting to a Kubernetes API server with @kubernetes/client-node, and turning its failures into one clear line.
//
// Configuration follows kubectl's loading rules, made explicit so that "nothing configured" is an error instead of
// client-node's silent fallback to http://localhost:8080: --kubeconfig, else $KUBECONFIG (a path list, merged),
// else ~/.kube/config, else the in-cluster configuration (service-account token + KUBERNETES_SERVICE_HOST).
import { ApiException, KubeConfig } from "@kubernetes/client-node";
import { existsSync, statSync } from "node:fs";
import { homedir } from "node:os";
import { delimiter, join } from "node:path";
import { UserError, describeError } from "./errors.ts";

/** How the user pointed at a cluster. */
export interface KubeTarget {
  /** --kubeconfig */
  kubeconfig?: string;
  /** --context */
  context?: string;
}

/** A loaded configuration and a description of where it came from, for messages. */
export interface LoadedKubeConfig {
  kc: KubeConfig;
  /** "kubeconfig /path (context ctx)" or "in-cluster configuration". */
  source: string;
  /** The API server URL. */
  server: string;
}

const IN_CLUSTER_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token";

function isFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/**
 * The home directory, or undefined when there is none: os.homedir() throws when HOME is unset and the uid has no
 * passwd entry, which is how the controller image runs (numeric user 65532, no /etc/passwd).
 */
function homeDirectory(): string | undefined {
  try {
    return homedir();
  } catch {
    return undefined;
  }
}

/** Loads the configuration per the rules above; throws a UserError naming what is missing or wrong. */
export function loadKubeConfig(target: KubeTarget): LoadedKubeConfig {
  const kc = new KubeConfig();
  const home = homeDirectory();
  let where: string;
  try {
    if (target.kubeconfig !== undefined) {
      if (!existsSync(target.kubeconfig)) throw new UserError(`kubeconfig not found: ${target.kubeconfig}`);
      if (!isFile(target.kubeconfig)) throw new UserError(`kubeconfig ${target.kubeconfig} is not a file`);
      kc.loadFromFile(target.kubeconfig);
      where = `kubeconfig ${target.kubeconfig}`;
    } else if (process.env.KUBECONFIG) {
      const paths = process.env.KUBECONFIG.split(delimiter).filter((p) => p !== "");
      const present = paths.filter(isFile);
      if (present.length === 0) throw new UserError(`kubeconfig not found: KUBECONFIG=${process.env.KUBECONFIG} names no existing file`);
      // client-node merges the files of a KUBECONFIG list like kubectl does (first file wins per entry).
      kc.loadFromDefault();
      where = `kubeconfig ${present.join(delimiter)}`;
    } else if (home !== undefined && isFile(join(home, ".kube", "config"))) {
      kc.loadFromFile(join(home, ".kube", "config"));
      where = `kubeconfig ${join(home, ".kube", "config")}`;
    } else if (process.env.KUBERNETES_SERVICE_HOST && isFile(IN_CLUSTER_TOKEN)) {
      kc.loadFromCluster();
      where = "in-cluster configuration";
    } else {
      throw new UserError(
        "no Kubernetes configuration found: pass --kubeconfig <file>, set KUBECONFIG, create ~/.kube/config, or run in a pod with a service account",
      );
    }
  } catch (err) {
    if (err instanceof UserError) throw err;
    throw new UserError(`cannot load ${target.kubeconfig ? `kubeconfig ${target.kubeconfig}` : "the Kubernetes configuration"}: ${describeError(err)}`);
  }
  if (target.context !== undefined) {
    const names = kc.getContexts().map((c) => c.name);
    if (!names.includes(target.context)) {
      throw new UserError(`context "${target.context}" not found in ${where} (available: ${names.join(", ") || "none"})`);
    }
    kc.setCurrentContext(target.context);
  }
  const context = kc.getCurrentContext();
  const cluster = kc.getCurrentCluster();
  if (!cluster) {
    throw new UserError(`${where}: ${context ? `context "${context}" names no cluster` : "no current context is set (use --context)"}`);
  }
  if (!cluster.server) throw new UserError(`${where}: cluster "${cluster.name}" has no server URL`);
  return { kc, source: context && where !== "in-cluster configuration" ? `${where} (context ${context})` : where, server: cluster.server };
}

/** The Kubernetes Status object carried by an API error, when there is one. */
export interface KubeStatus {
  kind?: string;
  code?: number;
  reason?: string;
  message?: string;
  details?: { causes?: Array<{ field?: string; message?: string }> };
}

/** HTTP status of an API error, or undefined for network errors. */
export function statusCode(err: unknown): number | undefined {
  if (err instanceof ApiException) return err.code;
  const code = (err as { code?: unknown; statusCode?: unknown })?.statusCode ?? (err as { code?: unknown })?.code;
  return typeof code === "number" ? code : undefined;
}

/** The Status body of an API error (client-node 1.x gives the body as a JSON string or an object). */
export function statusOf(err: unknown): KubeStatus | undefined {
  if (!(err instanceof ApiException)) return undefined;
  const body: unknown = err.body;
  if (body && typeof body === "object") return body as KubeStatus;
  if (typeof body === "string") {
    try {
      const parsed = JSON.parse(body) as unknown;
      if (parsed && typeof parsed === "object") return parsed as KubeStatus;
    } catch {
      // not JSON (for example the API server's plain "404 page not found")
    }
  }
  return undefined;
}

/** One line describing an API failure: the Status message when the API server sent one, else the transport error. */
export function describeKubeError(err: unknown): string {
  const status = statusOf(err);
  if (status?.message) return status.message;
  const code = statusCode(err);
  if (code !== undefined && err instanceof ApiException) {
    const body = typeof err.body === "string" ? err.body.trim().split("\n")[0] : "";
    return `HTTP ${code}${body ? `: ${body.slice(0, 200)}` : ""}`;
  }
  return describeError(err);
}

/** True for failures that never reached the API server (refused, reset, DNS, TLS, timeout). */
export function isTransportError(err: unknown): boolean {
  return !(err instanceof ApiException) && statusCode(err) === undefined;
}

/**
 * Turns a failure of the first request into the UserError the user should see: unreachable server, rejected
 * credentials, missing permission. `what` names the request ("list namespaces").
 */
export function connectionError(err: unknown, what: string, loaded: LoadedKubeConfig): UserError {
  const code = statusCode(err);
  if (isTransportError(err)) {
    return new UserError(`cannot reach the Kubernetes API server at ${loaded.server} (${loaded.source}): ${describeError(err)}`);
  }
  if (code === 401) {
    return new UserError(`the Kubernetes API server at ${loaded.server} rejected the credentials of ${loaded.source} (401 Unauthorized)`);
  }
  if (code === 403) {
    return new UserError(`not allowed to ${what}: ${describeKubeError(err)}`, [
      "`traffic-guard manifests --rbac` prints the ClusterRole, ServiceAccount and ClusterRoleBinding sync needs",
    ]);
  }
  return new UserError(`${what} failed: ${describeKubeError(err)}`);
}

// The `decisions` block `traffic-guard manifests --decisions <host:port>` writes into the pluginConfig: Istio's
// outbound cluster of the etcd Service, its authority, and the sync settings (docs/decisions.md).
import { InvalidArgumentError } from "commander";
import { DEFAULT_PREFIX, prefixProblem } from "./decision-record.ts";
import { UserError } from "./errors.ts";

/** An etcd Service as --decisions gives it. */
export interface DecisionsTarget {
  host: string;
  port: number;
}

/** A commander parser for --decisions: a DNS name (the Service's FQDN) and a port. */
export function parseDecisionsTarget(value: string): DecisionsTarget {
  const m = /^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[5]) : 0;
  if (!m || port < 1 || port > 65535 || m[1].length > 253) {
    throw new InvalidArgumentError(`expected the etcd Service as <host>:<port>, like traffic-guard-etcd.traffic-guard.svc.cluster.local:2379, got "${value}"`);
  }
  return { host: m[1], port };
}

/** Istio's name for the outbound cluster of a Service port: outbound|<port>||<host>. */
export function istioOutboundCluster(t: DecisionsTarget): string {
  return `outbound|${t.port}||${t.host}`;
}

/**
 * The decisions block for `t`: cluster, authority, prefix, interval, timeout and publish, keeping any of these the
 * policy already sets (except the cluster and authority, which --decisions names).
 */
export function decisionsBlock(t: DecisionsTarget, existing: unknown, prefix?: string): Record<string, unknown> {
  const base = existing !== null && typeof existing === "object" && !Array.isArray(existing) ? (existing as Record<string, unknown>) : {};
  if (prefix !== undefined) {
    const problem = prefixProblem(prefix);
    if (problem) throw new UserError(`--decisions-${problem}`);
  }
  return {
    cluster: istioOutboundCluster(t),
    authority: t.host,
    prefix: prefix ?? base.prefix ?? DEFAULT_PREFIX,
    interval: base.interval ?? "1s",
    timeout: base.timeout ?? "500ms",
    publish: base.publish ?? true,
  };
}

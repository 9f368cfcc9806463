// What `sync --watch --listen` serves when it runs as the in-cluster controller: /healthz (liveness: the process
// answers), /readyz (readiness: the policy is loaded and the first full pass is done) and /metrics (Prometheus text
// format, written by prom-client).
import { createServer, type Server } from "node:http";
import { Counter, Gauge, Registry } from "prom-client";
import type { Action, WatchCounts } from "./kube-sync.ts";

/** Where a counted error came from. */
export type ErrorSource = "reconcile" | "watch" | "policy";

/** What the watcher reports as it runs; every method is cheap and never throws. */
export interface WatchObserver {
  /** One namespace reconciled, with what happened to its WasmPlugin. */
  reconciled(action: Action): void;
  /** A failed reconcile, watch or policy load. */
  error(source: ErrorSource): void;
  /** The first full pass is done (the controller is ready), or no longer applies (stopping). */
  ready(value: boolean): void;
}

/**
 * Prometheus metrics of the controller, in their own registry. prom-client's default Node.js metrics are left out:
 * three of them (nodejs_active_*_total) are gauges named like counters, which `promtool check metrics` rejects, and
 * the kubelet already reports the container's CPU and memory.
 */
export class ControllerMetrics implements WatchObserver {
  readonly registry = new Registry();
  private readonly reconciles: Counter<"action">;
  private readonly errors: Counter<"source">;
  isReady = false;
  /** What the gauges read when scraped; set by the watcher once its caches exist. */
  counts?: WatchCounts;

  constructor() {
    const registers = [this.registry];
    const counts = () => this.counts;
    this.reconciles = new Counter({
      name: "traffic_guard_controller_reconciles_total",
      help: "Namespaces reconciled, by what happened to their WasmPlugin (created, updated, unchanged, deleted, skipped, failed).",
      labelNames: ["action"],
      registers,
    });
    this.errors = new Counter({
      name: "traffic_guard_controller_errors_total",
      help: "Errors, by source: reconcile (an apply or delete failed), watch (a watch or list failed), policy (the policy ConfigMap is missing or rejected).",
      labelNames: ["source"],
      registers,
    });
    for (const action of ["created", "updated", "unchanged", "deleted", "skipped", "failed"]) this.reconciles.inc({ action }, 0);
    for (const source of ["reconcile", "watch", "policy"]) this.errors.inc({ source }, 0);
    new Gauge({
      name: "traffic_guard_controller_managed_namespaces",
      help: "Namespaces holding a WasmPlugin that the controller applied.",
      registers,
      collect() {
        this.set(counts()?.managed() ?? 0);
      },
    });
    new Gauge({
      name: "traffic_guard_controller_opted_in_namespaces",
      help: "Namespaces whose label opts them in (enabled or dry-run).",
      registers,
      collect() {
        this.set(counts()?.optedIn() ?? 0);
      },
    });
  }

  reconciled(action: Action): void {
    this.reconciles.inc({ action });
  }

  error(source: ErrorSource): void {
    this.errors.inc({ source });
  }

  ready(value: boolean): void {
    this.isReady = value;
  }
}

/** Parses `--listen`: `port`, `:port` or `host:port` (IPv6 hosts in brackets). */
export function parseListen(value: string): { host: string; port: number } {
  const m = /^(?:(\[[0-9a-fA-F:.]+\]|[^:[\]]*):)?(\d{1,5})$/.exec(value);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port < 1 || port > 65535) throw new Error(`"${value}" is not a listen address (port, :port or host:port, port 1-65535)`);
  const host = (m[1] ?? "").replace(/^\[|\]$/g, "");
  return { host: host === "" ? "0.0.0.0" : host, port };
}

/** Starts the HTTP server; resolves once it listens. */
export async function serveControllerHttp(metrics: ControllerMetrics, address: { host: string; port: number }): Promise<Server> {
  const server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD" }).end();
      return;
    }
    if (path === "/healthz") {
      res.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
    } else if (path === "/readyz") {
      res.writeHead(metrics.isReady ? 200 : 503, { "content-type": "text/plain" }).end(metrics.isReady ? "ok\n" : "not ready: policy not loaded or first pass not done\n");
    } else if (path === "/metrics") {
      metrics.registry.metrics().then(
        (text) => res.writeHead(200, { "content-type": metrics.registry.contentType }).end(text),
        (err: Error) => res.writeHead(500, { "content-type": "text/plain" }).end(`${err.message}\n`),
      );
    } else {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found: /healthz, /readyz, /metrics\n");
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(address.port, address.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  return server;
}

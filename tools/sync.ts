// The `traffic-guard sync` subcommand: per-namespace opt-in by label (see tools/lib/kube-sync.ts for the rules).
//
// It turns --image/--url/--sha256 into spec.url/spec.sha256 with the same function as `manifests`
// (tools/lib/command.ts) and builds the WasmPlugins with the same builder, so what sync applies is exactly what
// `manifests` prints.
import { InvalidArgumentError, type Command } from "commander";
import { resolveModuleSource, type CommandContext } from "./lib/command.ts";
import { ControllerMetrics, parseListen, serveControllerHttp } from "./lib/controller-http.ts";
import { describeError, UserError } from "./lib/errors.ts";
import { connectionError, loadKubeConfig, statusCode } from "./lib/kube.ts";
import {
  DEFAULT_LABEL, exitCodeFor, formatOutcome, formatSummary, LABEL_VALUES, SyncClient, syncOnce, syncWatch,
  type PolicySource, type SyncSettings,
} from "./lib/kube-sync.ts";
import { syncRbacObjects, RBAC_DEFAULTS } from "./lib/kube-rbac.ts";
import { renderYaml, type PluginSpecInput } from "./lib/manifests.ts";
import { checkPolicy, policyAsPluginConfig, readPolicyFile, yamlToJson } from "./lib/policy.ts";
import { loadProxyWasm } from "./lib/wasm-module.ts";

interface SyncOptions {
  policy?: string;
  image?: string;
  url?: string;
  sha256?: string;
  kubeconfig?: string;
  context?: string;
  label: string;
  dryRun?: boolean;
  watch?: boolean;
  wasm: string;
  policyConfigmap?: { namespace: string; name: string };
  policyKey: string;
  listen?: { host: string; port: number };
}

/** The ConfigMap data key the policy is read from unless --policy-key says otherwise. */
export const DEFAULT_POLICY_KEY = "policy.yaml";

function configMapRef(value: string): { namespace: string; name: string } {
  const m = /^([a-z0-9](?:[-a-z0-9]*[a-z0-9])?)\/([a-z0-9](?:[-a-z0-9.]*[a-z0-9])?)$/.exec(value);
  if (!m || m[1].length > 63 || m[2].length > 253) throw new InvalidArgumentError(`"${value}" is not <namespace>/<name> of a ConfigMap`);
  return { namespace: m[1], name: m[2] };
}

function listenAddress(value: string): { host: string; port: number } {
  try {
    return parseListen(value);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

// A label key: optional DNS-subdomain prefix and "/", then a name of at most 63 characters.
const LABEL_KEY = /^(?:[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;

function labelKey(value: string): string {
  if (!LABEL_KEY.test(value) || value.length > 317) {
    throw new InvalidArgumentError(`"${value}" is not a valid label key (e.g. traffic-guard or example.com/traffic-guard)`);
  }
  return value;
}

/** Checks a pluginConfig with the filter as is and with mode dry-run (which `dry-run` namespaces get). */
async function checkedPluginConfig(module: WebAssembly.Module, pluginConfig: Record<string, unknown>, what: string): Promise<Record<string, unknown>> {
  for (const config of [pluginConfig, { ...pluginConfig, mode: "dry-run" }]) {
    const verdict = await checkPolicy(module, Object.keys(config).length === 0 ? "" : JSON.stringify(config));
    if (!verdict.ok) throw new UserError(`policy ${what} is rejected by the filter`, verdict.problems);
  }
  return pluginConfig;
}

/** A policy ConfigMap's text (YAML or JSON) as a pluginConfig the filter accepts. */
async function configMapPolicy(module: WebAssembly.Module, text: string, what: string): Promise<Record<string, unknown>> {
  const { json, value } = yamlToJson(text, what);
  return checkedPluginConfig(module, policyAsPluginConfig({ path: what, json, value }), what);
}

/** Reads and checks the policy like `manifests` does. */
async function pluginInput(opts: SyncOptions, module: WebAssembly.Module): Promise<PluginSpecInput> {
  const source = resolveModuleSource(opts);
  const pluginConfig = opts.policy !== undefined ? policyAsPluginConfig(await readPolicyFile(opts.policy)) : {};
  return { ...source, pluginConfig: await checkedPluginConfig(module, pluginConfig, opts.policy ?? "(defaults)") };
}

/** Adds `traffic-guard sync` to the program. */
export function registerSync(program: Command, { io, defaultWasm }: CommandContext): Command {
  return program
    .command("sync")
    .description("keep a WasmPlugin in every namespace labelled traffic-guard=enabled (or =dry-run), and remove it when the label goes")
    .option("--policy <file>", "policy for pluginConfig (.json/.yaml), validated by the compiled filter first; default: the filter's defaults")
    .option("--image <reference>", "OCI image of the filter, e.g. registry.example.com/platform/traffic-guard:0.1.0")
    .option("--url <url>", "https://, http:// or file:// URL of the .wasm instead of an image")
    .option("--sha256 <digest>", "for --image the manifest digest printed by `package`/`push`; for --url the .wasm's sha256")
    .option("--kubeconfig <file>", "kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or the in-cluster service account)")
    .option("--context <name>", "kubeconfig context (default: the current context)")
    .option("--label <key>", `namespace label key; values: ${Object.keys(LABEL_VALUES).join(", ")}`, labelKey, DEFAULT_LABEL)
    .option("--dry-run", "print what would change (server-side dry run) and change nothing")
    .option("--watch", "keep reconciling as namespaces and WasmPlugins change, until SIGTERM or SIGINT")
    .option("--wasm <file>", "the compiled filter used to validate the policy", defaultWasm)
    .option("--policy-configmap <namespace/name>", "read the policy from this ConfigMap instead of --policy; with --watch, every change to it is validated and reconciles every opted-in namespace", configMapRef)
    .option("--policy-key <key>", "data key of the policy in --policy-configmap (YAML or JSON)", DEFAULT_POLICY_KEY)
    .option("--listen <[host:]port>", "with --watch, serve /healthz, /readyz and Prometheus /metrics on this address (the controller uses :9090)", listenAddress)
    .addHelpText(
      "after",
      `\nOpt a namespace in:  kubectl label namespace shop traffic-guard=enabled   (or =dry-run: mode dry-run)\n` +
        `Exit codes: 0 everything reconciled, 1 a namespace failed or bad input (kubeconfig, unreachable server, no WasmPlugin CRD).\n` +
        `RBAC for running it in a cluster: traffic-guard manifests --rbac; the whole in-cluster controller: traffic-guard manifests --controller`,
    )
    .action(async (opts: SyncOptions, command: Command) => {
      if ((opts.image === undefined) === (opts.url === undefined)) {
        command.error("error: give exactly one of --image or --url", { exitCode: 2, code: "traffic-guard.usage" });
      }
      if (opts.policy !== undefined && opts.policyConfigmap !== undefined) {
        command.error("error: give at most one of --policy or --policy-configmap", { exitCode: 2, code: "traffic-guard.usage" });
      }
      if (opts.listen !== undefined && !opts.watch) {
        command.error("error: --listen needs --watch", { exitCode: 2, code: "traffic-guard.usage" });
      }
      if (!opts.wasm) throw new UserError("--wasm: no compiled filter to validate the policy with");
      const wasm = await loadProxyWasm(opts.wasm);
      const settings: SyncSettings = { label: opts.label, dryRun: opts.dryRun === true, plugin: await pluginInput(opts, wasm.module) };
      const loaded = loadKubeConfig({ kubeconfig: opts.kubeconfig, context: opts.context });
      const client = new SyncClient(loaded);
      io.stderr(`sync: ${loaded.server} (${loaded.source})${settings.dryRun ? ", dry run" : ""}\n`);
      const cm = opts.policyConfigmap;
      const policySource: PolicySource | undefined = cm && {
        ...cm,
        key: opts.policyKey,
        load: (text) => configMapPolicy(wasm.module, text, `ConfigMap ${cm.namespace}/${cm.name} key ${opts.policyKey}`),
      };
      if (policySource && !opts.watch) {
        // One pass: read the ConfigMap once.
        let text: string | undefined;
        try {
          text = (await client.core.readNamespacedConfigMap({ namespace: policySource.namespace, name: policySource.name })).data?.[policySource.key];
        } catch (err) {
          if (statusCode(err) === 404) throw new UserError(`policy ConfigMap ${policySource.namespace}/${policySource.name} does not exist`);
          throw connectionError(err, `read ConfigMap ${policySource.namespace}/${policySource.name}`, loaded);
        }
        if (text === undefined) throw new UserError(`policy ConfigMap ${policySource.namespace}/${policySource.name} has no key ${policySource.key}`);
        settings.plugin = { ...settings.plugin, pluginConfig: await policySource.load(text) };
      }

      if (!opts.watch) {
        const report = await syncOnce(client, settings);
        for (const o of report.outcomes) io.stdout(`${formatOutcome(o, settings.dryRun)}\n`);
        io.stdout(`${formatSummary(report, settings.label, settings.dryRun)}\n`);
        const failed = report.outcomes.filter((o) => o.action === "failed").length;
        if (exitCodeFor(report.outcomes) !== 0) throw new UserError(`${failed} namespace${failed === 1 ? "" : "s"} could not be reconciled (see above)`);
        return;
      }

      const metrics = opts.listen ? new ControllerMetrics() : undefined;
      const server = metrics && opts.listen ? await serveControllerHttp(metrics, opts.listen) : undefined;
      if (opts.listen) io.stderr(`sync: serving /healthz, /readyz and /metrics on ${opts.listen.host}:${opts.listen.port}\n`);
      const stop = new AbortController();
      const onSignal = (sig: NodeJS.Signals) => {
        io.stderr(`sync: ${sig} received, stopping\n`);
        stop.abort();
      };
      process.once("SIGTERM", onSignal);
      process.once("SIGINT", onSignal);
      try {
        await syncWatch(client, settings, {
          out: (line) => io.stdout(`${line}\n`),
          err: (line) => io.stderr(`sync: ${line}\n`),
        }, stop.signal, undefined, {
          policy: policySource,
          observer: metrics,
          counts: (counts) => {
            if (metrics) metrics.counts = counts;
          },
        });
      } finally {
        process.off("SIGTERM", onSignal);
        process.off("SIGINT", onSignal);
        if (server) {
          server.closeAllConnections();
          await new Promise<void>((resolve) => server.close(() => resolve()));
        }
      }
      io.stderr("sync: stopped\n");
    });
}

/** Options of `manifests --rbac`. */
export interface RbacCliOptions {
  /** Namespace of the ServiceAccount. */
  namespace?: string;
  /** Name of the ServiceAccount, ClusterRole and ClusterRoleBinding. */
  name?: string;
}

/** The YAML `traffic-guard manifests --rbac` prints: ServiceAccount, ClusterRole, ClusterRoleBinding for sync. */
export function renderSyncRbac(options: RbacCliOptions = {}, header?: string): string {
  try {
    return renderYaml(syncRbacObjects({ namespace: options.namespace ?? RBAC_DEFAULTS.namespace, name: options.name ?? RBAC_DEFAULTS.name }), header);
  } catch (err) {
    throw new UserError(`cannot render the sync RBAC objects: ${describeError(err)}`);
  }
}

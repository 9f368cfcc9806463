// The `traffic-guard sync` subcommand: per-namespace opt-in by label (see tools/lib/kube-sync.ts for the rules).
//
// Registered into the CLI by tools/cli.ts with registerSync(program, io, shared). `shared` hands over the pieces of
// `manifests` that turn --image/--url/--sha256 into spec.url/spec.sha256 and locate the compiled filter, so the
// WasmPlugins sync applies are built exactly like the ones `manifests` prints (same function, same defaults).
import { Command, InvalidArgumentError } from "commander";
import { describeError, UserError } from "./lib/errors.ts";
import { loadKubeConfig } from "./lib/kube.ts";
import {
  DEFAULT_LABEL, exitCodeFor, formatOutcome, formatSummary, LABEL_VALUES, SyncClient, syncOnce, syncWatch,
  type SyncSettings,
} from "./lib/kube-sync.ts";
import { syncRbacObjects, RBAC_DEFAULTS } from "./lib/kube-rbac.ts";
import { renderYaml, type PluginSpecInput } from "./lib/manifests.ts";
import { checkPolicy, policyAsPluginConfig, readPolicyFile } from "./lib/policy.ts";
import { loadProxyWasm } from "./lib/wasm-module.ts";

/** Output streams (the CLI's CliIO satisfies this). */
export interface SyncIO {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
}

/** What sync borrows from `manifests` (tools/cli.ts) so both build the same objects. */
export interface ManifestsShared {
  /** --image/--url/--sha256 to spec.url/spec.sha256, with the same checks and messages as `manifests`. */
  resolveModuleSource(opts: { image?: string; url?: string; sha256?: string }): { url: string; sha256?: string };
  /** The compiled filter that validates policies. */
  defaultWasm: string;
}

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
}

// A label key: optional DNS-subdomain prefix and "/", then a name of at most 63 characters.
const LABEL_KEY = /^(?:[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;

function labelKey(value: string): string {
  if (!LABEL_KEY.test(value) || value.length > 317) {
    throw new InvalidArgumentError(`"${value}" is not a valid label key (e.g. traffic-guard or example.com/traffic-guard)`);
  }
  return value;
}

const defaultIO: SyncIO = { stdout: (t) => process.stdout.write(t), stderr: (t) => process.stderr.write(t) };

/** Reads and checks the policy like `manifests` does; also checks it with mode dry-run, which `dry-run` namespaces get. */
async function pluginInput(opts: SyncOptions, shared: ManifestsShared): Promise<PluginSpecInput> {
  const source = shared.resolveModuleSource(opts);
  const pluginConfig = opts.policy !== undefined ? policyAsPluginConfig(await readPolicyFile(opts.policy)) : {};
  const wasm = await loadProxyWasm(opts.wasm);
  for (const config of [pluginConfig, { ...pluginConfig, mode: "dry-run" }]) {
    const verdict = await checkPolicy(wasm.module, Object.keys(config).length === 0 ? "" : JSON.stringify(config));
    if (!verdict.ok) throw new UserError(`policy ${opts.policy ?? "(defaults)"} is rejected by the filter`, verdict.problems);
  }
  return { ...source, pluginConfig };
}

/** Adds `traffic-guard sync` to the program. */
export function registerSync(program: Command, io: SyncIO = defaultIO, shared?: ManifestsShared): Command {
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
    .option("--wasm <file>", "the compiled filter used to validate the policy", shared?.defaultWasm)
    .addHelpText(
      "after",
      `\nOpt a namespace in:  kubectl label namespace shop traffic-guard=enabled   (or =dry-run: mode dry-run)\n` +
        `Exit codes: 0 everything reconciled, 1 a namespace failed or bad input (kubeconfig, unreachable server, no WasmPlugin CRD).\n` +
        `RBAC for running it in a cluster: traffic-guard manifests --rbac`,
    )
    .action(async (opts: SyncOptions, command: Command) => {
      if (!shared) throw new Error("registerSync was called without the manifests helpers (tools/cli.ts wires them)");
      if ((opts.image === undefined) === (opts.url === undefined)) {
        command.error("error: give exactly one of --image or --url", { exitCode: 2, code: "traffic-guard.usage" });
      }
      if (!opts.wasm) throw new UserError("--wasm: no compiled filter to validate the policy with");
      const settings: SyncSettings = { label: opts.label, dryRun: opts.dryRun === true, plugin: await pluginInput(opts, shared) };
      const loaded = loadKubeConfig({ kubeconfig: opts.kubeconfig, context: opts.context });
      const client = new SyncClient(loaded);
      io.stderr(`sync: ${loaded.server} (${loaded.source})${settings.dryRun ? ", dry run" : ""}\n`);

      if (!opts.watch) {
        const report = await syncOnce(client, settings);
        for (const o of report.outcomes) io.stdout(`${formatOutcome(o, settings.dryRun)}\n`);
        io.stdout(`${formatSummary(report, settings.label, settings.dryRun)}\n`);
        const failed = report.outcomes.filter((o) => o.action === "failed").length;
        if (exitCodeFor(report.outcomes) !== 0) throw new UserError(`${failed} namespace${failed === 1 ? "" : "s"} could not be reconciled (see above)`);
        return;
      }

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
        }, stop.signal);
      } finally {
        process.off("SIGTERM", onSignal);
        process.off("SIGINT", onSignal);
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

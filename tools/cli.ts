#!/usr/bin/env node
// traffic-guard: validate a policy with the compiled filter, package the filter as an OCI image, push it, and emit
// the Istio manifests that deploy it. Bundled by esbuild into dist/traffic-guard.mjs (the package's bin).
//
// Exit codes: 0 success, 1 a user error (bad input, rejected policy, registry or auth failure), 2 a usage error
// (unknown command or option, missing argument, invalid choice).
import { Command, CommanderError, InvalidArgumentError, Option } from "commander";
import { realpathSync } from "node:fs";
import { rm, stat } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { resolveCredentials } from "./lib/credentials.ts";
import { describeError, UserError } from "./lib/errors.ts";
import {
  buildTrafficExtension, buildWasmPlugin, DEFAULTS, FAIL_STRATEGIES, GATEWAY, MATCH_MODES, PHASES, POLICY_MODES, PULL_POLICIES,
  renderYaml, VERSION, type FailStrategy, type MatchMode, type Phase, type PluginObjectInput, type PolicyMode, type PullPolicy,
} from "./lib/manifests.ts";
import { buildImage, layoutTar, MediaType, readLayout, WASM_FILE_NAME, writeFileAtomic, writeLayout, type OciImage } from "./lib/oci.ts";
import { checkPolicy, policyAsPluginConfig, readPolicyFile } from "./lib/policy.ts";
import { formatReference, parseReference } from "./lib/reference.ts";
import { pushImage } from "./lib/registry.ts";
import { loadProxyWasm } from "./lib/wasm-module.ts";
import { registerSync, renderSyncRbac } from "./sync.ts";

/** Where the built filter sits relative to this file: <pkg>/dist/traffic-guard.mjs or <pkg>/tools/cli.ts. */
export const DEFAULT_WASM = fileURLToPath(new URL("../build/traffic-guard.wasm", import.meta.url));

/** Streams the CLI writes to; tests may pass their own. */
export interface CliIO {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  readStdin: () => Promise<string>;
  env: NodeJS.ProcessEnv;
}

const defaultIO: CliIO = {
  stdout: (t) => process.stdout.write(t),
  stderr: (t) => process.stderr.write(t),
  readStdin: async () => {
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks).toString("utf8");
  },
  env: process.env,
};

/** A commander parser for an integer option within [min, max]; anything else is a usage error. */
function intInRange(name: string, min: number, max: number) {
  return (value: string): number => {
    if (!/^-?\d+$/.test(value)) throw new InvalidArgumentError(`${name} must be an integer, got "${value}"`);
    const n = Number(value);
    if (n < min || n > max) throw new InvalidArgumentError(`${name} must be between ${min} and ${max}, got ${n}`);
    return n;
  };
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

function keyValue(value: string, previous: Record<string, string> = {}): Record<string, string> {
  const eq = value.indexOf("=");
  if (eq <= 0) throw new InvalidArgumentError(`expected key=value, got "${value}"`);
  return { ...previous, [value.slice(0, eq)]: value.slice(eq + 1) };
}

/** Creates the commander program for `argv` (used in the manifests header); `io` receives all output. */
export function createProgram(io: CliIO = defaultIO, argv: string[] = []): Command {
  const program = new Command("traffic-guard");
  program
    .description("Package, push and deploy the traffic-guard Envoy filter to Istio, and validate its policies.")
    .version(VERSION, "-V, --version", "print the version")
    .helpOption("-h, --help", "show help")
    .helpCommand("help [command]", "show help for a command")
    .showSuggestionAfterError(true)
    .exitOverride()
    .configureOutput({ writeOut: io.stdout, writeErr: io.stderr })
    .addHelpText("after", "\nExit codes: 0 success, 1 error (bad input, rejected policy, registry failure), 2 usage error.");

  program
    .command("validate")
    .description("check a policy (the WasmPlugin pluginConfig) by configuring the compiled filter with it")
    .argument("<policy>", "policy file: .json (passed to the filter byte for byte) or .yaml/.yml (converted to JSON)")
    .option("--wasm <file>", "the compiled filter to ask", DEFAULT_WASM)
    .addHelpText("after", "\nPrints \"ok\", or each problem as <field.path>: <expected shape> on its own line and exits 1.")
    .action(async (policyPath: string, opts: { wasm: string }) => {
      const policy = await readPolicyFile(policyPath);
      const wasm = await loadProxyWasm(opts.wasm);
      const verdict = await checkPolicy(wasm.module, policy.json);
      if (verdict.ok) {
        io.stdout("ok\n");
        return;
      }
      io.stdout(verdict.problems.map((p) => `${p}\n`).join(""));
      throw new UserError(`${policyPath}: the filter rejects this policy (${verdict.problems.length} problem${verdict.problems.length === 1 ? "" : "s"})`);
    });

  program
    .command("package")
    .description("write the filter as an OCI image layout that Istio's Wasm image fetcher accepts (compat variant)")
    .option("--wasm <file>", "the compiled filter", DEFAULT_WASM)
    .requiredOption("--out <dir>", "directory for the OCI image layout (oci-layout, index.json, blobs/sha256/…)")
    .option("--tar [file]", "also write the layout as a tarball (default <out>.tar)")
    .option("--tag <name>", "name recorded in index.json (org.opencontainers.image.ref.name)", "latest")
    .addHelpText("after", "\nPrints the manifest digest (sha256:…): put its hex part in WasmPlugin.spec.sha256 or pin the url with @sha256:….")
    .action(async (opts: { wasm: string; out: string; tar?: string | true; tag: string }) => {
      if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/.test(opts.tag)) throw new UserError(`--tag "${opts.tag}" is not a valid tag`);
      const wasm = await loadProxyWasm(opts.wasm);
      const image = buildImage(wasm.bytes);
      const tarPath = opts.tar === true ? `${opts.out.replace(/\/+$/, "")}.tar` : opts.tar;
      if (tarPath !== undefined) await writeFileAtomic(tarPath, layoutTar(image, opts.tag));
      try {
        await writeLayout(opts.out, image, opts.tag);
      } catch (err) {
        if (tarPath !== undefined) await rm(tarPath, { force: true });
        throw err;
      }
      io.stderr(`wrote OCI image layout ${opts.out}: ${MediaType.manifest}, one ${MediaType.layer} layer with ${WASM_FILE_NAME} (${wasm.bytes.length} bytes)\n`);
      if (tarPath !== undefined) io.stderr(`wrote ${tarPath}\n`);
      io.stdout(`${image.manifest.digest}\n`);
    });

  program
    .command("push")
    .description("push an OCI image layout (or a .wasm, packaged on the fly) to a registry with the OCI distribution protocol")
    .argument("<source>", "an OCI image layout directory written by `package`, or a .wasm file")
    .argument("<reference>", "registry/repository:tag, e.g. registry.example.com/platform/traffic-guard:0.1.0")
    .option("--insecure", "use plain HTTP (for a registry without TLS)")
    .option("-u, --username <name>", "registry user (or TRAFFIC_GUARD_REGISTRY_USERNAME, or ~/.docker/config.json)")
    .option("-p, --password <password>", "registry password or token (or TRAFFIC_GUARD_REGISTRY_PASSWORD)")
    .option("--password-stdin", "read the password from standard input")
    .option("--chunk-size <bytes>", "upload blobs in chunks of this size (PATCH) instead of one PUT", intInRange("--chunk-size", 1, 2 ** 31))
    .option("--timeout <seconds>", "timeout for each HTTP request", intInRange("--timeout", 1, 3600), 60)
    .addHelpText("after", "\nPrints registry/repository:tag@sha256:…. Blobs already in the registry are skipped, so it is safe to run again.")
    .action(async (source: string, reference: string, opts: {
      insecure?: boolean; username?: string; password?: string; passwordStdin?: boolean; chunkSize?: number; timeout: number;
    }) => {
      const ref = parseReference(reference);
      if (opts.passwordStdin && opts.password !== undefined) throw new UserError("--password and --password-stdin are mutually exclusive");
      const password = opts.passwordStdin ? (await io.readStdin()).replace(/\r?\n$/, "") : opts.password;
      const { credentials, hint } = await resolveCredentials(ref.registry, { username: opts.username, password, env: io.env });
      const image = await loadSource(source);
      const result = await pushImage(ref, image, {
        insecure: opts.insecure,
        credentials,
        credentialsHint: hint,
        chunkSize: opts.chunkSize,
        timeoutMs: opts.timeout * 1000,
        log: (line) => io.stderr(`${line}\n`),
      });
      io.stderr(`pushed ${formatReference({ ...ref, digest: undefined })}: ${result.uploaded.length} blob(s) uploaded, ${result.skipped.length} already present${result.manifestUnchanged ? ", manifest unchanged" : ""}\n`);
      io.stdout(`${result.reference}\n`);
    });

  program
    .command("manifests")
    .description("print validated Istio WasmPlugin (or TrafficExtension) YAML that deploys traffic-guard")
    .option("--policy <file>", "policy for pluginConfig (.json/.yaml), validated by the compiled filter first; default: the filter's defaults")
    .option("--image <reference>", "OCI image, e.g. registry.example.com/platform/traffic-guard:0.1.0 (oci:// optional)")
    .option("--url <url>", "https://, http:// or file:// URL of the .wasm instead of an image")
    .option("--sha256 <digest>", "for --image the manifest digest printed by `package`/`push`; for --url the .wasm's sha256")
    .option("-n, --namespace <name>", "one WasmPlugin in this namespace (repeatable)", collect)
    .option("--mesh-wide", "one WasmPlugin in the root namespace, covering every sidecar in the mesh")
    .option("--root-namespace <name>", "Istio's root namespace for --mesh-wide", DEFAULTS.rootNamespace)
    .option("--gateway", `one WasmPlugin for the ingress gateway (selector istio: ingressgateway in ${GATEWAY.namespace}, match mode ${GATEWAY.matchMode})`)
    .option("--name <name>", `object name (default ${DEFAULTS.name}; ${GATEWAY.name} with --gateway)`)
    .option("--selector <key=value>", "workload selector label (repeatable); overrides the gateway selector", keyValue)
    .addOption(new Option("--phase <phase>", "filter chain phase").choices(PHASES).default(DEFAULTS.phase))
    .addOption(new Option("--fail-strategy <strategy>", "what Envoy does when the module cannot load or crashes").choices(FAIL_STRATEGIES).default(DEFAULTS.failStrategy))
    .option("--priority <n>", "order within the phase, higher first", intInRange("--priority", -(2 ** 31), 2 ** 31 - 1), DEFAULTS.priority)
    .addOption(new Option("--image-pull-policy <policy>", "when istio-agent re-fetches the module").choices(PULL_POLICIES).default(DEFAULTS.imagePullPolicy))
    .option("--image-pull-secret <name>", "Secret (in the same namespace) with registry credentials")
    .addOption(new Option("--match-mode <mode>", "traffic direction (default SERVER; CLIENT with --gateway)").choices(MATCH_MODES))
    .addOption(new Option("--policy-mode <mode>", "override the policy's mode, e.g. dry-run for a first rollout").choices(POLICY_MODES))
    .addOption(new Option("--api <kind>", "object kind to emit").choices(["wasmplugin", "traffic-extension"]).default("wasmplugin"))
    .option("--wasm <file>", "the compiled filter used to validate the policy", DEFAULT_WASM)
    .option("--no-header", "omit the leading \"# Generated by\" comment")
    .option("--rbac", "print only the ServiceAccount, ClusterRole and ClusterRoleBinding that `traffic-guard sync` needs (in --namespace, default istio-system)")
    .action(async (opts: ManifestOptions, command: Command) => {
      if (opts.rbac) {
        const header = opts.header ? `Generated by traffic-guard ${VERSION}: traffic-guard ${argv.map(shellQuote).join(" ")}` : undefined;
        io.stdout(renderSyncRbac({ namespace: opts.namespace?.[0] }, header));
        return;
      }
      const targets = [opts.namespace ? "--namespace" : "", opts.meshWide ? "--mesh-wide" : "", opts.gateway ? "--gateway" : ""].filter(Boolean);
      if (targets.length !== 1) {
        command.error(`error: choose exactly one of --namespace, --mesh-wide or --gateway${targets.length ? ` (got ${targets.join(", ")})` : ""}`, { exitCode: 2, code: "traffic-guard.usage" });
      }
      if ((opts.image === undefined) === (opts.url === undefined)) {
        command.error("error: give exactly one of --image or --url", { exitCode: 2, code: "traffic-guard.usage" });
      }
      const source = resolveModuleSource(opts);
      let pluginConfig: Record<string, unknown> = {};
      if (opts.policy !== undefined) pluginConfig = policyAsPluginConfig(await readPolicyFile(opts.policy));
      const effective = opts.policyMode ? { ...pluginConfig, mode: opts.policyMode } : pluginConfig;
      // What Istio hands the filter: the pluginConfig serialised as JSON (nothing at all when it is empty).
      const wasm = await loadProxyWasm(opts.wasm);
      const verdict = await checkPolicy(wasm.module, Object.keys(effective).length === 0 ? "" : JSON.stringify(effective));
      if (!verdict.ok) throw new UserError(`policy ${opts.policy ?? "(defaults)"} is rejected by the filter`, verdict.problems);

      const base = {
        ...source,
        pluginConfig,
        mode: opts.policyMode,
        phase: opts.phase,
        failStrategy: opts.failStrategy,
        priority: opts.priority,
        imagePullPolicy: opts.imagePullPolicy,
        imagePullSecret: opts.imagePullSecret,
        selector: opts.selector,
        matchMode: opts.matchMode,
        name: opts.name,
      };
      const inputs: PluginObjectInput[] = opts.gateway
        ? [{ ...base, namespace: GATEWAY.namespace, name: opts.name ?? GATEWAY.name, selector: opts.selector ?? GATEWAY.selector, matchMode: opts.matchMode ?? GATEWAY.matchMode }]
        : opts.meshWide
          ? [{ ...base, namespace: opts.rootNamespace }]
          : [...new Set(opts.namespace!)].map((namespace) => ({ ...base, namespace }));
      const build = opts.api === "traffic-extension" ? buildTrafficExtension : buildWasmPlugin;
      const objects = inputs.map((input) => build(input));
      const header = opts.header
        ? `Generated by traffic-guard ${VERSION}: traffic-guard ${argv.map(shellQuote).join(" ")}`
        : undefined;
      io.stdout(renderYaml(objects, header));
    });

  registerSync(program, io, { resolveModuleSource, defaultWasm: DEFAULT_WASM });
  return program;
}

interface ManifestOptions {
  policy?: string;
  image?: string;
  url?: string;
  sha256?: string;
  namespace?: string[];
  meshWide?: boolean;
  rootNamespace: string;
  gateway?: boolean;
  name?: string;
  selector?: Record<string, string>;
  phase: Phase;
  failStrategy: FailStrategy;
  priority: number;
  imagePullPolicy: PullPolicy;
  imagePullSecret?: string;
  matchMode?: MatchMode;
  policyMode?: PolicyMode;
  api: "wasmplugin" | "traffic-extension";
  wasm: string;
  header: boolean;
  rbac?: boolean;
}

function shellQuote(arg: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, "'\\''")}'`;
}

/** Works out spec.url and spec.sha256 from --image/--url/--sha256. */
function resolveModuleSource(opts: ManifestOptions): { url: string; sha256?: string } {
  let sha = opts.sha256;
  if (sha !== undefined) {
    sha = sha.trim().replace(/^sha256:/i, "").toLowerCase();
    if (!/^[a-f0-9]{64}$/.test(sha)) throw new UserError(`--sha256 "${opts.sha256}" is not a sha256 digest (64 hex digits, optionally prefixed sha256:)`);
  }
  if (opts.image !== undefined) {
    const ref = parseReference(opts.image);
    if (!ref.tag && !ref.digest) throw new UserError(`--image "${opts.image}" needs a tag or a @sha256: digest`);
    const pinned = ref.digest?.slice("sha256:".length);
    if (pinned && sha && pinned !== sha) throw new UserError(`--image pins sha256:${pinned} but --sha256 is ${sha}`);
    return { url: `oci://${formatReference(ref)}`, sha256: sha ?? pinned };
  }
  let url: URL;
  try {
    url = new URL(opts.url!);
  } catch {
    throw new UserError(`--url "${opts.url}" is not a URL (expected https://…, http://… or file:///…)`);
  }
  if (!["https:", "http:", "file:"].includes(url.protocol)) {
    throw new UserError(`--url "${opts.url}" must use https, http or file (for an OCI image use --image)`);
  }
  return { url: opts.url!, sha256: sha };
}

async function loadSource(source: string): Promise<OciImage> {
  let info;
  try {
    info = await stat(source);
  } catch {
    throw new UserError(`push source not found: ${source} (an OCI layout directory from \`traffic-guard package\` or a .wasm file)`);
  }
  if (info.isDirectory()) return readLayout(source);
  const wasm = await loadProxyWasm(source);
  return buildImage(wasm.bytes);
}

/** Runs the CLI with `argv` (without node and script) and returns the exit code. */
export async function run(argv: string[], io: CliIO = defaultIO): Promise<number> {
  const program = createProgram(io, argv);
  try {
    await program.parseAsync(argv, { from: "user" });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Commander already printed its message (or the help). Help and version requests succeed; the rest is usage.
      return ["commander.helpDisplayed", "commander.version"].includes(err.code) ? 0 : 2;
    }
    if (err instanceof UserError) {
      io.stderr(`error: ${err.message}\n`);
      for (const line of err.details) io.stderr(`  ${line}\n`);
      return 1;
    }
    io.stderr(`error: unexpected failure: ${describeError(err)}\n${err instanceof Error && err.stack ? `${err.stack}\n` : ""}`);
    return 1;
  }
}

const invokedDirectly = process.argv[1] !== undefined && fileURLToPath(import.meta.url) === realpathSync(process.argv[1]);
if (invokedDirectly) {
  const code = await run(process.argv.slice(2));
  // Exit once output is flushed, without waiting for idle keep-alive sockets of the registry client.
  process.stdout.write("", () => process.exit(code));
}

// `traffic-guard push`: uploads an OCI image layout (or a .wasm, packaged on the fly) with the OCI distribution
// protocol, skipping blobs the registry already has, and prints the pinned reference.
import type { Command } from "commander";
import { stat } from "node:fs/promises";
import { intInRange, type CommandContext } from "./lib/command.ts";
import { resolveCredentials } from "./lib/credentials.ts";
import { UserError } from "./lib/errors.ts";
import { buildImage, readLayout, type OciImage } from "./lib/oci.ts";
import { formatReference, parseReference } from "./lib/reference.ts";
import { pushImage } from "./lib/registry.ts";
import { loadProxyWasm } from "./lib/wasm-module.ts";

/** Adds `traffic-guard push` to the program. */
export function registerPush(program: Command, { io }: CommandContext): Command {
  return program
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
}

/** An OCI layout directory as it is, or a .wasm file packaged the way `package` would. */
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

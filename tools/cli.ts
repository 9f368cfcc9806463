#!/usr/bin/env node
// traffic-guard: validate a policy with the compiled filter, package the filter as an OCI image, push it, emit the
// Istio manifests that deploy it, and keep opted-in namespaces in sync. This file only wires the commands; each
// lives in its own file beside it. Bundled by esbuild into dist/traffic-guard.mjs (the package's bin).
//
// Exit codes: 0 success, 1 a user error (bad input, rejected policy, registry or auth failure), 2 a usage error
// (unknown command or option, missing argument, invalid choice).
import { Command, CommanderError } from "commander";
import { realpathSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { processIO, type CliIO, type CommandContext } from "./lib/command.ts";
import { describeError, UserError } from "./lib/errors.ts";
import { registerDecisions } from "./decisions.ts";
import { VERSION } from "./lib/manifests.ts";
import { registerManifests } from "./manifests.ts";
import { registerMonitoring } from "./monitoring.ts";
import { registerPackage } from "./package.ts";
import { registerPush } from "./push.ts";
import { registerSync } from "./sync.ts";
import { registerValidate } from "./validate.ts";

export type { CliIO } from "./lib/command.ts";

/** Where the built filter sits relative to this file: <pkg>/dist/traffic-guard.mjs or <pkg>/tools/cli.ts. */
export const DEFAULT_WASM = fileURLToPath(new URL("../build/traffic-guard.wasm", import.meta.url));

/** Creates the commander program for `argv` (used in the manifests header); `io` receives all output. */
export function createProgram(io: CliIO = processIO, argv: string[] = []): Command {
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

  const context: CommandContext = { io, argv, defaultWasm: DEFAULT_WASM };
  registerValidate(program, context);
  registerPackage(program, context);
  registerPush(program, context);
  registerManifests(program, context);
  registerMonitoring(program, context);
  registerSync(program, context);
  registerDecisions(program, context);
  return program;
}

/** Runs the CLI with `argv` (without node and script) and returns the exit code. */
export async function run(argv: string[], io: CliIO = processIO): Promise<number> {
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

/** Defined (true) only in the single-executable bundle (scripts/sea.ts), which is always the program being run. */
declare const __TRAFFIC_GUARD_SEA__: boolean | undefined;
const invokedDirectly =
  typeof __TRAFFIC_GUARD_SEA__ !== "undefined" ||
  (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === realpathSync(process.argv[1]));
if (invokedDirectly) {
  // No top-level await: the same file is also bundled as CommonJS for the single executable (scripts/sea.ts).
  void run(process.argv.slice(2)).then((code) => {
    // Exit once output is flushed, without waiting for idle keep-alive sockets of the registry client.
    process.stdout.write("", () => process.exit(code));
  });
}

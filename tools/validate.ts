// `traffic-guard validate`: configures the compiled filter with a policy and prints its verdict, so the CLI and the
// proxy can never disagree about what a valid policy is.
import type { Command } from "commander";
import { type CommandContext } from "./lib/command.ts";
import { UserError } from "./lib/errors.ts";
import { checkPolicy, readPolicyFile } from "./lib/policy.ts";
import { loadProxyWasm } from "./lib/wasm-module.ts";

/** Adds `traffic-guard validate` to the program. */
export function registerValidate(program: Command, { io, defaultWasm }: CommandContext): Command {
  return program
    .command("validate")
    .description("check a policy (the WasmPlugin pluginConfig) by configuring the compiled filter with it")
    .argument("<policy>", "policy file: .json (passed to the filter byte for byte) or .yaml/.yml (converted to JSON)")
    .option("--wasm <file>", "the compiled filter to ask", defaultWasm)
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
}

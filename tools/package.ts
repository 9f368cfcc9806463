// `traffic-guard package`: writes the filter as an OCI image layout (and optionally a tarball) that Istio's Wasm
// image fetcher accepts, and prints the manifest digest that WasmPlugin.spec.sha256 pins.
import type { Command } from "commander";
import { rm } from "node:fs/promises";
import { type CommandContext } from "./lib/command.ts";
import { UserError } from "./lib/errors.ts";
import { buildImage, layoutTar, MediaType, WASM_FILE_NAME, writeFileAtomic, writeLayout } from "./lib/oci.ts";
import { loadProxyWasm } from "./lib/wasm-module.ts";

/** Adds `traffic-guard package` to the program. */
export function registerPackage(program: Command, { io, defaultWasm }: CommandContext): Command {
  return program
    .command("package")
    .description("write the filter as an OCI image layout that Istio's Wasm image fetcher accepts (compat variant)")
    .option("--wasm <file>", "the compiled filter", defaultWasm)
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
}

// Loads a .wasm file and checks that it is a proxy-wasm filter before anything packages, pushes or runs it.
import { readFile, stat } from "node:fs/promises";
import { UserError } from "./errors.ts";
import { ABI_VERSION_EXPORT, missingExports } from "./proxy-wasm-abi.ts";

/** A compiled proxy-wasm module together with its bytes. */
export interface LoadedWasm {
  path: string;
  bytes: Uint8Array;
  module: WebAssembly.Module;
  /** The ABI marker export, e.g. `proxy_abi_version_0_2_0`. */
  abiVersion: string;
}

const WASM_MAGIC = [0x00, 0x61, 0x73, 0x6d];

/** Checks compiled exports against what Envoy needs; returns the ABI marker or throws a UserError naming what is missing. */
export function checkProxyWasmExports(module: WebAssembly.Module, label: string): string {
  const exports = WebAssembly.Module.exports(module);
  const abi = exports.map((e) => e.name).find((name) => ABI_VERSION_EXPORT.test(name));
  const missing = [...(abi ? [] : ["proxy_abi_version_*"]), ...missingExports(exports)];
  if (missing.length > 0) {
    throw new UserError(`${label} is not a proxy-wasm module: missing export${missing.length > 1 ? "s" : ""} ${missing.join(", ")}`);
  }
  return abi!;
}

/** Reads, compiles and checks a proxy-wasm filter; every failure is a UserError that names the file. */
export async function loadProxyWasm(path: string): Promise<LoadedWasm> {
  let bytes: Uint8Array;
  try {
    const info = await stat(path);
    if (info.isDirectory()) throw new UserError(`wasm file ${path} is a directory`);
    bytes = new Uint8Array(await readFile(path));
  } catch (err) {
    if (err instanceof UserError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new UserError(`wasm file not found: ${path} (build it with \`npm run build\` or pass --wasm)`);
    throw new UserError(`cannot read wasm file ${path}: ${(err as Error).message}`);
  }
  if (bytes.length < 8 || WASM_MAGIC.some((b, i) => bytes[i] !== b)) {
    throw new UserError(`${path} is not a WebAssembly module (it does not start with the \\0asm header)`);
  }
  let module: WebAssembly.Module;
  try {
    module = await WebAssembly.compile(bytes as Uint8Array<ArrayBuffer>);
  } catch (err) {
    throw new UserError(`${path} is not a valid WebAssembly module: ${(err as Error).message}`);
  }
  const abiVersion = checkProxyWasmExports(module, path);
  return { path, bytes, module, abiVersion };
}

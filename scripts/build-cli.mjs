// Bundles the CLI (tools/cli.ts and its dependencies) into one file, dist/traffic-guard.mjs: the package's bin.
// Run by `npm run build:cli` (and so by `npm run build`).
import { build } from "esbuild";
import { chmod } from "node:fs/promises";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const outfile = `${root}dist/traffic-guard.mjs`;

await build({
  entryPoints: [`${root}tools/cli.ts`],
  outfile,
  bundle: true,
  platform: "node",
  target: "node20",
  format: "esm",
  // Some dependencies (commander, ajv) are CommonJS and require() Node built-ins; an ES module has no require,
  // so give the bundle one.
  banner: { js: 'import { createRequire as __tgCreateRequire } from "node:module"; const require = __tgCreateRequire(import.meta.url);' },
  // re2-wasm (the regex engine of @kubernetes-models' prometheus-operator validators) loads re2.wasm from beside its
  // own file via __dirname, so it is required at run time from the installed package (scripts/re2-runtime.mjs), and
  // only by the command that needs it, rather than bundled.
  external: ["re2-wasm"],
  alias: { "@kubernetes-models/validate/runtime/re2": `${root}scripts/re2-runtime.mjs` },
  legalComments: "eof",
  logLevel: "warning",
});
await chmod(outfile, 0o755);

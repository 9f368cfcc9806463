// Bundles the CLI (tools/cli.ts and its dependencies) into one file, dist/traffic-guard.mjs: the package's bin.
// Run by `npm run build:cli` (and so by `npm run build` and `prepare`). `--metafile <file>` also writes esbuild's
// metafile (every input the bundle pulls in), which tests/cli/bundle.test.ts reads.
import { build } from "esbuild";
import { chmod, writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const outfile = `${root}dist/traffic-guard.mjs`;

const metaArg = process.argv.indexOf("--metafile");
const metafile = metaArg === -1 ? undefined : process.argv[metaArg + 1];
if (metaArg !== -1 && !metafile) throw new Error("--metafile needs a file name");

const result = await build({
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
  metafile: metafile !== undefined,
});
await chmod(outfile, 0o755);
if (metafile) await writeFile(metafile, JSON.stringify(result.metafile));

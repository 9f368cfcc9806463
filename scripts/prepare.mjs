// npm runs `prepare` after `npm ci` / `npm install` in this repository (and before `npm pack`): build the release
// wasm and bundle the CLI, so that `npx traffic-guard` works from the first command (the bin is dist/, and validate
// needs build/traffic-guard.wasm). An install without devDependencies (`--omit=dev`) has neither AssemblyScript nor
// esbuild: it says so and leaves the build to `npm run build`, instead of failing the install.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const missing = ["assemblyscript", "esbuild"].filter((p) => !existsSync(join(root, "node_modules", p, "package.json")));
if (missing.length > 0) {
  console.error(`prepare: ${missing.join(" and ")} not installed (devDependencies omitted): not building; run npm run build after a full npm ci`);
  process.exit(0);
}
// The npm that runs this lifecycle script (npm_execpath), so that every step uses the same npm.
const npm = process.env.npm_execpath ? [process.execPath, process.env.npm_execpath] : ["npm"];
for (const script of ["build:wasm", "build:cli"]) {
  const r = spawnSync(npm[0], [...npm.slice(1), "run", script], { cwd: root, stdio: "inherit" });
  if (r.status !== 0) {
    console.error(`prepare: npm run ${script} failed (exit ${r.status ?? r.signal})`);
    process.exit(r.status ?? 1);
  }
}

// Builds the controller's container image (`npm run build:controller-image`): the CLI as one Node.js single
// executable application (SEA), plus exactly the shared libraries it loads and the compiled filter, as an OCI image
// layout written by the CLI's own OCI writer (tools/lib/oci.ts). Push it with `traffic-guard push <out> <ref>`.
//
// No container engine and no base image: the layer holds only
//   /opt/traffic-guard/dist/traffic-guard       the executable (this machine's node with the CLI injected)
//   /opt/traffic-guard/build/traffic-guard.wasm the filter, where the CLI's default --wasm resolves: DEFAULT_WASM is
//                                               ../build/traffic-guard.wasm relative to the bundle, and in the SEA
//                                               the bundle's URL is the executable's path
//   every library `ldd` lists for node, at the path ldd resolved it to, and the dynamic loader at its PT_INTERP
//   path (/lib64/ld-linux-x86-64.so.2). Without /etc/ld.so.cache the loader searches its built-in system
//   directories, which on Debian include /lib/x86_64-linux-gnu.
// The image runs as 65532:65532 (numeric, so no /etc/passwd is needed) and writes nothing, so a read-only root
// filesystem works.
//
// Reproducible: the bundle (esbuild), the SEA blob (no snapshot, no code cache) and postject's injection are
// deterministic, and the layer has sorted entries, fixed modes, owner 0:0 and mtime 0. The same node binary,
// libraries, sources and filter give the same digest. The SEA executable is cached by the hash of its inputs under
// ~/.cache/traffic-guard/sea (or $TRAFFIC_GUARD_CACHE/sea; the newest three are kept), since injecting into a
// 100 MB binary takes a while.
//
// This file is a development tool: it is not part of the CLI bundle.
import { build, type Plugin } from "esbuild";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { chmod, copyFile, mkdir, mkdtemp, readdir, readFile, realpath, rename, rm, stat, writeFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { buildContainerImage, writeLayout, type ContainerFile, type OciImage } from "../tools/lib/oci.ts";
import { VERSION } from "../tools/lib/manifests.ts";

/** Repository root. */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");

/** Where things sit in the image. */
export const IMAGE_PATHS = {
  executable: "/opt/traffic-guard/dist/traffic-guard",
  wasm: "/opt/traffic-guard/build/traffic-guard.wasm",
} as const;

/** The non-root user the image runs as (uid:gid). */
export const IMAGE_USER = "65532:65532";

/** The fuse string Node's SEA support looks for; postject flips it when it injects the blob. */
const SEA_FUSE = "NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2";

function cacheRoot(): string {
  return process.env.TRAFFIC_GUARD_CACHE ?? join(homedir(), ".cache", "traffic-guard");
}

const sha256 = (data: Uint8Array | string) => createHash("sha256").update(data).digest("hex");

/**
 * Optional native add-ons that dependencies require inside try/catch (ws: bufferutil, utf-8-validate; node-fetch:
 * encoding) and that are not installed. Left external, the SEA's require (built-in modules only) would print a
 * warning on every start; bundled as a module that throws, the dependencies take their pure-JS path silently.
 */
const absentOptionalModules: Plugin = {
  name: "absent-optional-modules",
  setup(b) {
    b.onResolve({ filter: /^(bufferutil|utf-8-validate|encoding)$/ }, (args) => ({ path: args.path, namespace: "absent" }));
    b.onLoad({ filter: /.*/, namespace: "absent" }, (args) => ({
      contents: `throw new Error(${JSON.stringify(`${args.path} is not part of the single executable`)});`,
      loader: "js",
    }));
  },
};

/** Bundles tools/cli.ts as one CommonJS script, the only form a Node 20 SEA runs. */
export async function bundleCjs(): Promise<Uint8Array> {
  const result = await build({
    entryPoints: [join(ROOT, "tools/cli.ts")],
    bundle: true,
    write: false,
    platform: "node",
    target: "node20",
    format: "cjs",
    // import.meta does not exist in CommonJS: give the bundle its own URL (in a SEA, __filename is the executable),
    // so that DEFAULT_WASM resolves beside the executable as it does beside dist/traffic-guard.mjs.
    define: { "import.meta.url": "__tgImportMetaUrl", __TRAFFIC_GUARD_SEA__: "true" },
    banner: { js: 'const __tgImportMetaUrl = require("node:url").pathToFileURL(__filename).href;' },
    legalComments: "eof",
    logLevel: "warning",
    plugins: [absentOptionalModules],
  });
  return result.outputFiles[0].contents;
}

function run(cmd: string, args: string[], cwd?: string): string {
  const r = spawnSync(cmd, args, { cwd, encoding: "utf8", maxBuffer: 64 * 1024 * 1024 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} failed (${r.status ?? r.signal}): ${r.stderr || r.error?.message}`);
  return r.stdout;
}

/** The node binary the SEA is made from, checked for the SEA fuse. */
async function nodeBinary(): Promise<{ path: string; bytes: Buffer }> {
  const path = await realpath(process.execPath);
  const bytes = await readFile(path);
  if (!bytes.includes(Buffer.from(`${SEA_FUSE}:0`))) {
    throw new Error(`${path} has no single-executable fuse (${SEA_FUSE}): this node build cannot make a SEA`);
  }
  return { path, bytes };
}

/**
 * The SEA executable for the current sources: from the cache when its inputs are unchanged, else built (bundle,
 * blob, copy of node, postject) and stored. `cache: false` always builds, in a fresh temporary directory.
 */
export async function buildSea(options: { cache?: boolean; log?: (line: string) => void } = {}): Promise<{ path: string; key: string; cached: boolean }> {
  const log = options.log ?? (() => {});
  const bundle = await bundleCjs();
  const node = await nodeBinary();
  const postjectPkg = JSON.parse(await readFile(join(ROOT, "node_modules/postject/package.json"), "utf8")) as { version: string };
  const seaConfig = { main: "cli.cjs", output: "sea-prep.blob", disableExperimentalSEAWarning: true, useSnapshot: false, useCodeCache: false };
  const key = sha256([sha256(bundle), sha256(node.bytes), postjectPkg.version, JSON.stringify(seaConfig)].join("\n"));
  const cached = join(cacheRoot(), "sea", key, "traffic-guard");
  if (options.cache !== false && existsSync(cached)) return { path: cached, key, cached: true };

  const work = await mkdtemp(join(tmpdir(), "traffic-guard-sea-"));
  try {
    await writeFile(join(work, "cli.cjs"), bundle);
    await writeFile(join(work, "sea-config.json"), JSON.stringify(seaConfig));
    log(`sea: blob from a ${bundle.length}-byte bundle`);
    run(node.path, ["--experimental-sea-config", "sea-config.json"], work);
    const exe = join(work, "traffic-guard");
    await copyFile(node.path, exe);
    await chmod(exe, 0o755);
    log(`sea: injecting into a copy of ${node.path} (postject ${postjectPkg.version})`);
    run(process.execPath, [join(ROOT, "node_modules/postject/dist/cli.js"), exe, "NODE_SEA_BLOB", join(work, "sea-prep.blob"), "--sentinel-fuse", SEA_FUSE]);
    if (options.cache === false) {
      const out = join(await mkdtemp(join(tmpdir(), "traffic-guard-sea-out-")), "traffic-guard");
      await rename(exe, out);
      return { path: out, key, cached: false };
    }
    await mkdir(dirname(cached), { recursive: true });
    const temp = `${cached}.tmp-${process.pid}`;
    await rename(exe, temp);
    await rename(temp, cached);
    await pruneCache(join(cacheRoot(), "sea"), key);
    return { path: cached, key, cached: false };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** Each cached executable is ~100 MB: keep the newest few (several worktrees may build different sources). */
async function pruneCache(dir: string, keep: string, max = 3): Promise<void> {
  const entries = await Promise.all((await readdir(dir)).map(async (name) => ({ name, mtime: (await stat(join(dir, name))).mtimeMs })));
  const old = entries.filter((e) => e.name !== keep).sort((a, b) => b.mtime - a.mtime).slice(max - 1);
  for (const e of old) await rm(join(dir, e.name), { recursive: true, force: true });
}

/** The shared libraries `ldd` lists for `binary` (resolved paths) and the dynamic loader, in ldd's order. */
export function sharedLibraries(binary: string): string[] {
  const paths: string[] = [];
  for (const line of run("ldd", [binary]).split("\n")) {
    const arrow = /=>\s+(\/\S+)\s+\(/.exec(line);
    const loader = /^\s*(\/\S+)\s+\(/.exec(line);
    if (arrow) paths.push(arrow[1]);
    else if (loader) paths.push(loader[1]);
    else if (/not found/.test(line)) throw new Error(`ldd ${binary}: ${line.trim()}`);
    // linux-vdso.so.1 is provided by the kernel: nothing to copy.
  }
  return paths;
}

/** Builds the image from a SEA executable and the compiled filter. */
export async function controllerImage(executable: string, wasmPath = join(ROOT, "build/traffic-guard.wasm")): Promise<OciImage> {
  if (!existsSync(wasmPath)) throw new Error(`${wasmPath} is missing: run npm run build:wasm first`);
  const files: ContainerFile[] = [
    { path: IMAGE_PATHS.executable, data: await readFile(executable), mode: 0o755 },
    { path: IMAGE_PATHS.wasm, data: await readFile(wasmPath), mode: 0o644 },
  ];
  for (const lib of sharedLibraries(executable)) {
    // The file itself (libraries are often symlinks), at the path the loader asks for; permission bits as shipped.
    const real = await realpath(lib);
    files.push({ path: lib, data: await readFile(real), mode: (await stat(real)).mode & 0o755 });
  }
  return buildContainerImage(files, {
    user: IMAGE_USER,
    entrypoint: [IMAGE_PATHS.executable],
    cmd: ["--help"],
    env: ["PATH=/opt/traffic-guard/dist"],
    exposedPorts: ["9090/tcp"],
    labels: {
      "org.opencontainers.image.title": "traffic-guard",
      "org.opencontainers.image.version": VERSION,
      "org.opencontainers.image.licenses": "Apache-2.0",
    },
  });
}

/** Builds the SEA (cached unless `cache` is false) and writes the image layout to `out`; returns the image. */
export async function buildControllerImage(out: string, options: { cache?: boolean; tag?: string; log?: (line: string) => void } = {}): Promise<OciImage> {
  const sea = await buildSea(options);
  options.log?.(`sea: ${sea.path}${sea.cached ? " (cached)" : ""}`);
  const image = await controllerImage(sea.path);
  await writeLayout(out, image, options.tag ?? VERSION);
  if (options.cache === false) await rm(dirname(sea.path), { recursive: true, force: true });
  return image;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const outAt = args.indexOf("--out");
  const out = outAt >= 0 ? args[outAt + 1] : join(ROOT, "build/controller-image");
  const tagAt = args.indexOf("--tag");
  const started = Date.now();
  const image = await buildControllerImage(out, {
    cache: !args.includes("--no-cache"),
    tag: tagAt >= 0 ? args[tagAt + 1] : undefined,
    log: (line) => process.stderr.write(`${line}\n`),
  });
  process.stderr.write(`wrote OCI image layout ${out}: one layer of ${image.layers[0].size} bytes, in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
  process.stdout.write(`${image.manifest.digest}\n`);
}

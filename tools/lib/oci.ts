// The OCI image that carries the filter, in the "compat" variant of the Wasm image spec that Istio's image
// fetcher (istio/istio pkg/wasm/imagefetcher.go) accepts:
//   - an ordinary OCI image manifest (application/vnd.oci.image.manifest.v1+json);
//   - whose last (here: only) layer is application/vnd.oci.image.layer.v1.tar+gzip;
//   - a tar.gz holding the module as `plugin.wasm` (the fetcher looks for that base name).
// Istio tries this variant first for every non-Docker manifest. docs/deploy-istio.md explains the choice.
//
// buildContainerImage writes an ordinary linux/amd64 container image with the same code (the controller image built
// by scripts/build-controller-image.ts).
//
// Everything is reproducible: the tar has fixed metadata, the gzip header has no timestamp and a fixed OS byte,
// JSON is written by JSON.stringify from objects built in a fixed key order, and no field holds a time.
import { createHash } from "node:crypto";
import { mkdir, readFile, rename, rm, stat, writeFile, readdir } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { gunzipSync, gzipSync } from "node:zlib";
import { UserError } from "./errors.ts";
import { createTar, readTar } from "./tar.ts";

/** Media types of the compat variant. */
export const MediaType = {
  manifest: "application/vnd.oci.image.manifest.v1+json",
  index: "application/vnd.oci.image.index.v1+json",
  config: "application/vnd.oci.image.config.v1+json",
  layer: "application/vnd.oci.image.layer.v1.tar+gzip",
} as const;

/** The file name Istio's fetcher looks for inside the layer. */
export const WASM_FILE_NAME = "plugin.wasm";

/** A content-addressed blob. */
export interface Blob {
  mediaType: string;
  digest: string;
  size: number;
  data: Uint8Array;
}

/** A built (or read) image: manifest bytes plus the blobs it references. */
export interface OciImage {
  manifest: Blob;
  config: Blob;
  layers: Blob[];
}

/** `sha256:<hex>` of the bytes. */
export function sha256Digest(data: Uint8Array): string {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

function blob(mediaType: string, data: Uint8Array): Blob {
  return { mediaType, digest: sha256Digest(data), size: data.length, data };
}

const json = (value: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(value));

/** gzip with no timestamp and OS byte 255 ("unknown"), so the bytes do not depend on the build machine's OS. */
export function reproducibleGzip(data: Uint8Array, level = 9): Uint8Array {
  const out = new Uint8Array(gzipSync(data, { level }));
  out.fill(0, 4, 8); // MTIME
  out[9] = 0xff; // OS
  return out;
}

/** Builds the compat-variant image for a wasm module. Same wasm, same digests. */
export function buildImage(wasm: Uint8Array): OciImage {
  const tar = createTar([{ name: WASM_FILE_NAME, data: wasm }]);
  // A minimal but complete OCI image config: platform wasm/wasi (the values container tools use for Wasm images)
  // and the diff id of the layer, so that generic tools (skopeo, crane, docker) treat it as a regular image.
  return assembleImage(tar, reproducibleGzip(tar), { architecture: "wasm", os: "wasi", config: {} }, { "org.opencontainers.image.title": WASM_FILE_NAME });
}

/** One image of a single layer: config (with the layer's diff id appended) and manifest, in a fixed key order. */
function assembleImage(tar: Uint8Array, gzipped: Uint8Array, configHead: Record<string, unknown>, layerAnnotations?: Record<string, string>): OciImage {
  const layer = blob(MediaType.layer, gzipped);
  const config = blob(MediaType.config, json({ ...configHead, rootfs: { type: "layers", diff_ids: [sha256Digest(tar)] } }));
  const manifest = blob(MediaType.manifest, json({
    schemaVersion: 2,
    mediaType: MediaType.manifest,
    config: { mediaType: config.mediaType, digest: config.digest, size: config.size },
    layers: [{
      mediaType: layer.mediaType,
      digest: layer.digest,
      size: layer.size,
      ...(layerAnnotations ? { annotations: layerAnnotations } : {}),
    }],
  }));
  return { manifest, config, layers: [layer] };
}

/** One file of a container image's layer: an absolute path, its bytes and its permission bits. */
export interface ContainerFile {
  path: string;
  data: Uint8Array;
  mode: number;
}

/** The process settings of a container image (the OCI config's `config` object). */
export interface ContainerConfig {
  /** Numeric `uid:gid`: no /etc/passwd is needed to resolve it. */
  user: string;
  entrypoint: string[];
  cmd?: string[];
  env: string[];
  /** Ports the process listens on, e.g. "9090/tcp". */
  exposedPorts?: string[];
  labels?: Record<string, string>;
}

/**
 * A linux/amd64 container image of one layer holding exactly `files` (plus their parent directories), with no
 * timestamps anywhere: entries sorted by path, mtime 0, owner 0:0, no `created` or `history` in the config. The
 * same files and settings give the same digests.
 */
export function buildContainerImage(files: ContainerFile[], settings: ContainerConfig): OciImage {
  const dirs = new Set<string>();
  const entries: Array<{ name: string; data?: Uint8Array; mode: number }> = [];
  const seen = new Set<string>();
  for (const file of files) {
    if (!file.path.startsWith("/") || file.path.endsWith("/") || file.path.split("/").some((p, i) => i > 0 && (p === "" || p === "." || p === ".."))) {
      throw new Error(`container image path must be an absolute file path: ${file.path}`);
    }
    const name = file.path.slice(1);
    if (seen.has(name)) throw new Error(`container image path given twice: ${file.path}`);
    seen.add(name);
    const parts = name.split("/");
    for (let i = 1; i < parts.length; i++) dirs.add(`${parts.slice(0, i).join("/")}/`);
    entries.push({ name, data: file.data, mode: file.mode });
  }
  for (const dir of dirs) entries.push({ name: dir, mode: 0o755 });
  // Plain code-unit order: a directory ("lib/") sorts before its contents ("lib/x"), whatever the locale.
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const tar = createTar(entries);
  const config: Record<string, unknown> = {
    User: settings.user,
    ...(settings.exposedPorts?.length ? { ExposedPorts: Object.fromEntries(settings.exposedPorts.map((p) => [p, {}])) } : {}),
    Env: settings.env,
    Entrypoint: settings.entrypoint,
    ...(settings.cmd ? { Cmd: settings.cmd } : {}),
    ...(settings.labels ? { Labels: settings.labels } : {}),
  };
  // Level 6 (zlib's default): a 100 MB executable compresses in a few seconds, level 9 takes several times longer
  // for a few percent. Any fixed level is reproducible with the same zlib.
  return assembleImage(tar, reproducibleGzip(tar, 6), { architecture: "amd64", os: "linux", config });
}

/** Every blob of the image, config first, then layers (the order a push uploads them in). */
export function imageBlobs(image: OciImage): Blob[] {
  return [image.config, ...image.layers];
}

/** The files of an OCI image layout for the image, as (relative path, bytes), in a fixed order. */
export function layoutFiles(image: OciImage, refName: string): Array<[string, Uint8Array]> {
  const index = json({
    schemaVersion: 2,
    mediaType: MediaType.index,
    manifests: [{
      mediaType: image.manifest.mediaType,
      digest: image.manifest.digest,
      size: image.manifest.size,
      annotations: { "org.opencontainers.image.ref.name": refName },
    }],
  });
  const blobs = new Map<string, Uint8Array>();
  for (const b of [image.manifest, ...imageBlobs(image)]) blobs.set(b.digest.slice("sha256:".length), b.data);
  return [
    ["oci-layout", json({ imageLayoutVersion: "1.0.0" })],
    ["index.json", index],
    ...[...blobs.keys()].sort().map((hex): [string, Uint8Array] => [`blobs/sha256/${hex}`, blobs.get(hex)!]),
  ];
}

/** A tarball of the layout (what `skopeo copy oci-archive:…` reads), as reproducible as the layout itself. */
export function layoutTar(image: OciImage, refName: string): Uint8Array {
  const files = layoutFiles(image, refName);
  return createTar([
    ...files.filter(([p]) => !p.startsWith("blobs/")).map(([name, data]) => ({ name, data })),
    { name: "blobs/" },
    { name: "blobs/sha256/" },
    ...files.filter(([p]) => p.startsWith("blobs/")).map(([name, data]) => ({ name, data })),
  ]);
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Writes the image layout to `dir` atomically: everything goes to a sibling temporary directory that is renamed
 * into place at the end, so a failure never leaves a partial layout. An existing OCI layout at `dir` is replaced;
 * any other existing non-empty directory or file is an error.
 */
export async function writeLayout(dir: string, image: OciImage, refName: string): Promise<void> {
  const target = resolve(dir);
  if (await exists(target)) {
    const info = await stat(target);
    if (!info.isDirectory()) throw new UserError(`--out ${dir} exists and is not a directory`);
    const entries = await readdir(target);
    if (entries.length > 0 && !entries.includes("oci-layout")) {
      throw new UserError(`--out ${dir} is a non-empty directory that is not an OCI image layout; refusing to overwrite it`);
    }
  }
  const parent = dirname(target);
  if (!(await exists(parent))) throw new UserError(`cannot write --out ${dir}: directory ${parent} does not exist`);
  const temp = join(parent, `.${basename(target)}.tmp-${process.pid}-${Date.now()}`);
  try {
    for (const [rel, data] of layoutFiles(image, refName)) {
      await mkdir(dirname(join(temp, rel)), { recursive: true });
      await writeFile(join(temp, rel), data);
    }
    if (await exists(target)) await rm(target, { recursive: true, force: true });
    await rename(temp, target);
  } catch (err) {
    await rm(temp, { recursive: true, force: true });
    if (err instanceof UserError) throw err;
    throw new UserError(`cannot write OCI layout to ${dir}: ${(err as Error).message}`);
  }
}

/** Writes `data` to `path` through a temporary file and a rename, so the file is either complete or absent. */
export async function writeFileAtomic(path: string, data: Uint8Array): Promise<void> {
  const temp = `${path}.tmp-${process.pid}-${Date.now()}`;
  try {
    await writeFile(temp, data);
    await rename(temp, path);
  } catch (err) {
    await rm(temp, { force: true });
    throw new UserError(`cannot write ${path}: ${(err as Error).message}`);
  }
}

function parseJson(data: Uint8Array, what: string): Record<string, unknown> {
  try {
    const value = JSON.parse(new TextDecoder().decode(data)) as unknown;
    if (value && typeof value === "object" && !Array.isArray(value)) return value as Record<string, unknown>;
  } catch {
    // reported below
  }
  throw new UserError(`${what} is not a JSON object`);
}

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

function descriptor(value: unknown, what: string): Descriptor {
  const d = value as Partial<Descriptor> | undefined;
  if (!d || typeof d.mediaType !== "string" || typeof d.digest !== "string" || typeof d.size !== "number") {
    throw new UserError(`${what} is not a valid descriptor (mediaType, digest, size)`);
  }
  if (!/^sha256:[a-f0-9]{64}$/.test(d.digest)) throw new UserError(`${what} has unsupported digest ${d.digest}`);
  return d as Descriptor;
}

/**
 * Reads an image from an OCI layout directory and verifies every blob against its digest and size.
 * With several manifests in index.json, `refName` picks one by its `org.opencontainers.image.ref.name`.
 */
export async function readLayout(dir: string, refName?: string): Promise<OciImage> {
  const readBlob = async (d: Descriptor, what: string): Promise<Blob> => {
    const path = join(dir, "blobs", "sha256", d.digest.slice("sha256:".length));
    let data: Uint8Array;
    try {
      data = new Uint8Array(await readFile(path));
    } catch {
      throw new UserError(`${dir}: ${what} blob ${d.digest} is missing (${path})`);
    }
    const actual = sha256Digest(data);
    if (actual !== d.digest) {
      throw new UserError(`${dir}: digest mismatch for ${what}: ${path} hashes to ${actual}, expected ${d.digest}`);
    }
    if (data.length !== d.size) throw new UserError(`${dir}: size mismatch for ${what} ${d.digest}: ${data.length} bytes, expected ${d.size}`);
    return { mediaType: d.mediaType, digest: d.digest, size: d.size, data };
  };
  let layoutText: Uint8Array;
  try {
    layoutText = new Uint8Array(await readFile(join(dir, "oci-layout")));
  } catch {
    throw new UserError(`${dir} is not an OCI image layout (no oci-layout file); create one with \`traffic-guard package --out ${dir}\``);
  }
  if (parseJson(layoutText, `${dir}/oci-layout`).imageLayoutVersion !== "1.0.0") {
    throw new UserError(`${dir}/oci-layout: unsupported imageLayoutVersion`);
  }
  let indexBytes: Uint8Array;
  try {
    indexBytes = new Uint8Array(await readFile(join(dir, "index.json")));
  } catch {
    throw new UserError(`${dir} is not an OCI image layout (no index.json)`);
  }
  const index = parseJson(indexBytes, `${dir}/index.json`);
  const manifests = Array.isArray(index.manifests) ? index.manifests.map((m, i) => descriptor(m, `index.json manifests[${i}]`)) : [];
  let chosen: Descriptor | undefined;
  if (refName !== undefined) {
    chosen = manifests.find((m) => m.annotations?.["org.opencontainers.image.ref.name"] === refName);
    if (!chosen) throw new UserError(`${dir}/index.json has no manifest named ${refName}`);
  } else if (manifests.length === 1) {
    chosen = manifests[0];
  } else {
    throw new UserError(`${dir}/index.json lists ${manifests.length} manifests; expected exactly one`);
  }
  if (chosen.mediaType !== MediaType.manifest) {
    throw new UserError(`${dir}: manifest ${chosen.digest} has media type ${chosen.mediaType}, expected ${MediaType.manifest}`);
  }
  const manifest = await readBlob(chosen, "manifest");
  const body = parseJson(manifest.data, `manifest ${manifest.digest}`);
  const config = await readBlob(descriptor(body.config, "manifest config"), "config");
  const layerDescs = Array.isArray(body.layers) ? body.layers : [];
  if (layerDescs.length === 0) throw new UserError(`${dir}: manifest ${manifest.digest} has no layers`);
  const layers: Blob[] = [];
  for (let i = 0; i < layerDescs.length; i++) layers.push(await readBlob(descriptor(layerDescs[i], `layer ${i}`), `layer ${i}`));
  return { manifest, config, layers };
}

/** Extracts plugin.wasm from a compat-variant layer (tar.gz), as Istio's fetcher does; undefined when absent. */
export function wasmFromLayer(layer: Uint8Array): Uint8Array | undefined {
  const files = readTar(new Uint8Array(gunzipSync(layer)));
  for (const [name, data] of files) if (basename(name) === WASM_FILE_NAME) return data;
  return undefined;
}

// `traffic-guard package`: an OCI image layout in the compat variant that Istio's image fetcher accepts, reproducible.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { before, describe, test } from "node:test";
import { ensureBuilt, lines, requirePrograms, runCli, tempDir, WASM } from "./helpers.ts";

const sha256 = (data: Uint8Array): string => `sha256:${createHash("sha256").update(data).digest("hex")}`;
const readJson = (path: string): any => JSON.parse(readFileSync(path, "utf8"));
const blobPath = (dir: string, digest: string): string => join(dir, "blobs", "sha256", digest.replace(/^sha256:/, ""));

before(() => ensureBuilt());

describe("traffic-guard package", () => {
  test("writes an OCI layout whose manifest is the compat variant: one tar+gzip layer holding exactly plugin.wasm", async (t) => {
    const dir = await tempDir(t);
    const out = join(dir, "image");
    const r = await runCli(["package", "--out", out]);
    assert.equal(r.code, 0, r.stderr);
    const digest = r.stdout.trim();
    assert.match(r.stdout, /^sha256:[a-f0-9]{64}\n$/);

    assert.deepEqual(readJson(join(out, "oci-layout")), { imageLayoutVersion: "1.0.0" });
    const index = readJson(join(out, "index.json"));
    assert.equal(index.manifests.length, 1);
    assert.equal(index.manifests[0].mediaType, "application/vnd.oci.image.manifest.v1+json");
    assert.equal(index.manifests[0].digest, digest);

    // Every blob is stored under its own digest.
    for (const name of readdirSync(join(out, "blobs", "sha256"))) {
      assert.equal(sha256(readFileSync(join(out, "blobs", "sha256", name))), `sha256:${name}`);
    }
    const manifestBytes = readFileSync(blobPath(out, digest));
    assert.equal(index.manifests[0].size, manifestBytes.length);
    const manifest = JSON.parse(manifestBytes.toString("utf8"));
    assert.equal(manifest.schemaVersion, 2);
    // Istio's fetcher treats application/vnd.docker.distribution.manifest.v2+json as Docker; this must not be that.
    assert.equal(manifest.mediaType, "application/vnd.oci.image.manifest.v1+json");
    assert.equal(manifest.config.mediaType, "application/vnd.oci.image.config.v1+json");
    assert.equal(manifest.layers.length, 1);
    assert.equal(manifest.layers[0].mediaType, "application/vnd.oci.image.layer.v1.tar+gzip");

    // The layer, unpacked by the system tar, holds exactly one file: plugin.wasm, byte for byte the built filter.
    const layer = blobPath(out, manifest.layers[0].digest);
    assert.deepEqual(lines(execFileSync("tar", ["-tzf", layer], { encoding: "utf8" })), ["plugin.wasm"]);
    const unpacked = join(dir, "unpacked");
    await mkdir(unpacked);
    execFileSync("tar", ["-xzf", layer, "-C", unpacked]);
    assert.ok(Buffer.compare(readFileSync(join(unpacked, "plugin.wasm")), readFileSync(WASM)) === 0, "plugin.wasm differs from build/traffic-guard.wasm");

    // The config's diff id is the digest of the uncompressed layer, as in any OCI image.
    const config = readJson(blobPath(out, manifest.config.digest));
    const uncompressed = execFileSync("gzip", ["-dc", layer]);
    assert.deepEqual(config.rootfs, { type: "layers", diff_ids: [sha256(uncompressed)] });
    assert.match(r.stderr, /one application\/vnd\.oci\.image\.layer\.v1\.tar\+gzip layer with plugin\.wasm/);
  });

  test("is reproducible: the same wasm packaged twice, a second apart, gives identical digests and tarballs", async (t) => {
    const dir = await tempDir(t);
    const first = await runCli(["package", "--out", join(dir, "a"), "--tar", join(dir, "a.tar")]);
    await new Promise((r) => setTimeout(r, 1100)); // any timestamp with one-second resolution would now differ
    const second = await runCli(["package", "--wasm", WASM, "--out", join(dir, "b"), "--tar"]);
    assert.equal(first.code, 0, first.stderr);
    assert.equal(second.code, 0, second.stderr);
    assert.equal(first.stdout, second.stdout);
    assert.ok(readFileSync(join(dir, "a.tar")).equals(readFileSync(join(dir, "b.tar"))), "tarballs differ");
    assert.deepEqual(readdirSync(join(dir, "a", "blobs", "sha256")).sort(), readdirSync(join(dir, "b", "blobs", "sha256")).sort());
    assert.deepEqual(lines(execFileSync("tar", ["-tf", join(dir, "a.tar")], { encoding: "utf8" })).slice(0, 4), [
      "oci-layout", "index.json", "blobs/", "blobs/sha256/",
    ]);
  });

  test("skopeo reads both the layout and the tarball and reports the printed digest", async (t) => {
    const tools = requirePrograms(t, ["skopeo"], "skopeo checks the layout with an independent OCI implementation");
    if (!tools) return;
    const dir = await tempDir(t);
    const r = await runCli(["package", "--out", join(dir, "image"), "--tar", "--tag", "0.1.0"]);
    assert.equal(r.code, 0, r.stderr);
    const digest = r.stdout.trim();
    const raw = execFileSync(tools.skopeo, ["inspect", "--raw", `oci:${join(dir, "image")}:0.1.0`]);
    assert.equal(sha256(raw), digest);
    const fromLayout = JSON.parse(execFileSync(tools.skopeo, ["inspect", `oci:${join(dir, "image")}`], { encoding: "utf8" }));
    assert.equal(fromLayout.Digest, digest);
    const fromArchive = JSON.parse(execFileSync(tools.skopeo, ["inspect", `oci-archive:${join(dir, "image.tar")}`], { encoding: "utf8" }));
    assert.equal(fromArchive.Digest, digest);
  });

  test("replaces an earlier layout at --out but refuses to overwrite a directory that is not one", async (t) => {
    const dir = await tempDir(t);
    const out = join(dir, "image");
    assert.equal((await runCli(["package", "--out", out])).code, 0);
    const again = await runCli(["package", "--out", out]);
    assert.equal(again.code, 0, again.stderr);
    const precious = join(dir, "precious");
    await mkdir(precious);
    await writeFile(join(precious, "notes.txt"), "keep me");
    const r = await runCli(["package", "--out", precious]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^error: --out .*precious is a non-empty directory that is not an OCI image layout; refusing to overwrite it\n$/);
    assert.deepEqual(readdirSync(precious), ["notes.txt"]);
  });
});

describe("traffic-guard package with bad input", () => {
  const cases: Array<[string, (dir: string) => Promise<string>, RegExp]> = [
    ["a missing wasm file", async (dir) => join(dir, "nope.wasm"), /^error: wasm file not found: .*nope\.wasm \(build it with `npm run build` or pass --wasm\)\n$/],
    ["a file that is not WebAssembly", async (dir) => {
      await writeFile(join(dir, "notes.wasm"), "hello, not wasm");
      return join(dir, "notes.wasm");
    }, /^error: .*notes\.wasm is not a WebAssembly module \(it does not start with the \\0asm header\)\n$/],
    ["a WebAssembly module that is not a proxy-wasm filter (no proxy-wasm exports)", async (dir) => {
      // The smallest valid module: header only, no exports at all.
      await writeFile(join(dir, "empty.wasm"), Uint8Array.from([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]));
      return join(dir, "empty.wasm");
    }, /^error: .*empty\.wasm is not a proxy-wasm module: missing exports proxy_abi_version_\*, memory, malloc, proxy_on_vm_start, proxy_on_configure\n$/],
    ["a truncated module", async (dir) => {
      await writeFile(join(dir, "cut.wasm"), readFileSync(WASM).subarray(0, 200));
      return join(dir, "cut.wasm");
    }, /^error: .*cut\.wasm is not a valid WebAssembly module: /],
  ];
  for (const [what, make, message] of cases) {
    test(`${what} gives one clear error, exit 1, and leaves no output directory or tarball`, async (t) => {
      const dir = await tempDir(t);
      const wasm = await make(dir);
      const r = await runCli(["package", "--wasm", wasm, "--out", join(dir, "out"), "--tar"]);
      assert.equal(r.code, 1);
      assert.equal(r.stdout, "");
      assert.match(r.stderr, message);
      assert.equal(lines(r.stderr).length, 1, r.stderr);
      assert.equal(existsSync(join(dir, "out")), false, "a partial output directory was left behind");
      assert.equal(existsSync(join(dir, "out.tar")), false, "a tarball was left behind");
      assert.deepEqual(readdirSync(dir).filter((f) => f.startsWith(".out")), [], "a temporary directory was left behind");
    });
  }

  test("an --out inside a directory that does not exist is refused without creating anything", async (t) => {
    const dir = await tempDir(t);
    const r = await runCli(["package", "--out", join(dir, "missing", "image")]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^error: cannot write --out .*: directory .*missing does not exist\n$/);
    assert.equal(existsSync(join(dir, "missing")), false);
  });

  test("a missing --out is a usage error (exit 2) and --help exits 0", async () => {
    const r = await runCli(["package"]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /required option '--out <dir>' not specified/);
    const help = await runCli(["package", "--help"]);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /--tar \[file\]/);
  });
});

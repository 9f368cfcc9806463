// The pieces push is made of, tested without a registry: image references, WWW-Authenticate parsing, where
// credentials come from, the OCI layout reader and the tar writer.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, test } from "node:test";
import { ENV_PASSWORD, ENV_USERNAME, registryKey, resolveCredentials } from "../../tools/lib/credentials.ts";
import { UserError } from "../../tools/lib/errors.ts";
import { buildImage, readLayout, wasmFromLayer, writeLayout } from "../../tools/lib/oci.ts";
import { formatReference, parseReference } from "../../tools/lib/reference.ts";
import { parseChallenge } from "../../tools/lib/registry.ts";
import { createTar, readTar } from "../../tools/lib/tar.ts";
import { tempDir, WASM } from "./helpers.ts";

describe("image references", () => {
  test("parses registry, repository, tag and digest the way Docker and go-containerregistry do", () => {
    const digest = `sha256:${"c".repeat(64)}`;
    const cases: Array<[string, string, string, string | undefined, string | undefined]> = [
      ["127.0.0.1:5000/traffic-guard:0.1.0", "127.0.0.1:5000", "traffic-guard", "0.1.0", undefined],
      ["oci://registry.example.com/platform/traffic-guard:v1", "registry.example.com", "platform/traffic-guard", "v1", undefined],
      [`localhost/tg@${digest}`, "localhost", "tg", undefined, digest],
      [`ghcr.io/org/tg:1.2@${digest}`, "ghcr.io", "org/tg", "1.2", digest],
      ["traffic-guard:1", "docker.io", "library/traffic-guard", "1", undefined],
      ["someone/traffic-guard", "docker.io", "someone/traffic-guard", undefined, undefined],
      ["[::1]:5000/tg:x", "[::1]:5000", "tg", "x", undefined],
    ];
    for (const [input, registry, repository, tag, d] of cases) {
      const ref = parseReference(input);
      assert.deepEqual([ref.registry, ref.repository, ref.tag, ref.digest], [registry, repository, tag, d], input);
    }
    assert.equal(formatReference(parseReference("oci://127.0.0.1:5000/a/b:c")), "127.0.0.1:5000/a/b:c");
  });

  test("rejects malformed references with a message naming the part that is wrong", () => {
    const bad: Array<[string, RegExp]> = [
      ["", /it is empty/],
      [" registry.example.com/tg:1", /surrounding spaces/],
      ["registry.example.com/TG:1", /repository component "TG" must be lowercase/],
      ["registry.example.com/tg:-bad", /tag "-bad"/],
      ["registry.example.com/tg@sha256:abc", /digest "sha256:abc"/],
      ["registry.example.com//tg:1", /empty component/],
      ["http://registry.example.com/tg:1", /unsupported scheme http:\/\//],
      ["bad_host.example.com:5000/tg:1", /registry "bad_host\.example\.com:5000" is not a host name/],
    ];
    for (const [input, message] of bad) {
      assert.throws(() => parseReference(input), (err: unknown) => err instanceof UserError && message.test(err.message), input);
    }
  });
});

describe("WWW-Authenticate challenges", () => {
  test("reads the scheme and the quoted parameters of Bearer and Basic challenges", () => {
    assert.deepEqual(parseChallenge('Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull"'), {
      scheme: "bearer",
      params: { realm: "https://auth.example.com/token", service: "registry.example.com", scope: "repository:a/b:pull" },
    });
    assert.deepEqual(parseChallenge('Basic realm="Registry Realm"'), { scheme: "basic", params: { realm: "Registry Realm" } });
    assert.deepEqual(parseChallenge('Bearer realm="a\\"b", error=insufficient_scope').params, { realm: 'a"b', error: "insufficient_scope" });
  });
});

describe("where push credentials come from", () => {
  test("flags win over the environment, which wins over docker config.json", async (t) => {
    const dir = await tempDir(t);
    await writeFile(join(dir, "config.json"), JSON.stringify({ auths: { "registry.example.com": { auth: Buffer.from("cfg-user:cfg:pass").toString("base64") } } }));
    const env = { DOCKER_CONFIG: dir, [ENV_USERNAME]: "env-user", [ENV_PASSWORD]: "env-pass" };
    assert.equal((await resolveCredentials("registry.example.com", { username: "flag-user", password: "p", env })).credentials?.username, "flag-user");
    assert.equal((await resolveCredentials("registry.example.com", { env })).credentials?.username, "env-user");
    const fromFile = await resolveCredentials("registry.example.com", { env: { DOCKER_CONFIG: dir } });
    assert.deepEqual(fromFile.credentials, { username: "cfg-user", password: "cfg:pass", source: join(dir, "config.json") });
    assert.deepEqual(await resolveCredentials("other.example.com", { env: { DOCKER_CONFIG: dir } }), {});
  });

  test("matches docker config keys written with a scheme or a path, and Docker Hub's legacy key", () => {
    assert.equal(registryKey("https://registry.example.com:5000/v1/"), "registry.example.com:5000");
    assert.equal(registryKey("https://index.docker.io/v1/"), "docker.io");
    assert.equal(registryKey("127.0.0.1:5000"), "127.0.0.1:5000");
  });

  test("half a credential is an error, and a credential helper becomes a hint instead of a silent anonymous push", async (t) => {
    await assert.rejects(resolveCredentials("r.example.com", { username: "u", env: {} }), /--username and --password \(or --password-stdin\) must be given together/);
    await assert.rejects(resolveCredentials("r.example.com", { env: { [ENV_USERNAME]: "u" } }), /must be set together/);
    const dir = await tempDir(t);
    await writeFile(join(dir, "config.json"), JSON.stringify({ credsStore: "desktop" }));
    const resolved = await resolveCredentials("r.example.com", { env: { DOCKER_CONFIG: dir } });
    assert.equal(resolved.credentials, undefined);
    assert.match(resolved.hint ?? "", /delegates credentials to docker-credential-desktop/);
  });
});

describe("OCI layout reader and tar writer", () => {
  test("readLayout returns exactly what writeLayout wrote, and the layer yields the wasm", async (t) => {
    const dir = await tempDir(t);
    const wasm = readFileSync(WASM);
    const image = buildImage(wasm);
    await writeLayout(join(dir, "image"), image, "latest");
    const back = await readLayout(join(dir, "image"));
    assert.equal(back.manifest.digest, image.manifest.digest);
    assert.deepEqual(back.layers.map((l) => l.digest), image.layers.map((l) => l.digest));
    assert.ok(Buffer.from(wasmFromLayer(back.layers[0].data)!).equals(wasm));
  });

  test("readLayout refuses a layout whose index lists several manifests unless one is named", async (t) => {
    const dir = await tempDir(t);
    await writeLayout(join(dir, "image"), buildImage(readFileSync(WASM)), "a");
    const indexFile = join(dir, "image", "index.json");
    const index = JSON.parse(readFileSync(indexFile, "utf8"));
    index.manifests.push({ ...index.manifests[0], annotations: { "org.opencontainers.image.ref.name": "b" } });
    await writeFile(indexFile, JSON.stringify(index));
    await assert.rejects(readLayout(join(dir, "image")), /lists 2 manifests; expected exactly one/);
    assert.equal((await readLayout(join(dir, "image"), "b")).manifest.digest, index.manifests[0].digest);
  });

  test("the tar writer's archives are read by GNU tar with the names, modes and zero mtimes it wrote", async (t) => {
    const dir = await tempDir(t);
    const data = new TextEncoder().encode("x".repeat(1000));
    const archive = createTar([{ name: "dir/" }, { name: "dir/file.txt", data }, { name: "empty" }]);
    await writeFile(join(dir, "a.tar"), archive);
    const listing = execFileSync("tar", ["-tvf", join(dir, "a.tar"), "--numeric-owner"], { encoding: "utf8", env: { ...process.env, TZ: "UTC" } });
    assert.match(listing, /^drwxr-xr-x 0\/0 +0 1970-01-01 00:00 dir\/\n-rw-r--r-- 0\/0 +1000 1970-01-01 00:00 dir\/file\.txt\n-rw-r--r-- 0\/0 +0 1970-01-01 00:00 empty\n$/);
    await mkdir(join(dir, "out"));
    execFileSync("tar", ["-xf", join(dir, "a.tar"), "-C", join(dir, "out")]);
    assert.equal(readFileSync(join(dir, "out", "dir", "file.txt"), "utf8"), "x".repeat(1000));
    assert.deepEqual([...readTar(archive).keys()], ["dir/file.txt", "empty"]);
  });
});

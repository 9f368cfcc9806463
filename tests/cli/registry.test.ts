// `traffic-guard push` against a real registry (Debian's docker-registry), checked with an independent client
// (skopeo): open, with htpasswd basic auth, and with bearer tokens.
import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { cpSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { ensureBuilt, lines, runCli, tempDir, which, WASM } from "./helpers.ts";
import { requestsSince, startRegistry, type RunningRegistry } from "./registry-server.ts";

const sha256 = (data: Uint8Array): string => `sha256:${createHash("sha256").update(data).digest("hex")}`;

const NEEDED = ["docker-registry", "skopeo", "htpasswd", "openssl"];
const missing = NEEDED.filter((p) => !which(p));
const skip = missing.length > 0
  ? `${missing.join(", ")} not installed (apt-get install docker-registry skopeo apache2-utils openssl; .ci/run installs them)`
  : false;
if (missing.length > 0 && process.env.CI === "true") {
  test("the registry test tools are installed (CI=true)", () => assert.fail(`CI=true but ${skip}`));
}

/** Runs skopeo asynchronously (the token service lives in this process and must keep answering); returns stdout. */
function skopeo(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile("skopeo", args, { encoding: "utf8", timeout: 60_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`skopeo ${args.join(" ")} failed: ${stderr || err.message}`));
      else resolve(stdout);
    });
  });
}

let layout = "";
let digest = "";
let work = "";
before(async () => {
  if (skip) return;
  ensureBuilt();
  work = execFileSync("mktemp", ["-d", "/tmp/tg-push-XXXXXX"], { encoding: "utf8" }).trim();
  layout = join(work, "image");
  const r = await runCli(["package", "--out", layout]);
  assert.equal(r.code, 0, r.stderr);
  digest = r.stdout.trim();
});
after(() => {
  if (work) execFileSync("rm", ["-rf", work]);
});

describe("push to an open registry", { skip }, () => {
  let registry: RunningRegistry;
  before(async () => {
    registry = await startRegistry(which("docker-registry")!, { kind: "none" });
  });
  after(() => registry?.stop());

  test("pushes the package and skopeo reads back the compat-variant manifest under the printed digest", async () => {
    const r = await runCli(["push", layout, `${registry.host}/traffic-guard:0.1.0`, "--insecure"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `${registry.host}/traffic-guard:0.1.0@${digest}\n`);
    assert.match(r.stderr, /layer 1 sha256:[a-f0-9]{12}: uploaded [\d.]+ KiB \(100%\)/);

    const raw = await skopeo(["inspect", "--raw", "--tls-verify=false", `docker://${registry.host}/traffic-guard:0.1.0`]);
    assert.equal(sha256(Buffer.from(raw)), digest, "the registry serves the exact manifest bytes");
    const manifest = JSON.parse(raw);
    assert.equal(manifest.mediaType, "application/vnd.oci.image.manifest.v1+json");
    assert.equal(manifest.config.mediaType, "application/vnd.oci.image.config.v1+json");
    assert.deepEqual(manifest.layers.map((l: { mediaType: string }) => l.mediaType), ["application/vnd.oci.image.layer.v1.tar+gzip"]);
    assert.equal(manifest.layers[0].annotations["org.opencontainers.image.title"], "plugin.wasm");
    const inspected = JSON.parse(await skopeo(["inspect", "--tls-verify=false", `docker://${registry.host}/traffic-guard:0.1.0`]));
    assert.equal(inspected.Digest, digest);
  });

  test("the pulled layer unpacks to plugin.wasm, byte for byte the built filter", async (t) => {
    const dir = await tempDir(t);
    await runCli(["push", layout, `${registry.host}/pull-back:1`, "--insecure"]);
    await skopeo(["copy", "--src-tls-verify=false", `docker://${registry.host}/pull-back:1`, `dir:${join(dir, "pulled")}`]);
    const manifest = JSON.parse(readFileSync(join(dir, "pulled", "manifest.json"), "utf8"));
    const layerFile = join(dir, "pulled", manifest.layers[0].digest.replace("sha256:", ""));
    await mkdir(join(dir, "unpacked"));
    execFileSync("tar", ["-xzf", layerFile, "-C", join(dir, "unpacked")]);
    assert.deepEqual(readdirSync(join(dir, "unpacked")), ["plugin.wasm"]);
    assert.ok(readFileSync(join(dir, "unpacked", "plugin.wasm")).equals(readFileSync(WASM)), "pulled plugin.wasm differs from build/traffic-guard.wasm");
  });

  test("a second push uploads nothing: both blobs are found by HEAD and the manifest is left alone", async () => {
    const ref = `${registry.host}/twice:1`;
    const first = await runCli(["push", layout, ref, "--insecure"]);
    assert.equal(first.code, 0, first.stderr);
    const mark = registry.output().length;
    const second = await runCli(["push", layout, ref, "--insecure"]);
    assert.equal(second.code, 0, second.stderr);
    assert.equal(second.stdout, first.stdout);
    assert.equal((second.stderr.match(/already in the registry, skipped/g) ?? []).length, 2, second.stderr);
    assert.match(second.stderr, /0 blob\(s\) uploaded, 2 already present, manifest unchanged/);
    await new Promise((r) => setTimeout(r, 200)); // let the access log catch up
    const requests = requestsSince(registry, mark);
    assert.deepEqual(requests.filter((l) => /^(POST|PATCH|PUT) /.test(l)), [], `the second push wrote to the registry:\n${requests.join("\n")}`);
    assert.equal(requests.filter((l) => l.startsWith("HEAD /v2/twice/blobs/")).length, 2, requests.join("\n"));
  });

  test("a .wasm pushed in chunks (PATCH with Content-Range) becomes the same image as the package", async () => {
    const mark = registry.output().length;
    const r = await runCli(["push", WASM, `${registry.host}/chunked:1`, "--insecure", "--chunk-size", "4096"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `${registry.host}/chunked:1@${digest}\n`);
    await new Promise((r) => setTimeout(r, 200));
    const patches = requestsSince(registry, mark).filter((l) => l.startsWith("PATCH /v2/chunked/blobs/uploads/"));
    assert.ok(patches.length >= 2, `expected several PATCH requests, got:\n${patches.join("\n")}`);
    assert.match(r.stderr, /uploaded 4\.0 KiB of [\d.]+ KiB \(\d+%\)/);
    assert.equal(sha256(Buffer.from(await skopeo(["inspect", "--raw", "--tls-verify=false", `docker://${registry.host}/chunked:1`]))), digest);
  });

  test("a reference pinned by digest pushes the manifest by digest", async () => {
    const r = await runCli(["push", layout, `${registry.host}/by-digest@${digest}`, "--insecure"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `${registry.host}/by-digest@${digest}\n`);
    const raw = await skopeo(["inspect", "--raw", "--tls-verify=false", `docker://${registry.host}/by-digest@${digest}`]);
    assert.equal(sha256(Buffer.from(raw)), digest);
  });

  test("a corrupted blob in the layout is a digest mismatch: exit 1 and nothing is uploaded", async (t) => {
    const dir = await tempDir(t);
    cpSync(layout, join(dir, "image"), { recursive: true });
    const manifest = JSON.parse(readFileSync(join(dir, "image", "blobs", "sha256", digest.slice(7)), "utf8"));
    const layerFile = join(dir, "image", "blobs", "sha256", manifest.layers[0].digest.slice(7));
    const bytes = readFileSync(layerFile);
    bytes[bytes.length - 20] ^= 0xff;
    writeFileSync(layerFile, bytes);
    const mark = registry.output().length;
    const r = await runCli(["push", join(dir, "image"), `${registry.host}/corrupt:1`, "--insecure"]);
    assert.equal(r.code, 1);
    assert.equal(r.stdout, "");
    assert.match(r.stderr, /^error: .*: digest mismatch for layer 0: .* hashes to sha256:[a-f0-9]{64}, expected sha256:[a-f0-9]{64}\n$/);
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(requestsSince(registry, mark), []);
  });

  test("a digest-pinned reference that does not match the image is refused before contacting the registry", async () => {
    const other = `sha256:${"0".repeat(64)}`;
    const r = await runCli(["push", layout, `${registry.host}/pinned@${other}`, "--insecure"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^error: digest mismatch: the reference pins sha256:0{64} but the image's manifest digest is sha256:[a-f0-9]{64}\n$/);
  });

  test("without --insecure, a plain-HTTP registry gives a clear error that suggests --insecure", async () => {
    const r = await runCli(["push", layout, `${registry.host}/tls:1`]);
    assert.equal(r.code, 1);
    assert.equal(lines(r.stderr).length, 1, r.stderr);
    assert.match(r.stderr, /^error: cannot reach registry 127\.0\.0\.1:\d+ .*for a plain-HTTP registry pass --insecure\)\n$/);
  });
});

describe("push errors that need no registry", { skip }, () => {
  test("a registry that cannot be reached is one clear error line and exit 1", async () => {
    const port = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, "127.0.0.1", () => {
        const { port } = s.address() as { port: number };
        s.close(() => resolve(port)); // nothing listens here any more
      });
    });
    const r = await runCli(["push", layout, `127.0.0.1:${port}/traffic-guard:1`, "--insecure"]);
    assert.equal(r.code, 1);
    assert.equal(r.stdout, "");
    assert.match(r.stderr, new RegExp(`^error: cannot reach registry 127\\.0\\.0\\.1:${port} \\(GET http://127\\.0\\.0\\.1:${port}/v2/\\): fetch failed: connect ECONNREFUSED`));
    assert.equal(lines(r.stderr).length, 1, r.stderr);
  });

  test("bad sources and references are clear errors with exit 1; missing arguments are usage errors", async (t) => {
    const dir = await tempDir(t);
    await writeFile(join(dir, "not.wasm"), "text");
    const cases: Array<[string[], number, RegExp]> = [
      [[join(dir, "missing"), "127.0.0.1:1/x:1"], 1, /^error: push source not found: /],
      [[join(dir, "not.wasm"), "127.0.0.1:1/x:1"], 1, /is not a WebAssembly module/],
      [[dir, "127.0.0.1:1/x:1"], 1, /is not an OCI image layout \(no oci-layout file\)/],
      [[layout, "127.0.0.1:1/UPPER:1"], 1, /^error: invalid image reference "127\.0\.0\.1:1\/UPPER:1": repository component "UPPER" must be lowercase/],
      [[layout, "127.0.0.1:99999/x:1"], 1, /registry port 99999 is out of range/],
      [[layout], 2, /missing required argument 'reference'/],
      [[layout, "127.0.0.1:1/x:1", "--chunk-size", "0"], 2, /--chunk-size must be between 1 and/],
    ];
    for (const [args, code, message] of cases) {
      const r = await runCli(["push", ...args]);
      assert.equal(r.code, code, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, message, args.join(" "));
    }
  });
});

describe("push to a registry with htpasswd basic auth", { skip }, () => {
  const user = "tg-pusher";
  const password = "correct horse battery staple";
  let registry: RunningRegistry;
  before(async () => {
    registry = await startRegistry(which("docker-registry")!, { kind: "htpasswd", username: user, password });
  });
  after(() => registry?.stop());

  const check = async (ref: string) =>
    sha256(Buffer.from(await skopeo(["inspect", "--raw", "--tls-verify=false", "--creds", `${user}:${password}`, `docker://${ref}`])));

  test("pushes with credentials from flags, from --password-stdin, from the environment and from docker config.json", async (t) => {
    const byFlags = await runCli(["push", layout, `${registry.host}/flags:1`, "--insecure", "-u", user, "-p", password]);
    assert.equal(byFlags.code, 0, byFlags.stderr);
    const byStdin = await runCli(["push", layout, `${registry.host}/stdin:1`, "--insecure", "-u", user, "--password-stdin"], { input: `${password}\n` });
    assert.equal(byStdin.code, 0, byStdin.stderr);
    const byEnv = await runCli(["push", layout, `${registry.host}/env:1`, "--insecure"], {
      env: { TRAFFIC_GUARD_REGISTRY_USERNAME: user, TRAFFIC_GUARD_REGISTRY_PASSWORD: password },
    });
    assert.equal(byEnv.code, 0, byEnv.stderr);
    const dockerDir = await tempDir(t);
    await writeFile(join(dockerDir, "config.json"), JSON.stringify({
      auths: { [`http://${registry.host}`]: { auth: Buffer.from(`${user}:${password}`).toString("base64") } },
    }));
    const byConfig = await runCli(["push", layout, `${registry.host}/docker-config:1`, "--insecure"], { env: { DOCKER_CONFIG: dockerDir } });
    assert.equal(byConfig.code, 0, byConfig.stderr);
    for (const repo of ["flags", "stdin", "env", "docker-config"]) assert.equal(await check(`${registry.host}/${repo}:1`), digest, repo);
  });

  test("a wrong password is one clear authentication error, exit 1, and nothing is pushed", async () => {
    const r = await runCli(["push", layout, `${registry.host}/wrong:1`, "--insecure", "-u", user, "-p", "wrong"]);
    assert.equal(r.code, 1);
    assert.equal(r.stdout, "");
    assert.equal(lines(r.stderr).length, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`^error: authentication failed for registry ${registry.host.replace(/\./g, "\\.")} as user "${user}" \\(credentials from command-line flags\\): UNAUTHORIZED: authentication required\\n$`));
    await assert.rejects(check(`${registry.host}/wrong:1`), /manifest unknown|not found|404/i);
  });

  test("no credentials at all: the error says the registry requires authentication and how to give it", async (t) => {
    const empty = await tempDir(t);
    const r = await runCli(["push", layout, `${registry.host}/anonymous:1`, "--insecure"], { env: { DOCKER_CONFIG: empty } });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^error: registry 127\.0\.0\.1:\d+ requires authentication \(HTTP 401, Basic challenge\): pass --username with --password or --password-stdin, set TRAFFIC_GUARD_REGISTRY_USERNAME and TRAFFIC_GUARD_REGISTRY_PASSWORD, or log in with docker login\n$/);
  });
});

describe("push to a registry with bearer token auth", { skip }, () => {
  const user = "tg-token-user";
  const password = "s3cret-for-tokens";
  let registry: RunningRegistry;
  before(async () => {
    registry = await startRegistry(which("docker-registry")!, { kind: "token", username: user, password });
  });
  after(() => registry?.stop());

  test("follows the Bearer challenge: asks the realm for repository:<repo>:pull,push with the credentials, then pushes", async () => {
    const r = await runCli(["push", layout, `${registry.host}/bearer/traffic-guard:1`, "--insecure", "-u", user, "-p", password]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `${registry.host}/bearer/traffic-guard:1@${digest}\n`);
    assert.ok(registry.tokenRequests.some((q) => q.granted && q.user === user && q.scope === "repository:bearer/traffic-guard:pull,push"
      && q.service === "traffic-guard-test-registry"), JSON.stringify(registry.tokenRequests));
    const raw = await skopeo(["inspect", "--raw", "--tls-verify=false", "--creds", `${user}:${password}`, `docker://${registry.host}/bearer/traffic-guard:1`]);
    assert.equal(sha256(Buffer.from(raw)), digest);
  });

  test("a wrong password at the token service is one clear authentication error and exit 1", async () => {
    const r = await runCli(["push", layout, `${registry.host}/bearer/denied:1`, "--insecure", "-u", user, "-p", "nope"]);
    assert.equal(r.code, 1);
    assert.equal(r.stdout, "");
    assert.equal(lines(r.stderr).length, 1, r.stderr);
    assert.match(r.stderr, /^error: authentication failed for registry 127\.0\.0\.1:\d+ as user "tg-token-user" \(credentials from command-line flags\): token service http:\/\/127\.0\.0\.1:\d+ answered UNAUTHORIZED: invalid user name or password\n$/);
  });
});

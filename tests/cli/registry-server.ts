// Runs Debian's docker-registry (distribution 2.8) on a loopback port with a temporary storage directory, open,
// with htpasswd basic auth, or with token (bearer) auth. For token auth a small token service runs in the test
// process: it checks a user name and password and signs a JWT with a throwaway RSA key whose self-signed
// certificate the registry trusts (auth.token.rootcertbundle). The registry does the real work of checking the
// token's signature, issuer, audience, expiry and granted scope on every request.
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { createPrivateKey, randomUUID, sign } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile, mkdir } from "node:fs/promises";
import { createServer as createHttpServer, type Server } from "node:http";
import { createServer as createNetServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** A running registry. */
export interface RunningRegistry {
  /** host:port, e.g. 127.0.0.1:40123 */
  host: string;
  /** Everything the registry printed so far (its access log lists every request). */
  output(): string;
  /** Requests the token service answered (empty without token auth). */
  tokenRequests: Array<{ scope: string | null; service: string | null; user: string | null; granted: boolean }>;
  stop(): Promise<void>;
}

/** How the registry authenticates clients. */
export type RegistryAuth =
  | { kind: "none" }
  | { kind: "htpasswd"; username: string; password: string }
  | { kind: "token"; username: string; password: string };

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createNetServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

const b64url = (data: Buffer | string): string => Buffer.from(data).toString("base64url");

async function startTokenService(
  dir: string,
  auth: { username: string; password: string },
  log: RunningRegistry["tokenRequests"],
): Promise<{ server: Server; realm: string; certFile: string; service: string; issuer: string }> {
  const keyFile = join(dir, "token-key.pem");
  const certFile = join(dir, "token-cert.pem");
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", keyFile, "-out", certFile, "-days", "1",
    "-subj", "/CN=traffic-guard test token issuer",
  ], { stdio: "ignore" });
  const key = createPrivateKey(await readFile(keyFile));
  const certDer = (await readFile(certFile, "utf8")).replace(/-----[^-]+-----/g, "").replace(/\s+/g, "");
  const service = "traffic-guard-test-registry";
  const issuer = "traffic-guard-test-issuer";
  const server = createHttpServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://token");
    const scope = url.searchParams.get("scope");
    const header = req.headers.authorization ?? "";
    const decoded = header.startsWith("Basic ") ? Buffer.from(header.slice(6), "base64").toString("utf8") : "";
    const user = decoded ? decoded.slice(0, decoded.indexOf(":")) : null;
    const granted = decoded === `${auth.username}:${auth.password}`;
    log.push({ scope, service: url.searchParams.get("service"), user, granted });
    if (!granted) {
      res.writeHead(401, { "content-type": "application/json" });
      res.end(JSON.stringify({ errors: [{ code: "UNAUTHORIZED", message: "invalid user name or password" }] }));
      return;
    }
    const access = [];
    const m = /^repository:([^:]+):(.+)$/.exec(scope ?? "");
    if (m) access.push({ type: "repository", name: m[1], actions: m[2].split(",") });
    const now = Math.floor(Date.now() / 1000);
    const head = b64url(JSON.stringify({ typ: "JWT", alg: "RS256", x5c: [certDer] }));
    const claims = b64url(JSON.stringify({ iss: issuer, sub: user, aud: service, exp: now + 300, nbf: now - 10, iat: now, jti: randomUUID(), access }));
    const signature = b64url(sign("RSA-SHA256", Buffer.from(`${head}.${claims}`), key));
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ token: `${head}.${claims}.${signature}`, expires_in: 300 }));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  return { server, realm: `http://127.0.0.1:${port}/token`, certFile, service, issuer };
}

/** Starts docker-registry (path `binary`) and waits until it answers GET /v2/. */
export async function startRegistry(binary: string, auth: RegistryAuth): Promise<RunningRegistry> {
  const dir = await mkdtemp(join(tmpdir(), "tg-registry-"));
  await mkdir(join(dir, "storage"));
  const tokenRequests: RunningRegistry["tokenRequests"] = [];
  let tokenServer: Server | undefined;
  let authYaml = "";
  if (auth.kind === "htpasswd") {
    const line = execFileSync("htpasswd", ["-Bbn", auth.username, auth.password], { encoding: "utf8" }).trim();
    await writeFile(join(dir, "htpasswd"), `${line}\n`);
    authYaml = `auth:\n  htpasswd:\n    realm: traffic-guard-test\n    path: ${join(dir, "htpasswd")}\n`;
  } else if (auth.kind === "token") {
    const token = await startTokenService(dir, auth, tokenRequests);
    tokenServer = token.server;
    authYaml = `auth:\n  token:\n    realm: ${token.realm}\n    service: ${token.service}\n    issuer: ${token.issuer}\n    rootcertbundle: ${token.certFile}\n`;
  }

  let child: ChildProcess | undefined;
  let output = "";
  let host = "";
  for (let attempt = 0; attempt < 3 && !host; attempt++) {
    const port = await freePort();
    const config = join(dir, "config.yml");
    await writeFile(config, [
      "version: 0.1",
      "log:",
      "  level: warn",
      "  accesslog:",
      "    disabled: false",
      "storage:",
      "  filesystem:",
      `    rootdirectory: ${join(dir, "storage")}`,
      "http:",
      `  addr: 127.0.0.1:${port}`,
      `  secret: ${randomUUID()}`,
      authYaml,
    ].join("\n"));
    output = "";
    const proc = spawn(binary, ["serve", config], { stdio: ["ignore", "pipe", "pipe"] });
    proc.stdout!.setEncoding("utf8").on("data", (d: string) => (output += d));
    proc.stderr!.setEncoding("utf8").on("data", (d: string) => (output += d));
    const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
    const deadline = Date.now() + 10_000;
    let ready = false;
    while (Date.now() < deadline && proc.exitCode === null) {
      try {
        const res = await fetch(`http://127.0.0.1:${port}/v2/`, { signal: AbortSignal.timeout(1000) });
        await res.body?.cancel();
        if (res.status === 200 || res.status === 401) {
          ready = true;
          break;
        }
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    if (ready) {
      child = proc;
      host = `127.0.0.1:${port}`;
    } else {
      proc.kill("SIGKILL");
      await exited;
    }
  }
  if (!child || !host) {
    tokenServer?.close();
    await rm(dir, { recursive: true, force: true });
    throw new Error(`docker-registry did not start:\n${output}`);
  }
  const proc = child;
  return {
    host,
    output: () => output,
    tokenRequests,
    async stop() {
      if (proc.exitCode === null) {
        const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
        proc.kill("SIGTERM");
        const timer = setTimeout(() => proc.kill("SIGKILL"), 3000);
        await exited;
        clearTimeout(timer);
      }
      tokenServer?.closeAllConnections();
      await new Promise<void>((resolve) => (tokenServer ? tokenServer.close(() => resolve()) : resolve()));
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Access-log lines (`"METHOD /path HTTP/1.1" status`) printed after `mark` characters of output. */
export function requestsSince(registry: RunningRegistry, mark: number): string[] {
  return [...registry.output().slice(mark).matchAll(/"([A-Z]+) (\/v2\/[^ ]*) HTTP\/1\.1" (\d{3})/g)].map((m) => `${m[1]} ${m[2]} ${m[3]}`);
}

// Push side of the OCI distribution protocol (distribution-spec v1.1 "push"), with Node's fetch:
//   GET  /v2/                                   reachability and the auth challenge
//   HEAD /v2/<repo>/blobs/<digest>              existence check: a blob already there is skipped
//   POST /v2/<repo>/blobs/uploads/              start an upload session (202 + Location)
//   PUT  <location>?digest=<digest>             monolithic upload, or
//   PATCH <location> (Content-Range) … PUT      chunked upload, closed by a PUT with the digest
//   HEAD/PUT /v2/<repo>/manifests/<tag>         the manifest last, so the tag never points at missing blobs
// Authentication follows the WWW-Authenticate challenge: Basic (credentials on every request) or Bearer (a token
// from the realm, asked for with scope repository:<repo>:pull,push, using the credentials if there are any).
import { describeError, UserError } from "./errors.ts";
import type { Credentials } from "./credentials.ts";
import type { Blob, OciImage } from "./oci.ts";
import { imageBlobs } from "./oci.ts";
import { formatReference, type ImageReference } from "./reference.ts";

/** Options for {@link pushImage}. */
export interface PushOptions {
  /** Talk plain HTTP instead of HTTPS. */
  insecure?: boolean;
  credentials?: Credentials;
  /** Shown when the registry wants credentials and none were found (for example: a credential helper is configured). */
  credentialsHint?: string;
  /** Upload blobs in PATCH chunks of this many bytes instead of one PUT. */
  chunkSize?: number;
  /** Progress lines (the CLI writes them to stderr). */
  log?: (line: string) => void;
  /** Per-request timeout in milliseconds (default 60 s). */
  timeoutMs?: number;
}

/** What a push did. */
export interface PushResult {
  /** `registry/repo:tag@sha256:…` */
  reference: string;
  digest: string;
  uploaded: string[];
  skipped: string[];
  /** The tag already pointed at this exact manifest. */
  manifestUnchanged: boolean;
}

interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/** Parses a WWW-Authenticate header with one challenge: `Bearer realm="…",service="…",scope="…"`. */
export function parseChallenge(header: string): Challenge {
  const m = /^\s*([A-Za-z]+)\s*(.*)$/s.exec(header);
  if (!m) return { scheme: "", params: {} };
  const params: Record<string, string> = {};
  const re = /([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?/g;
  let p: RegExpExecArray | null;
  while ((p = re.exec(m[2])) !== null) params[p[1].toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, "$1") : p[3];
  return { scheme: m[1].toLowerCase(), params };
}

const human = (n: number): string =>
  n < 1024 ? `${n} B` : n < 1024 * 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1024 / 1024).toFixed(1)} MiB`;
const short = (digest: string): string => digest.slice(0, "sha256:".length + 12);

/** Formats the registry's JSON error body (`{"errors":[{"code","message"}]}`) or a trimmed text body. */
async function registryError(res: Response): Promise<string> {
  let text = "";
  try {
    text = await res.text();
  } catch {
    // no body
  }
  try {
    const body = JSON.parse(text) as { errors?: Array<{ code?: string; message?: string }> };
    if (Array.isArray(body.errors) && body.errors.length > 0) {
      return body.errors.map((e) => [e.code, e.message].filter(Boolean).join(": ")).join("; ");
    }
  } catch {
    // not JSON
  }
  const trimmed = text.trim().split("\n")[0].slice(0, 200);
  return trimmed ? `HTTP ${res.status}: ${trimmed}` : `HTTP ${res.status} ${res.statusText}`;
}

/** A minimal distribution-spec client for one repository. */
export class RegistryClient {
  readonly ref: ImageReference;
  private readonly base: string;
  private readonly opts: PushOptions;
  private authorization?: string;
  private challenged = false;

  constructor(ref: ImageReference, opts: PushOptions) {
    this.ref = ref;
    this.opts = opts;
    const host = ref.registry === "docker.io" ? "registry-1.docker.io" : ref.registry;
    this.base = `${opts.insecure ? "http" : "https"}://${host}`;
  }

  private url(path: string): string {
    return new URL(path, this.base).toString();
  }

  private async send(method: string, url: string, headers: Record<string, string>, body?: Uint8Array): Promise<Response> {
    const h: Record<string, string> = { "user-agent": "traffic-guard", ...headers };
    if (this.authorization) h.authorization = this.authorization;
    try {
      return await fetch(url, { method, headers: h, body: body as BodyInit | undefined, redirect: "follow", signal: AbortSignal.timeout(this.opts.timeoutMs ?? 60_000) });
    } catch (err) {
      const msg = describeError(err);
      let hint = "";
      if (!this.opts.insecure && /wrong version number|EPROTO|ERR_SSL|packet length too long/i.test(msg)) {
        hint = " (it does not speak TLS; for a plain-HTTP registry pass --insecure)";
      }
      throw new UserError(`cannot reach registry ${this.ref.registry} (${method} ${url}): ${msg}${hint}`);
    }
  }

  /** Sends a request, answering one 401 challenge; throws a clear UserError for authentication failures. */
  async request(method: string, path: string, headers: Record<string, string> = {}, body?: Uint8Array): Promise<Response> {
    const url = this.url(path);
    let res = await this.send(method, url, headers, body);
    if (res.status === 401 && !this.challenged) {
      this.challenged = true;
      const challenge = res.headers.get("www-authenticate");
      await res.body?.cancel();
      await this.authenticate(challenge);
      res = await this.send(method, url, headers, body);
    }
    if (res.status === 401) throw await this.authFailure(res);
    if (res.status === 403) {
      throw new UserError(`registry ${this.ref.registry} denied ${method} ${new URL(url).pathname}${this.who()}: ${await registryError(res)}`);
    }
    return res;
  }

  private who(): string {
    const c = this.opts.credentials;
    return c ? ` as user "${c.username}" (credentials from ${c.source})` : " without credentials";
  }

  private async authFailure(res: Response): Promise<UserError> {
    const detail = await registryError(res);
    if (!this.opts.credentials) return this.needCredentials(detail);
    return new UserError(`authentication failed for registry ${this.ref.registry}${this.who()}: ${detail}`);
  }

  private needCredentials(detail: string): UserError {
    const hint = this.opts.credentialsHint ? ` (${this.opts.credentialsHint})` : "";
    return new UserError(
      `registry ${this.ref.registry} requires authentication (${detail}): pass --username with --password or --password-stdin, ` +
        `set TRAFFIC_GUARD_REGISTRY_USERNAME and TRAFFIC_GUARD_REGISTRY_PASSWORD, or log in with docker login${hint}`,
    );
  }

  private async authenticate(header: string | null): Promise<void> {
    const creds = this.opts.credentials;
    const basic = creds ? `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString("base64")}` : undefined;
    const challenge = parseChallenge(header ?? "");
    if (challenge.scheme === "basic") {
      if (!basic) throw this.needCredentials("HTTP 401, Basic challenge");
      this.authorization = basic;
      return;
    }
    if (challenge.scheme !== "bearer" || !challenge.params.realm) {
      throw new UserError(`registry ${this.ref.registry} answered 401 with an unsupported challenge: ${header ?? "(no WWW-Authenticate header)"}`);
    }
    const realm = new URL(challenge.params.realm);
    if (challenge.params.service) realm.searchParams.set("service", challenge.params.service);
    realm.searchParams.set("scope", `repository:${this.ref.repository}:pull,push`);
    let res: Response;
    try {
      res = await fetch(realm, {
        headers: { "user-agent": "traffic-guard", ...(basic ? { authorization: basic } : {}) },
        signal: AbortSignal.timeout(this.opts.timeoutMs ?? 60_000),
      });
    } catch (err) {
      throw new UserError(`cannot reach the token service ${realm.origin} of registry ${this.ref.registry}: ${describeError(err)}`);
    }
    if (res.status === 401 || res.status === 403) {
      const detail = await registryError(res);
      if (!creds) throw this.needCredentials(`token service answered ${detail}`);
      throw new UserError(`authentication failed for registry ${this.ref.registry}${this.who()}: token service ${realm.origin} answered ${detail}`);
    }
    if (!res.ok) throw new UserError(`token service ${realm.origin} of registry ${this.ref.registry} failed: ${await registryError(res)}`);
    const body = (await res.json().catch(() => ({}))) as { token?: string; access_token?: string };
    const token = body.token ?? body.access_token;
    if (!token) throw new UserError(`token service ${realm.origin} returned no token`);
    this.authorization = `Bearer ${token}`;
  }

  /** Checks that the endpoint is a registry and settles authentication before any upload. */
  async ping(): Promise<void> {
    const res = await this.request("GET", "/v2/");
    await res.body?.cancel();
    if (res.status === 404) throw new UserError(`${this.ref.registry} is not an OCI registry (GET /v2/ answered 404)`);
    if (res.status === 400 && this.opts.insecure) {
      throw new UserError(`registry ${this.ref.registry} answered 400 to plain HTTP; it probably wants HTTPS (drop --insecure)`);
    }
    if (!res.ok) throw new UserError(`registry ${this.ref.registry} answered GET /v2/ with HTTP ${res.status}`);
  }

  /** True when the registry already has the blob. */
  async hasBlob(digest: string): Promise<boolean> {
    const res = await this.request("HEAD", `/v2/${this.ref.repository}/blobs/${digest}`);
    await res.body?.cancel();
    if (res.status === 200) return true;
    if (res.status === 404) return false;
    throw new UserError(`registry ${this.ref.registry}: HEAD blob ${digest} answered HTTP ${res.status}`);
  }

  private withDigest(location: string, digest: string): string {
    const u = new URL(location, this.base);
    u.searchParams.set("digest", digest);
    return u.toString();
  }

  private async expect(res: Response, statuses: number[], what: string, digest?: string): Promise<void> {
    if (statuses.includes(res.status)) return;
    const detail = await registryError(res);
    if (digest && /DIGEST_INVALID|digest/i.test(detail) && res.status === 400) {
      throw new UserError(`digest mismatch: registry ${this.ref.registry} rejected ${what} ${digest}: ${detail}`);
    }
    throw new UserError(`registry ${this.ref.registry}: ${what} failed: ${detail}`);
  }

  private checkDigestHeader(res: Response, expected: string, what: string): void {
    const got = res.headers.get("docker-content-digest");
    if (got && got !== expected) {
      throw new UserError(`digest mismatch: registry ${this.ref.registry} stored ${what} as ${got}, expected ${expected}`);
    }
  }

  /** Uploads one blob, monolithically or in chunks, reporting progress. */
  async uploadBlob(blob: Blob, what: string): Promise<void> {
    const log = this.opts.log ?? (() => {});
    const start = await this.request("POST", `/v2/${this.ref.repository}/blobs/uploads/`, { "content-length": "0" });
    await this.expect(start, [202], `starting the upload of ${what}`);
    await start.body?.cancel();
    let location = start.headers.get("location");
    if (!location) throw new UserError(`registry ${this.ref.registry} started an upload without a Location header`);
    const chunk = this.opts.chunkSize;
    if (!chunk || blob.size <= chunk) {
      log(`${what} ${short(blob.digest)}: uploading ${human(blob.size)} in one request`);
      const res = await this.request("PUT", this.withDigest(location, blob.digest), {
        "content-type": "application/octet-stream",
        "content-length": String(blob.size),
      }, blob.data);
      await this.expect(res, [201], `uploading ${what}`, blob.digest);
      this.checkDigestHeader(res, blob.digest, what);
      await res.body?.cancel();
      log(`${what} ${short(blob.digest)}: uploaded ${human(blob.size)} (100%)`);
      return;
    }
    for (let offset = 0; offset < blob.size; offset += chunk) {
      const end = Math.min(blob.size, offset + chunk);
      const res = await this.request("PATCH", new URL(location, this.base).toString(), {
        "content-type": "application/octet-stream",
        "content-range": `${offset}-${end - 1}`,
        "content-length": String(end - offset),
      }, blob.data.subarray(offset, end));
      await this.expect(res, [202], `uploading bytes ${offset}-${end - 1} of ${what}`, blob.digest);
      await res.body?.cancel();
      location = res.headers.get("location") ?? location;
      log(`${what} ${short(blob.digest)}: uploaded ${human(end)} of ${human(blob.size)} (${Math.floor((end / blob.size) * 100)}%)`);
    }
    const done = await this.request("PUT", this.withDigest(location, blob.digest), { "content-length": "0" });
    await this.expect(done, [201], `finishing the upload of ${what}`, blob.digest);
    this.checkDigestHeader(done, blob.digest, what);
    await done.body?.cancel();
  }

  /** Digest the registry has for a tag or digest, or undefined when it has none. */
  async manifestDigest(reference: string, mediaType: string): Promise<string | undefined> {
    const res = await this.request("HEAD", `/v2/${this.ref.repository}/manifests/${reference}`, { accept: mediaType });
    await res.body?.cancel();
    if (res.status === 404) return undefined;
    if (res.status !== 200) throw new UserError(`registry ${this.ref.registry}: HEAD manifest ${reference} answered HTTP ${res.status}`);
    return res.headers.get("docker-content-digest") ?? undefined;
  }

  /** PUTs the manifest bytes under a tag or digest and checks the digest the registry computed. */
  async putManifest(reference: string, manifest: Blob): Promise<void> {
    const res = await this.request("PUT", `/v2/${this.ref.repository}/manifests/${reference}`, {
      "content-type": manifest.mediaType,
      "content-length": String(manifest.size),
    }, manifest.data);
    await this.expect(res, [201], `pushing the manifest`, manifest.digest);
    this.checkDigestHeader(res, manifest.digest, "the manifest");
    await res.body?.cancel();
  }
}

/** Pushes an image: blobs first (skipping those already present), then the manifest under the tag or digest. */
export async function pushImage(ref: ImageReference, image: OciImage, opts: PushOptions = {}): Promise<PushResult> {
  const log = opts.log ?? (() => {});
  if (ref.digest && ref.digest !== image.manifest.digest) {
    throw new UserError(`digest mismatch: the reference pins ${ref.digest} but the image's manifest digest is ${image.manifest.digest}`);
  }
  const client = new RegistryClient(ref, opts);
  await client.ping();
  const uploaded: string[] = [];
  const skipped: string[] = [];
  const blobs = imageBlobs(image);
  for (const [i, blob] of blobs.entries()) {
    const what = i === 0 ? "config" : `layer ${i}`;
    if (await client.hasBlob(blob.digest)) {
      log(`${what} ${short(blob.digest)}: already in the registry, skipped`);
      skipped.push(blob.digest);
      continue;
    }
    await client.uploadBlob(blob, what);
    uploaded.push(blob.digest);
  }
  const target = ref.tag ?? ref.digest ?? "latest";
  const current = await client.manifestDigest(target, image.manifest.mediaType);
  const manifestUnchanged = current === image.manifest.digest;
  if (manifestUnchanged) {
    log(`manifest ${short(image.manifest.digest)}: ${target} already points at it, skipped`);
  } else {
    await client.putManifest(target, image.manifest);
    log(`manifest ${short(image.manifest.digest)}: pushed as ${target}`);
  }
  const tag = ref.tag ?? (ref.digest ? undefined : "latest");
  return {
    reference: formatReference({ ...ref, tag, digest: image.manifest.digest }),
    digest: image.manifest.digest,
    uploaded,
    skipped,
    manifestUnchanged,
  };
}

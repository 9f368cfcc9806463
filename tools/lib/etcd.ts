// A typed client for etcd's v3 JSON gateway (grpc-gateway over HTTP/1.1, on by default on the client port).
//
// Gateway behaviour this code relies on (etcd 3.7.3, checked against the real binary in tests/cli/etcd.test.ts):
// - every call is a POST of a JSON body; keys and values travel base64-encoded;
// - int64 fields (revisions, lease ids, TTLs, counts) come back as JSON strings; lease ids exceed 2^53, so they are
//   kept as strings here and never turned into numbers;
// - fields with default values are left out of answers (an empty range has no `kvs`, a count of 0 no `count`);
// - an error answers a non-2xx status with {"error", "code", "message"} where code is a gRPC status code: a
//   compacted revision is HTTP 400 code 11 (OUT_OF_RANGE), a bad user or password code 3 (INVALID_ARGUMENT), a
//   missing or expired token code 16 (UNAUTHENTICATED), a denied permission code 7 (PERMISSION_DENIED);
// - with auth enabled, /v3/auth/authenticate trades a user name and password for a token, sent back in the
//   `Authorization` header (the bare token, no scheme);
// - /v3/watch answers one JSON object per line, forever, for a watch created by the request body.
//
// No dependency: node:http(s) carries the CA, client certificate and key that etcd's TLS options need.
import { request as httpRequest, type IncomingMessage } from "node:http";
import { request as httpsRequest } from "node:https";

/** How to reach and authenticate to one etcd endpoint. */
export interface EtcdOptions {
  /** The client URL, e.g. http://127.0.0.1:2379 or https://etcd.example:2379. */
  endpoint: string;
  /** User name and password for etcd's auth (both or neither). */
  username?: string;
  password?: string;
  /** PEM of the CA that signed the server certificate (https only). */
  ca?: string | Buffer;
  /** PEM of the client certificate and key, for servers that ask for one (https only). */
  cert?: string | Buffer;
  key?: string | Buffer;
  /** Timeout of one call in ms (default 5000). */
  timeoutMs?: number;
}

/** One key-value as the gateway returns it, decoded: `key` and `value` as UTF-8 text, int64 fields as strings. */
export interface KeyValue {
  key: string;
  value: string;
  createRevision: string;
  modRevision: string;
  version: string;
  /** The lease id ("0" when none), as a string. */
  lease: string;
}

/** The answer to a range call. */
export interface RangeResult {
  kvs: KeyValue[];
  /** Keys in the whole range (before limit and revision filters). */
  count: number;
  more: boolean;
  /** The store revision the answer was read at. */
  revision: string;
}

/** Arguments of a range call (the gateway's RangeRequest). Keys are UTF-8 text; int64 fields are strings. */
export interface RangeRequest {
  key: string;
  rangeEnd?: string;
  limit?: number;
  revision?: string;
  serializable?: boolean;
  keysOnly?: boolean;
  countOnly?: boolean;
  minModRevision?: string;
}

/** One put in a transaction, or a put call. */
export interface PutRequest {
  key: string;
  value: string;
  /** The lease id as a string; absent for none. */
  lease?: string;
}

/** An error answer of the gateway (or a failure to reach it). */
export class EtcdError extends Error {
  /** HTTP status (0 when no answer came back). */
  readonly status: number;
  /** gRPC status code of the answer (0 when none). */
  readonly code: number;
  constructor(message: string, status: number, code: number) {
    super(message);
    this.name = "EtcdError";
    this.status = status;
    this.code = code;
  }
}

/** gRPC status codes the gateway answers with that callers tell apart. */
export const GRPC = { INVALID_ARGUMENT: 3, PERMISSION_DENIED: 7, FAILED_PRECONDITION: 9, OUT_OF_RANGE: 11, UNAUTHENTICATED: 16 } as const;

/** Whether `err` is the gateway's answer for a compacted revision (HTTP 400, code 11). */
export function isCompacted(err: unknown): boolean {
  return err instanceof EtcdError && err.status === 400 && err.code === GRPC.OUT_OF_RANGE;
}

/** Base64 of a UTF-8 string, as the gateway expects keys and values. */
export function b64(text: string): string {
  return Buffer.from(text, "utf8").toString("base64");
}

/** The UTF-8 text of a base64 field (empty for an absent one). */
export function unb64(field: string | undefined): string {
  return field === undefined ? "" : Buffer.from(field, "base64").toString("utf8");
}

// The end key as base64, computed on bytes (so a prefix ending in a multi-byte character stays exact).
function prefixEndB64(prefix: string): string {
  const bytes = Buffer.from(prefix, "utf8");
  for (let i = bytes.length - 1; i >= 0; i--) {
    if (bytes[i] < 0xff) {
      const end = Buffer.from(bytes.subarray(0, i + 1));
      end[i]++;
      return end.toString("base64");
    }
  }
  return Buffer.from([0]).toString("base64");
}

interface RawKv {
  key?: string;
  value?: string;
  create_revision?: string;
  mod_revision?: string;
  version?: string;
  lease?: string;
}

function decodeKv(kv: RawKv): KeyValue {
  return {
    key: unb64(kv.key),
    value: unb64(kv.value),
    createRevision: kv.create_revision ?? "0",
    modRevision: kv.mod_revision ?? "0",
    version: kv.version ?? "0",
    lease: kv.lease ?? "0",
  };
}

function rangeBody(r: RangeRequest, prefixRange: boolean): Record<string, unknown> {
  const body: Record<string, unknown> = { key: b64(r.key) };
  if (prefixRange) body.range_end = prefixEndB64(r.key);
  else if (r.rangeEnd !== undefined) body.range_end = b64(r.rangeEnd);
  if (r.limit) body.limit = r.limit;
  if (r.revision) body.revision = r.revision;
  if (r.serializable) body.serializable = true;
  if (r.keysOnly) body.keys_only = true;
  if (r.countOnly) body.count_only = true;
  if (r.minModRevision) body.min_mod_revision = r.minModRevision;
  return body;
}

/** An event of a watch: a key put (created or changed) or deleted (also by an expired lease). */
export interface WatchEvent {
  type: "PUT" | "DELETE";
  kv: KeyValue;
}

/** A client for one etcd endpoint through its JSON gateway. */
export class EtcdClient {
  private readonly url: URL;
  private readonly opts: EtcdOptions;
  private token: string | undefined;

  constructor(opts: EtcdOptions) {
    let url: URL;
    try {
      url = new URL(opts.endpoint);
    } catch {
      throw new EtcdError(`"${opts.endpoint}" is not a URL (expected http://host:2379 or https://host:2379)`, 0, 0);
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw new EtcdError(`"${opts.endpoint}" must use http or https`, 0, 0);
    }
    if ((opts.username === undefined) !== (opts.password === undefined)) {
      throw new EtcdError("a user name needs a password and a password a user name", 0, 0);
    }
    this.url = url;
    this.opts = opts;
  }

  /** The endpoint this client talks to, for messages. */
  get endpoint(): string {
    return this.url.origin;
  }

  /** Trades the user name and password for a token (done on the first call when credentials are set). */
  async authenticate(): Promise<void> {
    if (this.opts.username === undefined) return;
    const res = await this.post<{ token?: string }>("/v3/auth/authenticate", { name: this.opts.username, password: this.opts.password }, false);
    if (!res.token) throw new EtcdError("etcd answered the authentication without a token (is auth enabled?)", 200, 0);
    this.token = res.token;
  }

  /** /v3/kv/range. */
  async range(r: RangeRequest): Promise<RangeResult> {
    return this.rangeRaw(rangeBody(r, false));
  }

  /** /v3/kv/range over every key starting with `prefix` (same options as range, rangeEnd ignored). */
  async rangePrefix(r: RangeRequest): Promise<RangeResult> {
    return this.rangeRaw(rangeBody(r, true));
  }

  private async rangeRaw(body: Record<string, unknown>): Promise<RangeResult> {
    const res = await this.call<{ kvs?: RawKv[]; count?: string; more?: boolean; header?: { revision?: string } }>("/v3/kv/range", body);
    return { kvs: (res.kvs ?? []).map(decodeKv), count: Number(res.count ?? "0"), more: res.more === true, revision: res.header?.revision ?? "0" };
  }

  /** Every key under `prefix`, read page by page at one revision (limit keys per page). */
  async listPrefix(prefix: string, limit = 1000): Promise<KeyValue[]> {
    const out: KeyValue[] = [];
    const end = prefixEndB64(prefix);
    let key = b64(prefix);
    let revision: string | undefined;
    for (;;) {
      const body: Record<string, unknown> = { key, range_end: end, limit };
      if (revision) body.revision = revision;
      const page = await this.rangeRaw(body);
      revision ??= page.revision;
      out.push(...page.kvs);
      if (!page.more || page.kvs.length === 0) return out;
      // The next page starts just after the last key: the key with a zero byte appended.
      key = Buffer.concat([Buffer.from(page.kvs[page.kvs.length - 1].key, "utf8"), Buffer.from([0])]).toString("base64");
    }
  }

  /** /v3/kv/put; returns the revision of the write. */
  async put(p: PutRequest): Promise<string> {
    const body: Record<string, unknown> = { key: b64(p.key), value: b64(p.value) };
    if (p.lease && p.lease !== "0") body.lease = p.lease;
    const res = await this.call<{ header?: { revision?: string } }>("/v3/kv/put", body);
    return res.header?.revision ?? "0";
  }

  /** /v3/kv/deleterange of one key, or of every key starting with it when `prefix`; returns how many went. */
  async delete(key: string, prefix = false): Promise<number> {
    const body: Record<string, unknown> = { key: b64(key) };
    if (prefix) body.range_end = prefixEndB64(key);
    const res = await this.call<{ deleted?: string }>("/v3/kv/deleterange", body);
    return Number(res.deleted ?? "0");
  }

  /** /v3/lease/grant with a TTL in seconds (etcd raises anything under 2 to 2); returns the lease id and TTL. */
  async grant(ttlSeconds: number): Promise<{ id: string; ttl: number }> {
    const res = await this.call<{ ID?: string; TTL?: string; error?: string }>("/v3/lease/grant", { TTL: String(ttlSeconds) });
    if (!res.ID) throw new EtcdError(`etcd granted no lease${res.error ? `: ${res.error}` : ""}`, 200, 0);
    return { id: res.ID, ttl: Number(res.TTL ?? "0") };
  }

  /**
   * /v3/kv/txn: when every key in `ifMissing` is absent (create_revision 0), runs the puts and deletes; returns
   * whether it did. Without conditions it always runs.
   */
  async txn(ops: { puts?: PutRequest[]; deletes?: string[]; ifMissing?: string[] }): Promise<boolean> {
    const success: unknown[] = [];
    for (const p of ops.puts ?? []) {
      const put: Record<string, unknown> = { key: b64(p.key), value: b64(p.value) };
      if (p.lease && p.lease !== "0") put.lease = p.lease;
      success.push({ request_put: put });
    }
    for (const k of ops.deletes ?? []) success.push({ request_delete_range: { key: b64(k) } });
    const compare = (ops.ifMissing ?? []).map((k) => ({ key: b64(k), target: "CREATE", result: "EQUAL", create_revision: "0" }));
    const res = await this.call<{ succeeded?: boolean }>("/v3/kv/txn", { compare, success });
    return compare.length === 0 || res.succeeded === true;
  }

  /**
   * /v3/watch of every key starting with `prefix`, from `startRevision` when given. Calls `onEvent` for each event
   * until `signal` aborts; rejects when the stream fails or ends.
   */
  async watchPrefix(prefix: string, onEvent: (e: WatchEvent) => void, signal: AbortSignal, startRevision?: string): Promise<void> {
    if (this.opts.username !== undefined && this.token === undefined) await this.authenticate();
    const create: Record<string, unknown> = { key: b64(prefix), range_end: prefixEndB64(prefix) };
    if (startRevision) create.start_revision = startRevision;
    const res = await this.send("/v3/watch", { create_request: create }, true, signal);
    await new Promise<void>((resolve, reject) => {
      let buffered = "";
      const stop = () => {
        res.destroy();
        resolve();
      };
      signal.addEventListener("abort", stop, { once: true });
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        buffered += chunk;
        let nl: number;
        while ((nl = buffered.indexOf("\n")) >= 0) {
          const line = buffered.slice(0, nl).trim();
          buffered = buffered.slice(nl + 1);
          if (!line) continue;
          let msg: { result?: { events?: { type?: string; kv?: RawKv }[]; canceled?: boolean; cancel_reason?: string }; error?: { message?: string; http_code?: number; grpc_code?: number } };
          try {
            msg = JSON.parse(line);
          } catch {
            reject(new EtcdError(`the watch stream sent a line that is not JSON: ${line.slice(0, 120)}`, 200, 0));
            return;
          }
          if (msg.error) {
            reject(new EtcdError(`watch failed: ${msg.error.message ?? "unknown error"}`, msg.error.http_code ?? 200, msg.error.grpc_code ?? 0));
            return;
          }
          if (msg.result?.canceled) {
            reject(new EtcdError(`etcd cancelled the watch: ${msg.result.cancel_reason ?? "no reason given"}`, 200, 0));
            return;
          }
          for (const e of msg.result?.events ?? []) onEvent({ type: e.type === "DELETE" ? "DELETE" : "PUT", kv: decodeKv(e.kv ?? {}) });
        }
      });
      res.on("error", (err) => (signal.aborted ? resolve() : reject(err)));
      res.on("end", () => (signal.aborted ? resolve() : reject(new EtcdError("etcd closed the watch stream", 200, 0))));
    });
  }

  // A call with auth: authenticates first when credentials are set, and once more when the token has expired.
  private async call<T>(path: string, body: unknown): Promise<T> {
    if (this.opts.username !== undefined && this.token === undefined) await this.authenticate();
    try {
      return await this.post<T>(path, body, true);
    } catch (err) {
      if (err instanceof EtcdError && err.code === GRPC.UNAUTHENTICATED && this.opts.username !== undefined) {
        await this.authenticate();
        return this.post<T>(path, body, true);
      }
      throw err;
    }
  }

  private async post<T>(path: string, body: unknown, withToken: boolean): Promise<T> {
    const res = await this.send(path, body, withToken);
    const text = await new Promise<string>((resolve, reject) => {
      let data = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (data += c));
      res.on("end", () => resolve(data));
      res.on("error", reject);
    });
    let json: Record<string, unknown>;
    try {
      json = JSON.parse(text) as Record<string, unknown>;
    } catch {
      throw new EtcdError(`${this.url.origin}${path} answered HTTP ${res.statusCode} with a body that is not JSON (is this etcd's client port?)`, res.statusCode ?? 0, 0);
    }
    return json as T;
  }

  // Sends one POST; resolves with the response once its headers arrive, rejecting on a non-2xx answer.
  private send(path: string, body: unknown, withToken: boolean, signal?: AbortSignal): Promise<IncomingMessage> {
    const payload = JSON.stringify(body);
    const headers: Record<string, string> = { "content-type": "application/json", "content-length": String(Buffer.byteLength(payload)) };
    if (withToken && this.token !== undefined) headers.authorization = this.token;
    const https = this.url.protocol === "https:";
    const timeout = this.opts.timeoutMs ?? 5000;
    return new Promise((resolve, reject) => {
      const req = (https ? httpsRequest : httpRequest)(
        {
          host: this.url.hostname.replace(/^\[|\]$/g, ""),
          port: this.url.port || (https ? 443 : 80),
          path,
          method: "POST",
          headers,
          signal,
          ...(https ? { ca: this.opts.ca, cert: this.opts.cert, key: this.opts.key, servername: this.url.hostname } : {}),
        },
        (res) => {
          req.setTimeout(0);
          const status = res.statusCode ?? 0;
          if (status >= 200 && status < 300) {
            resolve(res);
            return;
          }
          let data = "";
          res.setEncoding("utf8");
          res.on("data", (c: string) => (data += c));
          res.on("end", () => {
            let code = 0;
            let message = data.trim().slice(0, 200);
            try {
              const j = JSON.parse(data) as { code?: number; message?: string; error?: string };
              code = j.code ?? 0;
              message = j.message ?? j.error ?? message;
            } catch {
              // not JSON: keep the text
            }
            reject(new EtcdError(`${this.url.origin}${path} answered HTTP ${status}: ${message || "(no body)"}`, status, code));
          });
        },
      );
      req.setTimeout(timeout, () => req.destroy(new EtcdError(`${this.url.origin} did not answer ${path} within ${timeout} ms`, 0, 0)));
      req.on("error", (err) => {
        if (err instanceof EtcdError) reject(err);
        else reject(new EtcdError(`cannot reach etcd at ${this.url.origin}: ${(err as NodeJS.ErrnoException).code ?? ""} ${err.message}`.replace(/\s+/g, " "), 0, 0));
      });
      req.end(payload);
    });
  }
}

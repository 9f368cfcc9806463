/**
 * An in-memory model of etcd's v3 JSON gateway, answering the emulator's callouts (HttpCall) the way
 * etcd 3.x does: POST /v3/lease/grant, /v3/kv/txn (puts), /v3/kv/range; keys and values base64; int64
 * fields as JSON strings; fields with default values left out (an empty value too); keys_only leaves values out; `count` is the number of keys in the
 * range before min_mod_revision filters them; a read at a compacted revision is HTTP 400 with code 11;
 * a put with an unknown lease is HTTP 400 with code 5. Leases expire on the emulator's wall clock.
 * The real-etcd tests (tests/e2e/decisions.test.ts) check the filter against the real thing.
 */
import type { Host, HttpCall } from "../emulator/emulator.ts";

const b64 = (s: string | Buffer): string => Buffer.from(s).toString("base64");
const unb64 = (s: string): Buffer => Buffer.from(s ?? "", "base64");

interface Kv {
  value: Buffer;
  create: number;
  mod: number;
  lease: string;
}

/** The store. */
export class EtcdFake {
  readonly kv = new Map<string, Kv>();
  readonly leases = new Map<string, { expiresMs: number }>();
  revision = 1;
  compacted = 0;
  private nextLease = 7587869283747000001n;
  /** Requests answered, by path. */
  readonly calls: { path: string; body: any }[] = [];
  /** When set, answers every call with this instead (garbage, errors). */
  override: ((call: HttpCall) => void) | undefined;

  constructor(readonly host: Host) {}

  /** Puts a raw value (an operator or another proxy); `ttlMs` attaches a lease. */
  put(key: string, value: string | Buffer, ttlMs?: number): void {
    this.expire();
    let lease = "";
    if (ttlMs !== undefined) {
      lease = String(this.nextLease++);
      this.leases.set(lease, { expiresMs: this.host.clock.nowMs + ttlMs });
    }
    const old = this.kv.get(key);
    this.revision++;
    this.kv.set(key, { value: Buffer.from(value), create: old?.create ?? this.revision, mod: this.revision, lease });
  }

  /** Deletes a key. */
  delete(key: string): void {
    if (this.kv.delete(key)) this.revision++;
  }

  /** The decoded records under `prefix`. */
  records(prefix: string): Map<string, any> {
    this.expire();
    const out = new Map<string, any>();
    for (const [k, v] of this.kv) if (k.startsWith(prefix)) out.set(k.slice(prefix.length), JSON.parse(v.value.toString()));
    return out;
  }

  /** Drops expired leases and their keys. */
  expire(): void {
    const now = this.host.clock.nowMs;
    for (const [id, l] of this.leases) {
      if (l.expiresMs > now) continue;
      this.leases.delete(id);
      for (const [k, v] of this.kv) if (v.lease === id && this.kv.delete(k)) this.revision++;
    }
  }

  /** Answers one callout. */
  answer(call: HttpCall): void {
    if (this.override) return this.override(call);
    this.expire();
    const path = call.header(":path") ?? "";
    const body = call.json();
    this.calls.push({ path, body });
    const header = { cluster_id: "14841639068965178418", member_id: "10276657743932975437", revision: String(this.revision), raft_term: "2" };
    if (path === "/v3/lease/grant") {
      const ttl = Number(body.TTL);
      const id = String(this.nextLease++);
      this.leases.set(id, { expiresMs: this.host.clock.nowMs + ttl * 1000 });
      return call.respond(200, JSON.stringify({ header, ID: id, TTL: String(ttl) }));
    }
    if (path === "/v3/kv/txn") {
      for (const op of body.success ?? []) {
        const put = op.request_put;
        if (put.lease && !this.leases.has(put.lease)) {
          return call.respond(400, JSON.stringify({ error: "etcdserver: requested lease not found", code: 5, message: "etcdserver: requested lease not found" }));
        }
      }
      for (const op of body.success ?? []) {
        const put = op.request_put;
        const key = unb64(put.key).toString();
        const old = this.kv.get(key);
        this.kv.set(key, { value: unb64(put.value), create: old?.create ?? this.revision + 1, mod: this.revision + 1, lease: put.lease ?? "" });
      }
      this.revision++;
      header.revision = String(this.revision);
      return call.respond(200, JSON.stringify({ header, succeeded: true, responses: (body.success ?? []).map(() => ({ response_put: { header } })) }));
    }
    if (path === "/v3/kv/range") {
      if (body.revision && Number(body.revision) < this.compacted) {
        return call.respond(400, JSON.stringify({ error: "etcdserver: mvcc: required revision has been compacted", code: 11, message: "etcdserver: mvcc: required revision has been compacted" }));
      }
      const from = unb64(body.key).toString("latin1");
      const to = body.range_end ? unb64(body.range_end).toString("latin1") : from + "\0";
      const all = [...this.kv.keys()].filter((k) => {
        const l = Buffer.from(k).toString("latin1");
        return l >= from && l < to;
      }).sort();
      const min = Number(body.min_mod_revision ?? 0);
      let keys = all.filter((k) => this.kv.get(k)!.mod >= min);
      const limit = Number(body.limit ?? 0);
      let more = false;
      if (limit > 0 && keys.length > limit) {
        keys = keys.slice(0, limit);
        more = true;
      }
      const kvs = keys.map((k) => {
        const v = this.kv.get(k)!;
        const o: Record<string, string> = { key: b64(k), create_revision: String(v.create), mod_revision: String(v.mod), version: "1" };
        if (!body.keys_only && v.value.length > 0) o.value = b64(v.value);
        if (v.lease) o.lease = v.lease;
        return o;
      });
      const out: Record<string, unknown> = { header };
      if (kvs.length > 0) out.kvs = kvs;
      if (more) out.more = true;
      if (all.length > 0) out.count = String(all.length);
      return call.respond(200, JSON.stringify(out));
    }
    call.respond(404, "Not Found");
  }

  /** Ticks every VM and answers callouts until none is left (calls chain within a sync round). */
  sync(rounds = 1): void {
    for (let r = 0; r < rounds; r++) {
      this.host.tick();
      for (let i = 0; i < 1000; i++) {
        const pending = this.host.pendingCalls();
        if (pending.length === 0) break;
        for (const c of pending) this.answer(c);
      }
    }
  }
}

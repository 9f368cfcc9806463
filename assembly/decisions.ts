// Mesh-wide decisions: bans shared through etcd's JSON gateway (the `decisions` block of the config).
//
// A Wasm filter reaches etcd only through HTTP callouts to an Envoy cluster, and a callout's body arrives
// only when the response completes, so the store is polled, never watched. Envoy (source/extensions/
// common/wasm/context.cc, httpCall) refuses a call without :path, :method and :authority or to an
// unknown cluster (BadArgument), applies the timeout we pass (0 would mean none), sets no response buffer
// limit, and reports a reset, a timeout or a refused connection by calling proxy_on_http_call_response
// with 0 headers and an empty body (no :status). Every call here is a POST of a small JSON body.
//
// One worker (VM) per Envoy process syncs. The workers elect it through one shared-data key holding the
// holder's random token and its last heartbeat (filter clock, shared by the process); a holder silent for
// staleMs is replaced by the first worker whose tick sees it (CAS, so one wins). The holder, on each tick:
//   1. takes the publish queue: any worker that starts a ban appends one line to a shared-data key
//      (bounded); the holder moves the lines into its pending list (bounded) and empties the key;
//   2. polls: /v3/kv/range over <prefix>bans/ with min_mod_revision (only changed keys) and serializable
//      (no quorum read). Its `count` is the number of keys in the whole range (etcd counts before it
//      filters by revision), so a key that disappeared (deleted, lease expired) shows as a count below the
//      number of keys we know, and triggers a full range;
//   3. a full range, paginated (PAGE keys, halved after an oversized response), at start, after such a
//      mismatch, after an error and every FULL_EVERY_MS: keys we knew that are gone lift their ban;
//   4. publishes pending bans: one lease per expiry bucket of BUCKET_MS (granted once, cached), then one
//      /v3/kv/txn of up to PUT_BATCH puts. A failed call keeps them pending (puts the store refuses
//      outright are dropped). Each answer starts the next due call at once, so publishing follows a poll
//      within a round trip.
// Pages after the first read at the first page's revision; a compacted revision answers HTTP 400 with
// code 11 and the full range starts again.
//
// What the holder learns goes into the shared table (table.ts applyBan, ranges.ts applyBan), so every
// worker enforces a remote ban exactly like a local one. A record never bans an address or identity in
// `allow`; the request path checks `allow` first anyway. Failures (no answer, an HTTP error, a body that
// is not the expected JSON) are counted in traffic_guard_decisions_sync_errors_total and back off
// (doubling from the interval up to MAX_BACKOFF_MS); local enforcement never depends on the store.

import { get_shared_data, set_shared_data, get_buffer_bytes, BufferTypeValues, WasmResultValues, log, LogLevelValues } from "@solo-io/proxy-runtime/assembly/runtime";
import * as imports from "@solo-io/proxy-runtime/assembly/imports";
import { Config, DecisionsConfig } from "./config";
import { JKind, JValue, parseJson, quote } from "./json";
import * as b64 from "./base64";
import { parseCidr, anyContains, isV4 } from "./address";
import { aggregate, clientHi, clientLo } from "./client";
import { identityKey, keyHi, keyLo, anySpiffeMatch, spiffePatternProblem } from "./identity";
import { readHeader, readProperty, valuePtr, nowMs, bytes } from "./host";
import { randomBits, random0, random1 } from "./entropy";
import { clockMs } from "./clock";
import { Table, FRESH_CAS, MAX_ATTEMPTS, pluginPrefix } from "./table";
import { Ranges } from "./ranges";
import * as m from "./metrics";
import * as scan from "./rangescan";
import { noteBanLifted } from "./ban-cache";

/** Width of a lease bucket: bans ending in the same bucket share one lease, which ends with the bucket. */
export const BUCKET_MS: u64 = 10_000;
/** A full range at least this often, to catch deletions and missed updates. */
export const FULL_EVERY_MS: u64 = 60_000;
/** Keys per page of a full range with values (at most; halved after an oversized response); twice as many without. */
export const PAGE: i32 = 500;
/** Largest response body read; a larger one is counted as an error. */
export const MAX_BODY: u32 = 8 << 20;
/** Largest record value accepted (bytes, after base64). */
export const MAX_RECORD: i32 = 4096;
/** Bans waiting to be published in the syncing worker (the oldest are dropped beyond it). */
export const MAX_PENDING: i32 = 4096;
/** Bytes of the shared publish queue (a ban that does not fit is dropped and counted). */
export const MAX_QUEUE_BYTES: i32 = 16 << 10;
/** Puts per /v3/kv/txn call. */
export const PUT_BATCH: i32 = 64;
/** Longest back-off after errors. */
export const MAX_BACKOFF_MS: u64 = 30_000;
/** A ban longer than this is clamped (a record cannot ban for longer than a year). */
const MAX_BAN_MS: u64 = 365 * 86_400_000;

/** What an etcd key's client is. */
const KIND_ADDRESS: i32 = 1;
const KIND_IDENTITY: i32 = 2;
const KIND_RANGE: i32 = 3;

const CALL_NONE: i32 = 0;
const CALL_GRANT: i32 = 1;
const CALL_TXN: i32 = 2;
const CALL_POLL: i32 = 3;
const CALL_FULL: i32 = 4;

const STATUS = bytes(":status");
// The node id: Envoy 1.40 serves it as xds.node.id (its `node` attribute is empty in a root context);
// older Envoys as node.id.
const XDS_NODE_ID = bytes("xds\0node\0id");
const NODE_ID = bytes("node\0id");
/** Envoy's header map type of a callout's response headers. */
const CALL_RESPONSE_HEADERS: i32 = 6;

/** One key of the store as this worker last saw it. */
class Known {
  /** The key's mod_revision (-1: the store did not say). */
  mod: i64 = -1;
  /** The full range that last saw the key. */
  gen: u32 = 0;
  kind: i32 = 0;
  hi: u64 = 0;
  lo: u64 = 0;
  /** The ban end on the filter clock, while this record bans a client here (0 = not applied). */
  applied: u64 = 0;
  /** Whether the record is one of this proxy's own bans. */
  own: bool = false;
}

/** A ban waiting to be published. */
class Pending {
  client: string = "";
  until: u64 = 0;
  strike: i32 = 0;
  reason: string = "";
  created: u64 = 0;
}

/** Why parseRecord refused a record (empty when it was accepted). */
let recordProblem: string = "";
let recUntil: u64 = 0;
let recStrike: i32 = 0;
let recReason: string = "";
let recOrigin: string = "";

// Reads a record value (JSON) into rec*; false with recordProblem set when it is malformed. Unknown fields
// are allowed, so later versions may add some.
function parseRecord(text: string): bool {
  let res = parseJson(text);
  if (res.value === null) { recordProblem = "not JSON"; return false; }
  let v = changetype<JValue>(res.value);
  if (v.kind != JKind.Object) { recordProblem = "not a JSON object"; return false; }
  let u = v.get("until");
  if (u === null || !u.isInteger() || u.num <= 0) { recordProblem = "until is not a positive integer (ms since the epoch)"; return false; }
  recUntil = <u64>u.num;
  let r = v.get("reason");
  if (r !== null && (r.kind != JKind.String || r.str.length > 256)) { recordProblem = "reason is not a string of at most 256 characters"; return false; }
  recReason = r === null ? "" : r.str;
  let s = v.get("strike");
  if (s !== null && (!s.isInteger() || s.num < 0 || s.num > 1e6)) { recordProblem = "strike is not a non-negative integer"; return false; }
  recStrike = s === null ? 0 : <i32>s.num;
  let o = v.get("origin");
  if (o !== null && (o.kind != JKind.String || o.str.length > 512)) { recordProblem = "origin is not a string of at most 512 characters"; return false; }
  recOrigin = o === null ? "" : o.str;
  let c = v.get("created");
  if (c !== null && (!c.isInteger() || c.num < 0)) { recordProblem = "created is not a non-negative integer"; return false; }
  recordProblem = "";
  return true;
}

// Number of leading one bits of a 128-bit mask.
function maskBits(mhi: u64, mlo: u64): i32 {
  return <i32>(popcnt<u64>(mhi) + popcnt<u64>(mlo));
}

/** The decisions sync of one VM: publishing (every worker) and the store sync (the elected worker). */
export class Decisions extends scan.KvSink {
  private dc: DecisionsConfig;
  private cfg: Config;
  private table: Table;
  private ranges: Ranges;
  private metrics: m.Metrics;
  /** This proxy's name in the records it publishes (Envoy's node id; Istio: sidecar~<ip>~<pod>.<ns>~...). */
  origin: string = "";
  private syncKey: ArrayBuffer = new ArrayBuffer(0);
  private queueKey: ArrayBuffer = new ArrayBuffer(0);
  private token: u64 = 0;
  private staleMs: u64 = 0;
  private banPrefix: string = "";
  private rangeKey: string = "";
  private rangeEnd: string = "";
  // The serialized request headers per path, and the cluster name, built once.
  private headers: ArrayBuffer[] = [];
  private cluster: ArrayBuffer = new ArrayBuffer(0);

  private holder: bool = false;
  private inflight: i32 = CALL_NONE;
  private inflightToken: u32 = 0;
  private inflightSince: u64 = 0;
  private inflightCount: i32 = 0;
  private backoffUntil: u64 = 0;
  private backoffMs: u64 = 0;
  private lastPoll: u64 = 0;
  private lastFull: u64 = 0;
  private needFull: bool = true;
  private revision: i64 = 0;
  private fullRevision: i64 = 0;
  private fullNext: string = "";
  private gen: u32 = 0;
  private scanBase: usize = 0;
  private scanNow: u64 = 0;
  // The full range in progress reads keys and revisions only (see startFull); one found a key it must read.
  private keysOnly: bool = false;
  private valuesNeeded: bool = false;
  private lastStart: i32 = -1;
  private lastEnd: i32 = -1;
  private k0: u64 = 0;
  private page: i32 = PAGE;
  // Every key of the store under the prefix, by a keyed 64-bit hash of its base64 form (see keyHash).
  private known: Map<u64, Known> = new Map<u64, Known>();
  private pending: Pending[] = [];
  private leases: Map<u64, string> = new Map<u64, string>();
  private grantBucket: u64 = 0;
  private active: i32 = 0;

  /** Bytes of garbage the last callback may have left (response bodies and what was parsed from them). */
  garbage: usize = 0;

  constructor(cfg: Config, table: Table, ranges: Ranges, metrics: m.Metrics, plugin: string) {
    super();
    this.cfg = cfg;
    this.dc = changetype<DecisionsConfig>(cfg.decisions);
    this.table = table;
    this.ranges = ranges;
    this.metrics = metrics;
    let n = readProperty(XDS_NODE_ID);
    if (n == 0) n = readProperty(NODE_ID);
    this.origin = n > 0 ? String.UTF8.decodeUnsafe(valuePtr, <usize>n) : "";
    let prefix = pluginPrefix(plugin);
    this.syncKey = String.UTF8.encode(prefix + "d/sync");
    this.queueKey = String.UTF8.encode(prefix + "d/queue");
    let random = randomBits();
    this.token = random ? (random0 | 1) : ((<u64>nowMs() * 0x9e3779b97f4a7c15) | 1);
    this.k0 = random ? random1 : this.token * 0xff51afd7ed558ccd;
    let stale = this.dc.intervalMs * 3 + this.dc.timeoutMs;
    this.staleMs = stale < 5000 ? 5000 : stale;
    this.banPrefix = this.dc.prefix + "bans/";
    this.rangeKey = b64.encode(this.banPrefix);
    this.rangeEnd = b64.encode(this.dc.prefix + "bans0"); // '0' follows '/': every key under bans/
    let auth = this.dc.authority;
    this.headers = [pairs(bytes("/v3/lease/grant"), auth), pairs(bytes("/v3/kv/txn"), auth), pairs(bytes("/v3/kv/range"), auth)];
    this.cluster = String.UTF8.encode(this.dc.cluster);
    log(LogLevelValues.info, "traffic-guard: decisions: cluster=" + this.dc.cluster + " prefix=" + this.dc.prefix + " origin=" +
      (this.origin.length > 0 ? this.origin : "(none: node.id is not readable)") + " publish=" + (this.dc.publish ? "true" : "false"));
  }

  // ---- publishing (any worker, when one of its requests starts a ban) --------------------------------

  /**
   * Queues a ban this proxy started for publication: `client` as the record key names it, `until` on the
   * filter clock. Runs on the request path once per ban: one shared-data read and write.
   */
  noteBan(client: string, until: u64, strike: i32, reason: string): void {
    if (!this.dc.publish || client.length == 0) return;
    for (let i = 0; i < client.length; i++) {
      let c = client.charCodeAt(i);
      if (c < 0x21 || c > 0x7e) return; // never a valid record key: nothing to publish
    }
    let wall = nowMs();
    let now = clockMs();
    let untilWall = until > now ? wall + (until - now) : wall;
    let line = String.UTF8.encode(client + "\t" + untilWall.toString() + "\t" + strike.toString() + "\t" + reason + "\t" + wall.toString() + "\n");
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      let sd = get_shared_data(this.queueKey);
      let cas = sd.cas;
      let old = sd.result == WasmResultValues.Ok ? sd.value.byteLength : 0;
      if (sd.result == WasmResultValues.NotFound) cas = FRESH_CAS;
      else if (sd.result != WasmResultValues.Ok) break;
      if (old + line.byteLength > MAX_QUEUE_BYTES) break;
      let buf = new ArrayBuffer(old + line.byteLength);
      this.garbage += <usize>(buf.byteLength + line.byteLength);
      if (old > 0) memory.copy(changetype<usize>(buf), changetype<usize>(sd.value), <usize>old);
      memory.copy(changetype<usize>(buf) + <usize>old, changetype<usize>(line), <usize>line.byteLength);
      let res = set_shared_data(this.queueKey, buf, cas);
      if (res == WasmResultValues.Ok) return;
      if (res != WasmResultValues.CasMismatch) break;
    }
    this.metrics.inc(m.DECISIONS_SYNC_ERRORS); // not queued: the queue is full or shared data failed
  }

  // Moves the shared queue into the pending list and empties it (CAS, so no line is lost).
  private takeQueue(): void {
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      let sd = get_shared_data(this.queueKey);
      if (sd.result != WasmResultValues.Ok || sd.value.byteLength == 0) return;
      let value = sd.value;
      let res = set_shared_data(this.queueKey, new ArrayBuffer(0), sd.cas);
      if (res == WasmResultValues.CasMismatch) continue;
      if (res != WasmResultValues.Ok) return;
      // Lines of five tab-separated fields (noteBan), split on the bytes: '\n' and '\t' never occur inside a
      // UTF-8 sequence.
      let base = changetype<usize>(value);
      let end = value.byteLength;
      let start = 0;
      while (start < end) {
        let stop = start;
        let tabs: i32[] = [];
        for (; stop < end; stop++) {
          let c = load<u8>(base + <usize>stop);
          if (c == 0x0a) break;
          if (c == 0x09) tabs.push(stop);
        }
        let line = start;
        start = stop + 1;
        if (tabs.length != 4) continue;
        let p = new Pending();
        p.client = String.UTF8.decodeUnsafe(base + <usize>line, <usize>(tabs[0] - line));
        p.until = queueNumber(base, tabs[0] + 1, tabs[1]);
        p.strike = <i32>queueNumber(base, tabs[1] + 1, tabs[2]);
        p.reason = String.UTF8.decodeUnsafe(base + <usize>(tabs[2] + 1), <usize>(tabs[3] - tabs[2] - 1));
        p.created = queueNumber(base, tabs[3] + 1, stop);
        if (this.pending.length >= MAX_PENDING) {
          this.pending.shift(); // the oldest ban is the first to have ended
          this.metrics.inc(m.DECISIONS_SYNC_ERRORS);
        }
        this.pending.push(p);
      }
      return;
    }
  }

  // ---- the elected worker ----------------------------------------------------------------------------

  // Whether this VM is (or has just become) the syncing worker; refreshes its heartbeat.
  private elect(now: u64): bool {
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      let sd = get_shared_data(this.syncKey);
      let cas = sd.cas;
      if (sd.result == WasmResultValues.NotFound) cas = FRESH_CAS;
      else if (sd.result != WasmResultValues.Ok) return false;
      if (sd.result == WasmResultValues.Ok && sd.value.byteLength == 16) {
        let p = changetype<usize>(sd.value);
        let token = load<u64>(p), beat = load<u64>(p, 8);
        if (token != this.token && now >= beat && now - beat < this.staleMs) {
          this.holder = false;
          return false; // someone else syncs, and is alive
        }
      }
      let v = new ArrayBuffer(16);
      store<u64>(changetype<usize>(v), this.token);
      store<u64>(changetype<usize>(v), now, 8);
      let res = set_shared_data(this.syncKey, v, cas);
      if (res == WasmResultValues.Ok) {
        if (!this.holder) {
          this.holder = true;
          this.needFull = true; // a new holder starts from a full range
          this.inflight = CALL_NONE;
        }
        return true;
      }
      if (res != WasmResultValues.CasMismatch) return false;
    }
    return false;
  }

  /** The root context's tick: elects, then advances the sync by at most one call. */
  tick(): void {
    let now = clockMs();
    if (!this.elect(now)) return;
    if (this.inflight != CALL_NONE) {
      // The host answers every call (a timeout is an answer); a call that outlived its timeout by far was lost.
      if (now - this.inflightSince < this.dc.timeoutMs * 4 + 1000) return;
      this.inflight = CALL_NONE;
      this.failed(now, "no answer");
    }
    this.step(now);
  }

  // Starts the next call, if any is due.
  private step(now: u64): void {
    if (!this.holder) return;
    this.takeQueue(); // every tick, even while backing off: the shared queue only holds one tick's bans
    if (this.inflight != CALL_NONE || now < this.backoffUntil) return;
    // Reads first, so that a publication the store keeps refusing cannot hold up the sync.
    if (this.fullNext.length > 0) { this.range(now, true); return; }
    if (this.needFull || now - this.lastFull >= FULL_EVERY_MS) { this.startFull(now); return; }
    // Ticks come about every interval, a little early or late: a tenth of it counts as on time.
    if (now - this.lastPoll + this.dc.intervalMs / 10 >= this.dc.intervalMs) { this.range(now, false); return; }
    if (this.dc.publish && this.pending.length > 0) this.publish(now);
  }

  // Starts a lease grant or a txn for pending bans; false when nothing could be sent.
  private publish(now: u64): bool {
    let wall = nowMs();
    // Bans that ended while they waited are dropped.
    let live: Pending[] = [];
    for (let i = 0; i < this.pending.length; i++) if (this.pending[i].until > wall + 1000) live.push(this.pending[i]);
    this.pending = live;
    if (live.length == 0) return false;
    let bucket = (live[0].until + BUCKET_MS - 1) / BUCKET_MS;
    if (!this.leases.has(bucket)) {
      let ttl = (bucket * BUCKET_MS - wall + 999) / 1000 + 1;
      if (ttl < 2) ttl = 2;
      this.grantBucket = bucket;
      return this.call(CALL_GRANT, 0, "{\"TTL\":" + ttl.toString() + "}", now);
    }
    let body = "{\"success\":[";
    let n = 0;
    for (let i = 0; i < live.length && n < PUT_BATCH; i++) {
      let p = live[i];
      let b = (p.until + BUCKET_MS - 1) / BUCKET_MS;
      if (!this.leases.has(b)) break;
      let value = "{\"until\":" + p.until.toString() + ",\"reason\":" + quote(p.reason) + ",\"strike\":" + p.strike.toString() +
        ",\"origin\":" + quote(this.origin) + ",\"created\":" + p.created.toString() + "}";
      if (n > 0) body += ",";
      body += "{\"request_put\":{\"key\":\"" + b64.encode(this.banPrefix + p.client) + "\",\"value\":\"" + b64.encode(value) +
        "\",\"lease\":\"" + this.leases.get(b) + "\"}}";
      n++;
    }
    body += "]}";
    this.inflightCount = n;
    return this.call(CALL_TXN, 1, body, now);
  }

  // Drops the first n pending bans (those the last txn carried).
  private dropPending(n: i32): void {
    let rest: Pending[] = [];
    for (let i = n; i < this.pending.length; i++) rest.push(this.pending[i]);
    this.pending = rest;
  }

  private startFull(now: u64): void {
    this.gen++;
    this.fullRevision = 0;
    // After the first, a full range only looks for keys that are gone or changed unseen: it reads no values
    // (keys_only), and when it finds a key it must read, one with values follows.
    this.keysOnly = this.lastFull > 0 && !this.valuesNeeded;
    this.valuesNeeded = false;
    this.fullNext = this.rangeKey;
    this.range(now, true);
  }

  // A range call: the next page of a full range, or the poll of changes since `revision`.
  private range(now: u64, full: bool): void {
    let body: string;
    if (full) {
      body = "{\"key\":\"" + this.fullNext + "\",\"range_end\":\"" + this.rangeEnd + "\",\"limit\":" + (this.keysOnly ? this.page * 2 : this.page).toString() +
        (this.keysOnly ? ",\"keys_only\":true" : "") + ",\"serializable\":true" + (this.fullRevision > 0 ? ",\"revision\":\"" + this.fullRevision.toString() + "\"" : "") + "}";
    } else {
      let next = this.revision + 1;
      body = "{\"key\":\"" + this.rangeKey + "\",\"range_end\":\"" + this.rangeEnd + "\",\"min_mod_revision\":\"" + next.toString() +
        "\",\"serializable\":true}";
      this.lastPoll = now;
    }
    this.call(full ? CALL_FULL : CALL_POLL, 2, body, now);
  }

  // Sends one POST to the store; false (counted, backing off) when the host refused it.
  private call(kind: i32, path: i32, body: string, now: u64): bool {
    let headers = this.headers[path];
    let b = String.UTF8.encode(body);
    let cluster = this.cluster;
    let token = TOKEN;
    store<u32>(token, 0);
    let res = imports.proxy_http_call(changetype<usize>(cluster), cluster.byteLength, changetype<usize>(headers), headers.byteLength,
      changetype<usize>(b), b.byteLength, 0, 0, <u32>this.dc.timeoutMs, token);
    this.garbage += <usize>(b.byteLength * 3);
    if (res != WasmResultValues.Ok) {
      this.failed(now, "the host refused the call (result " + (<i32>res).toString() + "): is cluster \"" + this.dc.cluster + "\" defined?");
      return false;
    }
    this.inflight = kind;
    this.inflightToken = load<u32>(token);
    this.inflightSince = now;
    return true;
  }

  // Counts a failure and backs off.
  private failed(now: u64, why: string): void {
    this.metrics.inc(m.DECISIONS_SYNC_ERRORS);
    this.backoffMs = this.backoffMs == 0 ? this.dc.intervalMs : this.backoffMs * 2;
    if (this.backoffMs > MAX_BACKOFF_MS) this.backoffMs = MAX_BACKOFF_MS;
    this.backoffUntil = now + this.backoffMs;
    // A full range in progress resumes at the page that failed (unless restartFull dropped it).
    if (this.fullNext.length == 0) this.needFull = true;
    log(LogLevelValues.debug, "traffic-guard: decisions: " + why + "; next attempt in " + this.backoffMs.toString() + "ms");
  }

  /** proxy_on_http_call_response: the answer to the call in flight (other tokens are ignored). */
  onResponse(token: u32, bodySize: u32): void {
    if (this.inflight == CALL_NONE || token != this.inflightToken) return;
    let kind = this.inflight;
    this.inflight = CALL_NONE;
    let now = clockMs();
    let n = readHeader(CALL_RESPONSE_HEADERS, STATUS);
    let status = 0;
    for (let i = 0; i < n && i < 3; i++) status = status * 10 + (<i32>load<u8>(valuePtr + <usize>i) - 0x30);
    if (n == 0) { this.failed(now, "no response (connection refused, reset or timeout)"); return; }
    if (bodySize > MAX_BODY) {
      if (kind == CALL_FULL && this.page > 1) this.page /= 2;
      this.failed(now, "response of " + bodySize.toString() + " bytes is over the limit");
      return;
    }
    let body = bodySize == 0 ? new ArrayBuffer(0) : get_buffer_bytes(BufferTypeValues.HttpCallResponseBody, 0, bodySize);
    if (status == 200 && (kind == CALL_POLL || kind == CALL_FULL)) {
      // Range answers can be large: read without building a tree (rangescan.ts).
      this.garbage += <usize>bodySize;
      if (!this.ranged(body, kind == CALL_FULL, now)) return;
      this.backoffMs = 0;
      this.step(now);
      return;
    }
    this.garbage += <usize>bodySize * 12;
    let parsed = parseJson(String.UTF8.decode(body));
    let json: JValue | null = parsed.value;
    if (status != 200) {
      let code = json !== null && json.kind == JKind.Object ? json.get("code") : null;
      if (status == 400 && code !== null && code.kind == JKind.Number && code.num == 11) {
        this.fullNext = ""; // its pages can no longer be read at one revision
        this.failed(now, "revision " + this.fullRevision.toString() + " was compacted: starting the full range again");
        return;
      }
      if (kind == CALL_TXN) {
        if (code !== null && code.kind == JKind.Number && code.num == 5) {
          this.leases.clear(); // a lease has gone (expired, or a store that lost its data): granted again
        } else {
          // The store refuses these puts (permission, size): they are dropped, not retried forever.
          this.dropPending(this.inflightCount);
        }
      }
      this.failed(now, "HTTP " + status.toString() + " from the store");
      return;
    }
    if (json === null || json.kind != JKind.Object) { this.failed(now, "the store's answer is not a JSON object"); return; }
    let ok = kind == CALL_GRANT ? this.granted(json) : this.published(json);
    if (!ok) return;
    this.backoffMs = 0;
    this.step(now); // chain the next call (publishing, the next page) without waiting for a tick
  }

  private granted(json: JValue): bool {
    let id = json.get("ID");
    if (id === null || id.kind != JKind.String || !isDecimal(id.str)) { this.failed(clockMs(), "lease grant without an ID"); return false; }
    let wall = nowMs();
    let stale: u64[] = [];
    let keys = this.leases.keys();
    for (let i = 0; i < keys.length; i++) if (keys[i] * BUCKET_MS <= wall) stale.push(keys[i]);
    for (let i = 0; i < stale.length; i++) this.leases.delete(stale[i]);
    this.leases.set(this.grantBucket, id.str);
    return true;
  }

  private published(json: JValue): bool {
    let s = json.get("succeeded");
    if (s === null || s.kind != JKind.Bool || !s.bool) { this.leases.clear(); this.failed(clockMs(), "txn not applied"); return false; }
    let n = this.inflightCount;
    for (let i = 0; i < n; i++) this.metrics.inc(m.DECISIONS_PUBLISHED);
    this.dropPending(n);
    return true;
  }

  // A range answer: applies its records; for a full range, follows pages and lifts what disappeared.
  private ranged(body: ArrayBuffer, full: bool, now: u64): bool {
    let p = changetype<usize>(body);
    this.scanBase = p;
    this.scanNow = now;
    this.lastStart = -1;
    if (!scan.scan(p, body.byteLength, this)) { this.failed(now, "the store's range answer is not JSON"); return false; }
    let rev = scan.spanDecimal(p, scan.revStart, scan.revEnd);
    if (rev < 0) { this.failed(now, "range answer without a revision"); return false; }
    if (scan.kvsNotArray) { this.failed(now, "range answer whose kvs is not a list"); return false; }
    let total = scan.countStart < 0 ? 0 : scan.spanDecimal(p, scan.countStart, scan.countEnd);
    if (!full) {
      this.revision = rev;
      if (<i64>this.known.size != total) this.needFull = true; // something disappeared (or was missed)
      this.metrics.setActive(this.active);
      return true;
    }
    if (this.fullRevision == 0) this.fullRevision = rev;
    if (scan.more && this.lastStart >= 0) {
      let last = b64.decode(String.UTF8.decodeUnsafe(p + <usize>this.lastStart, <usize>(this.lastEnd - this.lastStart)));
      if (last !== null) {
        let next = new ArrayBuffer(last.byteLength + 1); // the key right after the last one: append a NUL byte
        memory.copy(changetype<usize>(next), changetype<usize>(last), <usize>last.byteLength);
        this.fullNext = b64.encodeBytes(changetype<usize>(next), <usize>next.byteLength);
        return true;
      }
    }
    // The last page: keys we knew that are gone lift their bans.
    this.fullNext = "";
    let keys = this.known.keys();
    for (let i = 0; i < keys.length; i++) {
      if (this.known.get(keys[i]).gen != this.gen) this.forget(keys[i], now);
    }
    this.revision = this.fullRevision;
    this.needFull = this.valuesNeeded;
    this.lastFull = now;
    this.lastPoll = now;
    if (this.page < PAGE) this.page *= 2;
    this.recount(now);
    return true;
  }

  /** rangescan.ts: one item of kvs (spans into the body being read). */
  kv(isObject: bool, ks: i32, ke: i32, ms: i32, me: i32, vs: i32, ve: i32): void {
    if (!isObject || ks < 0) { this.malformed("", "a range item without a key"); return; }
    let p = this.scanBase;
    let now = this.scanNow;
    // An unchanged key costs a hash and a lookup: nothing is decoded or allocated.
    let key = this.keyHash(p + <usize>ks, ke - ks);
    this.lastStart = ks;
    this.lastEnd = ke;
    let mod = scan.spanDecimal(p, ms, me);
    let prev: Known | null = this.known.has(key) ? this.known.get(key) : null;
    if (prev !== null && mod >= 0 && prev.mod == mod) { prev.gen = this.gen; return; } // unchanged
    if (this.keysOnly) {
      if (prev !== null) prev.gen = this.gen; // still there; its new value is read by the full range that follows
      this.valuesNeeded = true;
      return;
    }
    let entry = new Known();
    entry.mod = mod;
    entry.gen = this.gen;
    this.known.set(key, entry);
    let text: string | null = "";
    if (vs >= 0) {
      if (ve - vs > (MAX_RECORD / 3 + 1) * 4) text = null;
      else {
        let vb = b64.decode(String.UTF8.decodeUnsafe(p + <usize>vs, <usize>(ve - vs)));
        text = vb === null ? null : String.UTF8.decode(changetype<ArrayBuffer>(vb));
      }
    }
    let kb = b64.decode(String.UTF8.decodeUnsafe(p + <usize>ks, <usize>(ke - ks)));
    if (kb === null) this.malformed(String.UTF8.decodeUnsafe(p + <usize>ks, <usize>(ke - ks)), "a key that is not base64");
    else if (text === null) this.malformed(String.UTF8.decode(changetype<ArrayBuffer>(kb)), "a value that is not base64 or over " + MAX_RECORD.toString() + " bytes");
    else this.read(String.UTF8.decode(changetype<ArrayBuffer>(kb)), changetype<string>(text), entry, prev, now);
    // A changed record that no longer bans (malformed now, ended, allowed) lifts what it banned before.
    if (prev !== null && prev.applied > now) {
      if (entry.applied == 0) this.lift(prev, now);
      else if (!prev.own) this.active--; // replaced by the new record, counted again by read()
    }
  }

  // Reads and applies the record of `key` into `entry`.
  private read(key: string, text: string, entry: Known, prev: Known | null, now: u64): void {
    if (!key.startsWith(this.banPrefix)) { this.malformed(key, "a key outside " + this.banPrefix); return; }
    let client = key.substring(this.banPrefix.length);
    if (!this.subject(client, entry)) { this.malformed(key, "a client that is not an address, a CIDR or a SPIFFE ID"); return; }
    if (!parseRecord(text)) { this.malformed(key, recordProblem); return; }
    entry.own = this.origin.length > 0 && recOrigin == this.origin;
    let wall = nowMs();
    if (recUntil <= wall) return; // ended; its lease goes soon
    let left = recUntil - wall;
    if (left > MAX_BAN_MS) left = MAX_BAN_MS;
    let until = now + left;
    if (entry.own) {
      entry.applied = until; // enforced here already; remembered so that deleting it lifts it here too
      return;
    }
    if (this.allowed(client, entry)) return; // allow wins: never banned by a record
    if (!this.apply(entry, until, now)) {
      this.metrics.inc(m.DECISIONS_SYNC_ERRORS);
      return;
    }
    entry.applied = until;
    this.active++;
    this.metrics.inc(m.DECISIONS_APPLIED);
    if (prev === null || prev.applied <= now) {
      log(LogLevelValues.warn, "traffic-guard: remote ban " + client + " for " + ((left + 999) / 1000).toString() + "s: reason=" +
        recReason + " origin=" + recOrigin + " strike=" + recStrike.toString());
    }
    return;
  }

  // Fills in the client of a record key; false when it is none of an address, a CIDR, a SPIFFE ID.
  private subject(client: string, e: Known): bool {
    if (client.startsWith("spiffe://")) {
      if (spiffePatternProblem(client).length > 0 || client.includes("*")) return false;
      let b = String.UTF8.encode(client);
      identityKey(changetype<usize>(b), <usize>b.byteLength);
      e.kind = KIND_IDENTITY;
      e.hi = keyHi;
      e.lo = keyLo;
      return true;
    }
    let c = parseCidr(client);
    if (c === null) return false;
    let v4 = isV4(c.hi, c.lo) && !client.includes(":");
    let bits = maskBits(c.mhi, c.mlo);
    let clientBits = v4 ? 96 + this.cfg.prefixV4 : this.cfg.prefixV6;
    if (bits >= clientBits) {
      aggregate(c.hi, c.lo, this.cfg.prefixV4, this.cfg.prefixV6);
      e.kind = KIND_ADDRESS;
      e.hi = clientHi;
      e.lo = clientLo;
      return true;
    }
    // A range: enforced through range bans when its length is the configured range prefix.
    let rangeBits = v4 ? (this.cfg.rangePrefixV4 == 0 ? -1 : 96 + this.cfg.rangePrefixV4) : (this.cfg.rangePrefixV6 == 0 ? -1 : this.cfg.rangePrefixV6);
    if (bits != rangeBits || this.cfg.rangeThreshold == 0) return false;
    e.kind = KIND_RANGE;
    e.hi = c.hi;
    e.lo = c.lo;
    return true;
  }

  // The known-map key of a store key (its base64 bytes at p): a 64-bit hash keyed with this VM's random
  // secret, so nobody who writes keys can aim two at one entry.
  private keyHash(p: usize, n: i32): u64 {
    let h: u64 = this.k0 ^ (<u64>n * 0x9e3779b97f4a7c15);
    let i = 0;
    for (; i + 8 <= n; i += 8) h = mix(h ^ load<u64>(p + <usize>i));
    let t: u64 = 0;
    for (let k = 0; i + k < n; k++) t |= <u64>load<u8>(p + <usize>(i + k)) << (<u64>k * 8);
    return mix(h ^ t ^ 0xc4ceb9fe1a85ec53);
  }

  // Whether `allow` covers the record's client.
  private allowed(client: string, e: Known): bool {
    if (e.kind == KIND_IDENTITY) {
      let b = String.UTF8.encode(client);
      return this.cfg.allowIds.length > 0 && anySpiffeMatch(this.cfg.allowIds, changetype<usize>(b), <usize>b.byteLength);
    }
    if (anyContains(this.cfg.allow, e.hi, e.lo)) return true;
    if (e.kind == KIND_RANGE) {
      // A range overlapping an allowed network would ban allowed addresses inside it.
      for (let i = 0; i < this.cfg.allow.length; i++) {
        let a = this.cfg.allow[i];
        if ((a.hi & a.mhi & this.rangeMaskHi(e)) == (e.hi & a.mhi) && (a.lo & a.mlo & this.rangeMaskLo(e)) == (e.lo & a.mlo)) return true;
      }
    }
    return false;
  }

  private rangeMaskHi(e: Known): u64 {
    let bits = isV4(e.hi, e.lo) ? 96 + this.cfg.rangePrefixV4 : this.cfg.rangePrefixV6;
    return bits >= 64 ? 0xffffffffffffffff : (bits <= 0 ? 0 : 0xffffffffffffffff << (64 - <u64>bits));
  }

  private rangeMaskLo(e: Known): u64 {
    let bits = isV4(e.hi, e.lo) ? 96 + this.cfg.rangePrefixV4 : this.cfg.rangePrefixV6;
    return bits <= 64 ? 0 : (bits >= 128 ? 0xffffffffffffffff : 0xffffffffffffffff << (128 - <u64>bits));
  }

  // Bans (until > 0) or lifts (until 0) the client of a record in the shared state.
  private apply(e: Known, until: u64, now: u64): bool {
    if (e.kind == KIND_RANGE) return this.ranges.applyBan(e.hi, e.lo, until, now);
    return this.table.applyBan(this.cfg, e.hi, e.lo, until, now);
  }

  // Lifts the ban a record had applied (or this proxy's own ban the record carried).
  private lift(e: Known, now: u64): void {
    if (e.applied <= now) return;
    if (this.apply(e, 0, now)) {
      noteBanLifted(); // every worker empties its ban cache on its next tick
      this.metrics.inc(m.DECISIONS_LIFTED);
      if (!e.own) this.active--;
    } else {
      this.metrics.inc(m.DECISIONS_SYNC_ERRORS);
    }
    e.applied = 0;
  }

  // A key that is no longer in the store.
  private forget(key: u64, now: u64): void {
    let e = this.known.get(key);
    this.known.delete(key);
    this.lift(e, now);
  }

  // Counts the decisions in force again (bans end on their own).
  private recount(now: u64): void {
    let n = 0;
    let keys = this.known.keys();
    for (let i = 0; i < keys.length; i++) {
      let e = this.known.get(keys[i]);
      if (!e.own && e.applied > now) n++;
    }
    this.active = n;
    this.metrics.setActive(n);
  }

  private malformed(key: string, why: string): void {
    this.metrics.inc(m.DECISIONS_SYNC_ERRORS);
    log(LogLevelValues.debug, "traffic-guard: decisions: skipped " + quote(key.length > 200 ? key.substring(0, 200) : key) + ": " + why);
  }
}

const TOKEN = memory.data(4);

// The murmur3 64-bit finaliser.
function mix(h: u64): u64 {
  h ^= h >> 33; h *= 0xff51afd7ed558ccd;
  h ^= h >> 33; h *= 0xc4ceb9fe1a85ec53;
  return h ^ (h >> 33);
}

// The decimal number in bytes [s, e) of a queue line (noteBan writes digits only).
function queueNumber(base: usize, s: i32, e: i32): u64 {
  let v: u64 = 0;
  for (let i = s; i < e; i++) {
    let d = <u32>load<u8>(base + <usize>i) - 0x30;
    if (d > 9) break;
    v = v * 10 + <u64>d;
  }
  return v;
}

// Whether s is a non-empty run of decimal digits (how etcd writes int64 fields).
function isDecimal(s: string): bool {
  if (s.length == 0 || s.length > 20) return false;
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return false;
  }
  return true;
}

// The serialized header pairs of a POST to `path` (proxy-wasm pairs: count, sizes, then NUL-ended strings).
function pairs(path: ArrayBuffer, authority: string): ArrayBuffer {
  let names: ArrayBuffer[] = [bytes(":method"), bytes(":path"), bytes(":authority"), bytes("content-type")];
  let values: ArrayBuffer[] = [bytes("POST"), path, bytes(authority), bytes("application/json")];
  let size = 4;
  for (let i = 0; i < 4; i++) size += 8 + names[i].byteLength + 1 + values[i].byteLength + 1;
  let out = new ArrayBuffer(size);
  let p = changetype<usize>(out);
  store<u32>(p, 4);
  let q = p + 4;
  for (let i = 0; i < 4; i++) {
    store<u32>(q, names[i].byteLength);
    store<u32>(q, values[i].byteLength, 4);
    q += 8;
  }
  for (let i = 0; i < 4; i++) {
    memory.copy(q, changetype<usize>(names[i]), <usize>names[i].byteLength);
    q += <usize>names[i].byteLength;
    store<u8>(q, 0);
    q++;
    memory.copy(q, changetype<usize>(values[i]), <usize>values[i].byteLength);
    q += <usize>values[i].byteLength;
    store<u8>(q, 0);
    q++;
  }
  return out;
}

/**
 * A small proxy-wasm host emulator that runs build/traffic-guard.wasm the way Envoy does.
 *
 * Modelled on proxy-wasm-cpp-host (the ABI layer Envoy embeds) and Envoy's own Context, with the
 * go-sdk's `proxytest` as the shape of the API. One `Host` owns what Envoy shares between worker
 * threads: the shared-data store, the stats (one stat per name), the log sink and the clock. Each
 * `Vm` is one WebAssembly.Instance of the module, i.e. one Envoy worker thread. A `HttpStream` is
 * one request going through the filter.
 *
 *   const h = await Host.start({ config: '{"mode":"enforce"}' });
 *   const r = h.vm(0).request({ path: '/db', peer: '203.0.113.7:4000', headers: { 'user-agent': 'curl/8.5.0' } }).respond(404);
 *   assert.equal(r.localReply?.status, 403);
 *
 * The ABI semantics every host in this repository shares (result codes, the malloc copy-out of
 * values with no allocation for an empty one, shared-data CAS rules, stats keyed by name with
 * counters that only increase, metric ids) live in tools/lib/proxy-wasm-abi.ts. On top of them,
 * host behaviour reproduced on purpose (each is something a filter can get wrong):
 * - a missing header or property is NotFound (1); property paths are NUL-separated segments;
 * - a counter increment <= 0 and a gauge below zero are recorded as metric violations;
 * - a local reply is encoded through the same filter: the stream's proxy_on_response_headers runs
 *   with the local `:status`, and the upstream is never reached;
 * - plugin configuration is readable (buffer type 7) only during proxy_on_configure, VM
 *   configuration (type 6) only during proxy_on_vm_start;
 * - a trap (RuntimeError, e.g. an AssemblyScript abort) fails the VM and is raised as a TrapError
 *   carrying the last log lines.
 * Every import the module declares is provided; unimplemented ones return Unimplemented (12) and are
 * recorded in `host.unimplementedCalls`; other ABI misuse is recorded in `host.violations`.
 */
import { readFileSync, existsSync, statSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";
import {
  serializePairs,
  parsePairs,
  BufferType,
  FilterHeadersStatus,
  HTTP_FILTER_EXPORTS,
  STREAM_CALLBACK_DEFAULTS,
  HeaderMapType,
  LOG_LEVEL_NAMES,
  MetricIds,
  REQUIRED_PROXY_WASM_EXPORTS,
  SharedData,
  StatsScope,
  WasmResult,
  copyOut,
  copyOutRange,
  copyOutSharedEntry,
  defineMetric,
  getMetric,
  guarded,
  incrementMetric,
  propertyPath,
  recordMetric,
  writeU32,
  writeU64,
  wasiClockTimeGet,
  wasiRandomGet,
  WasiErrno,
  type SharedEntry,
  type Stat,
} from "../../tools/lib/proxy-wasm-abi.ts";

export { FilterHeadersStatus, WasmResult, type SharedEntry, type Stat } from "../../tools/lib/proxy-wasm-abi.ts";

/** proxy-wasm log levels, index = level number. */
export const LogLevelNames = LOG_LEVEL_NAMES;

/**
 * The module the tests run: build/traffic-guard.wasm, or the file named by TRAFFIC_GUARD_WASM (for
 * example TRAFFIC_GUARD_WASM=build/traffic-guard.debug.wasm, whose traps carry function names).
 */
export const DEFAULT_WASM = process.env.TRAFFIC_GUARD_WASM
  ? path.resolve(process.env.TRAFFIC_GUARD_WASM)
  : path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../build/traffic-guard.wasm");

const utf8 = new TextEncoder();
const utf8dec = new TextDecoder("utf-8", { fatal: false });

/** Bytes or text, as accepted wherever the emulator takes a header or property value. */
export type Bytes = string | Uint8Array;

function toBytes(v: Bytes): Uint8Array {
  return typeof v === "string" ? utf8.encode(v) : v;
}

/** Parses "90s", "10m", "1h30m", "250ms" or a number of milliseconds into milliseconds. */
export function durationMs(d: string | number): number {
  if (typeof d === "number") return d;
  const re = /(\d+(?:\.\d+)?)(ms|h|m|s)/gy;
  let total = 0;
  let matched = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(d)) !== null) {
    const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as "ms" | "s" | "m" | "h"];
    total += Number(m[1]) * unit;
    matched = re.lastIndex;
  }
  if (matched !== d.length || d.length === 0) throw new Error(`durationMs: not a duration: ${JSON.stringify(d)}`);
  return total;
}

// ---------------------------------------------------------------------------------------------
// Clock

/**
 * The host's random bytes (WASI random_get): a seeded xorshift generator, so tests are reproducible; a test that
 * needs another secret gives another seed.
 */
export class Random {
  private state: bigint;
  /** When false, random_get returns ENOTSUP (a host without WASI random_get). */
  available = true;
  constructor(seed = 0x9e3779b97f4a7c15n) {
    this.state = BigInt.asUintN(64, seed) || 1n;
  }
  /** Fills `bytes` with the next pseudo-random bytes. */
  fill(bytes: Uint8Array): void {
    for (let i = 0; i < bytes.length; i++) {
      let x = this.state;
      x ^= BigInt.asUintN(64, x << 13n);
      x ^= x >> 7n;
      x ^= BigInt.asUintN(64, x << 17n);
      this.state = x;
      bytes[i] = Number(x & 0xffn);
    }
  }
}

/**
 * The clocks every VM reads; only tests move them. The wall clock is what
 * proxy_get_current_time_nanoseconds and WASI clock_time_get(0) return; the monotonic clock is WASI
 * clock_time_get(1), which proxy-wasm-cpp-host serves from Envoy's per-process steady clock.
 */
export class Clock {
  /** Current wall-clock time in milliseconds since the Unix epoch. */
  nowMs: number;
  /** Current monotonic time in milliseconds (an arbitrary origin: like Envoy's steady clock, time since boot). */
  monoMs = 7_200_000;
  /** When false, clock_time_get returns ENOTSUP for the monotonic clock (a host without it). */
  monotonic = true;
  constructor(startMs = Date.UTC(2024, 0, 15, 12, 0, 0)) {
    this.nowMs = startMs;
  }
  /** Moves both clocks forward by a duration ("61s", "1h30m") or a number of milliseconds. */
  advance(d: string | number): void {
    const ms = durationMs(d);
    if (ms < 0) throw new Error("Clock.advance: time cannot go backwards");
    this.nowMs += ms;
    this.monoMs += ms;
  }
  /** Steps the wall clock only, backwards too (NTP, an operator); the monotonic clock does not move. */
  set(ms: number): void {
    this.nowMs = ms;
  }
  /** Current wall-clock time in nanoseconds, as the host hands it to the module. */
  nanos(): bigint {
    return BigInt(Math.round(this.nowMs)) * 1_000_000n;
  }
  /** Current monotonic time in nanoseconds. */
  monoNanos(): bigint {
    return BigInt(Math.round(this.monoMs)) * 1_000_000n;
  }
}

// ---------------------------------------------------------------------------------------------
// Shared data

/** Hook run before a set is applied; it may itself make requests (e.g. on another VM). */
export type BeforeSetHook = (key: string) => void;

/**
 * Envoy's shared-data store (proxy-wasm-cpp-host SharedData): one map shared by every VM of the
 * same vm_id, guarded by a mutex in Envoy, so each get and each set is atomic.
 */
export class SharedDataStore {
  private readonly data = new SharedData();
  private hooks: { match: (key: string) => boolean; fn: BeforeSetHook; once: boolean }[] = [];
  /** When set, every set returns this result instead of storing (to provoke fail-open paths). */
  forceSetResult: number | null = null;
  /** When set, every get returns this result (NotFound, InternalFailure, ...). */
  forceGetResult: number | null = null;
  /** Number of get calls made by all VMs. */
  gets = 0;
  /** Number of set calls made by all VMs (including rejected ones). */
  sets = 0;
  /** Number of sets rejected with CasMismatch. */
  casMismatches = 0;

  /** Returns a copy of the entry, or undefined when the key was never written. */
  get(key: string): SharedEntry | undefined {
    this.gets++;
    const e = this.data.get(key);
    return e && { value: e.value.slice(), cas: e.cas };
  }

  /** Envoy's set: cas 0 = unconditional; an absent key is always written; else cas must match. */
  set(key: string, value: Uint8Array, cas: number): number {
    this.sets++;
    const due = this.hooks.filter((h) => h.match(key));
    if (due.length > 0) {
      this.hooks = this.hooks.filter((h) => !(h.once && due.includes(h)));
      for (const h of due) h.fn(key);
    }
    if (this.forceSetResult !== null) {
      if (this.forceSetResult === WasmResult.CasMismatch) this.casMismatches++;
      return this.forceSetResult;
    }
    const result = this.data.set(key, value, cas);
    if (result === WasmResult.CasMismatch) this.casMismatches++;
    return result;
  }

  /**
   * Runs `fn` the next time any VM sets a key matching `key` (a string, a predicate, or null for
   * any key), after that VM's get and before its set is applied. One-shot unless `{ once: false }`.
   * Returns a function that removes the hook.
   */
  onBeforeSet(key: string | null | ((key: string) => boolean), fn: BeforeSetHook, opts: { once?: boolean } = {}): () => void {
    const match = key === null ? () => true : typeof key === "string" ? (k: string) => k === key : key;
    const hook = { match, fn, once: opts.once ?? true };
    this.hooks.push(hook);
    return () => {
      this.hooks = this.hooks.filter((h) => h !== hook);
    };
  }

  /** Number of keys ever written (Envoy never deletes one). */
  get size(): number {
    return this.data.size;
  }
  /** All key names. */
  keys(): string[] {
    return [...this.data.entries()].map(([k]) => k);
  }
  /** Stored value size of one key, or undefined. */
  valueSize(key: string): number | undefined {
    return this.data.get(key)?.value.length;
  }
  /** Current CAS of one key, or undefined. */
  casOf(key: string): number | undefined {
    return this.data.get(key)?.cas;
  }
  /** A copy of every entry, for diffing before/after a request. */
  snapshot(): Map<string, SharedEntry> {
    return new Map([...this.data.entries()].map(([k, e]) => [k, { value: e.value.slice(), cas: e.cas }]));
  }
  /** Keys whose CAS differs from (or are absent in) an earlier snapshot. */
  changedSince(snap: Map<string, SharedEntry>): string[] {
    return [...this.data.entries()].filter(([k, e]) => snap.get(k)?.cas !== e.cas).map(([k]) => k);
  }
}

// ---------------------------------------------------------------------------------------------
// Metrics

/** Envoy's stats scope for the plugin: stats are keyed by name, so all VMs share them. */
export class Metrics extends StatsScope {
  /** Current value; throws a clear error when the filter never defined the metric. */
  get(name: string): number {
    const s = this.stat(name);
    if (!s) throw new Error(`metric ${name} was never defined by the filter (defined: ${this.names().join(", ") || "none"})`);
    return s.value;
  }
  /** Whether some VM defined `name`. */
  has(name: string): boolean {
    return this.stat(name) !== undefined;
  }
  /** All names defined so far. */
  names(): string[] {
    return [...this.all()].map((s) => s.name);
  }
  /** name → value for every defined stat. */
  snapshot(): Record<string, number> {
    return Object.fromEntries([...this.all()].map((s) => [s.name, s.value]));
  }
  /** name → (current − earlier) for every stat that changed since `snap`. */
  diff(snap: Record<string, number>): Record<string, number> {
    const out: Record<string, number> = {};
    for (const s of this.all()) {
      const d = s.value - (snap[s.name] ?? 0);
      if (d !== 0) out[s.name] = d;
    }
    return out;
  }
}

// ---------------------------------------------------------------------------------------------
// Logs

/** One proxy_log call. */
export interface LogEntry {
  vm: number;
  level: number;
  levelName: string;
  text: string;
  /** The callback that was running when the line was logged ("proxy_on_configure", ...). */
  during: string;
  contextId: number;
}

// ---------------------------------------------------------------------------------------------
// Errors

/** A wasm trap (RuntimeError) inside the module, with the last log lines for the diagnosis. */
export class TrapError extends Error {
  constructor(
    readonly vmIndex: number,
    readonly call: string,
    readonly cause: unknown,
    readonly lastLogs: LogEntry[],
  ) {
    super(
      `wasm trap in VM ${vmIndex} during ${call}: ${cause instanceof Error ? cause.message : String(cause)}\n` +
        `last logs:\n${lastLogs.map((l) => `  [${l.levelName}] ${l.text}`).join("\n") || "  (none)"}`,
    );
    this.name = "TrapError";
  }
}

// ---------------------------------------------------------------------------------------------
// Header pairs

/** One header; keys are stored lowercase as Envoy does. */
export type HeaderPair = [string, Uint8Array];

export { serializePairs, parsePairs } from "../../tools/lib/proxy-wasm-abi.ts";

// ---------------------------------------------------------------------------------------------
// Host

/** Options for Host.load / Host.start. */
export interface HostOptions {
  /** Plugin configuration (pluginConfig JSON string); an object is JSON.stringify'd. Default "". */
  config?: string | Uint8Array | object;
  /** Number of VMs (Envoy worker threads). Default 1. */
  vms?: number;
  /** The root_id Envoy/Istio passes (Istio: the WasmPlugin's pluginName). Default "traffic-guard". */
  rootId?: string;
  /** VM configuration bytes (vm_config.configuration). Default "". */
  vmConfig?: string;
  /** Path of the .wasm to run. Default build/traffic-guard.wasm. */
  wasm?: string;
  /** An already compiled module to run instead of a file (the emulator's own tests use this). */
  module?: WebAssembly.Module;
  /** Initial wall-clock time in ms since the epoch. */
  startMs?: number;
  /** Seed of the host's random bytes (WASI random_get); a fixed default keeps runs reproducible. */
  randomSeed?: bigint;
  /** Envoy's node id (property "xds\0node\0id", where Envoy 1.40 serves it); absent when undefined. */
  nodeId?: string;
  /** Clusters proxy_http_call may reach; Envoy answers BadArgument for any other. */
  clusters?: string[];
}

/**
 * One outbound callout (proxy_http_call), waiting for the test to answer it. Envoy (context.cc httpCall)
 * refuses a call without :path, :method and :authority, or to an unknown cluster, with BadArgument; it
 * answers a reset, a refused connection or a timeout with proxy_on_http_call_response(token, 0, 0, 0):
 * no headers (no :status) and no body. The body arrives only with the complete response.
 */
export class HttpCall {
  /** Whether respond() or fail() ran. */
  answered = false;
  constructor(
    readonly vm: Vm,
    readonly token: number,
    readonly cluster: string,
    readonly headers: [string, string][],
    readonly body: string,
    readonly timeoutMs: number,
  ) {}
  /** A request header's value. */
  header(name: string): string | undefined {
    return this.headers.find(([k]) => k === name)?.[1];
  }
  /** The request body parsed as JSON. */
  json(): any {
    return JSON.parse(this.body);
  }
  /** Answers with a complete response. */
  respond(status: number, body: string | Uint8Array = "", headers: [string, string][] = []): void {
    this.finish([[":status", String(status)], ...headers], toBytes(body));
  }
  /** Answers the way Envoy reports a failure: no headers, no body. */
  fail(): void {
    this.finish(undefined, new Uint8Array(0));
  }
  private finish(headers: [string, string][] | undefined, body: Uint8Array): void {
    if (this.answered) throw new Error(`callout ${this.token} was answered already`);
    this.answered = true;
    this.vm.answerCall(this, headers, body);
  }
}

const moduleCache = new Map<string, { mtimeMs: number; module: WebAssembly.Module }>();

/** Compiles (once per file version) the module; fails with a clear message when it is missing. */
export function loadModule(file = DEFAULT_WASM): WebAssembly.Module {
  if (!existsSync(file)) {
    throw new Error(`${file} does not exist: run \`npm run build\` first (the filter tests run the compiled module)`);
  }
  const mtimeMs = statSync(file).mtimeMs;
  const hit = moduleCache.get(file);
  if (hit && hit.mtimeMs === mtimeMs) return hit.module;
  const module = new WebAssembly.Module(readFileSync(file));
  moduleCache.set(file, { mtimeMs, module });
  return module;
}

/** What Envoy shares between workers, plus the VMs (workers) themselves. */
export class Host {
  readonly store = new SharedDataStore();
  readonly metrics = new Metrics();
  readonly clock: Clock;
  /** The random bytes WASI random_get serves. */
  readonly random: Random;
  /** Every log line of every VM, in order. */
  readonly logs: LogEntry[] = [];
  /** Calls to imports the emulator does not implement (each returned Unimplemented). */
  readonly unimplementedCalls: string[] = [];
  /** ABI misuse by the module (bad pointers, bad enum values, second local reply, ...). */
  readonly violations: string[] = [];
  readonly vms: Vm[] = [];
  readonly module: WebAssembly.Module;
  rootId: string;
  vmConfig: Uint8Array;
  /** Every callout the module made, in order (answer with HttpCall.respond / fail). */
  readonly httpCalls: HttpCall[] = [];
  /** Clusters proxy_http_call may reach. */
  readonly clusters: Set<string>;
  /** Envoy's node.id, or undefined. */
  nodeId: string | undefined;

  private constructor(readonly options: HostOptions) {
    this.module = options.module ?? loadModule(options.wasm ?? DEFAULT_WASM);
    this.clock = new Clock(options.startMs);
    this.random = new Random(options.randomSeed);
    this.clusters = new Set(options.clusters ?? []);
    this.nodeId = options.nodeId;
    this.rootId = options.rootId ?? "traffic-guard";
    this.vmConfig = utf8.encode(options.vmConfig ?? "");
  }

  /** Instantiates the VMs and starts their root contexts, without configuring the plugin. */
  static load(options: HostOptions = {}): Host {
    const h = new Host(options);
    for (let i = 0; i < (options.vms ?? 1); i++) h.addVm();
    return h;
  }

  /** load() + proxy_on_configure on every VM; throws (with the logs) if the config is rejected. */
  static async start(options: HostOptions = {}): Promise<Host> {
    const h = Host.load(options);
    const cfg = options.config ?? "";
    h.vms.forEach((vm) => {
      if (!vm.configure(cfg)) {
        throw new Error(
          `proxy_on_configure returned 0 on VM ${vm.index} for config ${configText(cfg)}; logs:\n` +
            h.logs.map((l) => `  [${l.levelName}] ${l.text}`).join("\n"),
        );
      }
    });
    return h;
  }

  /** Adds one more VM (worker) over the same store, stats and clock; it is started, not configured. */
  addVm(): Vm {
    const vm = new Vm(this, this.vms.length);
    this.vms.push(vm);
    return vm;
  }

  /** Delivers one tick to every VM whose root context set a tick period (Vm.tick). */
  tick(): void {
    for (const vm of this.vms) if (vm.tickPeriodMs > 0) vm.tick();
  }

  /** Callouts not answered yet. */
  pendingCalls(): HttpCall[] {
    return this.httpCalls.filter((c) => !c.answered);
  }

  /** VM `i` (worker thread i). */
  vm(i: number): Vm {
    const vm = this.vms[i];
    if (!vm) throw new Error(`no VM ${i} (host has ${this.vms.length})`);
    return vm;
  }

  /** Sends a new plugin configuration to every VM; returns whether every VM accepted it. */
  configure(config: string | Uint8Array | object): boolean {
    return this.vms.map((vm) => vm.configure(config)).every(Boolean);
  }

  /** Log lines at `level` or above (level names or numbers). */
  logsAtLeast(level: number | (typeof LogLevelNames)[number]): LogEntry[] {
    const n = typeof level === "number" ? level : LogLevelNames.indexOf(level);
    return this.logs.filter((l) => l.level >= n);
  }

  /** Log lines emitted while a stream callback (not a root-context callback) was running. */
  requestPathLogs(): LogEntry[] {
    return this.logs.filter((l) => l.during !== "instantiate" && !ROOT_CALLBACKS.has(l.during));
  }

  /** Clears captured logs (e.g. after configure). */
  clearLogs(): void {
    this.logs.length = 0;
  }

  /** Throws when the module misused the ABI or called something unimplemented or bad on metrics. */
  assertClean(): void {
    const problems = [
      ...this.violations.map((v) => `ABI violation: ${v}`),
      ...this.metrics.violations.map((v) => `metric violation: ${v}`),
      ...this.unimplementedCalls.map((c) => `unimplemented host call: ${c}`),
    ];
    if (problems.length > 0) throw new Error(`host saw problems:\n  ${[...new Set(problems)].slice(0, 20).join("\n  ")}`);
  }
}

const ROOT_CALLBACKS = new Set(["proxy_on_vm_start", "proxy_on_configure", "proxy_on_context_create(root)", "proxy_on_tick", "proxy_on_http_call_response"]);
/** The header map type of a callout's response headers, and the buffer type of its body. */
const HTTP_CALL_RESPONSE_HEADERS = 6;
const HTTP_CALL_RESPONSE_BODY = 4;

function configText(cfg: string | Uint8Array | object): string {
  if (typeof cfg === "string") return JSON.stringify(cfg);
  if (cfg instanceof Uint8Array) return JSON.stringify(utf8dec.decode(cfg));
  return JSON.stringify(cfg);
}

function configBytes(cfg: string | Uint8Array | object): Uint8Array {
  if (typeof cfg === "string") return utf8.encode(cfg);
  if (cfg instanceof Uint8Array) return cfg;
  return utf8.encode(JSON.stringify(cfg));
}

// ---------------------------------------------------------------------------------------------
// Streams

/** What a test passes to Vm.request. */
export interface RequestOptions {
  /** `:path`. Default "/". */
  path?: string;
  /** `:method`. Default "GET". */
  method?: string;
  /** `:authority`. Default "app.example.com". */
  authority?: string;
  /** The connection's `source.address` ("ip:port", "[v6]:port"); null = property missing. */
  peer?: Bytes | null;
  /** Extra request headers (keys are lowercased). Order is kept; repeated keys via an array. */
  headers?: Record<string, Bytes> | [string, Bytes][];
  /** Replace the whole request header map (pseudo-headers included) instead of building it. */
  rawHeaders?: [string, Bytes][];
  /** Extra properties by dotted path ("destination.address"), null = missing. */
  properties?: Record<string, Bytes | null>;
}

/** A local reply sent with proxy_send_local_response. */
export interface LocalReply {
  status: number;
  details: string;
  body: string;
  bodyBytes: Uint8Array;
  headers: [string, string][];
  grpcStatus: number;
  /** First value of a header (case-insensitive), or undefined. */
  header(name: string): string | undefined;
}

/** One HTTP stream through one VM's filter. */
export class HttpStream {
  /** Raw FilterHeadersStatus returned by proxy_on_request_headers. */
  requestAction = -1;
  /** Raw FilterHeadersStatus returned by proxy_on_response_headers (-1 if not called). */
  responseAction = -1;
  /** The local reply the filter sent, if any. */
  localReply?: LocalReply;
  /** Whether the request would have reached the upstream (Continue and no local reply). */
  upstreamReached = false;
  /** The status the client finally got (local reply status or upstream status). */
  status?: number;
  /** Log lines emitted by this stream's callbacks. */
  readonly logs: LogEntry[] = [];
  /** Response headers seen by the filter in proxy_on_response_headers. */
  responseHeaders: HeaderPair[] = [];
  /** Response trailers seen by the filter in proxy_on_response_trailers (undefined: none were sent). */
  responseTrailers?: HeaderPair[];
  /** True once proxy_on_delete ran. */
  finished = false;
  requestHeaders: HeaderPair[];
  readonly properties = new Map<string, Uint8Array>();
  /** "request" or "response" while the matching callback runs; governs which header maps exist. */
  phase: "request" | "response" | "done" = "request";

  constructor(
    readonly vm: Vm,
    readonly contextId: number,
    opts: RequestOptions,
  ) {
    if (opts.rawHeaders) {
      this.requestHeaders = opts.rawHeaders.map(([k, v]) => [k.toLowerCase(), toBytes(v)]);
    } else {
      const extra = Array.isArray(opts.headers) ? opts.headers : Object.entries(opts.headers ?? {});
      this.requestHeaders = [
        [":authority", utf8.encode(opts.authority ?? "app.example.com")],
        [":path", utf8.encode(opts.path ?? "/")],
        [":method", utf8.encode(opts.method ?? "GET")],
        [":scheme", utf8.encode("http")],
        ...extra.map(([k, v]) => [k.toLowerCase(), toBytes(v)] as HeaderPair),
      ];
    }
    const peer = opts.peer === undefined ? "192.0.2.10:40000" : opts.peer;
    if (peer !== null) this.properties.set("source\0address", toBytes(peer));
    this.properties.set("destination\0address", utf8.encode("10.0.0.5:8080"));
    for (const [k, v] of Object.entries(opts.properties ?? {})) {
      const key = propertyPath(k);
      if (v === null) this.properties.delete(key);
      else this.properties.set(key, toBytes(v));
    }
  }

  /** Whether the filter resumed the paused request with proxy_continue_stream (e.g. from a tick). */
  continued = false;

  /** The filter paused the request without a local reply and has not resumed it: in Envoy the stream would hang. */
  get stalled(): boolean {
    return this.requestAction !== FilterHeadersStatus.Continue && !this.localReply && !this.continued;
  }

  /** The filter paused the request and may resume it later (not a local reply). */
  get paused(): boolean {
    return this.stalled && !this.finished;
  }

  /** Whether the filter let the request through to the upstream. */
  get passed(): boolean {
    return this.upstreamReached;
  }

  /**
   * Delivers the upstream response (when the request reached it) through proxy_on_response_headers,
   * and `trailers`, when given, through proxy_on_response_trailers, then ends the stream (proxy_on_log, proxy_on_done, proxy_on_delete). With a local reply the
   * upstream was never reached: `status` is ignored and the stream just ends.
   */
  respond(status: number | Bytes = 200, headers: Record<string, Bytes> = {}, trailers?: Record<string, Bytes>): this {
    if (this.finished) throw new Error("respond(): stream already finished");
    if (this.stalled) {
      throw new Error(
        `the filter returned ${this.requestAction} from proxy_on_request_headers without a local reply: the request would hang in Envoy`,
      );
    }
    if (this.upstreamReached) {
      this.responseHeaders = [
        [":status", typeof status === "number" ? utf8.encode(String(status)) : toBytes(status)],
        ["content-type", utf8.encode("text/html")],
        ...Object.entries(headers).map(([k, v]) => [k.toLowerCase(), toBytes(v)] as HeaderPair),
      ];
      this.status = typeof status === "number" ? status : Number(utf8dec.decode(toBytes(status)));
      this.phase = "response";
      this.responseAction = this.vm.call("proxy_on_response_headers", this, this.contextId, this.responseHeaders.length, 0);
      if (this.responseAction !== FilterHeadersStatus.Continue && !this.localReply) {
        this.vm.host.violations.push(`proxy_on_response_headers returned ${this.responseAction} without a local reply: the response would hang`);
      }
      if (trailers) {
        // Envoy calls proxy_on_response_trailers when the upstream response ends with trailers (gRPC).
        this.responseTrailers = Object.entries(trailers).map(([k, v]) => [k.toLowerCase(), toBytes(v)] as HeaderPair);
        const action = this.vm.call("proxy_on_response_trailers", this, this.contextId, this.responseTrailers.length);
        if (action !== 0) this.vm.host.violations.push(`proxy_on_response_trailers returned ${action}: the response would hang`);
      }
    }
    this.finish();
    return this;
  }

  /** Ends the stream without a response (client went away); same end-of-stream calls as Envoy. */
  finish(): this {
    if (this.finished) return this;
    this.phase = "done";
    // Envoy's order (ConnectionManagerImpl::doDeferredStreamDestroy): the access-log phase (proxy_on_log),
    // then the filter's destruction (proxy_on_done, proxy_on_delete).
    this.vm.call("proxy_on_log", this, this.contextId);
    this.vm.call("proxy_on_done", this, this.contextId);
    this.vm.call("proxy_on_delete", this, this.contextId);
    this.finished = true;
    this.vm.streams.delete(this.contextId);
    return this;
  }

  /** Header map for a proxy-wasm map type, or undefined when Envoy has none at this point. */
  headerMap(type: number): HeaderPair[] | undefined {
    if (type === HeaderMapType.RequestHeaders) return this.requestHeaders;
    if (type === HeaderMapType.ResponseHeaders && (this.phase === "response" || this.phase === "done")) return this.responseHeaders;
    if (type === HeaderMapType.ResponseTrailers) return this.responseTrailers;
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// VM

type Exports = Record<string, (...args: any[]) => any> & { memory: WebAssembly.Memory };

/** One instance of the module = one Envoy worker thread. */
export class Vm {
  readonly instance: WebAssembly.Instance;
  readonly exports: Exports;
  /** Root context id (cpp-host allocates 1 to the first root context). */
  readonly rootContextId = 1;
  private nextContextId = 2;
  /** Streams not finished yet, by context id. */
  readonly streams = new Map<number, HttpStream>();
  /** The stream whose callback is running, if any. */
  current: HttpStream | undefined;
  /** The export being called (for log attribution). */
  during = "instantiate";
  /** Set after a trap: Envoy stops using a failed VM. */
  failed: TrapError | undefined;
  /** Every property path the module asked for (NUL shown as "\0"). */
  readonly propertyLookups: string[] = [];
  /** Calls per import name. */
  readonly importCalls = new Map<string, number>();
  /** Calls per exported callback name (what Envoy would call into the module). */
  readonly callbackCalls = new Map<string, number>();
  /** Calls into the module's malloc to hand it host values (the copy-out of every value returned). */
  mallocCalls = 0;
  private readonly metricIds = new MetricIds();
  private pluginConfig: Uint8Array | undefined;
  private vmConfigAvailable = false;
  private nextToken = 1;
  /** The response of the callout being delivered (readable only during proxy_on_http_call_response). */
  private callResponse: { headers: [string, Uint8Array][]; body: Uint8Array } | undefined;

  /** Delivers a callout's response (HttpCall.respond / fail) through proxy_on_http_call_response. */
  answerCall(call: HttpCall, headers: [string, string][] | undefined, body: Uint8Array): void {
    this.callResponse = { headers: (headers ?? []).map(([k, v]) => [k, utf8.encode(v)]), body };
    try {
      this.call("proxy_on_http_call_response", undefined, this.rootContextId, call.token, headers?.length ?? 0, body.length, 0);
    } finally {
      this.callResponse = undefined;
    }
  }

  constructor(
    readonly host: Host,
    readonly index: number,
  ) {
    const imports = this.buildImports();
    try {
      this.instance = new WebAssembly.Instance(host.module, imports);
    } catch (e) {
      if (e instanceof WebAssembly.RuntimeError) throw new TrapError(index, "instantiate (start function)", e, host.logs.slice(-10));
      throw e;
    }
    this.exports = this.instance.exports as unknown as Exports;
    for (const name of [...REQUIRED_PROXY_WASM_EXPORTS, ...HTTP_FILTER_EXPORTS]) {
      if (!(name in this.exports)) throw new Error(`module does not export ${name}: not a proxy-wasm 0.2.x filter`);
    }
    if (!Object.keys(this.exports).some((n) => n.startsWith("proxy_abi_version_0_2_"))) {
      throw new Error("module exports no proxy_abi_version_0_2_x marker: Envoy would refuse to load it");
    }
    if (typeof this.exports._initialize === "function") this.call("_initialize", undefined);
    else if (typeof this.exports._start === "function") this.call("_start", undefined);
    // Envoy/cpp-host ContextBase::onStart: create the root context (when the module exports
    // proxy_on_context_create; otherwise the module keeps its own state), then on_vm_start.
    if (typeof this.exports.proxy_on_context_create === "function") this.call("proxy_on_context_create", undefined, this.rootContextId, 0);
    this.vmConfigAvailable = true;
    try {
      const ok = this.call("proxy_on_vm_start", undefined, this.rootContextId, host.vmConfig.length);
      if (ok === 0) throw new Error(`proxy_on_vm_start returned 0 on VM ${index}: Envoy would fail the VM`);
    } finally {
      this.vmConfigAvailable = false;
    }
  }

  /** The tick period the module asked for (proxy_set_tick_period_milliseconds; 0 = no ticks). */
  tickPeriodMs = 0;

  /**
   * Delivers one timer tick to the root context (proxy_on_tick), as Envoy's dispatcher does every
   * tickPeriodMs; tests move the clock themselves. Fails when the module asked for no ticks.
   */
  tick(): void {
    if (this.tickPeriodMs === 0) throw new Error(`VM ${this.index}: the module set no tick period, so Envoy would never call proxy_on_tick`);
    this.effectiveId = undefined;
    try {
      this.call("proxy_on_tick", undefined, this.rootContextId);
    } finally {
      this.effectiveId = undefined;
    }
  }

  /** Delivers a plugin configuration like Envoy: proxy_on_configure; returns what it returned. */
  configure(config: string | Uint8Array | object): boolean {
    this.pluginConfig = configBytes(config);
    try {
      return this.call("proxy_on_configure", undefined, this.rootContextId, this.pluginConfig.length) !== 0;
    } finally {
      this.pluginConfig = undefined;
    }
  }

  /** Starts a stream and runs proxy_on_request_headers (and, for a local reply, the encode path). */
  request(opts: RequestOptions = {}): HttpStream {
    const id = this.nextContextId++;
    const s = new HttpStream(this, id, opts);
    this.streams.set(id, s);
    if (typeof this.exports.proxy_on_context_create === "function") this.call("proxy_on_context_create", s, id, this.rootContextId);
    s.requestAction = this.call("proxy_on_request_headers", s, id, s.requestHeaders.length, 1);
    if (!(s.requestAction >= 0 && s.requestAction <= 4)) {
      this.host.violations.push(`proxy_on_request_headers returned invalid FilterHeadersStatus ${s.requestAction}`);
    }
    if (s.localReply) {
      // Envoy encodes the local reply through the filter chain, this filter's encoder included.
      const lr = s.localReply;
      s.responseHeaders = [
        [":status", utf8.encode(String(lr.status))],
        ...(lr.bodyBytes.length > 0 ? ([["content-length", utf8.encode(String(lr.bodyBytes.length))]] as HeaderPair[]) : []),
        ...lr.headers.map(([k, v]) => [k.toLowerCase(), utf8.encode(v)] as HeaderPair),
      ];
      if (lr.bodyBytes.length > 0 && !lr.headers.some(([k]) => k.toLowerCase() === "content-type")) {
        s.responseHeaders.push(["content-type", utf8.encode("text/plain")]);
      }
      s.status = lr.status;
      s.phase = "response";
      s.responseAction = this.call("proxy_on_response_headers", s, id, s.responseHeaders.length, lr.bodyBytes.length === 0 ? 1 : 0);
    } else {
      s.upstreamReached = s.requestAction === FilterHeadersStatus.Continue;
    }
    return s;
  }

  /** The context the module made effective last with proxy_set_effective_context (reset around each tick). */
  effectiveId: number | undefined;
  /** Context ids of the streams the module resumed with proxy_continue_stream, in order. */
  readonly continues: number[] = [];

  /** request(opts).respond(status): one complete exchange. */
  send(opts: RequestOptions = {}, status = 200): HttpStream {
    return this.request(opts).respond(status);
  }

  /** Current linear memory size in bytes. */
  get memoryBytes(): number {
    return this.exports.memory.buffer.byteLength;
  }

  /** Calls an export with trap handling; `stream` is the stream it runs for (or undefined). */
  call(name: string, stream: HttpStream | undefined, ...args: number[]): number {
    if (this.failed) throw new Error(`VM ${this.index} failed earlier and cannot run ${name}: ${this.failed.message}`);
    const fn = this.exports[name];
    if (typeof fn !== "function") {
      // cpp-host skips a stream callback the module does not export and goes on with its default.
      if (stream !== undefined && Object.hasOwn(STREAM_CALLBACK_DEFAULTS, name)) return STREAM_CALLBACK_DEFAULTS[name];
      throw new Error(`module does not export ${name}`);
    }
    this.callbackCalls.set(name, (this.callbackCalls.get(name) ?? 0) + 1);
    const prevStream = this.current;
    const prevDuring = this.during;
    this.current = stream;
    this.during = name === "proxy_on_context_create" && stream === undefined ? "proxy_on_context_create(root)" : name;
    try {
      const r = fn(...args);
      return typeof r === "number" ? r : typeof r === "bigint" ? Number(r) : 0;
    } catch (e) {
      if (e instanceof WebAssembly.RuntimeError) {
        this.failed = new TrapError(this.index, name, e, this.host.logs.slice(-10));
        throw this.failed;
      }
      throw e;
    } finally {
      this.current = prevStream;
      this.during = prevDuring;
    }
  }

  // --- memory helpers -------------------------------------------------------------------------

  private mem(): Uint8Array {
    return new Uint8Array(this.exports.memory.buffer);
  }
  private read(ptr: number, len: number): Uint8Array | undefined {
    ptr >>>= 0;
    len >>>= 0;
    const m = this.mem();
    if (ptr + len > m.length) return undefined;
    return m.slice(ptr, ptr + len);
  }
  private writeU32(ptr: number, v: number): boolean {
    return guarded(() => {}, () => writeU32(this.guest, ptr, v)) === WasmResult.Ok;
  }
  /** The module's memory and malloc, as the shared ABI helpers take them. */
  private readonly guest = {
    memory: () => this.exports.memory,
    malloc: (size: number) => {
      this.mallocCalls++;
      return Number(this.exports.malloc(size));
    },
  };
  /** Records an ABI problem the shared helpers report (their result is InvalidMemoryAccess). */
  private readonly onProblem = (what: string): void => void this.bad(what);
  /** Hands a value to the module (see copyOut in tools/lib/proxy-wasm-abi.ts). */
  private copyOut(value: Uint8Array, ptrPtr: number, sizePtr: number): number {
    return copyOut(this.guest, value, ptrPtr, sizePtr, this.onProblem);
  }
  private bad(what: string): number {
    this.host.violations.push(`VM ${this.index} in ${this.during}: ${what}`);
    return WasmResult.InvalidMemoryAccess;
  }
  private text(ptr: number, len: number): string | undefined {
    const b = this.read(ptr, len);
    return b && utf8dec.decode(b);
  }

  // --- imports --------------------------------------------------------------------------------

  private buildImports(): WebAssembly.Imports {
    const impl: Record<string, (...a: any[]) => number> = {
      proxy_log: (level: number, ptr: number, len: number) => {
        const text = this.text(ptr, len);
        if (text === undefined) return this.bad("proxy_log message out of bounds");
        if (level < 0 || level > 5) {
          this.host.violations.push(`proxy_log with level ${level}`);
          return WasmResult.BadArgument;
        }
        const e: LogEntry = { vm: this.index, level, levelName: LogLevelNames[level], text, during: this.during, contextId: this.current?.contextId ?? this.rootContextId };
        this.host.logs.push(e);
        this.current?.logs.push(e);
        return WasmResult.Ok;
      },
      proxy_get_log_level: (ptr: number) => (this.writeU32(ptr, 0) ? WasmResult.Ok : this.bad("log level pointer")),
      proxy_get_current_time_nanoseconds: (ptr: number) =>
        guarded(this.onProblem, () => writeU64(this.guest, ptr, this.host.clock.nanos(), "time pointer")),
      proxy_get_property: (pathPtr: number, pathLen: number, valuePtrPtr: number, valueSizePtr: number) => {
        const p = this.text(pathPtr, pathLen);
        if (p === undefined) return this.bad("property path out of bounds");
        this.propertyLookups.push(p);
        const v = this.property(p);
        if (v === undefined) return WasmResult.NotFound;
        return this.copyOut(v, valuePtrPtr, valueSizePtr);
      },
      proxy_set_property: () => WasmResult.Ok,
      proxy_get_buffer_bytes: (type: number, start: number, length: number, ptrPtr: number, sizePtr: number) => {
        const buf = this.buffer(type);
        if (!buf) return WasmResult.NotFound;
        return copyOutRange(this.guest, buf, start, length, ptrPtr, sizePtr, this.onProblem);
      },
      proxy_get_buffer_status: (type: number, lengthPtr: number, flagsPtr: number) => {
        const buf = this.buffer(type);
        if (!buf) return WasmResult.NotFound;
        return this.writeU32(lengthPtr, buf.length) && this.writeU32(flagsPtr, 0) ? WasmResult.Ok : this.bad("buffer status pointers");
      },
      proxy_get_header_map_value: (type: number, kp: number, kl: number, vpp: number, vsp: number) => {
        const key = this.text(kp, kl);
        if (key === undefined) return this.bad("header key out of bounds");
        const map = type === HTTP_CALL_RESPONSE_HEADERS ? this.callResponse?.headers : this.current?.headerMap(type);
        if (!map) return WasmResult.BadArgument;
        const lk = key.toLowerCase();
        const hit = map.find(([k]) => k === lk);
        if (!hit) return WasmResult.NotFound;
        return this.copyOut(hit[1], vpp, vsp);
      },
      proxy_get_header_map_pairs: (type: number, pp: number, sp: number) => {
        const map = this.current?.headerMap(type);
        if (!map) return WasmResult.BadArgument;
        return this.copyOut(serializePairs(map), pp, sp);
      },
      proxy_get_header_map_size: (type: number, sp: number) => {
        const map = this.current?.headerMap(type);
        if (!map) return WasmResult.BadArgument;
        const size = map.reduce((n, [k, v]) => n + utf8.encode(k).length + v.length, 0);
        return this.writeU32(sp, size) ? WasmResult.Ok : this.bad("header map size pointer");
      },
      proxy_add_header_map_value: (type: number, kp: number, kl: number, vp: number, vl: number) => {
        const map = this.current?.headerMap(type);
        const key = this.text(kp, kl);
        const val = this.read(vp, vl);
        if (!map) return WasmResult.BadArgument;
        if (key === undefined || !val) return this.bad("header out of bounds");
        map.push([key.toLowerCase(), val]);
        return WasmResult.Ok;
      },
      proxy_replace_header_map_value: (type: number, kp: number, kl: number, vp: number, vl: number) => {
        const map = this.current?.headerMap(type);
        const key = this.text(kp, kl);
        const val = this.read(vp, vl);
        if (!map) return WasmResult.BadArgument;
        if (key === undefined || !val) return this.bad("header out of bounds");
        const lk = key.toLowerCase();
        const rest = map.filter(([k]) => k !== lk);
        map.length = 0;
        map.push(...rest, [lk, val]);
        return WasmResult.Ok;
      },
      proxy_remove_header_map_value: (type: number, kp: number, kl: number) => {
        const map = this.current?.headerMap(type);
        const key = this.text(kp, kl);
        if (!map) return WasmResult.BadArgument;
        if (key === undefined) return this.bad("header key out of bounds");
        const rest = map.filter(([k]) => k !== key.toLowerCase());
        map.length = 0;
        map.push(...rest);
        return WasmResult.Ok;
      },
      proxy_set_header_map_pairs: (type: number, p: number, l: number) => {
        const map = this.current?.headerMap(type);
        const buf = this.read(p, l);
        if (!map) return WasmResult.BadArgument;
        if (!buf) return this.bad("pairs out of bounds");
        try {
          const pairs = parsePairs(buf);
          map.length = 0;
          map.push(...pairs.map(([k, v]) => [k.toLowerCase(), v] as HeaderPair));
          return WasmResult.Ok;
        } catch (e) {
          this.host.violations.push(`proxy_set_header_map_pairs: ${(e as Error).message}`);
          return WasmResult.BadArgument;
        }
      },
      proxy_send_local_response: (status: number, dp: number, dl: number, bp: number, bl: number, hp: number, hl: number, grpc: number) => {
        const s = this.current;
        const details = this.text(dp, dl);
        const body = this.read(bp, bl);
        const hbuf = this.read(hp, hl);
        if (details === undefined || !body || !hbuf) return this.bad("local response arguments out of bounds");
        if (!s) {
          this.host.violations.push("proxy_send_local_response outside a stream");
          return WasmResult.BadArgument;
        }
        if (s.localReply) {
          // Envoy refuses a second local reply for one stream.
          this.host.violations.push("second proxy_send_local_response on one stream");
          return WasmResult.BadArgument;
        }
        let pairs: [string, Uint8Array][];
        try {
          pairs = parsePairs(hbuf);
        } catch (e) {
          this.host.violations.push(`proxy_send_local_response headers: ${(e as Error).message}`);
          return WasmResult.BadArgument;
        }
        const headers = pairs.map(([k, v]) => [k, utf8dec.decode(v)] as [string, string]);
        s.localReply = {
          status: status >>> 0,
          details,
          body: utf8dec.decode(body),
          bodyBytes: body,
          headers,
          grpcStatus: grpc | 0,
          header: (name: string) => headers.find(([k]) => k.toLowerCase() === name.toLowerCase())?.[1],
        };
        return WasmResult.Ok;
      },
      proxy_continue_stream: (type: number) => {
        // Envoy: continueDecoding()/continueEncoding() on the current or effective stream context.
        const s = this.current ?? (this.effectiveId !== undefined ? this.streams.get(this.effectiveId) : undefined);
        if (!s) {
          this.host.violations.push("proxy_continue_stream without a stream context");
          return WasmResult.BadArgument;
        }
        if (type === 0 && s.requestAction !== FilterHeadersStatus.Continue && !s.localReply && !s.continued) {
          s.continued = true;
          s.upstreamReached = true;
          this.continues.push(s.contextId);
        }
        return WasmResult.Ok;
      },
      proxy_continue_request: () => WasmResult.Ok,
      proxy_continue_response: () => WasmResult.Ok,
      proxy_clear_route_cache: () => WasmResult.Ok,
      proxy_set_effective_context: (id: number) => {
        if (id === this.rootContextId || this.streams.has(id)) {
          this.effectiveId = id;
          return WasmResult.Ok;
        }
        this.host.violations.push(`proxy_set_effective_context(${id}) for an unknown context`);
        return WasmResult.BadArgument;
      },
      proxy_set_tick_period_milliseconds: (ms: number) => {
        this.tickPeriodMs = ms >>> 0;
        return WasmResult.Ok;
      },
      proxy_http_call: (up: number, ul: number, hp: number, hl: number, bp: number, bl: number, tp: number, tl: number, timeout: number, tokenPtr: number) => {
        const cluster = this.text(up, ul);
        const hbuf = this.read(hp, hl);
        const body = this.read(bp, bl);
        const tbuf = this.read(tp, tl);
        if (cluster === undefined || !hbuf || !body || !tbuf) return this.bad("http call arguments out of bounds");
        let headers: [string, string][];
        try {
          headers = parsePairs(hbuf).map(([k, v]) => [k.toLowerCase(), utf8dec.decode(v)]);
        } catch (e) {
          this.host.violations.push(`proxy_http_call headers: ${(e as Error).message}`);
          return WasmResult.BadArgument;
        }
        if (!this.host.clusters.has(cluster)) return WasmResult.BadArgument;
        if (![":path", ":method", ":authority"].every((h) => headers.some(([k]) => k === h))) return WasmResult.BadArgument;
        const token = this.nextToken++;
        if (!this.writeU32(tokenPtr, token)) return this.bad("http call token pointer");
        this.host.httpCalls.push(new HttpCall(this, token, cluster, headers, utf8dec.decode(body), timeout >>> 0));
        return WasmResult.Ok;
      },
      proxy_done: () => WasmResult.Ok,
      proxy_get_shared_data: (kp: number, kl: number, vpp: number, vsp: number, casPtr: number) => {
        const key = this.text(kp, kl);
        if (key === undefined) return this.bad("shared data key out of bounds");
        if (this.host.store.forceGetResult !== null) return this.host.store.forceGetResult;
        return copyOutSharedEntry(this.guest, this.host.store.get(key), vpp, vsp, casPtr, this.onProblem);
      },
      proxy_set_shared_data: (kp: number, kl: number, vp: number, vl: number, cas: number) => {
        const key = this.text(kp, kl);
        const val = this.read(vp, vl);
        if (key === undefined || !val) return this.bad("shared data arguments out of bounds");
        return this.host.store.set(key, val, cas >>> 0);
      },
      proxy_define_metric: (type: number, np: number, nl: number, idPtr: number) => {
        const name = this.text(np, nl);
        if (name === undefined) return this.bad("metric name out of bounds");
        const { result, id } = defineMetric(this.host.metrics, this.metricIds, type, name);
        if (result !== WasmResult.Ok) {
          this.host.violations.push(`proxy_define_metric with type ${type}`);
          return result;
        }
        return this.writeU32(idPtr, id) ? WasmResult.Ok : this.bad("metric id pointer out of bounds");
      },
      proxy_increment_metric: (id: number, offset: bigint | number) => incrementMetric(this.host.metrics, this.metricIds, id, offset),
      proxy_record_metric: (id: number, value: bigint | number) => recordMetric(this.host.metrics, this.metricIds, id, value),
      proxy_get_metric: (id: number, ptr: number) => {
        const { result, value } = getMetric(this.metricIds, id);
        if (result !== WasmResult.Ok) return result;
        return guarded(this.onProblem, () => writeU64(this.guest, ptr, value, "metric value pointer"));
      },
    };

    // The WASI imports proxy-wasm-cpp-host serves that the filter uses: the clock and random bytes (from
    // the host's seeded generator, so a test run is reproducible).
    const wasi: Record<string, (...a: any[]) => number> = {
      random_get: (ptr: number, len: number) => {
        this.importCalls.set("random_get", (this.importCalls.get("random_get") ?? 0) + 1);
        if (!this.host.random.available) return WasiErrno.NotSupported;
        return wasiRandomGet(this.guest, ptr, len, (bytes) => this.host.random.fill(bytes));
      },
      clock_time_get: (id: number, _precision: bigint, ptr: number) => {
        this.importCalls.set("clock_time_get", (this.importCalls.get("clock_time_get") ?? 0) + 1);
        const clock = this.host.clock;
        return wasiClockTimeGet(this.guest, id, ptr, clock.nanos(), clock.monotonic ? clock.monoNanos() : undefined);
      },
    };
    const env: Record<string, (...a: any[]) => number> = {};
    for (const imp of WebAssembly.Module.imports(this.host.module)) {
      if (imp.kind !== "function") throw new Error(`module imports ${imp.module}.${imp.name} (${imp.kind}); Envoy provides only functions`);
      if (imp.module === "wasi_snapshot_preview1" && Object.hasOwn(wasi, imp.name)) continue;
      if (imp.module !== "env" || !imp.name.startsWith("proxy_")) {
        throw new Error(`module imports ${imp.module}.${imp.name}, which a proxy-wasm host does not provide (no WASI but clock_time_get and random_get, no env.abort)`);
      }
      const f = impl[imp.name];
      const name = imp.name;
      env[name] = (...a: any[]) => {
        this.importCalls.set(name, (this.importCalls.get(name) ?? 0) + 1);
        if (!f) {
          this.host.unimplementedCalls.push(name);
          return WasmResult.Unimplemented;
        }
        return f(...a);
      };
    }
    return { env, wasi_snapshot_preview1: wasi };
  }

  private property(p: string): Uint8Array | undefined {
    if (p === "plugin_root_id") return utf8.encode(this.host.rootId);
    if (p === "plugin_name") return utf8.encode(this.host.rootId);
    if (p === "plugin_vm_id") return utf8.encode("");
    if (p === "xds\0node\0id") return this.host.nodeId === undefined ? undefined : utf8.encode(this.host.nodeId);
    return this.current?.properties.get(p);
  }

  private buffer(type: number): Uint8Array | undefined {
    if (type === BufferType.PluginConfiguration) return this.pluginConfig;
    if (type === HTTP_CALL_RESPONSE_BODY) return this.callResponse?.body;
    if (type === BufferType.VmConfiguration) return this.vmConfigAvailable ? this.host.vmConfig : undefined;
    return undefined;
  }
}

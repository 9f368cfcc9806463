// traffic-guard: the entry module. It only wires the pieces together: the root context owns the
// configuration, the metric ids, the table view and the prebuilt local reply; one reusable stream object
// handles each request with references to what it needs, and streams.ts keeps what a stream carries from
// its request phase to its end.

// The exports. proxy-wasm-cpp-host calls only the callbacks a module exports, and each call into V8 costs
// Envoy time on every request, so a stream costs two: proxy_on_request_headers and proxy_on_log (the
// response phase and the end of the stream at once, see streams.ts). Stream contexts are not created in
// the VM (no proxy_on_context_create: cpp-host then leaves in-VM state to the module) and never deleted
// (no proxy_on_done, proxy_on_delete); bodies, trailers and metadata are read, if at all, in proxy_on_log.
// The SDK's root-context callbacks stay; the root context is created by the wrappers below.
export {
  proxy_abi_version_0_2_0, proxy_on_tick, proxy_on_http_call_response,
} from "@solo-io/proxy-runtime/assembly/exports";
export { free } from "@solo-io/proxy-runtime/assembly/malloc";
export { malloc } from "./host";
import * as sdk from "@solo-io/proxy-runtime/assembly/exports";
import { ensureRootContext } from "@solo-io/proxy-runtime/assembly/runtime";
import {
  RootContext, registerRootContext, FilterHeadersStatusValues, log, LogLevelValues,
} from "@solo-io/proxy-runtime/assembly";
import { get_buffer_bytes, BufferTypeValues } from "@solo-io/proxy-runtime/assembly/runtime";
import { proxy_set_tick_period_milliseconds } from "@solo-io/proxy-runtime/assembly/imports";
import { Config, Rule, parseConfig, RULE_ERRORS, RULE_UA, RULE_NAMES } from "./config";
import { anyContains, formatAddress, isV4 } from "./address";
import * as client from "./client";
import { resolveClient, requestHeaderReads, clientHi, clientLo, UNRESOLVED, FELL_BACK, EXEMPT } from "./client";
import { anySpiffeMatch, peerIdentityName, ID_BUF, idLen, HIDDEN_PEER_HI, HIDDEN_PEER_LO } from "./identity";
import { readHeader, requestHeader, beginRequest, valuePtr, hostBytes, resetHostBytes, bytes, readProperty, RESPONSE_HEADERS, RESPONSE_TRAILERS } from "./host";
import { clockMs } from "./clock";
import { pathUnder } from "./paths";
import { Table, FAILED, pluginPrefix } from "./table";
import { cachedBanUntil, rememberBan, startBanCache, checkLifts } from "./ban-cache";
import { Ranges } from "./ranges";
import { LocalReply } from "./response";
import * as rules from "./rules";
import * as m from "./metrics";
import * as custom from "./custom-rules";
import { readStatus } from "./matchers";
import * as delay from "./delay";
import { customConfigured, releaseDue, banLineLimit } from "./rule-wiring";
import { Decisions } from "./decisions";
import * as streams from "./streams";
import { sameBytes } from "./bytes";

// The module uses AssemblyScript's minimal runtime: no shadow stack and no write barriers on the request
// path, and garbage is collected explicitly. When a stream callback returns, everything alive is
// reachable from globals (the root contexts, the stream object), so a full collection may run as the
// last step of any stream callback. It runs once the garbage made since the last one may exceed
// COLLECT_BYTES: the bytes the host copied into managed buffers (shared data reads; host.ts counts them
// exactly) plus CALLBACK_CHARGE per callback for the module's own small objects (the SDK's shared-data
// results, a ban line). Header and property values never reach the collected heap (host.ts), so what a
// client sends cannot grow it, and open streams do not postpone collection (streams.ts keeps them in
// linear memory). Live data is small (config, table view).
const COLLECT_BYTES: usize = 2 << 20;
const CALLBACK_CHARGE: usize = 256;
let charged: usize = 0;

// Runs a collection when enough garbage may have accumulated; call only as a stream callback's last step.
function settle(): void {
  charged += CALLBACK_CHARGE;
  if (charged + hostBytes >= COLLECT_BYTES) {
    charged = 0;
    resetHostBytes();
    __collect();
  }
}

const PATH = bytes(":path");
const PLUGIN_NAME = bytes("plugin_name");
const PLUGIN_ROOT_ID = bytes("plugin_root_id");
const GRPC_STATUS = bytes("grpc-status");
/** The root context's tick period: how soon a lifted ban reaches every worker's ban cache (ban-cache.ts). */
const TICK_MS: u32 = 1000;

// The plugin's identity for its shared-data keys: Envoy's plugin name (Istio: <namespace>.<name> of the
// WasmPlugin, unique per proxy), else the root id, else "" (see table.ts).
function pluginIdentity(): string {
  let n = readProperty(PLUGIN_NAME);
  if (n == 0) n = readProperty(PLUGIN_ROOT_ID);
  return String.UTF8.decodeUnsafe(valuePtr, <usize>n);
}

// The configured root contexts of this VM, the newest per plugin identity. A stream does not say which
// root context it belongs to (no proxy_on_context_create, see the exports): with one plugin in the VM it
// is that one; with several (two WasmPlugins on one module), each stream reads its plugin name. A
// pluginConfig change makes Envoy configure a new root context for the same plugin, and its streams,
// including those of the listener being drained, move to the new configuration; the old root context
// is retired (Envoy deletes it later, and the module never hears of it).
const roots: GuardRoot[] = [];
const rootNames: ArrayBuffer[] = [];

function register(root: GuardRoot, plugin: string): void {
  let name = String.UTF8.encode(plugin);
  for (let i = 0, k = roots.length; i < k; i++) {
    if (sameName(unchecked(rootNames[i]), changetype<usize>(name), name.byteLength)) {
      let old = unchecked(roots[i]);
      if (old !== root) old.retire();
      unchecked(roots[i] = root);
      return;
    }
  }
  roots.push(root);
  rootNames.push(name);
}

function sameName(a: ArrayBuffer, p: usize, n: i32): bool {
  return a.byteLength == n && sameBytes(changetype<usize>(a), p, <usize>n);
}

// The index in `roots` of the current stream's root context, or -1 when no plugin is configured.
function streamRoot(): i32 {
  let k = roots.length;
  if (k <= 1) return k - 1;
  let n = readProperty(PLUGIN_NAME);
  if (n == 0) n = readProperty(PLUGIN_ROOT_ID);
  for (let i = 0; i < k; i++) if (sameName(unchecked(rootNames[i]), valuePtr, n)) return i;
  return -1;
}

/** The plugin's root context: one per plugin configuration per VM (Envoy worker). */
class GuardRoot extends RootContext {
  config: Config | null = null;
  table: Table | null = null;
  ranges: Ranges | null = null;
  reply: LocalReply | null = null;
  metrics: m.Metrics = new m.Metrics();
  /** Per-custom-rule counters (metrics.ts RuleMetrics). */
  ruleMetrics: m.RuleMetrics = new m.RuleMetrics();
  /** The shared-decisions sync (null without a `decisions` block). */
  decisions: Decisions | null = null;
  /** Requests may read two or more headers: read the header map whole (host.ts beginRequest). */
  wholeHeaders: bool = false;
  private defined: bool = false;
  // The tick period when no request is held (see onConfigure), and when the tick last did its periodic work.
  private idleTickMs: u32 = TICK_MS;
  private periodicAt: u64 = 0;

  // Parses the pluginConfig. A rejected config logs one critical line and returns false; the previous
  // configuration (if any) stays in force, and client state in shared data is never touched.
  onConfigure(configuration_size: u32): bool {
    if (!this.defined) {
      this.defined = true;
      if (!this.metrics.define()) log(LogLevelValues.error, "traffic-guard: the host refused to define some metrics");
    }
    let text = configuration_size == 0 ? "" :
      String.UTF8.decode(get_buffer_bytes(BufferTypeValues.PluginConfiguration, 0, configuration_size));
    let res = parseConfig(text);
    if (res.config === null) {
      log(LogLevelValues.critical, "traffic-guard: invalid config: " + res.errors.join("; "));
      return false;
    }
    let cfg = changetype<Config>(res.config);
    this.config = cfg;
    this.wholeHeaders = requestHeaderReads(cfg) >= 2;
    let plugin = pluginIdentity();
    let table = new Table(cfg.capacity, plugin, cfg);
    this.table = table;
    customConfigured(cfg, table, this.ruleMetrics);
    this.ranges = new Ranges(plugin);
    this.reply = new LocalReply(cfg);
    startBanCache(pluginPrefix(plugin));
    let dc = cfg.decisions;
    this.decisions = dc === null ? null : new Decisions(cfg, table, changetype<Ranges>(this.ranges), this.metrics, plugin);
    // A host that refuses a tick leaves lifted bans cached until they end and the decisions unsynced;
    // nothing else depends on it. The decisions sync needs a tick at least every interval. Requests held
    // by delay rules keep the faster tick they need (delay.ts).
    this.idleTickMs = dc !== null && <u32>dc.intervalMs < TICK_MS ? <u32>dc.intervalMs : TICK_MS;
    proxy_set_tick_period_milliseconds(delay.fast ? delay.TICK_MS : this.idleTickMs);
    if (table.migrate(cfg, clockMs())) {
      log(LogLevelValues.info, "traffic-guard: capacity changed: moving client records from " + table.prevSets.toString() +
        " into " + table.sets.toString() + " sets while requests are served");
    }
    log(LogLevelValues.info, "traffic-guard: configured mode=" + (cfg.dryRun ? "dry-run" : "enforce") +
      " capacity=" + cfg.capacity.toString() + " rules=" + cfg.enabledRules());
    register(this, plugin);
    return true;
  }

  // The tick releases the requests held by delay rules whose time has come (delay.ts), checks for lifted
  // bans and runs the decisions sync (which, with its answers, may leave garbage). While requests are held
  // it runs every few milliseconds, and the periodic work keeps its own pace.
  onTick(): void {
    let now = clockMs();
    if (delay.fast) {
      releaseDue(this.ruleMetrics, now, this.idleTickMs);
      if (now - this.periodicAt < <u64>this.idleTickMs) return;
    }
    this.periodicAt = now;
    if (this.config !== null) checkLifts();
    let d = this.decisions;
    if (d === null) return;
    d.tick();
    settleRoot(d);
  }

  // A newer root context of the same plugin took over its streams (see register): what only served them
  // goes. Its tick may still release held requests, which needs only the per-rule counters.
  retire(): void {
    this.config = null;
    this.table = null;
    this.ranges = null;
    this.reply = null;
    this.decisions = null;
  }

  onHttpCallResponse(token: u32, headers: u32, body_size: u32, trailers: u32): void {
    let d = this.decisions;
    if (d === null) return;
    d.onResponse(token, body_size);
    settleRoot(d);
  }
}

// A collection after a root callback of the decisions sync, once its garbage adds up (see settle).
function settleRoot(d: Decisions): void {
  charged += d.garbage;
  d.garbage = 0;
  settle();
}

// Whether the n bytes at p are a gRPC status code (decimal, 0 to 16) whose bit is set in `mask`.
function grpcMatches(mask: u32, p: usize, n: i32): bool {
  if (n < 1 || n > 2) return false;
  let v: u32 = 0;
  for (let i = 0; i < n; i++) {
    let d = <u32>load<u8>(p + <usize>i) - 0x30;
    if (d > 9) return false;
    v = v * 10 + d;
  }
  return v <= 16 && (mask & ((<u32>1) << v)) != 0;
}

// onLog: the status has not been read yet.
const NOT_READ: i32 = -2;

/** The stream being handled: one object per VM, reset by each callback (streams.ts keeps what outlives one). */
class GuardHttp {
  context_id: u32 = 0;
  private guard: GuardRoot;
  private cfg: Config | null = null;
  private rootIndex: u32 = 0;
  private hi: u64 = 0;
  private lo: u64 = 0;
  private tracked: bool = false;
  private replied: bool = false;
  private wouldDeny: bool = false;
  // The client is keyed by its mesh identity: its rules are cfg.meshRules, its ban line names the identity.
  private mesh: bool = false;
  // Matcher bits of custom rules decided by the response (matchers.ts), and whether a delay rule holds the request.
  private pending: u32 = 0;
  private held: bool = false;

  constructor(root: GuardRoot) {
    this.guard = root;
  }

  // Starts a callback of stream `id` of root context `roots[rootIndex]` with a clean state.
  private begin(id: u32, rootIndex: u32): void {
    let root = unchecked(roots[rootIndex]);
    this.context_id = id;
    this.guard = root;
    this.cfg = root.config;
    this.rootIndex = rootIndex;
    this.hi = 0;
    this.lo = 0;
    this.tracked = false;
    this.replied = false;
    this.wouldDeny = false;
    this.mesh = false;
    this.pending = 0;
    this.held = false;
  }

  /** proxy_on_request_headers of stream `id`: decides, and keeps what its end needs (streams.ts). */
  onRequestHeaders(id: u32, rootIndex: u32): FilterHeadersStatusValues {
    this.begin(id, rootIndex);
    let action = this.decide();
    let f: u32 = (this.tracked ? streams.TRACKED : 0) | (this.replied ? streams.REPLIED : 0) |
      (this.wouldDeny ? streams.WOULD_DENY : 0) | (this.mesh ? streams.MESH : 0) | (this.held ? streams.HELD : 0);
    // Only a counted stream's response, or a held stream's end, needs its state back.
    if (this.held || (this.tracked && !this.replied && !this.wouldDeny)) {
      if (!streams.save(id, f, rootIndex, this.pending, this.hi, this.lo)) this.guard.metrics.inc(m.INTERNAL_ERRORS);
    }
    return action;
  }

  /** proxy_on_log of stream `id`: the response phase (status, gRPC status, custom response rules), and the stream's end. */
  onLog(id: u32): void {
    if (!streams.take(id) || streams.root >= <u32>roots.length) return;
    this.begin(id, streams.root);
    let f = streams.flags;
    this.tracked = (f & streams.TRACKED) != 0;
    this.replied = (f & streams.REPLIED) != 0;
    this.wouldDeny = (f & streams.WOULD_DENY) != 0;
    this.mesh = (f & streams.MESH) != 0;
    this.pending = streams.pending;
    this.hi = streams.hi;
    this.lo = streams.lo;
    // A request still held when its stream ends (the client went away): forget it.
    if ((f & streams.HELD) != 0) delay.remove(id);
    // The status is read once for the custom rules and the errors rule.
    let code = NOT_READ;
    if (this.pending != 0) {
      let cfg = this.cfg;
      if (cfg !== null && cfg.custom.plan.needsStatus(this.pending)) code = readStatus();
      this.customResponse(code);
    }
    this.countResponse(code);
  }

  private decide(): FilterHeadersStatusValues {
    let cfg = this.cfg;
    if (cfg === null) return FilterHeadersStatusValues.Continue;
    let metrics = this.guard.metrics;
    metrics.inc(m.REQUESTS);
    beginRequest(this.guard.wholeHeaders);

    if (cfg.skipPaths.length > 0) {
      let n = requestHeader(PATH);
      for (let i = 0, k = cfg.skipPaths.length; i < k; i++) {
        if (pathUnder(valuePtr, n, unchecked(cfg.skipPaths[i]))) return FilterHeadersStatusValues.Continue;
      }
    }

    let resolved = resolveClient(cfg);
    if (client.untrusted) metrics.inc(m.UNTRUSTED);
    if (resolved == UNRESOLVED) {
      metrics.inc(m.INTERNAL_ERRORS);
      return FilterHeadersStatusValues.Continue;
    }
    if (resolved == EXEMPT) {
      // meshCallers "exempt": never counted, but a deny pattern naming the identity still applies.
      if (cfg.denyIds.length > 0 && anySpiffeMatch(cfg.denyIds, ID_BUF, <usize>idLen)) return this.deny(rules.DENY_LIST, 0);
      return FilterHeadersStatusValues.Continue;
    }
    if (resolved == FELL_BACK) metrics.inc(m.FALLBACKS);
    let hi = clientHi, lo = clientLo;
    // A mesh caller keyed by its identity (the hidden plaintext peer is keyed like one, but is no mesh caller).
    // The identity's bytes (ID_BUF) are valid until the next request's resolveClient.
    let mesh = client.byIdentity && client.hasIdentity;
    if (mesh) {
      let n = <usize>idLen;
      if (cfg.allowIds.length > 0 && anySpiffeMatch(cfg.allowIds, ID_BUF, n)) return FilterHeadersStatusValues.Continue;
      if (cfg.denyIds.length > 0 && anySpiffeMatch(cfg.denyIds, ID_BUF, n)) return this.deny(rules.DENY_LIST, 0);
    }
    if (cfg.allow.length > 0 && anyContains(cfg.allow, hi, lo)) return FilterHeadersStatusValues.Continue;
    if (cfg.deny.length > 0 && anyContains(cfg.deny, hi, lo)) return this.deny(rules.DENY_LIST, 0);

    this.hi = hi;
    this.lo = lo;
    this.mesh = mesh;
    this.tracked = true;
    let now = clockMs();
    if (cfg.rangeThreshold > 0 && !mesh) {
      let ranges = changetype<Ranges>(this.guard.ranges);
      if (ranges.check(cfg, hi, lo, now)) return this.deny(rules.DENY_BANNED, (ranges.banUntil - now + 999) / 1000);
    }
    // A ban this worker already read from shared data: denied without a shared-data call (ban-cache.ts).
    let cached = cachedBanUntil(hi, lo, now);
    if (cached != 0) return this.deny(rules.DENY_BANNED, (cached - now + 999) / 1000);
    let ruleSet = mesh ? cfg.meshRules : cfg.rules;
    let ua = false;
    let bits: u32 = 0;
    let plan = cfg.custom.plan;
    let uaOn = ruleSet[RULE_UA].enabled;
    if (plan.allBits != 0 || uaOn) {
      // The custom rules' matchers and the built-in userAgent rule's patterns, one User-Agent read for both.
      bits = plan.matchRequest(uaOn);
      ua = plan.builtInUa;
      this.pending = bits & plan.responseBits;
      bits &= ~plan.responseBits;
    }
    custom.setBits(bits);
    let table = changetype<Table>(this.guard.table);
    let decision = mesh ? meshUpdate(table, cfg, hi, lo, ua, now, false) : table.request(cfg, hi, lo, ua, now);
    if (table.prevSets != 0 || table.completed) this.migrated(table);
    if (decision == FAILED) {
      metrics.inc(m.INTERNAL_ERRORS);
      return FilterHeadersStatusValues.Continue;
    }
    this.landed(table, cfg, now);
    if (decision == rules.PASS) return FilterHeadersStatusValues.Continue;
    if (decision == rules.HOLD) return this.hold(cfg, now);
    if (decision == rules.DENY_BANNED) rememberBan(hi, lo, table.banUntil);
    let retryAfter: u64 = table.banUntil > now ? (table.banUntil - now + 999) / 1000 : 0;
    return this.deny(decision, retryAfter);
  }

  // Counts an error response against the client's errors bucket when its status matches.
  private countResponse(status: i32): void {
    let cfg = this.cfg;
    // Our own local replies, and responses to requests dry-run would have denied, never count.
    if (cfg === null || !this.tracked || this.replied || this.wouldDeny || !cfg.rules[RULE_ERRORS].enabled) return;
    let code = status == NOT_READ ? readStatus() : status;
    if (code < 0) return;
    // gRPC: an error travels with HTTP 200, in grpc-status, either in these headers (a trailers-only
    // response) or in the trailers. Read only when gRPC statuses are configured.
    if (code == 200 && cfg.grpcMatch != 0) {
      let g = readHeader(RESPONSE_HEADERS, GRPC_STATUS);
      if (g == 0) g = readHeader(RESPONSE_TRAILERS, GRPC_STATUS);
      if (grpcMatches(cfg.grpcMatch, valuePtr, g)) this.countError(cfg);
      return;
    }
    if (code >= 600 || !unchecked(cfg.statusMatch[code])) return;
    this.countError(cfg);
  }

  // One error response of the tracked client.
  private countError(cfg: Config): void {
    if (this.mesh && !cfg.meshRules[RULE_ERRORS].enabled) return;
    let now = clockMs();
    let table = changetype<Table>(this.guard.table);
    let result = this.mesh ? meshUpdate(table, cfg, this.hi, this.lo, false, now, true) : table.errorResponse(cfg, this.hi, this.lo, now);
    if (table.prevSets != 0 || table.completed) this.migrated(table);
    if (result == FAILED) this.guard.metrics.inc(m.INTERNAL_ERRORS);
    else this.landed(table, cfg, now);
  }

  // Holds the request for a delay rule (custom-rules.ts holdMs), or lets it through in dry-run or when
  // this worker's queue is full.
  private hold(cfg: Config, now: u64): FilterHeadersStatusValues {
    if (cfg.dryRun) return FilterHeadersStatusValues.Continue;
    if (!delay.hold(this.context_id, now + custom.holdMs, now, custom.holdRule)) {
      this.guard.metrics.inc(m.INTERNAL_ERRORS);
      return FilterHeadersStatusValues.Continue;
    }
    this.held = true;
    // Envoy buffers the body too (within the connection's buffer limit) until the tick continues the
    // request, so no body callback is needed (none is exported).
    return FilterHeadersStatusValues.StopAllIterationAndBuffer;
  }

  // The custom rules whose matchers have a response part: their response conditions, then their buckets.
  private customResponse(code: i32): void {
    let cfg = this.cfg;
    let pending = this.pending;
    this.pending = 0;
    if (cfg === null || !this.tracked || this.replied || this.wouldDeny) return;
    let bits = cfg.custom.plan.matchResponse(pending, code);
    if (bits == 0) return;
    custom.setBits(bits);
    let now = clockMs();
    let table = changetype<Table>(this.guard.table);
    let result: i32;
    if (this.mesh) {
      let normal: Rule[] = cfg.rules;
      cfg.rules = cfg.meshRules;
      result = table.response(cfg, this.hi, this.lo, false, now);
      cfg.rules = normal;
    } else {
      result = table.response(cfg, this.hi, this.lo, false, now);
    }
    if (table.prevSets != 0 || table.completed) this.migrated(table);
    if (result == FAILED) this.guard.metrics.inc(m.INTERNAL_ERRORS);
    else this.landed(table, cfg, now);
  }

  // Side effects of draining old sets during a capacity change: the gauge, and one line at the end.
  private migrated(table: Table): void {
    if (table.occupiedDelta != 0) {
      this.guard.metrics.trackDelta(table.occupiedDelta);
      table.occupiedDelta = 0;
    }
    if (table.completed) {
      table.completed = false;
      log(LogLevelValues.info, "traffic-guard: capacity change complete: this worker moved " + table.moved.toString() + " of " +
        table.oldUsed.toString() + " client records into " + table.sets.toString() + " sets");
    }
  }

  // Side effects of an update that reached shared data: gauge, evictions, and a started ban.
  private landed(table: Table, cfg: Config, now: u64): void {
    let metrics = this.guard.metrics;
    if (table.refused) metrics.inc(m.ADMISSIONS_REFUSED);
    if (table.filledSlot) metrics.trackOne();
    if (table.evicted) metrics.inc(m.EVICTIONS);
    let rule = table.banRule;
    if (rule >= 0) {
      rememberBan(this.hi, this.lo, table.banUntil);
      let name: string;
      let r: Rule;
      if (rule >= rules.CUSTOM_BASE) {
        this.guard.ruleMetrics.add(rule - rules.CUSTOM_BASE, m.RULE_BANS, 1);
        name = cfg.custom.rules[rule - rules.CUSTOM_BASE].name;
        r = banLineLimit(cfg, rule - rules.CUSTOM_BASE);
      } else {
        metrics.inc(m.BANS_BASE + rule);
        name = RULE_NAMES[rule];
        r = this.mesh ? cfg.meshRules[rule] : cfg.rules[rule];
      }
      let addr = this.subject(cfg);
      log(LogLevelValues.warn, "traffic-guard: banned " + addr + " for " + ((table.banUntil - now + 999) / 1000).toString() +
        "s: rule=" + name + " limit=" + r.requests.toString() + "/" +
        (r.perMs % 1000 == 0 ? (r.perMs / 1000).toString() + "s" : r.perMs.toString() + "ms") +
        " ban=" + table.strike.toString() + (cfg.dryRun ? " (dry-run)" : ""));
      let d = this.guard.decisions;
      if (d !== null && !cfg.dryRun) {
        d.noteBan(addr, table.banUntil, table.strike, name);
        charged += d.garbage; // the queue copy it made counts toward the next collection (see settle)
        d.garbage = 0;
      }
      if (cfg.rangeThreshold > 0 && !this.mesh) {
        let ranges = changetype<Ranges>(this.guard.ranges);
        if (ranges.noteBan(cfg, this.hi, this.lo, now)) {
          metrics.inc(m.RANGE_BANS);
          log(LogLevelValues.warn, "traffic-guard: banned range " + formatAddress(ranges.rangeHi, ranges.rangeLo) + "/" +
            ranges.prefix.toString() + " for " + ((ranges.banUntil - now + 999) / 1000).toString() + "s: " +
            ranges.clients.toString() + " clients banned within " + (cfg.rangeWindowMs / 1000).toString() + "s" +
            (cfg.dryRun ? " (dry-run)" : ""));
          if (d !== null && !cfg.dryRun) {
            d.noteBan(formatAddress(ranges.rangeHi, ranges.rangeLo) + "/" + ranges.prefix.toString(), ranges.banUntil, 1, "range");
          }
        }
      }
    }
  }

  // Who the ban line names: the mesh identity (read again: ID_BUF may hold a later stream's by the
  // response phase), the hidden plaintext peer, or the (aggregated) address.
  private subject(cfg: Config): string {
    if (this.mesh) {
      let name = peerIdentityName();
      if (name.length > 0) return name;
    }
    if (this.hi == HIDDEN_PEER_HI && this.lo == HIDDEN_PEER_LO) return "plaintext-peer-behind-x-forwarded-for";
    let v4 = isV4(this.hi, this.lo);
    let prefix = v4 ? cfg.prefixV4 : cfg.prefixV6;
    let full = v4 ? 32 : 128;
    return formatAddress(this.hi, this.lo) + (prefix == full ? "" : "/" + prefix.toString());
  }

  // Denies with a local reply, or in dry-run only counts what would have been denied.
  private deny(reason: i32, retryAfter: u64): FilterHeadersStatusValues {
    let cfg = changetype<Config>(this.cfg);
    let metrics = this.guard.metrics;
    if (reason == rules.DENY_CUSTOM) this.guard.ruleMetrics.add(custom.deniedRule, m.RULE_DENIED, 1);
    else metrics.inc(m.DENIED_BASE + reason - 1);
    if (cfg.dryRun) {
      metrics.inc(m.WOULD_DENY);
      this.wouldDeny = true;
      return FilterHeadersStatusValues.Continue;
    }
    this.replied = true;
    changetype<LocalReply>(this.guard.reply).send(reason, retryAfter);
    return FilterHeadersStatusValues.StopIteration;
  }
}

// A table update for a mesh caller: the rules seen by the table and rule code (cfg.rules) are the mesh
// rules for the duration of the call. The VM is single-threaded and the table calls back into nothing
// that reads the configuration, so the swap is invisible outside this call.
function meshUpdate(table: Table, cfg: Config, hi: u64, lo: u64, ua: bool, now: u64, response: bool): i32 {
  let normal: Rule[] = cfg.rules;
  cfg.rules = cfg.meshRules;
  let result = response ? table.errorResponse(cfg, hi, lo, now) : table.request(cfg, hi, lo, ua, now);
  cfg.rules = normal;
  return result;
}

registerRootContext((context_id: u32): RootContext => new GuardRoot(context_id), "traffic-guard");

// The one stream object of this VM (created with the first configured root context).
let current: GuardHttp | null = null;

// The root-context callbacks that may come first: they create the root context, since the SDK would do
// that only in proxy_on_context_create (not exported, see the exports at the top).

/** Envoy starts the VM (first root context only). */
export function proxy_on_vm_start(root_context_id: u32, configuration_size: u32): u32 {
  ensureRootContext(root_context_id);
  return sdk.proxy_on_vm_start(root_context_id, configuration_size);
}

/** Envoy validates a pluginConfig (not called by Envoy today; kept for hosts that do). */
export function proxy_validate_configuration(root_context_id: u32, configuration_size: u32): u32 {
  ensureRootContext(root_context_id);
  return sdk.proxy_validate_configuration(root_context_id, configuration_size);
}

/** Envoy configures a root context with its pluginConfig. */
export function proxy_on_configure(root_context_id: u32, configuration_size: u32): u32 {
  ensureRootContext(root_context_id);
  return sdk.proxy_on_configure(root_context_id, configuration_size);
}

/** A request's headers: the filter's verdict (FilterHeadersStatus). */
export function proxy_on_request_headers(context_id: u32, headers: u32, end_of_stream: u32): FilterHeadersStatusValues {
  let r = streamRoot();
  if (r < 0) return FilterHeadersStatusValues.Continue;
  if (current === null) current = new GuardHttp(unchecked(roots[r]));
  let action = changetype<GuardHttp>(current).onRequestHeaders(context_id, <u32>r);
  settle();
  return action;
}

/** A stream has ended (Envoy's access-log phase): its response counts, and a held request is forgotten. */
export function proxy_on_log(context_id: u32): void {
  let s = current;
  if (s === null) return;
  s.onLog(context_id);
  settle();
}

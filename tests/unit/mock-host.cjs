// A proxy-wasm host mock for the as-pect unit tests of assembly/.
//
// It provides the `env.proxy_*` imports the filter's modules call, with the host behaviour they depend
// on. The ABI semantics (result codes, the malloc copy-out of values with no allocation for an empty
// one, the shared-data CAS rules, stats keyed by name whose counters only increase, metric ids) are the
// ones every host in this repository shares, from tools/lib/proxy-wasm-abi.ts. This file is CommonJS
// because as-pect loads its config with require(); it loads that TypeScript module through tsx's
// scoped require API (a devDependency, like as-pect itself). On top of the shared core:
//  - a missing header or property is NotFound (1); header names are matched case-insensitively (Envoy
//    lowercases them); property paths are NUL-separated segments;
//  - every other `proxy_*` import returns Unimplemented (12) and is recorded, so a test notices a module
//    that starts depending on a host call the mock does not model.
//
// AssemblyScript tests steer and inspect the mock through the `mock` import module (declared in
// tests/unit/mock.ts). Strings cross the boundary as AssemblyScript string pointers (UTF-16, byte length
// in the object header); values returned to AssemblyScript are allocated with the exported runtime's
// `__new` and pinned, and the AssemblyScript wrapper unpins them.

"use strict";

const fs = require("node:fs");
const path = require("node:path");

/** The shared proxy-wasm host core (tools/lib/proxy-wasm-abi.ts). */
const abi = require("tsx/cjs/api").require("../../tools/lib/proxy-wasm-abi.ts", __filename);

/** proxy-wasm WasmResult codes. */
const R = abi.WasmResult;

/** AssemblyScript runtime class ids of the built-in ArrayBuffer and String. */
const ID_ARRAYBUFFER = 1;
const ID_STRING = 2;

const utf8 = new TextEncoder();
const utf8dec = new TextDecoder("utf-8", { fatal: false });

/** The config fixtures directory shared with the filter and CLI tests. */
const FIXTURES = path.resolve(__dirname, "../fixtures/config");

/** Creates one mock host; `bind(instance)` must be called once the module is instantiated. */
function createMockHost() {
  /** @type {WebAssembly.Exports | null} */
  let ex = null;

  const state = {};
  function reset() {
    state.headers = [new Map(), new Map(), new Map(), new Map()]; // request, request trailers, response, response trailers
    state.properties = new Map();
    state.pluginConfig = new Uint8Array(0);
    state.timeNs = 0n;
    state.shared = new abi.SharedData(); // keys are strings of raw bytes (latin1)
    state.sharedGets = 0;
    state.sharedSets = 0;
    state.failSets = []; // queue of injected results for the next proxy_set_shared_data calls
    state.failGets = [];
    state.interfere = []; // queue of writes another worker makes just before our next sets
    state.stats = new abi.StatsScope();
    state.metricIds = new abi.MetricIds();
    state.metricIdByName = new Map(); // the id the latest definition of a name got
    state.refuseDefine = new Set();
    state.logs = []; // { level, message }
    state.replies = []; // { status, details, body, headers: [[k, v]], grpc }
    state.unimplemented = [];
    state.mallocs = 0;
  }
  reset();

  function mem() {
    return new Uint8Array(ex.memory.buffer);
  }
  function view() {
    return new DataView(ex.memory.buffer);
  }
  function bytesAt(ptr, len) {
    return mem().slice(ptr, ptr + len);
  }
  // An AssemblyScript managed object's payload size lives in its header, 4 bytes before the data.
  function rtSize(ptr) {
    return view().getUint32(ptr - 4, true);
  }
  function asString(ptr) {
    if (ptr === 0) throw new Error("mock: null string passed from AssemblyScript");
    const len = rtSize(ptr) >>> 1;
    const u16 = new Uint16Array(ex.memory.buffer, ptr, len);
    let out = "";
    for (let i = 0; i < len; i += 4096) out += String.fromCharCode.apply(null, u16.subarray(i, Math.min(len, i + 4096)));
    return out;
  }
  function asBuffer(ptr) {
    return bytesAt(ptr, rtSize(ptr));
  }
  // A new pinned AssemblyScript string; the caller in AssemblyScript unpins it (see mock.ts).
  function newString(s) {
    const ptr = ex.__pin(ex.__new(s.length << 1, ID_STRING));
    const u16 = new Uint16Array(ex.memory.buffer, ptr, s.length);
    for (let i = 0; i < s.length; i++) u16[i] = s.charCodeAt(i);
    return ptr;
  }
  function newBuffer(bytes) {
    const ptr = ex.__pin(ex.__new(bytes.length, ID_ARRAYBUFFER));
    mem().set(bytes, ptr);
    return ptr;
  }
  // The module's memory and malloc as the shared core takes them; every malloc is counted.
  const guest = {
    memory: () => ex.memory,
    malloc(size) {
      state.mallocs++;
      return ex.malloc(size);
    },
  };
  const keyOf = (bytes) => Buffer.from(bytes).toString("latin1");

  function sharedSet(key, value, cas) {
    return state.shared.set(key, value, cas);
  }

  function metricByName(name) {
    return state.stats.stat(name) ?? null;
  }

  const env = {
    proxy_log(level, ptr, len) {
      state.logs.push({ level, message: utf8dec.decode(bytesAt(ptr, len)) });
      return R.Ok;
    },
    proxy_get_current_time_nanoseconds(out) {
      abi.writeU64(guest, out, state.timeNs);
      return R.Ok;
    },
    proxy_get_header_map_value(map, kp, kl, ptrPtr, sizePtr) {
      const m = state.headers[map];
      if (!m) return R.BadArgument;
      const v = m.get(utf8dec.decode(bytesAt(kp, kl)).toLowerCase());
      if (v === undefined) return R.NotFound;
      return abi.copyOut(guest, v, ptrPtr, sizePtr);
    },
    proxy_get_header_map_pairs(map, ptrPtr, sizePtr) {
      const m = state.headers[map];
      if (!m) return R.BadArgument;
      return abi.copyOut(guest, abi.serializePairs([...m.entries()]), ptrPtr, sizePtr);
    },
    proxy_get_property(pp, pl, ptrPtr, sizePtr) {
      const v = state.properties.get(keyOf(bytesAt(pp, pl)));
      if (v === undefined) return R.NotFound;
      return abi.copyOut(guest, v, ptrPtr, sizePtr);
    },
    proxy_get_buffer_bytes(type, start, length, ptrPtr, sizePtr) {
      if (type !== abi.BufferType.PluginConfiguration) return R.NotFound; // only the plugin configuration is modelled
      return abi.copyOutRange(guest, state.pluginConfig, start, length, ptrPtr, sizePtr);
    },
    proxy_get_shared_data(kp, kl, ptrPtr, sizePtr, casPtr) {
      state.sharedGets++;
      if (state.failGets.length > 0) return state.failGets.shift();
      return abi.copyOutSharedEntry(guest, state.shared.get(keyOf(bytesAt(kp, kl))), ptrPtr, sizePtr, casPtr);
    },
    proxy_set_shared_data(kp, kl, vp, vl, cas) {
      state.sharedSets++;
      const key = keyOf(bytesAt(kp, kl));
      // Another worker's write landing between our get and our set.
      if (state.interfere.length > 0) {
        const w = state.interfere.shift();
        sharedSet(w.key === null ? key : w.key, w.value === null ? (state.shared.get(key)?.value ?? new Uint8Array(0)) : w.value, 0);
      }
      if (state.failSets.length > 0) return state.failSets.shift();
      return sharedSet(key, bytesAt(vp, vl), cas >>> 0);
    },
    proxy_define_metric(type, np, nl, idPtr) {
      const name = utf8dec.decode(bytesAt(np, nl));
      if (state.refuseDefine.has(name)) return R.BadArgument;
      const { result, id } = abi.defineMetric(state.stats, state.metricIds, type, name);
      if (result !== R.Ok) return result;
      state.metricIdByName.set(name, id);
      abi.writeU32(guest, idPtr, id);
      return R.Ok;
    },
    proxy_increment_metric(id, offset) {
      return abi.incrementMetric(state.stats, state.metricIds, id, offset);
    },
    proxy_record_metric(id, value) {
      return abi.recordMetric(state.stats, state.metricIds, id, value);
    },
    proxy_send_local_response(status, dp, dl, bp, bl, hp, hl, grpc) {
      // Header pairs: count, (key length, value length) * count, then key\0value\0 ...
      const headers = [];
      if (hl > 0) {
        const dv = view();
        const n = dv.getUint32(hp, true);
        let data = hp + 4 + 8 * n;
        for (let i = 0; i < n; i++) {
          const kl = dv.getUint32(hp + 4 + 8 * i, true);
          const vl = dv.getUint32(hp + 8 + 8 * i, true);
          const k = utf8dec.decode(bytesAt(data, kl));
          data += kl + 1;
          const v = utf8dec.decode(bytesAt(data, vl));
          data += vl + 1;
          headers.push([k, v]);
        }
        if (data !== hp + hl) throw new Error(`mock: header pairs end at ${data - hp}, size given ${hl}`);
      }
      state.replies.push({ status, details: utf8dec.decode(bytesAt(dp, dl)), body: utf8dec.decode(bytesAt(bp, bl)), headers, grpc: grpc | 0 });
      return R.Ok;
    },
    proxy_set_effective_context() {
      return R.Ok;
    },
    // The period is Envoy's business; specs call proxy_on_tick themselves.
    proxy_set_tick_period_milliseconds() {
      return R.Ok;
    },
  };

  const mock = {
    reset() {
      reset();
    },
    setHeader(map, name, value) {
      state.headers[map].set(asString(name).toLowerCase(), utf8.encode(asString(value)));
    },
    setHeaderBytes(map, name, buf) {
      state.headers[map].set(asString(name).toLowerCase(), asBuffer(buf));
    },
    removeHeader(map, name) {
      state.headers[map].delete(asString(name).toLowerCase());
    },
    setProperty(dotted, value) {
      state.properties.set(abi.propertyPath(asString(dotted)), utf8.encode(asString(value)));
    },
    removeProperty(dotted) {
      state.properties.delete(abi.propertyPath(asString(dotted)));
    },
    setPluginConfig(text) {
      state.pluginConfig = utf8.encode(asString(text));
    },
    setTimeMs(ms) {
      state.timeNs = BigInt.asUintN(64, ms) * 1000000n;
    },
    setTimeNs(ns) {
      state.timeNs = BigInt.asUintN(64, ns);
    },
    // A real monotonic clock, for tests that bound how long an operation takes.
    clockMs() {
      return performance.now();
    },
    mallocCount() {
      return state.mallocs;
    },
    // Shared data.
    sharedKeyCount() {
      return state.shared.size;
    },
    sharedKeyAt(i) {
      const keys = [...state.shared.entries()].map(([k]) => k);
      return newString(i < keys.length ? keys[i] : "");
    },
    sharedHas(key) {
      return state.shared.get(keyOf(utf8.encode(asString(key)))) !== undefined;
    },
    sharedValue(key) {
      const cur = state.shared.get(keyOf(utf8.encode(asString(key))));
      return cur ? newBuffer(cur.value) : 0;
    },
    sharedCas(key) {
      const cur = state.shared.get(keyOf(utf8.encode(asString(key))));
      return cur ? cur.cas : 0;
    },
    sharedPut(key, buf) {
      return sharedSet(keyOf(utf8.encode(asString(key))), asBuffer(buf), 0);
    },
    sharedGets() {
      return state.sharedGets;
    },
    sharedSets() {
      return state.sharedSets;
    },
    failNextSet(code, times) {
      for (let i = 0; i < times; i++) state.failSets.push(code);
    },
    failNextGet(code, times) {
      for (let i = 0; i < times; i++) state.failGets.push(code);
    },
    // Before each of the next `times` sets, another worker rewrites the same key with the bytes it holds
    // (a concurrent no-op write that still changes the cas).
    interfereNextSets(times) {
      for (let i = 0; i < times; i++) state.interfere.push({ key: null, value: null });
    },
    // Before the next set, another worker writes `buf` under `key`.
    interfereWith(key, buf) {
      state.interfere.push({ key: keyOf(utf8.encode(asString(key))), value: asBuffer(buf) });
    },
    // Metrics.
    refuseMetric(name) {
      state.refuseDefine.add(asString(name));
    },
    metricCount() {
      return [...state.stats.all()].length;
    },
    metricDefined(name) {
      return metricByName(asString(name)) !== null;
    },
    metricType(name) {
      const m = metricByName(asString(name));
      return m ? abi.METRIC_TYPE_NAMES.indexOf(m.type) : -1;
    },
    metricValue(name) {
      const m = metricByName(asString(name));
      return m ? BigInt(m.value) : -1n;
    },
    metricId(name) {
      const id = state.metricIdByName.get(asString(name));
      return id === undefined ? 0 : id;
    },
    // Logs.
    logCount() {
      return state.logs.length;
    },
    logLevel(i) {
      return state.logs[i] ? state.logs[i].level : -1;
    },
    logMessage(i) {
      return newString(state.logs[i] ? state.logs[i].message : "");
    },
    // Local replies.
    replyCount() {
      return state.replies.length;
    },
    replyStatus() {
      return state.replies.length ? state.replies[state.replies.length - 1].status : 0;
    },
    replyDetails() {
      return newString(state.replies.length ? state.replies[state.replies.length - 1].details : "");
    },
    replyBody() {
      return newString(state.replies.length ? state.replies[state.replies.length - 1].body : "");
    },
    replyGrpc() {
      return state.replies.length ? state.replies[state.replies.length - 1].grpc : 0;
    },
    replyHeaderCount() {
      return state.replies.length ? state.replies[state.replies.length - 1].headers.length : 0;
    },
    // "name: value" of header i of the last reply, in the order the module serialised them.
    replyHeader(i) {
      const h = state.replies.length ? state.replies[state.replies.length - 1].headers[i] : undefined;
      return newString(h ? h[0] + ": " + h[1] : "");
    },
    unimplementedCount() {
      return state.unimplemented.length;
    },
    // Config fixtures, read from disk at every call so the tests follow the shared files.
    fixtureCount(kind) {
      return fixtures(kind).length;
    },
    fixtureName(kind, i) {
      return newString(fixtures(kind)[i] || "");
    },
    fixtureText(kind, i) {
      return newString(fs.readFileSync(path.join(FIXTURES, dirOf(kind), fixtures(kind)[i] + ".json"), "utf8"));
    },
    fixtureExpected(kind, i) {
      const f = path.join(FIXTURES, dirOf(kind), fixtures(kind)[i] + ".expected");
      return newString(fs.existsSync(f) ? fs.readFileSync(f, "utf8").replace(/\n+$/, "") : "");
    },
  };

  function dirOf(kind) {
    return kind === 0 ? "valid" : "invalid";
  }
  function fixtures(kind) {
    const dir = path.join(FIXTURES, dirOf(kind));
    if (!fs.existsSync(dir)) return [];
    return fs.readdirSync(dir).filter((f) => f.endsWith(".json")).map((f) => f.slice(0, -5)).sort();
  }

  /** Returns `env` with every proxy_* import of `module`: modelled ones, the rest Unimplemented. */
  function envFor(module) {
    const out = {};
    for (const imp of WebAssembly.Module.imports(module)) {
      if (imp.module !== "env" || imp.kind !== "function") continue;
      if (env[imp.name]) out[imp.name] = env[imp.name];
      else if (imp.name.startsWith("proxy_")) {
        out[imp.name] = (...args) => {
          state.unimplemented.push(imp.name);
          return R.Unimplemented;
        };
      }
    }
    return out;
  }

  // WASI clock_time_get as proxy-wasm-cpp-host serves it (the shared core); the mock's one clock serves both ids.
  const wasi = {
    // random_get: a fixed byte pattern, enough for specs that only need the call to succeed.
    random_get(ptr, len) {
      return abi.wasiRandomGet(guest, ptr, len, (bytes) => { for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 37 + 11) & 0xff; });
    },
    clock_time_get(id, _precision, out) {
      return abi.wasiClockTimeGet(guest, id, out, BigInt(state.timeNs), BigInt(state.timeNs));
    },
  };

  return {
    mock,
    envFor,
    wasi,
    state,
    bind(instance) {
      ex = instance.exports;
      for (const need of ["malloc", "__new", "__pin", "memory"]) {
        if (!(need in ex)) throw new Error(`mock host: the test module does not export ${need} (is tests/unit/exports.include.ts included and exportRuntime on?)`);
      }
    },
  };
}

module.exports = { createMockHost, WasmResult: R };

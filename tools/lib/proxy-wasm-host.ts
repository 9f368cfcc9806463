// A deliberately small proxy-wasm host: just enough of Envoy's ABI 0.2.x to take the compiled filter through
// VM start and one configure call. `traffic-guard validate` uses it so that the CLI accepts and rejects exactly
// what the filter does, by asking the filter itself instead of re-implementing its rules.
//
// The host semantics (result codes, how values are copied into module memory, shared data, metrics) come from
// ./proxy-wasm-abi.ts, which the test emulator and the as-pect mock share. What this host adds:
// - the plugin configuration is buffer type 7 (PluginConfiguration), the VM configuration type 6 (empty);
// - the only property is `plugin_root_id`; any other is NotFound;
// - every import this host does not emulate answers Unimplemented (12), which is what Envoy returns for calls
//   that make no sense outside a request (and what the SDK must tolerate);
// - WASI clock_time_get serves the wall clock for both clock ids, random_get the system's random bytes;
// - shared data starts empty, as in a freshly started Envoy (the filter touches it at configure time to record
//   its table geometry).
import { randomFillSync } from "node:crypto";
import { BufferType, LOG_LEVEL_NAMES, MetricIds, SharedData, StatsScope, WasmResult, type GuestMemory } from "./proxy-wasm-abi.ts";
import { copyOut, copyOutRange, copyOutSharedEntry, defineMetric, wasiClockTimeGet, wasiRandomGet, writeU32, writeU64 } from "./proxy-wasm-abi.ts";

export { WasmResult } from "./proxy-wasm-abi.ts";

/** proxy-wasm log levels (trace 0 … critical 5). */
export const LOG_LEVELS = LOG_LEVEL_NAMES;

/** One line the filter logged through proxy_log. */
export interface LogEntry {
  level: (typeof LOG_LEVELS)[number] | `level${number}`;
  message: string;
}

/** What happened when the filter was configured. */
export interface ConfigureOutcome {
  /** proxy_on_configure returned true. */
  accepted: boolean;
  /** The problems from the filter's `traffic-guard: invalid config: …` line, in order (empty when accepted). */
  problems: string[];
  /** Every log line, in order. */
  logs: LogEntry[];
  /** Metric names the filter defined, in order. */
  metrics: string[];
  /** Set when the VM trapped (an abort in the filter); the configuration then counts as rejected. */
  trap?: string;
  /** The host calls the filter made that this host answers with Unimplemented, by name. */
  unimplementedCalls: string[];
}

/** Options for {@link configureFilter}. */
export interface ConfigureOptions {
  /** Value of the `plugin_root_id` property (WasmPlugin.spec.pluginName); default `traffic-guard`. */
  rootId?: string;
  /** Clock for proxy_get_current_time_nanoseconds; default Date.now(). */
  nowMs?: () => number;
}

const INVALID_CONFIG_MARKER = "traffic-guard: invalid config: ";

/**
 * Instantiates the compiled filter, creates its root context (id 1), starts the VM and configures it with `config`
 * (the exact bytes Envoy would pass as the plugin configuration). Never throws for filter behaviour: a rejection or
 * a trap is reported in the outcome.
 */
export async function configureFilter(
  module: WebAssembly.Module,
  config: string | Uint8Array,
  options: ConfigureOptions = {},
): Promise<ConfigureOutcome> {
  const configBytes = typeof config === "string" ? new TextEncoder().encode(config) : config;
  const rootId = new TextEncoder().encode(options.rootId ?? "traffic-guard");
  const nowMs = options.nowMs ?? Date.now;
  const outcome: ConfigureOutcome = { accepted: false, problems: [], logs: [], metrics: [], unimplementedCalls: [] };
  const decoder = new TextDecoder("utf-8", { fatal: false });

  let exports: Record<string, unknown> = {};
  const guest: GuestMemory = {
    memory: () => exports.memory as WebAssembly.Memory,
    malloc: (size) => (exports.malloc as (size: number) => number)(size),
  };
  const bytesAt = (ptr: number, len: number): Uint8Array =>
    new Uint8Array(guest.memory().buffer, ptr >>> 0, len >>> 0);
  const readString = (ptr: number, len: number): string => decoder.decode(bytesAt(ptr, len).slice());

  const shared = new SharedData();
  const stats = new StatsScope();
  const metricIds = new MetricIds();

  const emulated: Record<string, (...args: number[]) => number> = {
    proxy_log(level, ptr, len) {
      outcome.logs.push({ level: LOG_LEVELS[level] ?? `level${level}`, message: readString(ptr, len) });
      return WasmResult.Ok;
    },
    proxy_get_buffer_bytes(type, start, length, ptrPtr, sizePtr) {
      const buffer =
        type === BufferType.PluginConfiguration ? configBytes : type === BufferType.VmConfiguration ? new Uint8Array(0) : null;
      if (!buffer) return WasmResult.NotFound;
      return copyOutRange(guest, buffer, start, length, ptrPtr, sizePtr);
    },
    proxy_get_property(pathPtr, pathLen, ptrPtr, sizePtr) {
      // Property paths are NUL-separated segments; the root id is a single segment.
      const path = readString(pathPtr, pathLen).split("\0").filter((s) => s.length > 0);
      if (path.length === 1 && path[0] === "plugin_root_id") return copyOut(guest, rootId, ptrPtr, sizePtr);
      return WasmResult.NotFound;
    },
    proxy_define_metric(type, namePtr, nameLen, idPtr) {
      const name = readString(namePtr, nameLen);
      outcome.metrics.push(name);
      const { result, id } = defineMetric(stats, metricIds, type, name);
      if (result === WasmResult.Ok) writeU32(guest, idPtr, id);
      return result;
    },
    proxy_get_shared_data(keyPtr, keyLen, ptrPtr, sizePtr, casPtr) {
      return copyOutSharedEntry(guest, shared.get(readString(keyPtr, keyLen)), ptrPtr, sizePtr, casPtr);
    },
    proxy_set_shared_data(keyPtr, keyLen, valuePtr, valueLen, cas) {
      return shared.set(readString(keyPtr, keyLen), bytesAt(valuePtr, valueLen), cas);
    },
    proxy_get_current_time_nanoseconds(timePtr) {
      writeU64(guest, timePtr, BigInt(Math.floor(nowMs())) * 1_000_000n);
      return WasmResult.Ok;
    },
  };

  const importObject: Record<string, Record<string, WebAssembly.ImportValue>> = {};
  for (const imp of WebAssembly.Module.imports(module)) {
    if (imp.kind !== "function") {
      throw new Error(`the module imports ${imp.kind} ${imp.module}.${imp.name}; a proxy-wasm filter must not`);
    }
    const fn = imp.module === "env" && Object.hasOwn(emulated, imp.name)
      ? emulated[imp.name]
      : imp.module === "wasi_snapshot_preview1" && imp.name === "clock_time_get"
        ? (id: number, _precision: bigint, ptr: number) => {
          // One clock serves both ids: configure reads the time but never waits on it.
          const ns = BigInt(Math.floor(nowMs())) * 1_000_000n;
          return wasiClockTimeGet(guest, id, ptr, ns, ns);
        }
        : imp.module === "wasi_snapshot_preview1" && imp.name === "random_get"
          ? (ptr: number, len: number) => wasiRandomGet(guest, ptr, len, (bytes) => randomFillSync(bytes))
          : undefined;
    importObject[imp.module] ??= {};
    importObject[imp.module][imp.name] = fn ?? (() => {
      outcome.unimplementedCalls.push(`${imp.module}.${imp.name}`);
      return WasmResult.Unimplemented;
    });
  }

  try {
    // The AssemblyScript start function (module-level code, registerRootContext) runs during instantiation.
    const instance = await WebAssembly.instantiate(module, importObject);
    exports = instance.exports as Record<string, unknown>;
    const call = (name: string, ...args: number[]): number => {
      const fn = exports[name];
      if (typeof fn !== "function") throw new Error(`the module does not export ${name}`);
      return Number((fn as (...a: number[]) => unknown)(...args) ?? 0);
    };
    // Modules built as WASI reactors or commands run their initialisation through these exports instead.
    if (typeof exports._initialize === "function") call("_initialize");
    else if (typeof exports._start === "function") call("_start");
    // cpp-host creates the root context in the VM only when the module exports proxy_on_context_create.
    if (typeof exports.proxy_on_context_create === "function") call("proxy_on_context_create", 1, 0);
    if (call("proxy_on_vm_start", 1, 0) === 0) {
      outcome.problems = ["the filter refused to start its VM (proxy_on_vm_start returned false)"];
      return outcome;
    }
    outcome.accepted = call("proxy_on_configure", 1, configBytes.length) !== 0;
  } catch (err) {
    if (!(err instanceof WebAssembly.RuntimeError)) throw err;
    outcome.trap = err.message;
    outcome.accepted = false;
  }
  if (!outcome.accepted) outcome.problems = problemsFromLogs(outcome.logs);
  return outcome;
}

/** Extracts the problems from the filter's single critical `traffic-guard: invalid config: a; b` line. */
export function problemsFromLogs(logs: LogEntry[]): string[] {
  for (const entry of logs) {
    const at = entry.message.indexOf(INVALID_CONFIG_MARKER);
    if (at >= 0) return entry.message.slice(at + INVALID_CONFIG_MARKER.length).split("; ");
  }
  return [];
}

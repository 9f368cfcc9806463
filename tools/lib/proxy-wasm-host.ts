// A deliberately small proxy-wasm host: just enough of Envoy's ABI 0.2.x to take the compiled filter through
// VM start and one configure call. `traffic-guard validate` uses it so that the CLI accepts and rejects exactly
// what the filter does, by asking the filter itself instead of re-implementing its rules.
//
// Host behaviour mirrored from Envoy (proxy-wasm-cpp-host):
// - values handed to the module are copied into memory the module allocates with its exported `malloc`, and the
//   pointer and size are written little-endian to the two out-parameters;
// - proxy_get_buffer_bytes clamps the requested range to the buffer and, for an empty range, returns Ok without
//   touching the out-parameters;
// - the plugin configuration is buffer type 7 (PluginConfiguration), the VM configuration type 6;
// - a missing property is NotFound (1); every import this host does not emulate answers Unimplemented (12), which
//   is what Envoy returns for calls that make no sense outside a request (and what the SDK must tolerate);
// - shared data starts empty, as in a freshly started Envoy (the filter touches it at configure time to record its
//   table geometry): a get of an absent key is NotFound, a set on an absent key succeeds whatever the CAS, a set
//   with a non-zero stale CAS is CasMismatch (8), and every successful set gets a new non-zero CAS.

/** proxy-wasm WasmResult codes used by this host. */
export const WasmResult = { Ok: 0, NotFound: 1, BadArgument: 2, CasMismatch: 8, Unimplemented: 12 } as const;

/** proxy-wasm log levels (trace 0 … critical 5). */
export const LOG_LEVELS = ["trace", "debug", "info", "warn", "error", "critical"] as const;

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

const PLUGIN_CONFIGURATION = 7;
const VM_CONFIGURATION = 6;
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
  const memory = (): DataView => new DataView((exports.memory as WebAssembly.Memory).buffer);
  const bytesAt = (ptr: number, len: number): Uint8Array =>
    new Uint8Array((exports.memory as WebAssembly.Memory).buffer, ptr >>> 0, len >>> 0);
  const readString = (ptr: number, len: number): string => decoder.decode(bytesAt(ptr, len).slice());

  // Copies `data` into module memory and stores (pointer, size) at the out-parameters, as Envoy does.
  const hand = (data: Uint8Array, ptrPtr: number, sizePtr: number): number => {
    const malloc = exports.malloc as (size: number) => number;
    const ptr = malloc(data.length) >>> 0;
    if (ptr === 0 && data.length > 0) return WasmResult.BadArgument;
    bytesAt(ptr, data.length).set(data);
    const view = memory();
    view.setUint32(ptrPtr >>> 0, ptr, true);
    view.setUint32(sizePtr >>> 0, data.length, true);
    return WasmResult.Ok;
  };

  const shared = new Map<string, { value: Uint8Array; cas: number }>();
  let nextCas = 1;

  const emulated: Record<string, (...args: number[]) => number> = {
    proxy_log(level, ptr, len) {
      outcome.logs.push({ level: LOG_LEVELS[level] ?? `level${level}`, message: readString(ptr, len) });
      return WasmResult.Ok;
    },
    proxy_get_buffer_bytes(type, start, length, ptrPtr, sizePtr) {
      const buffer = type === PLUGIN_CONFIGURATION ? configBytes : type === VM_CONFIGURATION ? new Uint8Array(0) : null;
      if (!buffer) return WasmResult.NotFound;
      start >>>= 0;
      length >>>= 0;
      if (start > buffer.length) return WasmResult.BadArgument;
      const end = Math.min(buffer.length, start + length);
      if (end <= start) return WasmResult.Ok;
      return hand(buffer.subarray(start, end), ptrPtr, sizePtr);
    },
    proxy_get_property(pathPtr, pathLen, ptrPtr, sizePtr) {
      // Property paths are NUL-separated segments; the root id is a single segment.
      const path = readString(pathPtr, pathLen).split("\0").filter((s) => s.length > 0);
      if (path.length === 1 && path[0] === "plugin_root_id") return hand(rootId, ptrPtr, sizePtr);
      return WasmResult.NotFound;
    },
    proxy_define_metric(_type, namePtr, nameLen, idPtr) {
      outcome.metrics.push(readString(namePtr, nameLen));
      memory().setUint32(idPtr >>> 0, outcome.metrics.length, true);
      return WasmResult.Ok;
    },
    proxy_get_shared_data(keyPtr, keyLen, ptrPtr, sizePtr, casPtr) {
      const entry = shared.get(readString(keyPtr, keyLen));
      if (!entry) return WasmResult.NotFound;
      const result = entry.value.length > 0 ? hand(entry.value, ptrPtr, sizePtr) : WasmResult.Ok;
      if (entry.value.length === 0) {
        memory().setUint32(ptrPtr >>> 0, 0, true);
        memory().setUint32(sizePtr >>> 0, 0, true);
      }
      memory().setUint32(casPtr >>> 0, entry.cas, true);
      return result;
    },
    proxy_set_shared_data(keyPtr, keyLen, valuePtr, valueLen, cas) {
      const key = readString(keyPtr, keyLen);
      const entry = shared.get(key);
      if (entry && cas >>> 0 !== 0 && cas >>> 0 !== entry.cas) return WasmResult.CasMismatch;
      shared.set(key, { value: bytesAt(valuePtr, valueLen).slice(), cas: nextCas++ });
      return WasmResult.Ok;
    },
    proxy_get_current_time_nanoseconds(timePtr) {
      memory().setBigUint64(timePtr >>> 0, BigInt(Math.floor(nowMs())) * 1_000_000n, true);
      return WasmResult.Ok;
    },
  };

  const importObject: Record<string, Record<string, WebAssembly.ImportValue>> = {};
  for (const imp of WebAssembly.Module.imports(module)) {
    if (imp.kind !== "function") {
      throw new Error(`the module imports ${imp.kind} ${imp.module}.${imp.name}; a proxy-wasm filter must not`);
    }
    const fn = imp.module === "env" && Object.hasOwn(emulated, imp.name) ? emulated[imp.name] : undefined;
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
    call("proxy_on_context_create", 1, 0);
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

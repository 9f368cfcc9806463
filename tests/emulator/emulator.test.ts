// Tests of the emulator itself: that it reproduces the Envoy / proxy-wasm-cpp-host behaviour the
// filter tests rely on. A tiny probe module written in WAT (assembled with binaryen, which the
// AssemblyScript toolchain already installs) calls the host functions directly.
import { test } from "node:test";
import assert from "node:assert/strict";
import binaryen from "binaryen";
import {
  Host, Vm, SharedDataStore, Metrics, TrapError, WasmResult, serializePairs, parsePairs, durationMs, type HttpStream,
} from "./emulator.ts";

const PROBE_WAT = `
(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_property" (func $get_property (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get_header (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_shared_data" (func $get_shared (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_shared_data" (func $set_shared (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_define_metric" (func $define (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_increment_metric" (func $inc (param i32 i64) (result i32)))
  (import "env" "proxy_send_local_response" (func $local (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_current_time_nanoseconds" (func $now (param i32) (result i32)))
  (import "env" "proxy_call_foreign_function" (func $foreign (param i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 8192))
  (global $mallocs (mut i32) (i32.const 0))
  (global $deny (mut i32) (i32.const 0))
  (data (i32.const 300) ":status")
  (data (i32.const 320) "denied")
  (func (export "malloc") (param $n i32) (result i32)
    (local $p i32)
    (global.set $mallocs (i32.add (global.get $mallocs) (i32.const 1)))
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))
  (func (export "mallocs") (result i32) (global.get $mallocs))
  (func (export "proxy_abi_version_0_2_0"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (if (global.get $deny) (then
      (i32.store (i32.const 212) (call $local (i32.const 403) (i32.const 320) (i32.const 6) (i32.const 320) (i32.const 6) (i32.const 0) (i32.const 0) (i32.const -1)))
      (return (i32.const 1))))
    (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (i32.store (i32.const 208) (call $get_header (i32.const 2) (i32.const 300) (i32.const 7) (i32.const 200) (i32.const 204)))
    (i32.const 0))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_delete") (param i32))
  (func (export "set_deny") (param i32) (global.set $deny (local.get 0)))
  (func (export "t_log") (param i32 i32 i32) (result i32) (call $log (local.get 0) (local.get 1) (local.get 2)))
  (func (export "t_get_property") (param i32 i32) (result i32) (call $get_property (local.get 0) (local.get 1) (i32.const 16) (i32.const 20)))
  (func (export "t_get_header") (param i32 i32 i32) (result i32) (call $get_header (local.get 0) (local.get 1) (local.get 2) (i32.const 16) (i32.const 20)))
  (func (export "t_get_shared") (param i32 i32) (result i32) (call $get_shared (local.get 0) (local.get 1) (i32.const 16) (i32.const 20) (i32.const 24)))
  (func (export "t_set_shared") (param i32 i32 i32 i32 i32) (result i32) (call $set_shared (local.get 0) (local.get 1) (local.get 2) (local.get 3) (local.get 4)))
  (func (export "t_define") (param i32 i32 i32) (result i32) (call $define (local.get 0) (local.get 1) (local.get 2) (i32.const 28)))
  (func (export "t_inc") (param i32 i64) (result i32) (call $inc (local.get 0) (local.get 1)))
  (func (export "t_now") (result i32) (call $now (i32.const 32)))
  (func (export "t_foreign") (result i32)
    (call $foreign (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 40) (i32.const 44)))
  (func (export "t_trap") (drop (call $log (i32.const 5) (i32.const 320) (i32.const 6))) (unreachable))
)`;

let probeModule: WebAssembly.Module | undefined;
function probe(): WebAssembly.Module {
  if (!probeModule) {
    const m = binaryen.parseText(PROBE_WAT);
    assert.ok(m.validate(), "probe module validates");
    probeModule = new WebAssembly.Module(m.emitBinary() as Uint8Array<ArrayBuffer>);
    m.dispose();
  }
  return probeModule;
}

const enc = new TextEncoder();
function put(vm: Vm, ptr: number, s: string | Uint8Array): [number, number] {
  const b = typeof s === "string" ? enc.encode(s) : s;
  new Uint8Array(vm.exports.memory.buffer).set(b, ptr);
  return [ptr, b.length];
}
function u32(vm: Vm, ptr: number): number {
  return new DataView(vm.exports.memory.buffer).getUint32(ptr, true);
}
function bytesAt(vm: Vm, ptr: number, len: number): string {
  return new TextDecoder().decode(new Uint8Array(vm.exports.memory.buffer, ptr, len));
}
/** Runs a probe export while `stream` is the current stream (as during its callbacks). */
function during(vm: Vm, stream: HttpStream | undefined, name: string, ...args: number[]): number {
  return vm.call(name, stream, ...args);
}

test("shared data follows Envoy: NotFound when absent, CAS checked only for existing keys, new non-zero CAS per set, nothing deleted", () => {
  const s = new SharedDataStore();
  assert.equal(s.get("k"), undefined);
  assert.equal(s.set("k", enc.encode("a"), 12345), WasmResult.Ok, "a set on an absent key ignores its cas");
  const first = s.get("k")!;
  assert.ok(first.cas !== 0);
  assert.equal(s.set("k", enc.encode("b"), first.cas + 1), WasmResult.CasMismatch);
  assert.equal(new TextDecoder().decode(s.get("k")!.value), "a", "a rejected set changes nothing");
  assert.equal(s.set("k", enc.encode("b"), first.cas), WasmResult.Ok);
  const second = s.get("k")!;
  assert.notEqual(second.cas, first.cas);
  assert.equal(s.set("k", enc.encode("c"), first.cas), WasmResult.CasMismatch, "a stale cas is rejected");
  assert.equal(s.set("k", enc.encode("c"), 0), WasmResult.Ok, "cas 0 is unconditional");
  assert.equal(s.set("k", new Uint8Array(0), 0), WasmResult.Ok);
  assert.equal(s.size, 1, "an empty value keeps the key");
  assert.equal(s.valueSize("k"), 0);
  assert.equal(s.casMismatches, 2);
});

test("the store's onBeforeSet hook runs once between a get and the set, and can make the set conflict", () => {
  const s = new SharedDataStore();
  s.set("k", enc.encode("v0"), 0);
  const { cas } = s.get("k")!;
  let ran = 0;
  s.onBeforeSet("k", () => {
    ran++;
    assert.equal(s.set("k", enc.encode("other"), cas), WasmResult.Ok, "the interleaved writer wins");
  });
  assert.equal(s.set("k", enc.encode("mine"), cas), WasmResult.CasMismatch);
  assert.equal(ran, 1);
  assert.equal(s.set("k", enc.encode("mine"), s.get("k")!.cas), WasmResult.Ok, "one-shot: the retry is not interleaved");
  assert.equal(ran, 1);
});

test("metrics are one stat per name across VMs; a counter increment <= 0 is refused and recorded", () => {
  const h = Host.load({ module: probe(), vms: 2 });
  for (const vm of h.vms) {
    const [p, n] = put(vm, 400, "requests");
    assert.equal(during(vm, undefined, "t_define", 0, p, n), WasmResult.Ok);
    const id = u32(vm, 28);
    assert.equal(vm.exports.t_inc(id, 2n), WasmResult.Ok);
  }
  assert.equal(h.metrics.get("requests"), 4, "both VMs' increments land in one stat");
  const vm = h.vm(0);
  const id = u32(vm, 28);
  assert.equal(vm.exports.t_inc(id, 0n), WasmResult.BadArgument);
  assert.equal(vm.exports.t_inc(id, -1n), WasmResult.BadArgument);
  assert.equal(h.metrics.get("requests"), 4);
  assert.equal(h.metrics.violations.length, 2);
  assert.throws(() => h.assertClean(), /incremented by 0/);
  const [gp, gn] = put(vm, 400, "gauge_x");
  during(vm, undefined, "t_define", 1, gp, gn);
  const gid = u32(vm, 28);
  assert.equal(vm.exports.t_inc(gid, 3n), WasmResult.Ok);
  assert.equal(vm.exports.t_inc(gid, -2n), WasmResult.Ok);
  assert.equal(h.metrics.get("gauge_x"), 1);
  assert.throws(() => new Metrics().get("nope"), /never defined/);
});

test("values are returned through the module's malloc, except an empty value, which gets pointer 0 and no malloc", () => {
  const h = Host.load({ module: probe(), rootId: "" });
  const vm = h.vm(0);
  const s = vm.request({ peer: "[::1]:5678", headers: { "X-Test": "yes", empty: "" } });
  const before = vm.exports.mallocs();
  const [p, n] = put(vm, 400, "source\0address");
  assert.equal(during(vm, s, "t_get_property", p, n), WasmResult.Ok);
  assert.equal(vm.exports.mallocs(), before + 1);
  assert.equal(bytesAt(vm, u32(vm, 16), u32(vm, 20)), "[::1]:5678");

  const [rp, rn] = put(vm, 400, "plugin_root_id");
  new DataView(vm.exports.memory.buffer).setUint32(16, 0xdead, true);
  assert.equal(during(vm, s, "t_get_property", rp, rn), WasmResult.Ok, "empty root id is Ok");
  assert.equal(vm.exports.mallocs(), before + 1, "no malloc for a zero-length value");
  assert.deepEqual([u32(vm, 16), u32(vm, 20)], [0, 0]);

  const [dp, dn] = put(vm, 400, "source.address");
  assert.equal(during(vm, s, "t_get_property", dp, dn), WasmResult.NotFound, "dotted paths are not property paths");
  assert.equal(during(vm, s, "t_get_property", ...put(vm, 400, "nope\0nothing")), WasmResult.NotFound);

  assert.equal(during(vm, s, "t_get_header", 0, ...put(vm, 400, "x-test")), WasmResult.Ok);
  assert.equal(bytesAt(vm, u32(vm, 16), u32(vm, 20)), "yes", "header keys are stored lowercase");
  assert.equal(during(vm, s, "t_get_header", 0, ...put(vm, 400, "missing")), WasmResult.NotFound);
  assert.equal(during(vm, s, "t_get_header", 2, ...put(vm, 400, ":status")), WasmResult.BadArgument, "no response headers during the request");
  const m = vm.exports.mallocs();
  assert.equal(during(vm, s, "t_get_header", 0, ...put(vm, 400, "empty")), WasmResult.Ok);
  assert.equal(vm.exports.mallocs(), m, "empty header value: no malloc");
});

test("shared data through the ABI returns the value and the CAS, and NotFound for an absent key", () => {
  const h = Host.load({ module: probe() });
  const vm = h.vm(0);
  const [kp, kn] = put(vm, 400, "traffic-guard/t/000001");
  assert.equal(during(vm, undefined, "t_get_shared", kp, kn), WasmResult.NotFound);
  const [vp, vn] = put(vm, 500, "value-1");
  assert.equal(during(vm, undefined, "t_set_shared", kp, kn, vp, vn, 77), WasmResult.Ok);
  assert.equal(during(vm, undefined, "t_get_shared", kp, kn), WasmResult.Ok);
  assert.equal(bytesAt(vm, u32(vm, 16), u32(vm, 20)), "value-1");
  const cas = u32(vm, 24);
  assert.equal(cas, h.store.casOf("traffic-guard/t/000001"));
  assert.equal(during(vm, undefined, "t_set_shared", kp, kn, vp, vn, cas + 1), WasmResult.CasMismatch);
});

test("a local reply is encoded through the same stream's proxy_on_response_headers with the local :status, and never reaches the upstream", () => {
  const h = Host.load({ module: probe() });
  const vm = h.vm(0);
  vm.exports.set_deny(1);
  const r = vm.request({ path: "/x" });
  assert.equal(u32(vm, 212), WasmResult.Ok);
  assert.equal(r.localReply?.status, 403);
  assert.equal(r.localReply?.body, "denied");
  assert.equal(r.upstreamReached, false);
  assert.equal(u32(vm, 208), WasmResult.Ok, "the filter could read :status in the encoder path");
  assert.equal(bytesAt(vm, u32(vm, 200), u32(vm, 204)), "403");
  r.respond(200);
  assert.equal(r.status, 403, "the upstream's status never reaches the client");
  assert.ok(r.finished);

  vm.exports.set_deny(0);
  const ok = vm.request({ path: "/y" });
  assert.equal(ok.upstreamReached, true);
  ok.respond(404);
  assert.equal(bytesAt(vm, u32(vm, 200), u32(vm, 204)), "404");
});

test("the clock is shared and controlled by the test", () => {
  const h = Host.load({ module: probe(), vms: 2, startMs: 1_000 });
  h.clock.advance("1h30m");
  for (const vm of h.vms) {
    assert.equal(during(vm, undefined, "t_now"), WasmResult.Ok);
    assert.equal(new DataView(vm.exports.memory.buffer).getBigUint64(32, true), BigInt(1_000 + 5_400_000) * 1_000_000n);
  }
  assert.equal(durationMs("250ms"), 250);
  assert.throws(() => durationMs("5 minutes"), /not a duration/);
  assert.throws(() => h.clock.advance(-1), /backwards/);
});

test("a trap fails the VM with a TrapError carrying the last log lines", () => {
  const h = Host.load({ module: probe() });
  const vm = h.vm(0);
  assert.throws(() => during(vm, undefined, "t_trap"), (e: unknown) => e instanceof TrapError && /denied/.test(e.message) && /t_trap/.test(e.message));
  assert.throws(() => vm.request({}), /failed earlier/);
});

test("an import the emulator does not implement returns Unimplemented and is recorded", () => {
  const h = Host.load({ module: probe() });
  assert.equal(during(h.vm(0), undefined, "t_foreign"), WasmResult.Unimplemented);
  assert.deepEqual(h.unimplementedCalls, ["proxy_call_foreign_function"]);
  assert.throws(() => h.assertClean(), /unimplemented host call: proxy_call_foreign_function/);
});

test("a module importing anything but env.proxy_* functions is refused with a clear error", () => {
  const m = binaryen.parseText(`(module (import "wasi_snapshot_preview1" "proc_exit" (func (param i32))) (memory (export "memory") 1))`);
  const mod = new WebAssembly.Module(m.emitBinary() as Uint8Array<ArrayBuffer>);
  m.dispose();
  assert.throws(() => Host.load({ module: mod }), /wasi_snapshot_preview1\.proc_exit/);
});

test("header pairs serialize as count, sizes, then NUL-terminated keys and values, and parse back", () => {
  const pairs: [string, string][] = [[":status", "403"], ["retry-after", "60"], ["x-empty", ""]];
  const b = serializePairs(pairs);
  const dv = new DataView(b.buffer);
  assert.equal(dv.getUint32(0, true), 3);
  assert.deepEqual([dv.getUint32(4, true), dv.getUint32(8, true)], [7, 3]);
  assert.equal(b.length, 4 + 3 * 8 + (7 + 1 + 3 + 1) + (11 + 1 + 2 + 1) + (7 + 1 + 0 + 1));
  assert.equal(b[4 + 24 + 7], 0, "key is NUL-terminated");
  assert.deepEqual(parsePairs(b).map(([k, v]) => [k, new TextDecoder().decode(v)]), pairs);
  assert.throws(() => parsePairs(b.subarray(0, b.length - 2)), /truncated/);
});

// The proxy-wasm host core that the validate host, the emulator and the as-pect mock share
// (tools/lib/proxy-wasm-abi.ts), checked on its own against a fake module memory and malloc.
import assert from "node:assert/strict";
import { test } from "node:test";
import * as abi from "../../tools/lib/proxy-wasm-abi.ts";
import type { GuestMemory } from "../../tools/lib/proxy-wasm-abi.ts";

const { MetricIds, SharedData, StatsScope, WasmResult, copyOut, copyOutRange, copyOutSharedEntry } = abi;
const { defineMetric, getMetric, incrementMetric, missingExports, recordMetric } = abi;

/** A one-page module memory whose malloc hands out addresses from 1024 upwards and counts its calls. */
function fakeGuest(mallocResult?: number): GuestMemory & { mallocs: number; u32(ptr: number): number } {
  const memory = new WebAssembly.Memory({ initial: 1 });
  let next = 1024;
  return {
    mallocs: 0,
    memory: () => memory,
    malloc(size: number) {
      this.mallocs++;
      if (mallocResult !== undefined) return mallocResult;
      const ptr = next;
      next += size;
      return ptr;
    },
    u32: (ptr: number) => new DataView(memory.buffer).getUint32(ptr, true),
  };
}

const bytes = (s: string) => new TextEncoder().encode(s);

test("copyOut copies a value into malloc'd memory and writes pointer and size to the out-parameters", () => {
  const g = fakeGuest();
  assert.equal(copyOut(g, bytes("abc"), 8, 12), WasmResult.Ok);
  assert.equal(g.mallocs, 1);
  assert.equal(g.u32(8), 1024);
  assert.equal(g.u32(12), 3);
  assert.deepEqual(new Uint8Array(g.memory().buffer, 1024, 3), bytes("abc"));
});

test("copyOut allocates nothing for an empty value and hands out pointer 0, size 0", () => {
  const g = fakeGuest();
  new DataView(g.memory().buffer).setUint32(8, 77, true);
  assert.equal(copyOut(g, new Uint8Array(0), 8, 12), WasmResult.Ok);
  assert.equal(g.mallocs, 0);
  assert.equal(g.u32(8), 0);
  assert.equal(g.u32(12), 0);
});

test("copyOut answers InvalidMemoryAccess and names the problem when malloc returns 0 or a pointer is out of bounds", () => {
  const problems: string[] = [];
  assert.equal(copyOut(fakeGuest(0), bytes("x"), 8, 12, (p) => problems.push(p)), WasmResult.InvalidMemoryAccess);
  assert.equal(copyOut(fakeGuest(), bytes("x"), 70_000, 12, (p) => problems.push(p)), WasmResult.InvalidMemoryAccess);
  assert.deepEqual(problems, ["malloc(1) returned 0", "out-param pointer out of bounds"]);
});

test("copyOutRange clamps the range, answers BadArgument past the end, and leaves the out-parameters alone for an empty range", () => {
  const g = fakeGuest();
  const buf = bytes("hello");
  assert.equal(copyOutRange(g, buf, 6, 1, 8, 12), WasmResult.BadArgument);
  new DataView(g.memory().buffer).setUint32(8, 77, true);
  assert.equal(copyOutRange(g, buf, 5, 10, 8, 12), WasmResult.Ok);
  assert.equal(g.u32(8), 77, "untouched");
  assert.equal(copyOutRange(g, buf, 3, 100, 8, 12), WasmResult.Ok);
  assert.equal(g.u32(12), 2);
});

test("shared data: absent key NotFound, a set on an absent key ignores the CAS, CAS 0 is unconditional, a stale CAS is CasMismatch", () => {
  const g = fakeGuest();
  const store = new SharedData();
  assert.equal(copyOutSharedEntry(g, store.get("k"), 8, 12, 16), WasmResult.NotFound);
  assert.equal(store.set("k", bytes("a"), 999), WasmResult.Ok);
  const first = store.get("k")!.cas;
  assert.notEqual(first, 0);
  assert.equal(store.set("k", bytes("b"), first + 1), WasmResult.CasMismatch);
  assert.equal(store.set("k", bytes("b"), first), WasmResult.Ok);
  assert.notEqual(store.get("k")!.cas, first, "every set gets a fresh CAS");
  assert.equal(store.set("k", bytes("c"), first), WasmResult.CasMismatch, "the old CAS is stale now");
  assert.equal(store.set("k", new Uint8Array(0), 0), WasmResult.Ok);
  assert.equal(copyOutSharedEntry(g, store.get("k"), 8, 12, 16), WasmResult.Ok);
  assert.deepEqual([g.u32(8), g.u32(12), g.u32(16)], [0, 0, store.get("k")!.cas], "an empty value is kept and handed out as 0/0");
  assert.equal(g.mallocs, 0);
});

test("shared data keeps a copy of the bytes it is given", () => {
  const store = new SharedData();
  const value = bytes("abc");
  store.set("k", value, 0);
  value[0] = 0;
  assert.deepEqual(store.get("k")!.value, bytes("abc"));
});

test("metrics: one stat per name, ids type | n << 2, counters only increase, gauges move both ways, histograms record", () => {
  const scope = new StatsScope();
  const ids = new MetricIds();
  const c1 = defineMetric(scope, ids, 0, "c");
  const c2 = defineMetric(scope, ids, 0, "c");
  const gauge = defineMetric(scope, ids, 1, "g");
  const hist = defineMetric(scope, ids, 2, "h");
  assert.deepEqual([c1.id, c2.id, gauge.id, hist.id], [4, 8, 5, 6]);
  assert.equal(defineMetric(scope, ids, 3, "x").result, WasmResult.BadArgument);
  assert.equal(incrementMetric(scope, ids, c1.id, 2n), WasmResult.Ok);
  assert.equal(incrementMetric(scope, ids, c2.id, 1), WasmResult.Ok);
  assert.equal(incrementMetric(scope, ids, c1.id, 0n), WasmResult.BadArgument);
  assert.equal(incrementMetric(scope, ids, c1.id, -1n), WasmResult.BadArgument);
  assert.deepEqual(getMetric(ids, c2.id), { result: WasmResult.Ok, value: 3n }, "both ids reach the one stat");
  assert.equal(incrementMetric(scope, ids, gauge.id, -2n), WasmResult.Ok);
  assert.equal(recordMetric(scope, ids, gauge.id, 7n), WasmResult.Ok);
  assert.equal(getMetric(ids, gauge.id).value, 7n);
  assert.equal(incrementMetric(scope, ids, hist.id, 1n), WasmResult.BadArgument);
  assert.equal(recordMetric(scope, ids, hist.id, 5n), WasmResult.Ok);
  assert.deepEqual(scope.stat("h")!.samples, [5]);
  assert.equal(getMetric(ids, hist.id).result, WasmResult.BadArgument);
  assert.equal(getMetric(ids, 99).result, WasmResult.NotFound);
  assert.equal(scope.violations.length, 4, scope.violations.join("; "));
});

test("missingExports names each required export a module lacks or exports with the wrong kind", () => {
  const exports = [
    { name: "memory", kind: "function" },
    { name: "malloc", kind: "function" },
    { name: "proxy_on_vm_start", kind: "function" },
  ];
  assert.deepEqual(missingExports(exports), ["memory", "proxy_on_configure"]);
});

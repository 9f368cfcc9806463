// The compiled module as Envoy loads it: ABI exports, imports, root contexts, metric definitions.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { Host, loadModule, DEFAULT_WASM } from "../emulator/emulator.ts";
import { M, COUNTERS, tableKeys, cfg, rateRule, uaRule, assertPassed, assertDenied, assertHostClean, bans } from "./helpers.ts";

test("the compiled filter exists (run `npm run build` first)", () => {
  assert.ok(existsSync(DEFAULT_WASM), `${DEFAULT_WASM} is missing: run \`npm run build\` first`);
});

test("a missing .wasm fails with a message that says to run npm run build", () => {
  assert.throws(() => loadModule("/nonexistent/traffic-guard.wasm"), /npm run build/);
});

test("the module exports the proxy-wasm 0.2.0 ABI marker, malloc, memory and two stream callbacks, and imports only env.proxy_* functions and the WASI clock", () => {
  const mod = loadModule();
  const exports = WebAssembly.Module.exports(mod).map((e) => e.name);
  for (const name of ["proxy_abi_version_0_2_0", "malloc", "memory", "proxy_on_vm_start", "proxy_on_configure", "proxy_on_tick", "proxy_on_http_call_response", "proxy_on_request_headers", "proxy_on_log"]) {
    assert.ok(exports.includes(name), `module must export ${name}`);
  }
  // Envoy calls every exported stream callback on every request; these would only cost time.
  for (const name of ["proxy_on_context_create", "proxy_on_response_headers", "proxy_on_response_trailers", "proxy_on_done", "proxy_on_delete", "proxy_on_request_body", "proxy_on_response_body", "proxy_on_request_trailers"]) {
    assert.ok(!exports.includes(name), `module must not export ${name}`);
  }
  const imports = WebAssembly.Module.imports(mod);
  const foreign = imports.filter((i) => i.module !== "env" || !i.name.startsWith("proxy_")).map((i) => `${i.module}.${i.name}`);
  // proxy-wasm-cpp-host registers WASI clock_time_get and random_get for every VM (src/exports.cc); the
  // monotonic clock (assembly/clock.ts) and random bytes (assembly/entropy.ts) are not in the proxy-wasm ABI.
  assert.deepEqual(foreign.sort(), ["wasi_snapshot_preview1.clock_time_get", "wasi_snapshot_preview1.random_get"], "no env.abort, no other WASI, nothing but proxy-wasm host functions");
});

for (const rootId of ["traffic-guard", "anything-else", ""]) {
  test(`the root context works with root_id ${JSON.stringify(rootId)}`, async () => {
    const h = await Host.start({ rootId, config: cfg({ rules: { userAgent: uaRule(["curl/*"], 2, "1m", "10m") } }) });
    const curl = { peer: "203.0.113.7:4000", headers: { "user-agent": "curl/8.5.0" } };
    assertPassed(h.vm(0).send(curl));
    assertPassed(h.vm(0).send(curl));
    assertDenied(h.vm(0).send(curl));
    assert.equal(h.metrics.get(M.bansUserAgent), 1);
    assert.ok(h.logs.some((l) => l.level === 2 && l.text.startsWith("traffic-guard: configured ")), "configured line logged");
    assertHostClean(h);
  });
}

test("an empty pluginConfig and {} are accepted with all three rules on", async () => {
  for (const config of ["", "{}"]) {
    const h = Host.load();
    assert.equal(h.vm(0).configure(config), true, `config ${JSON.stringify(config)} must be accepted`);
    const line = h.logs.find((l) => l.text.startsWith("traffic-guard: configured "));
    assert.ok(line, "one configured line");
    assert.equal(line.level, 2, "configured line is info");
    assert.match(line.text, /^traffic-guard: configured mode=enforce capacity=\d+ rules=\S+$/);
    for (const rule of ["rate", "userAgent", "errors"]) assert.match(line.text, new RegExp(`rules=.*\\b${rule}\\b`));
    assert.equal(h.logsAtLeast("error").length, 0);
  }
});

test("the default configuration bans curl after its scripted-client allowance and answers 403", async () => {
  const h = await Host.start({ config: "{}" });
  const curl = { peer: "203.0.113.7:4000", headers: { "user-agent": "curl/8.5.0" } };
  const rs = Array.from({ length: 40 }, () => h.vm(0).send(curl));
  const firstDenied = rs.findIndex((r) => r.localReply);
  assert.ok(firstDenied > 0, "curl is eventually denied by the default userAgent rule");
  assert.ok(rs.slice(firstDenied).every((r) => r.localReply?.status === 403), "every later request is denied with 403");
  assert.equal(h.metrics.get(M.bansUserAgent), 1);
});

test("every metric of the contract is defined at configure time, counters as counters and the gauge as a gauge", async () => {
  const h = Host.load({ vms: 2 });
  assert.deepEqual(h.metrics.names(), [], "nothing defined before configure");
  assert.ok(h.configure("{}"));
  for (const name of COUNTERS) assert.equal(h.metrics.stat(name)?.type, "counter", `${name} is a counter`);
  assert.equal(h.metrics.stat(M.tracked)?.type, "gauge", `${M.tracked} is a gauge`);
  for (const name of Object.values(M)) assert.equal(h.metrics.get(name), 0, `${name} starts at 0`);
  assertHostClean(h);
});

test("the filter reads the client address through NUL-separated property paths", async () => {
  const h = await Host.start({ config: cfg({ rules: { rate: rateRule(1, "1h", "1h") } }) });
  h.vm(0).send({ peer: "198.51.100.1:1" });
  assert.ok(h.vm(0).propertyLookups.includes("source\0address"), `lookups: ${JSON.stringify(h.vm(0).propertyLookups)}`);
  assert.ok(!h.vm(0).propertyLookups.some((p) => p.includes(".")), "no dotted property paths (Envoy would answer NotFound)");
  assertDenied(h.vm(0).send({ peer: "198.51.100.1:2" }));
  assert.equal(bans(h)[0]?.address, "198.51.100.1");
});

test("a request before any configuration was accepted passes untouched", async () => {
  const h = Host.load();
  const r = h.vm(0).send({ peer: "203.0.113.7:4000", headers: { "user-agent": "curl/8.5.0" } });
  assertPassed(r);
  assert.equal(tableKeys(h).length, 0);
});

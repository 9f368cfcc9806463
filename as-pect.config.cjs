// as-pect configuration for the AssemblyScript unit tests (tests/unit/*.spec.ts), run by `npm run test:unit`.
// Each spec file is compiled on its own (with the include files) using as-pect.asconfig.json, and runs
// against the proxy-wasm host mock in tests/unit/mock-host.cjs, which provides the `env.proxy_*` imports
// and the `mock` imports the specs use to steer and inspect it.

const { createMockHost } = require("./tests/unit/mock-host.cjs");

module.exports = {
  /** The spec files, one wasm module each. */
  entries: ["tests/unit/**/*.spec.ts"],
  /** Compiled into every spec module (exports malloc for the host mock). */
  include: ["tests/unit/**/*.include.ts"],
  disclude: [/node_modules/],
  /** Instantiates a spec module with a fresh host mock. */
  async instantiate(memory, createImports, instantiate, binary) {
    const host = createMockHost();
    const module = await WebAssembly.compile(binary);
    const result = await instantiate(module, createImports({ env: host.envFor(module), mock: host.mock, wasi_snapshot_preview1: host.wasi }));
    host.bind(result.instance);
    return result;
  },
  outputBinary: false,
};

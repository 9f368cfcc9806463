// Compiled into every spec module: the proxy-wasm host mock returns values by calling the module's
// exported malloc, exactly as Envoy does with the real filter (index.ts exports the same malloc, from host.ts).
export { malloc } from "../../assembly/host";

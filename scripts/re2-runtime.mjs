// Stands in for @kubernetes-models/validate/runtime/re2 in the CLI bundle (see build-cli.mjs): re2-wasm loads
// re2.wasm from beside its own file, so it is required from the installed package when the validators that use it
// (the prometheus-operator models, loaded only by `traffic-guard monitoring`) are first initialised.
export default require("re2-wasm").RE2;

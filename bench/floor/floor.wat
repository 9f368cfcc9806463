;; The least any proxy-wasm filter can cost in Envoy: a raw-ABI module with no SDK that exports only
;; what Envoy needs to load it and run it as an HTTP filter. proxy-wasm-cpp-host calls only the
;; callbacks a module exports, so a request costs one context creation and one request-headers call,
;; which returns Continue (0). `npm run bench` runs it as configuration 0, the floor every other
;; configuration is reported as a multiple of; bench/floor.ts assembles it with binaryen.
(module
  (memory (export "memory") 2)
  ;; A bump allocator over the second page: Envoy calls malloc only to hand values to the module,
  ;; and this module asks for none, so it never runs out.
  (global $next (mut i32) (i32.const 65536))
  (func (export "malloc") (param $size i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $next))
    (global.set $next (i32.add (local.get $p) (i32.and (i32.add (local.get $size) (i32.const 7)) (i32.const -8))))
    (local.get $p))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0)))

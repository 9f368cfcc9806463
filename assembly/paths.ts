// skipPaths matching: a configured path matches on segment boundaries. "/healthz" matches "/healthz",
// "/healthz/", "/healthz/live", "/healthz?probe=1" and "/healthz#x", but not "/healthzadmin". A
// configured path that ends with "/" (or is "/") matches everything below it.

import { sameBytes } from "./bytes";

/** Whether the n path bytes at p are `prefix` itself or lie below it on a segment boundary. */
export function pathUnder(p: usize, n: i32, prefix: ArrayBuffer): bool {
  let k = prefix.byteLength;
  if (n < k || !sameBytes(p, changetype<usize>(prefix), <usize>k)) return false;
  if (n == k || k == 0) return true;
  if (load<u8>(changetype<usize>(prefix) + <usize>(k - 1)) == 0x2f) return true;
  let c = load<u8>(p + <usize>k);
  return c == 0x2f || c == 0x3f || c == 0x23; // '/', '?', '#'
}

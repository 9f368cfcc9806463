// Entropy for the table's hash secret. proxy-wasm-cpp-host (which Envoy embeds) implements WASI
// random_get with BoringSSL's RAND_bytes; a host without it (the call returns an errno) leaves the
// caller to fall back on clock material.

// @ts-ignore: decorator
@external("wasi_snapshot_preview1", "random_get")
declare function random_get(buf: usize, len: usize): u16;

const BUF = memory.data(16);

/** First half of the last randomBits() draw. */
export let random0: u64 = 0;
/** Second half of the last randomBits() draw. */
export let random1: u64 = 0;

/** Draws 128 random bits from the host into random0/random1; false when the host has no random_get. */
export function randomBits(): bool {
  if (random_get(BUF, 16) != 0) return false;
  random0 = load<u64>(BUF);
  random1 = load<u64>(BUF, 8);
  return true;
}

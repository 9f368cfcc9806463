// Byte-range equality for the whole filter, in one function: AssemblyScript's memory.compare expands its
// byte loop inline at every use, and each copy costs the module's size (tests/filter/module-size.test.ts).

/** Whether the n bytes at a equal the n bytes at b (eight at a time, then one at a time). */
export function sameBytes(a: usize, b: usize, n: usize): bool {
  while (n >= 8) {
    if (load<u64>(a) != load<u64>(b)) return false;
    a += 8;
    b += 8;
    n -= 8;
  }
  while (n > 0) {
    if (load<u8>(a) != load<u8>(b)) return false;
    a++;
    b++;
    n--;
  }
  return true;
}

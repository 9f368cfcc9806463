/**
 * The fixed, unkeyed set hash that anyone could read in the source before the hash was keyed, to aim
 * addresses at one client's set (tests/filter/table-attacks.test.ts and tests/e2e/table-attacks.test.ts).
 */

const MASK = (1n << 64n) - 1n;
const fmix = (h: bigint): bigint => {
  h ^= h >> 33n; h = (h * 0xff51afd7ed558ccdn) & MASK;
  h ^= h >> 33n; h = (h * 0xc4ceb9fe1a85ec53n) & MASK;
  return h ^ (h >> 33n);
};

/** The set of an IPv4 address under the unkeyed hash: lo = ::ffff:a.b.c.d, h = fmix(hi * golden ^ lo) mod sets. */
export function unkeyedSetOfV4(addr: string, sets: number): number {
  const v4 = addr.split(".").reduce((n, p) => (n << 8n) | BigInt(Number(p)), 0n);
  const lo = 0x0000ffff00000000n | v4;
  return Number(fmix((0n * 0x9e3779b97f4a7c15n) ^ lo) % BigInt(sets));
}

/** `n` IPv4 addresses `prefix`.x.y other than `target` that the unkeyed hash puts in `target`'s set. */
export function aimedAt(target: string, n: number, sets: number, prefix = "203.0"): string[] {
  const want = unkeyedSetOfV4(target, sets);
  const out: string[] = [];
  for (let i = 1; out.length < n && i < 65536; i++) {
    const a = `${prefix}.${(i >> 8) & 255}.${i & 255}`;
    if (a !== target && unkeyedSetOfV4(a, sets) === want) out.push(a);
  }
  return out;
}

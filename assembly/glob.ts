// Case-insensitive glob matching for User-Agent patterns: '*' matches any run of bytes, '?' one byte.
// Patterns are lowercased once at configure time; the subject is folded byte by byte (ASCII only), so
// matching allocates nothing. The classic backtrack-to-last-star loop keeps it O(len(subject) x stars).

// @ts-ignore: decorator
@inline
function fold(c: u32): u32 {
  return c >= 0x41 && c <= 0x5a ? c | 0x20 : c;
}

// Whether the folded subject bytes at s equal the literal pattern bytes at p for n bytes.
function equalFold(s: usize, p: usize, n: usize): bool {
  for (let i: usize = 0; i < n; i++) {
    if (fold(<u32>load<u8>(s + i)) != <u32>load<u8>(p + i)) return false;
  }
  return true;
}

/** Whether the subject bytes [s, s+sn) match the lowercased pattern bytes [p, p+pn). */
export function globMatch(p: usize, pn: usize, s: usize, sn: usize): bool {
  // Fast paths for the shapes nearly every User-Agent pattern has: "lit*", "*lit*", "*lit", "lit".
  let lead: usize = pn > 0 && load<u8>(p) == 0x2a ? 1 : 0;
  let end: usize = pn > lead && load<u8>(p + pn - 1) == 0x2a ? pn - 1 : pn;
  let literal = true;
  for (let i = lead; i < end; i++) {
    let c = load<u8>(p + i);
    if (c == 0x2a || c == 0x3f) { literal = false; break; }
  }
  if (literal) {
    let lit = p + lead;
    let n = end - lead;
    if (n > sn) return false;
    let trail = end < pn;
    if (lead == 0 && trail) return equalFold(s, lit, n);
    if (lead == 0) return n == sn && equalFold(s, lit, n);
    if (!trail) return equalFold(s + sn - n, lit, n);
    if (n == 0) return true;
    let first = <u32>load<u8>(lit);
    for (let i: usize = 0; i + n <= sn; i++) {
      if (fold(<u32>load<u8>(s + i)) == first && equalFold(s + i + 1, lit + 1, n - 1)) return true;
    }
    return false;
  }
  let pi: usize = 0, si: usize = 0;
  let star: isize = -1;
  let mark: usize = 0;
  while (si < sn) {
    if (pi < pn) {
      let pc = <u32>load<u8>(p + pi);
      if (pc == 0x2a) { star = <isize>pi; pi++; mark = si; continue; }
      if (pc == 0x3f || pc == fold(<u32>load<u8>(s + si))) { pi++; si++; continue; }
    }
    if (star >= 0) {
      pi = <usize>star + 1;
      mark++;
      si = mark;
      continue;
    }
    return false;
  }
  while (pi < pn && load<u8>(p + pi) == 0x2a) pi++;
  return pi == pn;
}

/** Whether the subject buffer matches any pattern in the list. */
export function matchesAny(patterns: ArrayBuffer[], subject: ArrayBuffer): bool {
  return matchesAnyAt(patterns, changetype<usize>(subject), subject.byteLength);
}

/** Whether the n subject bytes at s0 match any pattern in the list. */
export function matchesAnyAt(patterns: ArrayBuffer[], s0: usize, n: i32): bool {
  let s = s0;
  let sn = <usize>n;
  for (let i = 0, n = patterns.length; i < n; i++) {
    let pat = unchecked(patterns[i]);
    if (globMatch(changetype<usize>(pat), <usize>pat.byteLength, s, sn)) return true;
  }
  return false;
}

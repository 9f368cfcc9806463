// Case-insensitive glob matching for User-Agent patterns: '*' matches any run of bytes, '?' one byte.
// Patterns are lowercased once at configure time; the subject is folded byte by byte (ASCII only), so
// matching allocates nothing. The classic backtrack-to-last-star loop keeps it O(len(subject) x stars).

// @ts-ignore: decorator
@inline
function fold(c: u32): u32 {
  return c >= 0x41 && c <= 0x5a ? c | 0x20 : c;
}

/** Whether the subject bytes [s, s+sn) match the lowercased pattern bytes [p, p+pn). */
export function globMatch(p: usize, pn: usize, s: usize, sn: usize): bool {
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
  let s = changetype<usize>(subject);
  let sn = <usize>subject.byteLength;
  for (let i = 0, n = patterns.length; i < n; i++) {
    let pat = unchecked(patterns[i]);
    if (globMatch(changetype<usize>(pat), <usize>pat.byteLength, s, sn)) return true;
  }
  return false;
}

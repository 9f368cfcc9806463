// Case-insensitive glob matching: '*' matches any run of bytes, '?' one byte. Patterns are lowercased once at
// configure time; the subject is folded byte by byte (ASCII only), so matching allocates nothing. GlobSet
// (below) sorts a list of patterns by shape; globMatch, the classic backtrack-to-last-star loop, O(len(subject)
// x stars), handles the rest.

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

/**
 * Whether the subject bytes [s, s+sn) match the lowercased pattern bytes [p, p+pn): the general
 * backtracking match, for the patterns GlobSet does not sort by shape.
 */
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

const EMPTY = new ArrayBuffer(0);

// Packs byte strings as [u32 length][bytes]... into one buffer, so a match walks memory without bounds
// checks or calls.
function pack(items: ArrayBuffer[]): ArrayBuffer {
  let size = 0;
  for (let i = 0; i < items.length; i++) size += 4 + items[i].byteLength;
  let out = new ArrayBuffer(size);
  let q = changetype<usize>(out);
  for (let i = 0; i < items.length; i++) {
    let n = <usize>items[i].byteLength;
    store<u32>(q, <u32>n);
    memory.copy(q + 4, changetype<usize>(items[i]), n);
    q += 4 + n;
  }
  return out;
}

/**
 * A list of lowercased glob patterns compiled once for matching one subject against all of them: the
 * shapes nearly every pattern has ("lit", "lit*", "*lit", "*lit*") are sorted by shape, and the "*lit*"
 * ones are all searched in one pass over the subject (a table of their first bytes says where one may
 * start), instead of one pass per pattern. Anything else goes through globMatch. Nothing allocates.
 */
export class GlobSet {
  private all: bool = false;
  // Literals by shape, packed (see pack).
  private exact: ArrayBuffer = EMPTY;
  private prefix: ArrayBuffer = EMPTY;
  private suffix: ArrayBuffer = EMPTY;
  private infix: ArrayBuffer = EMPTY;
  private other: ArrayBuffer[] = [];
  // 256 bytes: non-zero at the bytes an infix literal starts with.
  private firsts: ArrayBuffer = new ArrayBuffer(256);
  /** Number of patterns. */
  size: i32;

  constructor(patterns: ArrayBuffer[]) {
    this.size = patterns.length;
    let exact: ArrayBuffer[] = [], prefix: ArrayBuffer[] = [], suffix: ArrayBuffer[] = [], infix: ArrayBuffer[] = [];
    for (let i = 0; i < patterns.length; i++) {
      let pat = patterns[i];
      let p = changetype<usize>(pat);
      let pn = <usize>pat.byteLength;
      let lead: usize = pn > 0 && load<u8>(p) == 0x2a ? 1 : 0;
      let end: usize = pn > lead && load<u8>(p + pn - 1) == 0x2a ? pn - 1 : pn;
      let literal = true;
      for (let k = lead; k < end; k++) {
        let c = load<u8>(p + k);
        if (c == 0x2a || c == 0x3f) { literal = false; break; }
      }
      if (!literal) { this.other.push(pat); continue; }
      let lit = pat.slice(<i32>lead, <i32>end);
      let trail = end < pn;
      if (lead == 0 && !trail) exact.push(lit);
      else if (lead == 0) prefix.push(lit);
      else if (!trail) suffix.push(lit);
      else if (lit.byteLength == 0) this.all = true; // "*" or "**"
      else {
        infix.push(lit);
        store<u8>(changetype<usize>(this.firsts) + <usize>load<u8>(changetype<usize>(lit)), 1);
      }
    }
    this.exact = pack(exact);
    this.prefix = pack(prefix);
    this.suffix = pack(suffix);
    this.infix = pack(infix);
  }

  /** Whether the n subject bytes at s match any pattern (ASCII case-insensitively). */
  matches(s: usize, n: i32): bool {
    if (this.all) return true;
    let sn = <usize>n;
    let q = changetype<usize>(this.exact);
    let end = q + <usize>this.exact.byteLength;
    while (q < end) {
      let ln = <usize>load<u32>(q);
      if (ln == sn && equalFold(s, q + 4, ln)) return true;
      q += 4 + ln;
    }
    q = changetype<usize>(this.prefix);
    end = q + <usize>this.prefix.byteLength;
    while (q < end) {
      let ln = <usize>load<u32>(q);
      if (ln <= sn && equalFold(s, q + 4, ln)) return true;
      q += 4 + ln;
    }
    q = changetype<usize>(this.suffix);
    end = q + <usize>this.suffix.byteLength;
    while (q < end) {
      let ln = <usize>load<u32>(q);
      if (ln <= sn && equalFold(s + sn - ln, q + 4, ln)) return true;
      q += 4 + ln;
    }
    let infix = changetype<usize>(this.infix);
    let infixEnd = infix + <usize>this.infix.byteLength;
    if (infix < infixEnd) {
      let firsts = changetype<usize>(this.firsts);
      for (let at: usize = 0; at < sn; at++) {
        let c = fold(<u32>load<u8>(s + at));
        if (load<u8>(firsts + <usize>c) == 0) continue;
        let left = sn - at;
        q = infix;
        while (q < infixEnd) {
          let ln = <usize>load<u32>(q);
          if (ln <= left && <u32>load<u8>(q + 4) == c && equalFold(s + at + 1, q + 5, ln - 1)) return true;
          q += 4 + ln;
        }
      }
    }
    for (let i = 0, k = this.other.length; i < k; i++) {
      let pat = unchecked(this.other[i]);
      if (globMatch(changetype<usize>(pat), <usize>pat.byteLength, s, sn)) return true;
    }
    return false;
  }
}

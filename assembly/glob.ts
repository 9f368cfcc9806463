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

// A packed literal: [u32 length][u64 mask][bytes].
const HEAD: usize = 12;

// Packs literals with their masks (see HEAD) into one buffer, so a match walks memory without bounds
// checks or calls.
function pack(items: ArrayBuffer[], masks: u64[]): ArrayBuffer {
  let size = 0;
  for (let i = 0; i < items.length; i++) size += <i32>HEAD + items[i].byteLength;
  let out = new ArrayBuffer(size);
  let q = changetype<usize>(out);
  for (let i = 0; i < items.length; i++) {
    let n = <usize>items[i].byteLength;
    store<u32>(q, <u32>n);
    store<u64>(q, masks[i], 4);
    memory.copy(q + HEAD, changetype<usize>(items[i]), n);
    q += HEAD + n;
  }
  return out;
}

/**
 * A list of lowercased glob patterns compiled once for matching one subject against all of them, each
 * pattern with a mask: `matches` says whether any pattern matches, `matchMask` ORs the masks of all that
 * do (the custom rules' matchers give each pattern the bits of the matchers that list it, so one pass
 * decides them all). The shapes nearly every pattern has ("lit", "lit*", "*lit", "*lit*") are sorted by
 * shape, and the "*lit*" ones are all searched in one pass over the subject: they are sorted by first
 * byte, and a table says where those starting with a byte begin. Anything else goes through globMatch.
 * Nothing allocates.
 */
export class GlobSet {
  // Masks of the patterns that match everything ("*").
  private all: u64 = 0;
  // Literals by shape, packed (see pack); infix sorted by first byte.
  private exact: ArrayBuffer = EMPTY;
  private prefix: ArrayBuffer = EMPTY;
  private suffix: ArrayBuffer = EMPTY;
  private infix: ArrayBuffer = EMPTY;
  private other: ArrayBuffer[] = [];
  private otherMasks: u64[] = [];
  // By byte: 1 + the offset in `infix` of the first literal starting with it, or 0.
  private firsts: StaticArray<u32> = new StaticArray<u32>(256);
  /** The OR of every pattern's mask. */
  union: u64 = 0;
  /** Number of patterns. */
  size: i32;

  /** Compiles `patterns`; pattern i carries masks[i] (1 for every pattern when masks is null). */
  constructor(patterns: ArrayBuffer[], masks: u64[] | null = null) {
    this.size = patterns.length;
    let exact: ArrayBuffer[] = [], prefix: ArrayBuffer[] = [], suffix: ArrayBuffer[] = [], infix: ArrayBuffer[] = [];
    let exactM: u64[] = [], prefixM: u64[] = [], suffixM: u64[] = [], infixM: u64[] = [];
    for (let i = 0; i < patterns.length; i++) {
      let pat = patterns[i];
      let mask: u64 = masks === null ? 1 : masks[i];
      this.union |= mask;
      let p = changetype<usize>(pat);
      let pn = <usize>pat.byteLength;
      let lead: usize = pn > 0 && load<u8>(p) == 0x2a ? 1 : 0;
      let end: usize = pn > lead && load<u8>(p + pn - 1) == 0x2a ? pn - 1 : pn;
      let literal = true;
      for (let k = lead; k < end; k++) {
        let c = load<u8>(p + k);
        if (c == 0x2a || c == 0x3f) { literal = false; break; }
      }
      if (!literal) {
        this.other.push(pat);
        this.otherMasks.push(mask);
        continue;
      }
      let lit = pat.slice(<i32>lead, <i32>end);
      let trail = end < pn;
      if (lead == 0 && !trail) { exact.push(lit); exactM.push(mask); }
      else if (lead == 0) { prefix.push(lit); prefixM.push(mask); }
      else if (!trail) { suffix.push(lit); suffixM.push(mask); }
      else if (lit.byteLength == 0) this.all |= mask; // "*" or "**"
      else {
        // Insertion by first byte keeps each byte's literals together.
        let first = load<u8>(changetype<usize>(lit));
        infix.push(lit);
        infixM.push(mask);
        let at = infix.length - 1;
        while (at > 0 && load<u8>(changetype<usize>(infix[at - 1])) > first) {
          infix[at] = infix[at - 1];
          infixM[at] = infixM[at - 1];
          at--;
        }
        infix[at] = lit;
        infixM[at] = mask;
      }
    }
    this.exact = pack(exact, exactM);
    this.prefix = pack(prefix, prefixM);
    this.suffix = pack(suffix, suffixM);
    this.infix = pack(infix, infixM);
    let off: u32 = 0;
    for (let i = 0; i < infix.length; i++) {
      let first = <i32>load<u8>(changetype<usize>(infix[i]));
      if (unchecked(this.firsts[first]) == 0) unchecked(this.firsts[first] = off + 1);
      off += <u32>HEAD + <u32>infix[i].byteLength;
    }
  }

  /** Whether the n subject bytes at s match any pattern (ASCII case-insensitively). */
  matches(s: usize, n: i32): bool {
    return this.scan(s, n, true) != 0;
  }

  /** The OR of the masks of every pattern the n subject bytes at s match (ASCII case-insensitively). */
  matchMask(s: usize, n: i32): u64 {
    return this.scan(s, n, false);
  }

  // The masks of the matching patterns; with `any`, stops at the first match.
  private scan(s: usize, n: i32, any: bool): u64 {
    let full = this.union;
    let acc = this.all;
    if (acc == full || (any && acc != 0)) return acc;
    let sn = <usize>n;
    let q = changetype<usize>(this.exact);
    let end = q + <usize>this.exact.byteLength;
    while (q < end) {
      let ln = <usize>load<u32>(q);
      if (ln == sn && equalFold(s, q + HEAD, ln)) {
        acc |= load<u64>(q, 4);
        if (any || acc == full) return acc;
      }
      q += HEAD + ln;
    }
    q = changetype<usize>(this.prefix);
    end = q + <usize>this.prefix.byteLength;
    while (q < end) {
      let ln = <usize>load<u32>(q);
      if (ln <= sn && equalFold(s, q + HEAD, ln)) {
        acc |= load<u64>(q, 4);
        if (any || acc == full) return acc;
      }
      q += HEAD + ln;
    }
    q = changetype<usize>(this.suffix);
    end = q + <usize>this.suffix.byteLength;
    while (q < end) {
      let ln = <usize>load<u32>(q);
      if (ln <= sn && equalFold(s + sn - ln, q + HEAD, ln)) {
        acc |= load<u64>(q, 4);
        if (any || acc == full) return acc;
      }
      q += HEAD + ln;
    }
    let infix = changetype<usize>(this.infix);
    let infixEnd = infix + <usize>this.infix.byteLength;
    if (infix < infixEnd) {
      let firsts = changetype<usize>(this.firsts);
      for (let at: usize = 0; at < sn; at++) {
        let c = fold(<u32>load<u8>(s + at));
        let o = <usize>load<u32>(firsts + (<usize>c << 2));
        if (o == 0) continue;
        let left = sn - at;
        q = infix + o - 1;
        while (q < infixEnd && <u32>load<u8>(q + HEAD) == c) {
          let ln = <usize>load<u32>(q);
          if (ln <= left && equalFold(s + at + 1, q + HEAD + 1, ln - 1)) {
            acc |= load<u64>(q, 4);
            if (any || acc == full) return acc;
          }
          q += HEAD + ln;
        }
      }
    }
    for (let i = 0, k = this.other.length; i < k; i++) {
      let pat = unchecked(this.other[i]);
      if (globMatch(changetype<usize>(pat), <usize>pat.byteLength, s, sn)) {
        acc |= unchecked(this.otherMasks[i]);
        if (any || acc == full) return acc;
      }
    }
    return acc;
  }
}

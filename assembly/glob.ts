// Case-insensitive glob matching: '*' matches any run of bytes, '?' one byte. Patterns are lowercased once at
// configure time; the subject is folded byte by byte (ASCII only), so matching allocates nothing. GlobSet
// (below) sorts a list of patterns by shape; globMatch, the classic backtrack-to-last-star loop, O(len(subject)
// x stars), handles the rest.

import { sameBytes } from "./bytes";

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
// Literal shapes, in their packing order: "lit", "lit*", "*lit", "*lit*".
const SHAPE_EXACT = 0;
const SHAPE_PREFIX = 1;
const SHAPE_SUFFIX = 2;
const SHAPE_INFIX = 3;

// ORs into acc the masks of the packed literals in [q, end) that the subject's first bytes (its last with
// `atEnd`) equal, all sn of them with `whole`; returns at the first match with `any`, or once acc is full.
function literals(q: usize, end: usize, s: usize, sn: usize, whole: bool, atEnd: bool, acc: u64, full: u64, any: bool): u64 {
  while (q < end) {
    let ln = <usize>load<u32>(q);
    if ((whole ? ln == sn : ln <= sn) && equalFold(atEnd ? s + sn - ln : s, q + HEAD, ln)) {
      acc |= load<u64>(q, 4);
      if (any || acc == full) return acc;
    }
    q += HEAD + ln;
  }
  return acc;
}

// Whether a scan can stop: every mask is in, or (with `any`) one is.
// @ts-ignore: decorator
@inline
function settled(acc: u64, full: u64, any: bool): bool {
  return acc == full || (any && acc != 0);
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
  // The literals by shape, packed one after the other in one buffer (see HEAD), so that a match touches
  // few cache lines: exact ones up to exactEnd, then prefixes, suffixes, and the infix literals sorted by
  // first byte (offsets into data).
  private data: ArrayBuffer = EMPTY;
  private exactEnd: usize = 0;
  private prefixEnd: usize = 0;
  private suffixEnd: usize = 0;
  private infixEnd: usize = 0;
  // The length of the shortest literal: a shorter subject (say, the path "/") skips every literal at once.
  private shortest: usize = <usize>-1;
  private otherCount: i32 = 0;
  private other: ArrayBuffer[] = [];
  private otherMasks: u64[] = [];
  // By byte: 1 + the offset in data of the first infix literal starting with it, or 0 (allocated only
  // when there are infix literals).
  private firsts: StaticArray<u32> = new StaticArray<u32>(0);
  /** The OR of every pattern's mask. */
  union: u64 = 0;

  /** Compiles `patterns`; pattern i carries masks[i] (1 for every pattern when masks is null). */
  constructor(patterns: ArrayBuffer[], masks: u64[] | null = null) {
    // Each literal pattern's packing key (shape << 8 | the first byte of an infix literal), literal and mask.
    let keys: i32[] = [], lits: ArrayBuffer[] = [], litMasks: u64[] = [];
    let size = 0;
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
      let trail = end < pn;
      if (lead == 1 && trail && end == lead) { this.all |= mask; continue; } // "*" or "**"
      let shape = lead == 0 ? (trail ? SHAPE_PREFIX : SHAPE_EXACT) : trail ? SHAPE_INFIX : SHAPE_SUFFIX;
      let key = shape << 8 | (shape == SHAPE_INFIX ? <i32>load<u8>(p + lead) : 0);
      let lit = pat.slice(<i32>lead, <i32>end);
      // A literal listed again (say, a custom rule's User-Agent pattern that is also a built-in one) is
      // matched once, with both masks.
      let dup = -1;
      for (let k = 0; k < keys.length && dup < 0; k++) {
        let o = lits[k];
        if (keys[k] == key && o.byteLength == lit.byteLength && sameBytes(changetype<usize>(o), changetype<usize>(lit), <usize>lit.byteLength)) dup = k;
      }
      if (dup >= 0) {
        litMasks[dup] |= mask;
        continue;
      }
      size += <i32>HEAD + lit.byteLength;
      keys.push(key);
      lits.push(lit);
      litMasks.push(mask);
    }
    this.otherCount = this.other.length;
    let data = new ArrayBuffer(size);
    let base = changetype<usize>(data);
    let q = base;
    let ends = new StaticArray<usize>(4);
    // In key order: by shape, and the infix literals by first byte.
    for (let key = 0; key < 4 << 8; key++) {
      let shape = key >> 8;
      for (let i = 0; i < lits.length; i++) {
        if (keys[i] != key) continue;
        if (shape == SHAPE_INFIX) {
          if (this.firsts.length == 0) this.firsts = new StaticArray<u32>(256);
          if (this.firsts[key & 0xff] == 0) this.firsts[key & 0xff] = <u32>(q - base) + 1;
        }
        let n = <usize>lits[i].byteLength;
        if (n < this.shortest) this.shortest = n;
        store<u32>(q, <u32>n);
        store<u64>(q, litMasks[i], 4);
        memory.copy(q + HEAD, changetype<usize>(lits[i]), n);
        q += HEAD + n;
      }
      ends[shape] = q - base;
    }
    this.exactEnd = ends[SHAPE_EXACT];
    this.prefixEnd = ends[SHAPE_PREFIX];
    this.suffixEnd = ends[SHAPE_SUFFIX];
    this.infixEnd = ends[SHAPE_INFIX];
    this.data = data;
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
    if (settled(acc, full, any)) return acc;
    let sn = <usize>n;
    if (sn < this.shortest) return this.others(s, sn, acc, full, any);
    let base = changetype<usize>(this.data);
    acc = literals(base, base + this.exactEnd, s, sn, true, false, acc, full, any);
    if (settled(acc, full, any)) return acc;
    acc = literals(base + this.exactEnd, base + this.prefixEnd, s, sn, false, false, acc, full, any);
    if (settled(acc, full, any)) return acc;
    acc = literals(base + this.prefixEnd, base + this.suffixEnd, s, sn, false, true, acc, full, any);
    if (settled(acc, full, any)) return acc;
    let infixEnd = base + this.infixEnd;
    let q = base + this.suffixEnd;
    if (q < infixEnd) {
      let firsts = changetype<usize>(this.firsts);
      for (let at: usize = 0; at < sn; at++) {
        let c = fold(<u32>load<u8>(s + at));
        let o = <usize>load<u32>(firsts + (<usize>c << 2));
        if (o == 0) continue;
        let left = sn - at;
        q = base + o - 1;
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
    return this.others(s, sn, acc, full, any);
  }

  // scan's last step: the patterns that are not literals, through globMatch.
  private others(s: usize, sn: usize, acc: u64, full: u64, any: bool): u64 {
    if (this.otherCount == 0) return acc;
    for (let i = 0, k = this.otherCount; i < k; i++) {
      let pat = unchecked(this.other[i]);
      if (globMatch(changetype<usize>(pat), <usize>pat.byteLength, s, sn)) {
        acc |= unchecked(this.otherMasks[i]);
        if (any || acc == full) return acc;
      }
    }
    return acc;
  }
}

// Client addresses as 128-bit values. IPv4 is held in its IPv4-mapped IPv6 form (::ffff:a.b.c.d), so an
// IPv4-mapped IPv6 address, an address of the NAT64 well-known prefix (64:ff9b::a.b.c.d) and the plain
// IPv4 address are the same value. Parsing works on raw UTF-8
// bytes in linear memory (header and property values straight from the host) and allocates nothing;
// any input, however hostile, either parses or returns false.

/** High 64 bits of the last address parsed by parseAddress/parseIp. */
export let parsedHi: u64 = 0;
/** Low 64 bits of the last address parsed by parseAddress/parseIp. */
export let parsedLo: u64 = 0;

/** The marker in the low word's upper half that makes an address IPv4(-mapped). */
export const V4_MARK: u64 = 0x0000ffff00000000;

/** The high word of the NAT64 well-known prefix 64:ff9b::/96, whose addresses parse as the IPv4 they embed. */
export const NAT64_HI: u64 = 0x0064ff9b00000000;

/** Whether hi/lo is an IPv4 (or IPv4-mapped IPv6) address. */
// @ts-ignore: decorator
@inline
export function isV4(hi: u64, lo: u64): bool {
  return hi == 0 && (lo & 0xffffffff00000000) == V4_MARK;
}

function isSpace(c: u32): bool {
  return c == 0x20 || c == 0x09;
}

// Parses dotted-quad IPv4 in [p, end). No leading zeros ("010" is ambiguous: octal to inet_aton).
function parseV4(p: usize, end: usize): i64 {
  if (end <= p || end - p > 15) return -1;
  let value: u32 = 0;
  let octets = 0;
  let i = p;
  while (true) {
    let start = i;
    let n: u32 = 0;
    while (i < end) {
      let c = <u32>load<u8>(i);
      if (c < 0x30 || c > 0x39) break;
      n = n * 10 + (c - 0x30);
      i++;
      if (i - start > 3) return -1;
    }
    let len = i - start;
    if (len == 0 || n > 255 || (len > 1 && load<u8>(start) == 0x30)) return -1;
    value = (value << 8) | n;
    octets++;
    if (octets == 4) break;
    if (i >= end || load<u8>(i) != 0x2e) return -1;
    i++;
  }
  if (i != end) return -1;
  return <i64>value;
}

function hexVal(c: u32): i32 {
  if (c >= 0x30 && c <= 0x39) return <i32>(c - 0x30);
  let l = c | 0x20;
  if (l >= 0x61 && l <= 0x66) return <i32>(l - 0x61 + 10);
  return -1;
}

// Scratch for the eight 16-bit groups of an IPv6 address.
const groups = memory.data(16);

// Parses an IPv6 address (RFC 4291 text forms, with "::" and an optional dotted-quad tail) in [p, end).
function parseV6(p: usize, end: usize): bool {
  if (end - p < 2 || end - p > 45) return false;
  let count = 0;       // groups written
  let gap = -1;        // index where "::" stands
  let i = p;
  if (load<u8>(i) == 0x3a) {
    if (load<u8>(i + 1) != 0x3a) return false;
    gap = 0;
    i += 2;
    if (i == end) { memory.fill(groups, 0, 16); parsedHi = 0; parsedLo = 0; return true; }
  }
  while (i < end) {
    if (count >= 8) return false;
    // A dotted-quad tail takes the last two groups.
    let j = i;
    let dot = false;
    while (j < end && load<u8>(j) != 0x3a) { if (load<u8>(j) == 0x2e) dot = true; j++; }
    if (dot) {
      if (j != end || count > 6) return false;
      let v4 = parseV4(i, end);
      if (v4 < 0) return false;
      store<u16>(groups + (count << 1), <u16>(v4 >> 16));
      store<u16>(groups + ((count + 1) << 1), <u16>(v4 & 0xffff));
      count += 2;
      i = end;
      break;
    }
    let n: i32 = 0;
    let digits = 0;
    while (i < end) {
      let d = hexVal(<u32>load<u8>(i));
      if (d < 0) break;
      n = (n << 4) | d;
      digits++;
      i++;
      if (digits > 4) return false;
    }
    if (digits == 0) return false;
    store<u16>(groups + (count << 1), <u16>n);
    count++;
    if (i == end) break;
    if (load<u8>(i) != 0x3a) return false;
    i++;
    if (i < end && load<u8>(i) == 0x3a) {
      if (gap >= 0) return false;
      gap = count;
      i++;
      if (i == end) break;
    } else if (i == end) {
      return false; // trailing single ':'
    }
  }
  if (gap < 0 && count != 8) return false;
  if (gap >= 0 && count > 7) return false;
  // Expand "::" by moving the groups after the gap to the end.
  let hi: u64 = 0;
  let lo: u64 = 0;
  let fill = 8 - count;
  for (let g = 0, src = 0; g < 8; g++) {
    let v: u64 = 0;
    if (gap >= 0 && g >= gap && g < gap + fill) v = 0;
    else { v = <u64>load<u16>(groups + (src << 1)); src++; }
    if (g < 4) hi = (hi << 16) | v;
    else lo = (lo << 16) | v;
  }
  // IPv4 embedded in the NAT64 well-known prefix 64:ff9b::/96 (RFC 6052) is that IPv4 client.
  if (hi == NAT64_HI && (lo >>> 32) == 0) {
    hi = 0;
    lo |= V4_MARK;
  }
  parsedHi = hi;
  parsedLo = lo;
  return true;
}

/** Parses a bare IP address (IPv4 or IPv6, no port) in bytes [p, p+len); sets parsedHi/parsedLo. */
export function parseIp(p: usize, len: usize): bool {
  let end = p + len;
  if (len == 0) return false;
  let v4 = parseV4(p, end);
  if (v4 >= 0) {
    parsedHi = 0;
    parsedLo = V4_MARK | <u64>v4;
    return true;
  }
  return parseV6(p, end);
}

function parsePort(p: usize, end: usize): bool {
  if (end <= p || end - p > 5) return false;
  let n: u32 = 0;
  for (let i = p; i < end; i++) {
    let c = <u32>load<u8>(i);
    if (c < 0x30 || c > 0x39) return false;
    n = n * 10 + (c - 0x30);
  }
  return n <= 65535;
}

/**
 * Parses a client address as hosts write it: "1.2.3.4", "1.2.3.4:5678", "2001:db8::1",
 * "[2001:db8::1]" or "[2001:db8::1]:5678", with surrounding spaces or tabs ignored.
 * Sets parsedHi/parsedLo and returns true, or returns false for anything else.
 */
export function parseAddress(p: usize, len: usize): bool {
  let end = p + len;
  while (p < end && isSpace(<u32>load<u8>(p))) p++;
  while (end > p && isSpace(<u32>load<u8>(end - 1))) end--;
  if (end <= p) return false;
  if (load<u8>(p) == 0x5b) { // [v6] or [v6]:port
    let close = p + 1;
    while (close < end && load<u8>(close) != 0x5d) close++;
    if (close >= end) return false;
    if (close + 1 != end) {
      if (load<u8>(close + 1) != 0x3a || !parsePort(close + 2, end)) return false;
    }
    return parseV6(p + 1, close);
  }
  // Exactly one ':' means IPv4 with a port; more means IPv6.
  let colons = 0;
  let last: usize = 0;
  for (let i = p; i < end; i++) {
    if (load<u8>(i) == 0x3a) { colons++; last = i; }
  }
  if (colons == 1) {
    if (!parsePort(last + 1, end)) return false;
    let v4 = parseV4(p, last);
    if (v4 < 0) return false;
    parsedHi = 0;
    parsedLo = V4_MARK | <u64>v4;
    return true;
  }
  return parseIp(p, end - p);
}

/** The high word of a 128-bit mask with `bits` leading ones. */
export function maskHi(bits: i32): u64 {
  if (bits <= 0) return 0;
  if (bits >= 64) return 0xffffffffffffffff;
  return 0xffffffffffffffff << (64 - <u64>bits);
}

/** The low word of a 128-bit mask with `bits` leading ones. */
export function maskLo(bits: i32): u64 {
  if (bits <= 64) return 0;
  if (bits >= 128) return 0xffffffffffffffff;
  return 0xffffffffffffffff << (128 - <u64>bits);
}

/** A network: address and mask, both 128 bits. IPv4 networks are held in mapped form. */
export class Cidr {
  hi: u64 = 0;
  lo: u64 = 0;
  mhi: u64 = 0;
  mlo: u64 = 0;

  /** Whether hi/lo lies inside this network. */
  contains(hi: u64, lo: u64): bool {
    return (hi & this.mhi) == this.hi && (lo & this.mlo) == this.lo;
  }
}

/** Whether any network in `list` contains hi/lo. */
export function anyContains(list: Cidr[], hi: u64, lo: u64): bool {
  for (let i = 0, n = list.length; i < n; i++) {
    if (unchecked(list[i]).contains(hi, lo)) return true;
  }
  return false;
}

/** Parses "10.0.0.0/8", "fd00::/8" or a bare address (a /32 or /128); null when invalid. */
export function parseCidr(text: string): Cidr | null {
  let slash = text.indexOf("/");
  let addr = slash < 0 ? text : text.substring(0, slash);
  let buf = String.UTF8.encode(addr);
  if (!parseIp(changetype<usize>(buf), <usize>buf.byteLength)) return null;
  // A network written in IPv6 notation ("::ffff:10.0.0.0/104") keeps an IPv6 prefix length.
  let v4 = isV4(parsedHi, parsedLo) && !addr.includes(":");
  let max = v4 ? 32 : 128;
  let bits = max;
  if (slash >= 0) {
    let p = text.substring(slash + 1);
    if (p.length == 0 || p.length > 3) return null;
    bits = 0;
    for (let i = 0; i < p.length; i++) {
      let c = p.charCodeAt(i);
      if (c < 0x30 || c > 0x39) return null;
      bits = bits * 10 + (c - 0x30);
    }
    if (bits > max) return null;
  }
  let total = v4 ? 96 + bits : bits;
  let c = new Cidr();
  c.mhi = maskHi(total);
  c.mlo = maskLo(total);
  c.hi = parsedHi & c.mhi;
  c.lo = parsedLo & c.mlo;
  return c;
}

/** Renders an address for logs: "203.0.113.7", or "2001:db8:1:2::" (zero runs compressed). */
export function formatAddress(hi: u64, lo: u64): string {
  if (isV4(hi, lo)) {
    let v = <u32>lo;
    return (v >>> 24).toString() + "." + ((v >>> 16) & 255).toString() + "." + ((v >>> 8) & 255).toString() + "." + (v & 255).toString();
  }
  let g = new StaticArray<u32>(8);
  for (let i = 0; i < 4; i++) {
    g[i] = <u32>((hi >>> (<u64>(48 - 16 * i))) & 0xffff);
    g[i + 4] = <u32>((lo >>> (<u64>(48 - 16 * i))) & 0xffff);
  }
  // Longest run of zero groups (length >= 2) becomes "::".
  let bestStart = -1, bestLen = 0;
  for (let i = 0; i < 8;) {
    if (g[i] != 0) { i++; continue; }
    let j = i;
    while (j < 8 && g[j] == 0) j++;
    if (j - i > bestLen && j - i >= 2) { bestStart = i; bestLen = j - i; }
    i = j;
  }
  let out = "";
  for (let i = 0; i < 8; i++) {
    if (i == bestStart) {
      out += "::";
      i += bestLen - 1;
      continue;
    }
    if (out.length > 0 && !out.endsWith(":")) out += ":";
    out += g[i].toString(16);
  }
  return out;
}

// Standard base64 (RFC 4648, with padding), as etcd's JSON gateway writes keys and values. Decoding
// checks every character and the padding, so a malformed value is refused rather than misread.

const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// The 6-bit value of a base64 character, or -1.
function sextet(c: i32): i32 {
  if (c >= 0x41 && c <= 0x5a) return c - 0x41;
  if (c >= 0x61 && c <= 0x7a) return c - 0x61 + 26;
  if (c >= 0x30 && c <= 0x39) return c - 0x30 + 52;
  if (c == 0x2b) return 62;
  if (c == 0x2f) return 63;
  return -1;
}

/** Encodes bytes [p, p+n) as base64 text. */
export function encodeBytes(p: usize, n: usize): string {
  let out = "";
  let i: usize = 0;
  for (; i + 3 <= n; i += 3) {
    let v = (<u32>load<u8>(p + i) << 16) | (<u32>load<u8>(p + i + 1) << 8) | <u32>load<u8>(p + i + 2);
    out += ALPHABET.charAt((v >> 18) & 63) + ALPHABET.charAt((v >> 12) & 63) + ALPHABET.charAt((v >> 6) & 63) + ALPHABET.charAt(v & 63);
  }
  let rest = n - i;
  if (rest == 1) {
    let v = <u32>load<u8>(p + i) << 16;
    out += ALPHABET.charAt((v >> 18) & 63) + ALPHABET.charAt((v >> 12) & 63) + "==";
  } else if (rest == 2) {
    let v = (<u32>load<u8>(p + i) << 16) | (<u32>load<u8>(p + i + 1) << 8);
    out += ALPHABET.charAt((v >> 18) & 63) + ALPHABET.charAt((v >> 12) & 63) + ALPHABET.charAt((v >> 6) & 63) + "=";
  }
  return out;
}

/** Encodes a string's UTF-8 bytes as base64. */
export function encode(s: string): string {
  let b = String.UTF8.encode(s);
  return encodeBytes(changetype<usize>(b), <usize>b.byteLength);
}

/** Decodes base64 text into bytes; null when it is not valid base64 (bad character, length or padding). */
export function decode(s: string): ArrayBuffer | null {
  let n = s.length;
  if (n % 4 != 0) return null;
  let pad = 0;
  if (n > 0 && s.charCodeAt(n - 1) == 0x3d) pad++;
  if (n > 1 && s.charCodeAt(n - 2) == 0x3d) pad++;
  let out = new ArrayBuffer(n / 4 * 3 - pad);
  let o = changetype<usize>(out);
  let k: usize = 0;
  for (let i = 0; i < n; i += 4) {
    let last = i + 4 == n;
    let a = sextet(s.charCodeAt(i)), b = sextet(s.charCodeAt(i + 1));
    let c3 = s.charCodeAt(i + 2), c4 = s.charCodeAt(i + 3);
    let c = last && pad >= 2 && c3 == 0x3d ? 0 : sextet(c3);
    let d = last && pad >= 1 && c4 == 0x3d ? 0 : sextet(c4);
    if (a < 0 || b < 0 || c < 0 || d < 0) return null;
    let v = (<u32>a << 18) | (<u32>b << 12) | (<u32>c << 6) | <u32>d;
    store<u8>(o + k, <u8>(v >> 16)); k++;
    if (!last || pad < 2) { store<u8>(o + k, <u8>(v >> 8)); k++; }
    if (!last || pad < 1) { store<u8>(o + k, <u8>v); k++; }
  }
  return out;
}

// Mesh identities: the verified SPIFFE ID of the peer (`spiffe://<trust-domain>/<path>`, in Istio
// `spiffe://<td>/ns/<namespace>/sa/<service-account>`), patterns over them, and the table key of a
// workload keyed by its identity.
//
// Envoy reports the first URI SAN of the downstream peer certificate as the property
// `connection.uri_san_peer_certificate` (absent on a plaintext connection or a certificate without a
// URI SAN). The listener's TLS context has validated that certificate against its trusted CA before
// any filter runs (Istio's inbound listeners always require and validate mesh certificates), so the
// value is as trustworthy as the mesh CA. Matching and hashing work on the raw bytes and allocate nothing.
//
// The value arrives in host.ts's scratch region, which the next header or property read overwrites, so
// it is copied into ID_BUF, a fixed static buffer of ID_MAX bytes, and is valid until the next
// readPeerIdentity (the request phase of one stream, which runs without interruption). A URI SAN longer
// than ID_MAX is no valid SPIFFE ID (the SPIFFE ID specification caps an ID at 2048 bytes; Istio's are a
// few hundred): it is not copied, sets idOversized, is never a trusted peer and matches no allow/deny
// pattern, and every such peer shares one table key (OVERSIZED_ID), so rotating such certificates cannot
// escape a limit. Nothing a peer presents can grow memory.

import { readProperty, valuePtr, bytes } from "./host";
import { sameBytes } from "./bytes";

const URI_SAN = bytes("connection\0uri_san_peer_certificate");
const SCHEME = "spiffe://";
const SCHEME_LEN: i32 = 9;

/** The longest SPIFFE ID the filter keeps (bytes); a longer one is oversized. */
export const ID_MAX: i32 = 2048;
/** The static buffer holding the last identity readPeerIdentity read (idLen bytes). */
export const ID_BUF: usize = memory.data(ID_MAX);
/** Length of the identity in ID_BUF; 0 when the peer has none (plaintext, non-SPIFFE SAN) or it is oversized. */
export let idLen: i32 = 0;
/** The peer presented a SPIFFE ID longer than ID_MAX (not copied; keyed as OVERSIZED_ID). */
export let idOversized: bool = false;

/** Reads the peer's verified SPIFFE ID (one host call) into ID_BUF/idLen, or sets idOversized. */
export function readPeerIdentity(): void {
  let n = readProperty(URI_SAN);
  idLen = 0;
  idOversized = false;
  // Only spiffe:// URIs are identities; any other URI SAN is no mesh identity.
  if (n <= SCHEME_LEN || !isSpiffe(valuePtr, <usize>n)) return;
  if (n > ID_MAX) {
    idOversized = true;
    return;
  }
  memory.copy(ID_BUF, valuePtr, <usize>n);
  idLen = n;
}

/**
 * Reads the peer's identity again (a connection property, available in every phase of the stream) and
 * returns it for a log line: the SPIFFE ID, OVERSIZED_NAME, or "" when the peer has none. Allocates;
 * only for the rare ban line.
 */
export function peerIdentityName(): string {
  let n = readProperty(URI_SAN);
  if (n <= SCHEME_LEN || !isSpiffe(valuePtr, <usize>n)) return "";
  if (n > ID_MAX) return OVERSIZED_NAME;
  return String.UTF8.decodeUnsafe(valuePtr, <usize>n);
}

/** What a ban line names for a peer whose SPIFFE ID is longer than ID_MAX. */
export const OVERSIZED_NAME = "spiffe-id-longer-than-2048-bytes";

function isSpiffe(p: usize, n: usize): bool {
  if (n <= <usize>SCHEME_LEN) return false;
  for (let i = 0; i < SCHEME_LEN; i++) {
    if (load<u8>(p + <usize>i) != <u8>SCHEME.charCodeAt(i)) return false;
  }
  return true;
}

// A trust domain character (SPIFFE: lowercase letters, digits, '.', '-', '_').
function tdChar(c: i32): bool {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c == 0x2e || c == 0x2d || c == 0x5f;
}

// A path segment character (SPIFFE: letters, digits, '.', '-', '_').
function pathChar(c: i32): bool {
  return tdChar(c) || (c >= 0x41 && c <= 0x5a);
}

/**
 * Checks a SPIFFE ID pattern: `spiffe://<trust-domain>/<segment>/...`, where any whole segment (the
 * trust domain included) may be `*`, matching exactly one non-empty segment. Returns "" when valid,
 * else what is wrong.
 */
export function spiffePatternProblem(s: string): string {
  if (!s.startsWith(SCHEME)) return "must start with \"spiffe://\"";
  if (s.length > 2048) return "must be at most 2048 characters";
  let parts = s.substring(SCHEME_LEN).split("/");
  if (parts.length < 2) return "needs a path after the trust domain, like spiffe://cluster.local/ns/<ns>/sa/<sa>";
  for (let i = 0; i < parts.length; i++) {
    let seg = parts[i];
    if (seg.length == 0) return "has an empty segment";
    if (seg == "*") continue;
    if (seg == "." || seg == "..") return "has a \".\" or \"..\" segment";
    for (let j = 0; j < seg.length; j++) {
      let c = seg.charCodeAt(j);
      if (c == 0x2a) return "uses '*' inside a segment (only a whole segment may be *)";
      if (i == 0 ? !tdChar(c) : !pathChar(c)) {
        return i == 0 ? "has a trust domain with characters other than a-z, 0-9, '.', '-', '_'"
          : "has a path segment with characters other than letters, digits, '.', '-', '_'";
      }
    }
  }
  return "";
}

/** Whether the identity bytes [s, s+sn) match the pattern bytes [p, p+pn) (a valid pattern, see above). */
export function spiffeMatch(p: usize, pn: usize, s: usize, sn: usize): bool {
  if (!isSpiffe(s, sn)) return false;
  let pi = <usize>SCHEME_LEN, si = <usize>SCHEME_LEN;
  while (true) {
    let pe = pi;
    while (pe < pn && load<u8>(p + pe) != 0x2f) pe++;
    let se = si;
    while (se < sn && load<u8>(s + se) != 0x2f) se++;
    if (pe - pi == 1 && load<u8>(p + pi) == 0x2a) {
      if (se == si) return false; // '*' needs a non-empty segment
    } else if (pe - pi != se - si || !sameBytes(p + pi, s + si, pe - pi)) {
      return false;
    }
    if (pe == pn || se == sn) return pe == pn && se == sn;
    pi = pe + 1;
    si = se + 1;
  }
}

/** Whether the identity bytes [s, s+sn) match any pattern in `patterns` (UTF-8 bytes each). */
export function anySpiffeMatch(patterns: ArrayBuffer[], s: usize, sn: usize): bool {
  if (sn == 0) return false;
  for (let i = 0, n = patterns.length; i < n; i++) {
    let pat = unchecked(patterns[i]);
    if (spiffeMatch(changetype<usize>(pat), <usize>pat.byteLength, s, sn)) return true;
  }
  return false;
}

/** High word of the last key computed by identityKey. */
export let keyHi: u64 = 0;
/** Low word of the last key computed by identityKey. */
export let keyLo: u64 = 0;

/**
 * The table key of a caller that has no usable address: the plaintext peer whose TCP address Envoy
 * replaced with an x-forwarded-for entry (reported with port 0). Every such caller shares this key.
 * Like every identity key it lies in ff00::/8 (multicast), which is never a client's source address.
 */
export const HIDDEN_PEER_HI: u64 = 0xff00000000000000;
/** Low word of the hidden-peer key. */
export const HIDDEN_PEER_LO: u64 = 0;
/** High word of the key every peer with an oversized SPIFFE ID shares (ff00::1, never a hash key). */
export const OVERSIZED_ID_HI: u64 = 0xff00000000000000;
/** Low word of the oversized-identity key. */
export const OVERSIZED_ID_LO: u64 = 1;

// The 64-bit finaliser of MurmurHash3.
// @ts-ignore: decorator
@inline
function fmix(h: u64): u64 {
  h ^= h >> 33; h *= 0xff51afd7ed558ccd;
  h ^= h >> 33; h *= 0xc4ceb9fe1a85ec53;
  h ^= h >> 33;
  return h;
}

/**
 * Hashes the SPIFFE ID bytes [p, p+n) into a 128-bit table key (keyHi/keyLo): two independently seeded 64-bit lanes,
 * with the top byte forced to 0xff so that no identity key can equal a client address (ff00::/8 is
 * multicast; the filter never accepts a multicast address as a client). 120 bits remain for the hash.
 */
export function identityKey(p: usize, n: usize): void {
  let a: u64 = 0xcbf29ce484222325;
  let b: u64 = 0x9e3779b97f4a7c15 ^ <u64>n;
  for (let i: usize = 0; i < n; i++) {
    let c = <u64>load<u8>(p + i);
    a = (a ^ c) * 0x100000001b3;
    b = (b ^ c) * 0xff51afd7ed558ccd;
    b ^= b >> 29;
  }
  let hi = fmix(a ^ (b << 1));
  let lo = fmix(b ^ (a >> 1) ^ 0xc4ceb9fe1a85ec53);
  hi = (hi & 0x00ffffffffffffff) | HIDDEN_PEER_HI;
  // The two fixed keys (hidden peer, oversized identity) are never a hash key.
  if (hi == HIDDEN_PEER_HI && lo <= OVERSIZED_ID_LO) lo = 2;
  keyHi = hi;
  keyLo = lo;
}

/** Whether a 128-bit key is an identity (or hidden-peer) key rather than a client address. */
// @ts-ignore: decorator
@inline
export function isIdentityKey(hi: u64): bool {
  return (hi >> 56) == 0xff;
}

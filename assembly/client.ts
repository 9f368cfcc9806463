// Decides which address a request is accounted to (`clientAddress`), then normalises it: IPv4-mapped
// IPv6 is IPv4 already (see address.ts), and the address is aggregated to prefixes.ipv4 / prefixes.ipv6.
//
// What each source trusts:
//  - peer: the TCP peer (`source.address`). Unforgeable, but behind a proxy it is the proxy.
//  - xff: the entry `trustedHops` places from the right of x-forwarded-for. Entries to its right were
//    appended by proxies you trust; everything to its left is whatever the client sent.
//  - header:<name>: one header set by a trusted proxy.
//  - auto: x-envoy-external-address (set by an Envoy edge such as Istio's ingress gateway), else the xff
//    rule, else peer. Only safe where every request came through a proxy that sets or strips that header.
// A header that is present but unusable falls back to the peer address and is counted.
//
// Trusted peers: an address header is believed only when the immediate peer is in
// clientAddress.trustedPeers: its verified mesh identity (identity.ts) matches a SPIFFE pattern, or, for a
// plaintext connection, its TCP address lies in one of the CIDRs. A header from any other peer is ignored
// (counted as untrusted unless it names the peer's own address, as an edge Envoy's own headers do), and
// the request is keyed on the caller itself:
//  - a caller with a verified mesh identity: by that identity (clientAddress.meshCallers "identity"),
//    by its address ("address") or not at all ("exempt");
//  - a plaintext caller: by `source.address`. With use_remote_address false (an Istio sidecar) Envoy
//    replaces source.address with the rightmost x-forwarded-for entry before any filter runs and
//    reports it with port 0; the TCP peer is then unknown to the filter, so every such caller shares one
//    key (HIDDEN_PEER in identity.ts) and no header it sends can move it.

import { Config, Source, MeshCallers, RULE_UA } from "./config";
import { parseAddress, parsedHi, parsedLo, isV4, maskHi, maskLo, V4_MARK, anyContains } from "./address";
import { requestHeader, readProperty, valuePtr, bytes } from "./host";
import {
  readPeerIdentity, idLen, idOversized, ID_BUF, anySpiffeMatch, identityKey, keyHi, keyLo,
  HIDDEN_PEER_HI, HIDDEN_PEER_LO, OVERSIZED_ID_HI, OVERSIZED_ID_LO,
} from "./identity";

const XFF = bytes("x-forwarded-for");
const EXTERNAL = bytes("x-envoy-external-address");
const SOURCE_ADDRESS = bytes("source\0address");

/** The resolved address came from the configured source (or its documented chain). */
export const RESOLVED: i32 = 0;
/** A header was present but unusable; the next source in the chain (ultimately the peer address) was used. */
export const FELL_BACK: i32 = 1;
/** Not even the peer address could be parsed; the request is not accounted. */
export const UNRESOLVED: i32 = 2;
/** A mesh caller under meshCallers "exempt": the request is not accounted. */
export const EXEMPT: i32 = 3;

/** The last resolveClient read a mesh identity (identity.ts: idLen bytes at ID_BUF, or idOversized). */
export let hasIdentity: bool = false;
/** The last resolved key is the caller's identity (or the hidden plaintext peer), not an address. */
export let byIdentity: bool = false;
/** The last resolveClient ignored an address header from an untrusted peer. */
export let untrusted: bool = false;

let identityRead = false;
let peerRead = false;
let peerOk = false;
let peerHidden = false;
let peerHi: u64 = 0;
let peerLo: u64 = 0;

/** High word of the resolved, aggregated client address. */
export let clientHi: u64 = 0;
/** Low word of the resolved, aggregated client address. */
export let clientLo: u64 = 0;

// Header and property values are read into the host module's scratch region (host.ts): nothing here
// allocates, and only the bytes of the chosen entry are parsed.
function parseValue(n: i32): bool {
  return n > 0 && parseAddress(valuePtr, <usize>n);
}

/** Picks the entry `hops` places from the right of the n x-forwarded-for bytes at p and parses it. */
export function parseXff(p: usize, n: i32, hops: i32): bool {
  let start = p;
  let end = start + <usize>n;
  let i = end;
  let seen = 0;
  while (true) {
    let entryEnd = i;
    while (i > start && load<u8>(i - 1) != 0x2c) i--;
    if (seen == hops) return parseAddress(i, entryEnd - i);
    if (i == start) return false; // fewer entries than trusted hops
    i--; // skip ','
    seen++;
  }
}

// Whether the n bytes at p, an address Envoy reported for the peer ("ip:port" or "[v6]:port"), carry
// port 0: Envoy took it from x-forwarded-for (use_remote_address false) instead of the TCP connection.
function hasPortZero(p: usize, n: usize): bool {
  if (n < 3 || load<u8>(p + n - 1) != 0x30 || load<u8>(p + n - 2) != 0x3a) return false;
  if (load<u8>(p + n - 3) == 0x5d) return true; // "[v6]:0"
  for (let i: usize = 0; i < n - 2; i++) if (load<u8>(p + i) == 0x3a) return false; // bare IPv6
  return true;
}

// Reads and parses source.address once per request.
function readPeer(): void {
  if (peerRead) return;
  peerRead = true;
  let n = readProperty(SOURCE_ADDRESS);
  peerOk = parseValue(n);
  peerHidden = peerOk && hasPortZero(valuePtr, <usize>n);
  peerHi = parsedHi;
  peerLo = parsedLo;
}

// Reads the peer's identity once per request (copied out of the scratch region, see identity.ts).
function readIdentity(): void {
  if (identityRead) return;
  identityRead = true;
  readPeerIdentity();
  hasIdentity = idLen > 0 || idOversized;
}

// A multicast address (ff00::/8) is never a client; identity keys live there (identity.ts).
// @ts-ignore: decorator
@inline
function isClientAddress(hi: u64): bool {
  return (hi >> 56) != 0xff;
}

/** Whether the immediate peer is in clientAddress.trustedPeers (reads its identity, and for plaintext its address). */
export function peerTrusted(cfg: Config): bool {
  readIdentity();
  // An oversized identity is no valid SPIFFE ID (identity.ts) and matches no pattern: never trusted.
  if (hasIdentity) return anySpiffeMatch(cfg.trustedPeerIds, ID_BUF, <usize>idLen);
  if (cfg.trustedPeerCidrs.length == 0) return false;
  readPeer();
  return peerOk && !peerHidden && anyContains(cfg.trustedPeerCidrs, peerHi, peerLo);
}

// Keys the request on the caller itself (no address header believed).
function own(cfg: Config, status: i32): i32 {
  if (cfg.meshCallers != MeshCallers.Address || cfg.allowIds.length > 0 || cfg.denyIds.length > 0) readIdentity();
  if (hasIdentity) {
    if (cfg.meshCallers == MeshCallers.Exempt) return EXEMPT;
    if (cfg.meshCallers == MeshCallers.Identity) {
      if (idOversized) {
        clientHi = OVERSIZED_ID_HI;
        clientLo = OVERSIZED_ID_LO;
      } else {
        identityKey(ID_BUF, <usize>idLen);
        clientHi = keyHi;
        clientLo = keyLo;
      }
      byIdentity = true;
      return status;
    }
  }
  readPeer();
  if (!peerOk || !isClientAddress(peerHi)) return UNRESOLVED;
  if (peerHidden && !hasIdentity) {
    clientHi = HIDDEN_PEER_HI;
    clientLo = HIDDEN_PEER_LO;
    byIdentity = true;
    return status;
  }
  aggregate(peerHi, peerLo, cfg.prefixV4, cfg.prefixV6);
  return status;
}

/**
 * Resolves the client key into clientHi/clientLo (an aggregated address, or an identity key when
 * byIdentity); returns RESOLVED, FELL_BACK, UNRESOLVED or EXEMPT. Sets `untrusted` when an address
 * header was ignored because the peer is not trusted.
 */
export function resolveClient(cfg: Config): i32 {
  hasIdentity = false;
  identityRead = false;
  peerRead = false;
  byIdentity = false;
  untrusted = false;
  let status = RESOLVED;
  let ok = false;
  let present = false;
  let src = cfg.source;
  if (src == Source.Header) {
    let v = requestHeader(cfg.headerName);
    present = v > 0;
    ok = parseValue(v);
    if (!ok) status = FELL_BACK;
  } else if (src == Source.Auto || src == Source.Xff) {
    if (src == Source.Auto) {
      let ext = requestHeader(EXTERNAL);
      if (ext > 0) {
        present = true;
        ok = parseValue(ext);
        if (!ok) status = FELL_BACK;
      }
    }
    if (!ok) {
      let xff = requestHeader(XFF);
      if (xff > 0) {
        present = true;
        ok = parseXff(valuePtr, xff, cfg.trustedHops);
        if (!ok) status = FELL_BACK;
      } else if (src == Source.Xff) {
        status = FELL_BACK;
      }
    }
  }
  ok = ok && isClientAddress(parsedHi);
  if (present) {
    let hi = parsedHi, lo = parsedLo;
    if (peerTrusted(cfg)) {
      if (ok) {
        aggregate(hi, lo, cfg.prefixV4, cfg.prefixV6);
        return status;
      }
      if (status == RESOLVED) status = FELL_BACK;
    } else {
      // An edge Envoy's own headers name the TCP peer itself: nothing was ignored.
      untrusted = true;
      if (ok && !hasIdentity) {
        readPeer();
        untrusted = !(peerOk && !peerHidden && hi == peerHi && lo == peerLo);
      }
      status = RESOLVED;
    }
  }
  return own(cfg, status);
}

/** Masks an address to its aggregation prefix and stores it in clientHi/clientLo. */
export function aggregate(hi: u64, lo: u64, prefixV4: i32, prefixV6: i32): void {
  if (isV4(hi, lo)) {
    clientHi = 0;
    clientLo = V4_MARK | (lo & maskLo(96 + prefixV4) & 0xffffffff);
  } else {
    clientHi = hi & maskHi(prefixV6);
    clientLo = lo & maskLo(prefixV6);
  }
}

/**
 * How many request headers a request may read under `cfg` (skipPaths, the client-address source, the
 * userAgent rule, the custom rules' matchers): from two on, the filter reads the header map whole
 * (host.ts beginRequest).
 */
export function requestHeaderReads(cfg: Config): i32 {
  let n = cfg.skipPaths.length > 0 ? 1 : 0;
  if (cfg.source == Source.Auto) n += 2;
  else if (cfg.source == Source.Xff || cfg.source == Source.Header) n += 1;
  if (cfg.rules[RULE_UA].enabled || cfg.meshRules[RULE_UA].enabled) n += 1;
  return n + cfg.custom.plan.requestReads();
}

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

import { Config, Source } from "./config";
import { parseAddress, parsedHi, parsedLo, isV4, maskHi, maskLo, V4_MARK } from "./address";
import { readHeader, readProperty, valuePtr, bytes, REQUEST_HEADERS } from "./host";

const XFF = bytes("x-forwarded-for");
const EXTERNAL = bytes("x-envoy-external-address");
const SOURCE_ADDRESS = bytes("source\0address");

/** The resolved address came from the configured source (or its documented chain). */
export const RESOLVED: i32 = 0;
/** A header was present but unusable; the next source in the chain (ultimately the peer address) was used. */
export const FELL_BACK: i32 = 1;
/** Not even the peer address could be parsed; the request is not accounted. */
export const UNRESOLVED: i32 = 2;

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

function peer(): bool {
  return parseValue(readProperty(SOURCE_ADDRESS));
}

/** Resolves and aggregates the client address into clientHi/clientLo; returns RESOLVED, FELL_BACK or UNRESOLVED. */
export function resolveClient(cfg: Config): i32 {
  let status = RESOLVED;
  let ok = false;
  let src = cfg.source;
  if (src == Source.Header) {
    ok = parseValue(readHeader(REQUEST_HEADERS, cfg.headerName));
    if (!ok) status = FELL_BACK;
  } else if (src == Source.Auto || src == Source.Xff) {
    if (src == Source.Auto) {
      let ext = readHeader(REQUEST_HEADERS, EXTERNAL);
      if (ext > 0) {
        ok = parseValue(ext);
        if (!ok) status = FELL_BACK;
      }
    }
    if (!ok) {
      let xff = readHeader(REQUEST_HEADERS, XFF);
      if (xff > 0) {
        ok = parseXff(valuePtr, xff, cfg.trustedHops);
        if (!ok) status = FELL_BACK;
      } else if (src == Source.Xff) {
        status = FELL_BACK;
      }
    }
  }
  if (!ok) {
    ok = peer();
    if (!ok) return UNRESOLVED;
  }
  aggregate(parsedHi, parsedLo, cfg.prefixV4, cfg.prefixV6);
  return status;
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

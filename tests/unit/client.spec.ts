// Which address a request is accounted to (assembly/client.ts): x-forwarded-for hop selection,
// resolveClient in every clientAddress mode against the host mock, statuses, and aggregation.

import { parseXff, resolveClient, aggregate, clientHi, clientLo, RESOLVED, FELL_BACK, UNRESOLVED, EXEMPT, untrusted, byIdentity } from "../../assembly/client";
import { identityKey, keyHi, keyLo, HIDDEN_PEER_HI, OVERSIZED_ID_HI, OVERSIZED_ID_LO, ID_MAX } from "../../assembly/identity";
import { parsedHi, parsedLo, formatAddress, parseIp } from "../../assembly/address";
import { parseConfig, Config } from "../../assembly/config";
import * as mock from "./mock";

function cfgOf(text: string): Config {
  let r = parseConfig(text);
  expect(r.errors.join("; ")).toBe("");
  return changetype<Config>(r.config);
}

// cfgOf with the test peer's network (192.0.2.0/24) in clientAddress.trustedPeers, so its headers are believed.
function trustedCfg(text: string): Config {
  const TRUST = "\"trustedPeers\":[\"192.0.2.0/24\"]";
  if (text.includes("\"clientAddress\":{")) return cfgOf(text.replace("\"clientAddress\":{", "\"clientAddress\":{" + TRUST + ","));
  return cfgOf("{\"clientAddress\":{" + TRUST + "}" + (text == "{}" ? "}" : "," + text.substring(1)));
}

// The entry `hops` places from the right of an XFF value, rendered, or "invalid".
function xff(value: string, hops: i32): string {
  let b = String.UTF8.encode(value);
  return parseXff(changetype<usize>(b), b.byteLength, hops) ? formatAddress(parsedHi, parsedLo) : "invalid";
}

// Resolves with the current mock headers/properties; returns "<status> <address>".
function resolve(cfg: Config): string {
  let s = resolveClient(cfg);
  let name = s == RESOLVED ? "RESOLVED" : s == FELL_BACK ? "FELL_BACK" : s == UNRESOLVED ? "UNRESOLVED" : s == EXEMPT ? "EXEMPT" : "status " + s.toString();
  if (s == UNRESOLVED || s == EXEMPT) return name;
  if (byIdentity) {
    if (clientHi == HIDDEN_PEER_HI && clientLo == 0) return name + " hidden-peer";
    if (clientHi == OVERSIZED_ID_HI && clientLo == OVERSIZED_ID_LO) return name + " oversized-identity";
    return name + " identity:" + clientHi.toString(16) + clientLo.toString(16);
  }
  return name + " " + formatAddress(clientHi, clientLo);
}

const PEER = "192.0.2.50:41000";

function setup(peer: string, xffValue: string, external: string): void {
  mock.reset();
  if (peer.length > 0) mock.setProperty("source.address", peer);
  if (xffValue.length > 0) mock.setHeader(mock.REQUEST, "x-forwarded-for", xffValue);
  if (external.length > 0) mock.setHeader(mock.REQUEST, "x-envoy-external-address", external);
}

// Aggregates an address and renders the result.
function agg(a: string, v4: i32, v6: i32): string {
  let b = String.UTF8.encode(a);
  expect(parseIp(changetype<usize>(b), b.byteLength)).toBe(true, a);
  aggregate(parsedHi, parsedLo, v4, v6);
  return formatAddress(clientHi, clientLo);
}

describe("x-forwarded-for hop selection", () => {
  it("takes the rightmost entry with trustedHops 0", () => {
    expect(xff("198.51.100.1", 0)).toBe("198.51.100.1");
    expect(xff("198.51.100.1, 10.0.0.1", 0)).toBe("10.0.0.1");
  });

  it("skips one trusted proxy with trustedHops 1 and two with 2", () => {
    expect(xff("203.0.113.9, 198.51.100.1, 10.0.0.1", 1)).toBe("198.51.100.1");
    expect(xff("203.0.113.9, 198.51.100.1, 10.0.0.1", 2)).toBe("203.0.113.9");
  });

  it("fails when there are fewer entries than trusted hops", () => {
    expect(xff("198.51.100.1", 1)).toBe("invalid");
    expect(xff("198.51.100.1, 10.0.0.1", 2)).toBe("invalid");
    expect(xff("", 0)).toBe("invalid");
  });

  it("ignores spaces and tabs around entries, with or without them after commas", () => {
    expect(xff("1.1.1.1,2.2.2.2", 1)).toBe("1.1.1.1");
    expect(xff("  1.1.1.1 ,\t2.2.2.2  ", 1)).toBe("1.1.1.1");
    expect(xff("  1.1.1.1 ,\t2.2.2.2  ", 0)).toBe("2.2.2.2");
  });

  it("treats an empty entry as unusable rather than skipping it", () => {
    expect(xff("1.1.1.1,,2.2.2.2", 1)).toBe("invalid");
    expect(xff("1.1.1.1,", 0)).toBe("invalid");
    expect(xff("1.1.1.1, ", 0)).toBe("invalid");
    expect(xff(",1.1.1.1", 1)).toBe("invalid");
    expect(xff("1.1.1.1,,2.2.2.2", 2)).toBe("1.1.1.1");
  });

  it("accepts entries with ports and bracketed IPv6", () => {
    expect(xff("198.51.100.1:5555, 10.0.0.1", 1)).toBe("198.51.100.1");
    expect(xff("[2001:db8::7]:443, 10.0.0.1", 1)).toBe("2001:db8::7");
    expect(xff("2001:db8::7", 0)).toBe("2001:db8::7");
  });

  it("does not look left of the selected entry when it is garbage", () => {
    expect(xff("1.1.1.1, garbage", 0)).toBe("invalid");
    expect(xff("garbage, 1.1.1.1", 0)).toBe("1.1.1.1");
  });

  it("copes with a long hostile list", () => {
    let v = "1.1.1.1," + "x,".repeat(20000) + "2.2.2.2";
    expect(xff(v, 0)).toBe("2.2.2.2");
    expect(xff(v, 16)).toBe("invalid");
  });
});

describe("resolveClient: peer", () => {
  it("uses source.address and ignores forwarding headers", () => {
    setup(PEER, "1.2.3.4", "5.6.7.8");
    expect(resolve(cfgOf("{\"clientAddress\":{\"source\":\"peer\"}}"))).toBe("RESOLVED 192.0.2.50");
  });

  it("parses a bracketed IPv6 peer with a port", () => {
    setup("[2001:db8:1:2:3:4:5:6]:443", "", "");
    expect(resolve(cfgOf("{\"clientAddress\":{\"source\":\"peer\"},\"prefixes\":{\"ipv6\":128}}"))).toBe("RESOLVED 2001:db8:1:2:3:4:5:6");
  });

  it("is UNRESOLVED when the peer address is missing or unparsable", () => {
    setup("", "", "");
    expect(resolve(cfgOf("{\"clientAddress\":{\"source\":\"peer\"}}"))).toBe("UNRESOLVED");
    setup("envoy://internal_client_address/", "", "");
    expect(resolve(cfgOf("{\"clientAddress\":{\"source\":\"peer\"}}"))).toBe("UNRESOLVED");
  });
});

describe("resolveClient: xff", () => {
  it("uses the entry trustedHops from the right", () => {
    setup(PEER, "203.0.113.9, 198.51.100.1", "");
    expect(resolve(trustedCfg("{\"clientAddress\":{\"source\":\"xff\"}}"))).toBe("RESOLVED 198.51.100.1");
    expect(resolve(trustedCfg("{\"clientAddress\":{\"source\":\"xff\",\"trustedHops\":1}}"))).toBe("RESOLVED 203.0.113.9");
  });

  it("ignores x-envoy-external-address", () => {
    setup(PEER, "198.51.100.1", "5.6.7.8");
    expect(resolve(trustedCfg("{\"clientAddress\":{\"source\":\"xff\"}}"))).toBe("RESOLVED 198.51.100.1");
  });

  it("falls back to the peer when the header is missing, garbage or too short", () => {
    let cfg = trustedCfg("{\"clientAddress\":{\"source\":\"xff\",\"trustedHops\":1}}");
    setup(PEER, "", "");
    expect(resolve(cfg)).toBe("FELL_BACK 192.0.2.50");
    setup(PEER, "garbage, 10.0.0.1", "");
    expect(resolve(cfg)).toBe("FELL_BACK 192.0.2.50");
    setup(PEER, "198.51.100.1", "");
    expect(resolve(cfg)).toBe("FELL_BACK 192.0.2.50");
  });

  it("is UNRESOLVED when it falls back and the peer is unusable too", () => {
    setup("", "garbage", "");
    expect(resolve(trustedCfg("{\"clientAddress\":{\"source\":\"xff\"}}"))).toBe("UNRESOLVED");
  });
});

describe("resolveClient: header:<name>", () => {
  it("uses the named header, matched case-insensitively by the host", () => {
    setup(PEER, "1.2.3.4", "5.6.7.8");
    mock.setHeader(mock.REQUEST, "X-Real-IP", "198.51.100.77");
    expect(resolve(trustedCfg("{\"clientAddress\":{\"source\":\"header:X-Real-IP\"}}"))).toBe("RESOLVED 198.51.100.77");
  });

  it("falls back to the peer when the header is missing, empty or garbage", () => {
    let cfg = trustedCfg("{\"clientAddress\":{\"source\":\"header:x-real-ip\"}}");
    setup(PEER, "1.2.3.4", "");
    expect(resolve(cfg)).toBe("FELL_BACK 192.0.2.50");
    setup(PEER, "", "");
    mock.setHeader(mock.REQUEST, "x-real-ip", "");
    expect(resolve(cfg)).toBe("FELL_BACK 192.0.2.50");
    setup(PEER, "", "");
    mock.setHeader(mock.REQUEST, "x-real-ip", "198.51.100.77, 10.0.0.1");
    expect(resolve(cfg)).toBe("FELL_BACK 192.0.2.50", "a list is not an address");
  });
});

describe("resolveClient: auto", () => {
  it("prefers x-envoy-external-address", () => {
    setup(PEER, "198.51.100.2", "198.51.100.1");
    expect(resolve(trustedCfg("{}"))).toBe("RESOLVED 198.51.100.1");
  });

  it("uses the XFF rule when x-envoy-external-address is absent", () => {
    setup(PEER, "203.0.113.9, 198.51.100.2", "");
    expect(resolve(trustedCfg("{}"))).toBe("RESOLVED 198.51.100.2");
    expect(resolve(trustedCfg("{\"clientAddress\":{\"trustedHops\":1}}"))).toBe("RESOLVED 203.0.113.9");
  });

  it("uses the peer without counting a fallback when no forwarding header is present", () => {
    setup(PEER, "", "");
    expect(resolve(trustedCfg("{}"))).toBe("RESOLVED 192.0.2.50");
  });

  it("never uses a garbage x-envoy-external-address and reports the fallback", () => {
    setup(PEER, "", "999.9.9.9");
    expect(resolve(trustedCfg("{}"))).toBe("FELL_BACK 192.0.2.50");
  });

  it("continues with the XFF rule after a garbage x-envoy-external-address, still reporting the fallback", () => {
    setup(PEER, "198.51.100.2", "not an address");
    expect(resolve(trustedCfg("{}"))).toBe("FELL_BACK 198.51.100.2");
  });

  it("falls back to the peer when XFF is garbage", () => {
    setup(PEER, "garbage", "");
    expect(resolve(trustedCfg("{}"))).toBe("FELL_BACK 192.0.2.50");
  });

  it("is UNRESOLVED with nothing usable at all", () => {
    setup("", "", "");
    expect(resolve(trustedCfg("{}"))).toBe("UNRESOLVED");
    setup("", "garbage", "garbage");
    expect(resolve(trustedCfg("{}"))).toBe("UNRESOLVED");
  });
});

describe("resolveClient: normalisation", () => {
  it("turns an IPv4-mapped header value into IPv4 and aggregates it with prefixes.ipv4", () => {
    setup(PEER, "", "::ffff:203.0.113.77");
    expect(resolve(trustedCfg("{\"prefixes\":{\"ipv4\":24}}"))).toBe("RESOLVED 203.0.113.0");
  });

  it("aggregates IPv6 clients to prefixes.ipv6 (64 by default)", () => {
    setup("[2001:db8:1:2:3:4:5:6]:443", "", "");
    expect(resolve(trustedCfg("{}"))).toBe("RESOLVED 2001:db8:1:2::");
    expect(resolve(trustedCfg("{\"prefixes\":{\"ipv6\":48}}"))).toBe("RESOLVED 2001:db8:1::");
  });
});

describe("aggregate", () => {
  it("keeps full-length prefixes unchanged", () => {
    expect(agg("203.0.113.77", 32, 128)).toBe("203.0.113.77");
    expect(agg("2001:db8:1:2:3:4:5:6", 32, 128)).toBe("2001:db8:1:2:3:4:5:6");
  });

  it("aggregates IPv4 to /24 and /8 and stays IPv4", () => {
    expect(agg("203.0.113.77", 24, 64)).toBe("203.0.113.0");
    expect(agg("203.0.113.77", 8, 64)).toBe("203.0.0.0");
    expect(agg("203.0.113.77", 31, 64)).toBe("203.0.113.76");
  });

  it("aggregates IPv6 to /64, /48 and /16", () => {
    expect(agg("2001:db8:1:2:3:4:5:6", 32, 64)).toBe("2001:db8:1:2::");
    expect(agg("2001:db8:1:2:3:4:5:6", 32, 48)).toBe("2001:db8:1::");
    expect(agg("2001:db8:1:2:3:4:5:6", 32, 16)).toBe("2001::");
    expect(agg("2001:db8:1:2:ffff:4:5:6", 32, 65)).toBe("2001:db8:1:2:8000::");
  });

  it("never applies the IPv6 prefix to an IPv4 client", () => {
    expect(agg("10.1.2.3", 32, 16)).toBe("10.1.2.3");
  });
});

const GATEWAY_ID = "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account";
const CRAWLER_ID = "spiffe://cluster.local/ns/shop/sa/crawler";

function key(id: string): string {
  let b = String.UTF8.encode(id);
  identityKey(changetype<usize>(b), <usize>b.byteLength);
  return "identity:" + keyHi.toString(16) + keyLo.toString(16);
}

describe("resolveClient: trusted peers", () => {
  it("believes x-envoy-external-address from the default trusted peer, Istio's ingress gateway identity", () => {
    setup("127.0.0.1:0", "198.51.100.1", "198.51.100.1");
    mock.setProperty("connection.uri_san_peer_certificate", GATEWAY_ID);
    expect(resolve(cfgOf("{}"))).toBe("RESOLVED 198.51.100.1");
    expect(untrusted).toBe(false);
  });

  it("keys a mesh caller on its identity and ignores (and flags) the address headers it sends", () => {
    setup("10.1.2.3:0", "198.51.100.9", "198.51.100.9");
    mock.setProperty("connection.uri_san_peer_certificate", CRAWLER_ID);
    expect(resolve(cfgOf("{}"))).toBe("RESOLVED " + key(CRAWLER_ID));
    expect(untrusted).toBe(true);
    expect(byIdentity).toBe(true);
  });

  it("keys a mesh caller on its identity, not its pod address, without any header", () => {
    setup("10.1.2.3:45000", "", "");
    mock.setProperty("connection.uri_san_peer_certificate", CRAWLER_ID);
    expect(resolve(cfgOf("{}"))).toBe("RESOLVED " + key(CRAWLER_ID));
    expect(untrusted).toBe(false);
  });

  it("keys a mesh caller on its address with meshCallers address, and skips it with exempt", () => {
    setup("10.1.2.3:45000", "", "");
    mock.setProperty("connection.uri_san_peer_certificate", CRAWLER_ID);
    expect(resolve(cfgOf("{\"clientAddress\":{\"meshCallers\":\"address\"}}"))).toBe("RESOLVED 10.1.2.3");
    expect(resolve(cfgOf("{\"clientAddress\":{\"meshCallers\":\"exempt\"}}"))).toBe("EXEMPT");
  });

  it("believes headers from a plaintext peer only when its TCP address is in a trustedPeers CIDR", () => {
    setup("192.0.2.50:41000", "198.51.100.2", "");
    expect(resolve(cfgOf("{\"clientAddress\":{\"trustedPeers\":[\"192.0.2.0/24\"]}}"))).toBe("RESOLVED 198.51.100.2");
    expect(resolve(cfgOf("{\"clientAddress\":{\"trustedPeers\":[\"10.0.0.0/8\"]}}"))).toBe("RESOLVED 192.0.2.50");
    expect(untrusted).toBe(true);
  });

  it("does not flag headers that name the plaintext peer itself (an edge Envoy's own x-envoy-external-address and XFF)", () => {
    setup("192.0.2.50:41000", "203.0.113.1, 192.0.2.50", "192.0.2.50");
    expect(resolve(cfgOf("{}"))).toBe("RESOLVED 192.0.2.50");
    expect(untrusted).toBe(false);
  });

  it("keys every plaintext caller whose address Envoy took from x-forwarded-for (port 0) on one hidden-peer key", () => {
    setup("198.51.100.7:0", "198.51.100.7", "");
    expect(resolve(cfgOf("{\"clientAddress\":{\"trustedPeers\":[\"0.0.0.0/0\"]}}"))).toBe("RESOLVED hidden-peer");
    expect(untrusted).toBe(true);
    setup("[2001:db8::7]:0", "2001:db8::7", "");
    expect(resolve(cfgOf("{}"))).toBe("RESOLVED hidden-peer");
  });

  it("never accepts a multicast address (the identity key space) from a trusted header", () => {
    setup("192.0.2.50:41000", "ff00::1", "");
    expect(resolve(trustedCfg("{}"))).toBe("FELL_BACK 192.0.2.50");
  });

  it("matches trustedPeers SPIFFE patterns with '*' for one whole segment", () => {
    let cfg = cfgOf("{\"clientAddress\":{\"trustedPeers\":[\"spiffe://cluster.local/ns/*/sa/edge\"]}}");
    setup("10.0.0.9:0", "198.51.100.3", "");
    mock.setProperty("connection.uri_san_peer_certificate", "spiffe://cluster.local/ns/gw/sa/edge");
    expect(resolve(cfg)).toBe("RESOLVED 198.51.100.3");
    mock.setProperty("connection.uri_san_peer_certificate", "spiffe://cluster.local/ns/gw/x/sa/edge");
    expect(resolve(cfg)).toBe("RESOLVED " + key("spiffe://cluster.local/ns/gw/x/sa/edge"));
    mock.setProperty("connection.uri_san_peer_certificate", GATEWAY_ID);
    expect(resolve(cfg)).toBe("RESOLVED " + key(GATEWAY_ID), "replacing the default drops Istio's gateway");
  });

  it("keys a SPIFFE ID longer than 2048 bytes on one shared key, never trusted, and keeps one of exactly 2048 bytes", () => {
    let cfg = cfgOf("{\"clientAddress\":{\"trustedPeers\":[\"spiffe://cluster.local/ns/*/sa/*\"]}}");
    let prefix = "spiffe://cluster.local/ns/gw/sa/";
    let fits = prefix + "a".repeat(ID_MAX - prefix.length);
    setup("10.0.0.9:0", "198.51.100.3", "");
    mock.setProperty("connection.uri_san_peer_certificate", fits);
    expect(resolve(cfg)).toBe("RESOLVED 198.51.100.3");
    mock.setProperty("connection.uri_san_peer_certificate", fits + "a");
    expect(resolve(cfg)).toBe("RESOLVED oversized-identity");
    expect(untrusted).toBe(true);
    mock.setProperty("connection.uri_san_peer_certificate", fits + "b".repeat(60000));
    expect(resolve(cfg)).toBe("RESOLVED oversized-identity");
    expect(resolve(cfgOf("{\"clientAddress\":{\"meshCallers\":\"exempt\"}}"))).toBe("EXEMPT");
  });
});

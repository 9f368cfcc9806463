// Which address a request is accounted to (assembly/client.ts): x-forwarded-for hop selection,
// resolveClient in every clientAddress mode against the host mock, statuses, and aggregation.

import { parseXff, resolveClient, aggregate, clientHi, clientLo, RESOLVED, FELL_BACK, UNRESOLVED } from "../../assembly/client";
import { parsedHi, parsedLo, formatAddress, parseIp } from "../../assembly/address";
import { parseConfig, Config } from "../../assembly/config";
import * as mock from "./mock";

function cfgOf(text: string): Config {
  let r = parseConfig(text);
  expect(r.errors.join("; ")).toBe("");
  return changetype<Config>(r.config);
}

// The entry `hops` places from the right of an XFF value, rendered, or "invalid".
function xff(value: string, hops: i32): string {
  let b = String.UTF8.encode(value);
  return parseXff(changetype<usize>(b), b.byteLength, hops) ? formatAddress(parsedHi, parsedLo) : "invalid";
}

// Resolves with the current mock headers/properties; returns "<status> <address>".
function resolve(cfg: Config): string {
  let s = resolveClient(cfg);
  let name = s == RESOLVED ? "RESOLVED" : s == FELL_BACK ? "FELL_BACK" : s == UNRESOLVED ? "UNRESOLVED" : "status " + s.toString();
  return s == UNRESOLVED ? name : name + " " + formatAddress(clientHi, clientLo);
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
    expect(resolve(cfgOf("{\"clientAddress\":{\"source\":\"xff\"}}"))).toBe("RESOLVED 198.51.100.1");
    expect(resolve(cfgOf("{\"clientAddress\":{\"source\":\"xff\",\"trustedHops\":1}}"))).toBe("RESOLVED 203.0.113.9");
  });

  it("ignores x-envoy-external-address", () => {
    setup(PEER, "198.51.100.1", "5.6.7.8");
    expect(resolve(cfgOf("{\"clientAddress\":{\"source\":\"xff\"}}"))).toBe("RESOLVED 198.51.100.1");
  });

  it("falls back to the peer when the header is missing, garbage or too short", () => {
    let cfg = cfgOf("{\"clientAddress\":{\"source\":\"xff\",\"trustedHops\":1}}");
    setup(PEER, "", "");
    expect(resolve(cfg)).toBe("FELL_BACK 192.0.2.50");
    setup(PEER, "garbage, 10.0.0.1", "");
    expect(resolve(cfg)).toBe("FELL_BACK 192.0.2.50");
    setup(PEER, "198.51.100.1", "");
    expect(resolve(cfg)).toBe("FELL_BACK 192.0.2.50");
  });

  it("is UNRESOLVED when it falls back and the peer is unusable too", () => {
    setup("", "garbage", "");
    expect(resolve(cfgOf("{\"clientAddress\":{\"source\":\"xff\"}}"))).toBe("UNRESOLVED");
  });
});

describe("resolveClient: header:<name>", () => {
  it("uses the named header, matched case-insensitively by the host", () => {
    setup(PEER, "1.2.3.4", "5.6.7.8");
    mock.setHeader(mock.REQUEST, "X-Real-IP", "198.51.100.77");
    expect(resolve(cfgOf("{\"clientAddress\":{\"source\":\"header:X-Real-IP\"}}"))).toBe("RESOLVED 198.51.100.77");
  });

  it("falls back to the peer when the header is missing, empty or garbage", () => {
    let cfg = cfgOf("{\"clientAddress\":{\"source\":\"header:x-real-ip\"}}");
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
    expect(resolve(cfgOf("{}"))).toBe("RESOLVED 198.51.100.1");
  });

  it("uses the XFF rule when x-envoy-external-address is absent", () => {
    setup(PEER, "203.0.113.9, 198.51.100.2", "");
    expect(resolve(cfgOf("{}"))).toBe("RESOLVED 198.51.100.2");
    expect(resolve(cfgOf("{\"clientAddress\":{\"trustedHops\":1}}"))).toBe("RESOLVED 203.0.113.9");
  });

  it("uses the peer without counting a fallback when no forwarding header is present", () => {
    setup(PEER, "", "");
    expect(resolve(cfgOf("{}"))).toBe("RESOLVED 192.0.2.50");
  });

  it("never uses a garbage x-envoy-external-address and reports the fallback", () => {
    setup(PEER, "", "999.9.9.9");
    expect(resolve(cfgOf("{}"))).toBe("FELL_BACK 192.0.2.50");
  });

  it("continues with the XFF rule after a garbage x-envoy-external-address, still reporting the fallback", () => {
    setup(PEER, "198.51.100.2", "not an address");
    expect(resolve(cfgOf("{}"))).toBe("FELL_BACK 198.51.100.2");
  });

  it("falls back to the peer when XFF is garbage", () => {
    setup(PEER, "garbage", "");
    expect(resolve(cfgOf("{}"))).toBe("FELL_BACK 192.0.2.50");
  });

  it("is UNRESOLVED with nothing usable at all", () => {
    setup("", "", "");
    expect(resolve(cfgOf("{}"))).toBe("UNRESOLVED");
    setup("", "garbage", "garbage");
    expect(resolve(cfgOf("{}"))).toBe("UNRESOLVED");
  });
});

describe("resolveClient: normalisation", () => {
  it("turns an IPv4-mapped header value into IPv4 and aggregates it with prefixes.ipv4", () => {
    setup(PEER, "", "::ffff:203.0.113.77");
    expect(resolve(cfgOf("{\"prefixes\":{\"ipv4\":24}}"))).toBe("RESOLVED 203.0.113.0");
  });

  it("aggregates IPv6 clients to prefixes.ipv6 (64 by default)", () => {
    setup("[2001:db8:1:2:3:4:5:6]:443", "", "");
    expect(resolve(cfgOf("{}"))).toBe("RESOLVED 2001:db8:1:2::");
    expect(resolve(cfgOf("{\"prefixes\":{\"ipv6\":48}}"))).toBe("RESOLVED 2001:db8:1::");
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

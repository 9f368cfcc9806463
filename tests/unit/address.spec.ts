// Client addresses as 128-bit values (assembly/address.ts): IPv4/IPv6 parsing from raw bytes, including
// hostile input, ports and brackets, IPv4-mapped IPv6 = IPv4, CIDRs, masks and log formatting.

import {
  parseAddress, parseIp, parsedHi, parsedLo, parseCidr, Cidr, anyContains, maskHi, maskLo, formatAddress, isV4, V4_MARK,
} from "../../assembly/address";

// parseAddress over the UTF-8 bytes of `s`.
function addr(s: string): bool {
  let b = String.UTF8.encode(s);
  return parseAddress(changetype<usize>(b), <usize>b.byteLength);
}

// parseIp over the UTF-8 bytes of `s`.
function ip(s: string): bool {
  let b = String.UTF8.encode(s);
  return parseIp(changetype<usize>(b), <usize>b.byteLength);
}

// Parses with parseAddress and renders the result, or "invalid".
function show(s: string): string {
  return addr(s) ? formatAddress(parsedHi, parsedLo) : "invalid";
}

// Parses a bare IP and renders it, or "invalid".
function showIp(s: string): string {
  return ip(s) ? formatAddress(parsedHi, parsedLo) : "invalid";
}

function cidr(s: string): Cidr {
  let c = parseCidr(s);
  expect(c).not.toBeNull("CIDR " + s + " must parse");
  return c === null ? new Cidr() : c;
}

// Whether CIDR `net` contains address `a`.
function inNet(net: string, a: string): bool {
  let c = cidr(net); // parsing the CIDR overwrites parsedHi/parsedLo, so it goes first
  expect(ip(a)).toBe(true, a + " must parse");
  let hi = parsedHi, lo = parsedLo;
  return c.contains(hi, lo);
}

describe("IPv4 parsing", () => {
  it("parses dotted quads into the IPv4-mapped form", () => {
    expect(ip("203.0.113.7")).toBe(true);
    expect(parsedHi).toBe(0);
    expect(parsedLo).toBe(0x0000ffffcb007107);
    expect(isV4(parsedHi, parsedLo)).toBe(true);
    expect(showIp("0.0.0.0")).toBe("0.0.0.0");
    expect(showIp("255.255.255.255")).toBe("255.255.255.255");
  });

  it("rejects octets over 255, missing or extra octets, and empty octets", () => {
    expect(ip("999.1.1.1")).toBe(false);
    expect(ip("256.0.0.0")).toBe(false);
    expect(ip("1.2.3.256")).toBe(false);
    expect(ip("1.2.3")).toBe(false);
    expect(ip("1.2.3.4.5")).toBe(false);
    expect(ip("1..2.3")).toBe(false);
    expect(ip("1.2.3.4.")).toBe(false);
    expect(ip(".1.2.3.4")).toBe(false);
    expect(ip("1.2.3.")).toBe(false);
  });

  it("rejects leading zeros, which inet_aton would read as octal", () => {
    expect(ip("01.2.3.4")).toBe(false);
    expect(ip("1.2.3.04")).toBe(false);
    expect(ip("1.2.3.0004")).toBe(false);
    expect(ip("0.0.0.0")).toBe(true);
  });

  it("rejects signs, letters, spaces and other junk", () => {
    expect(ip("+1.2.3.4")).toBe(false);
    expect(ip("1.2.3.-4")).toBe(false);
    expect(ip("1.2.3.a")).toBe(false);
    expect(ip("1.2.3.4 ")).toBe(false, "parseIp does not trim; parseAddress does");
    expect(ip("1. 2.3.4")).toBe(false);
    expect(ip("1.2.3.4\0")).toBe(false);
    expect(ip("0x7f.0.0.1")).toBe(false);
    expect(ip("2130706433")).toBe(false, "a bare 32-bit integer is not accepted");
  });

  it("rejects the empty string", () => {
    expect(ip("")).toBe(false);
    expect(addr("")).toBe(false);
    expect(addr("   ")).toBe(false);
  });
});

describe("IPv6 parsing", () => {
  it("parses full and compressed forms", () => {
    expect(showIp("2001:db8:0:0:0:0:0:1")).toBe("2001:db8::1");
    expect(ip("2001:0db8:0000:0000:0000:0000:0000:0001")).toBe(true);
    expect(parsedHi).toBe(0x20010db800000000);
    expect(parsedLo).toBe(0x0000000000000001);
    expect(showIp("::")).toBe("::");
    expect(showIp("::1")).toBe("::1");
    expect(showIp("1::")).toBe("1::");
    expect(showIp("1:2:3:4:5:6:7:8")).toBe("1:2:3:4:5:6:7:8");
    expect(showIp("1:2:3:4:5:6:7::")).toBe("1:2:3:4:5:6:7:0");
    expect(showIp("::2:3:4:5:6:7:8")).toBe("0:2:3:4:5:6:7:8");
    expect(showIp("FE80::ABCD")).toBe("fe80::abcd");
  });

  it("parses a dotted-quad tail", () => {
    expect(ip("64:ff9c::192.0.2.33")).toBe(true);
    expect(parsedHi).toBe(0x0064ff9c00000000);
    expect(parsedLo).toBe(0x00000000c0000221);
    expect(ip("1:2:3:4:5:6:1.2.3.4")).toBe(true);
    expect(parsedLo).toBe(0x0005000601020304);
  });

  it("reads an address of the NAT64 well-known prefix 64:ff9b::/96 as the IPv4 address it embeds", () => {
    expect(ip("64:ff9b::192.0.2.33")).toBe(true);
    expect(parsedHi).toBe(0);
    expect(parsedLo).toBe(V4_MARK | 0xc0000221);
    expect(ip("64:ff9b::c000:221")).toBe(true);
    expect(parsedLo).toBe(V4_MARK | 0xc0000221);
    expect(formatAddress(parsedHi, parsedLo)).toBe("192.0.2.33");
    // Outside the /96 (a non-zero word 2) it stays IPv6.
    expect(ip("64:ff9b::1:c000:221")).toBe(true);
    expect(parsedHi).toBe(0x0064ff9b00000000);
  });

  it("reads an IPv4-mapped IPv6 address as the same value as the IPv4 address", () => {
    expect(ip("::ffff:203.0.113.7")).toBe(true);
    let hi = parsedHi, lo = parsedLo;
    expect(ip("203.0.113.7")).toBe(true);
    expect(parsedHi).toBe(hi);
    expect(parsedLo).toBe(lo);
    expect(ip("::ffff:cb00:7107")).toBe(true);
    expect(parsedLo).toBe(lo);
    expect(ip("0:0:0:0:0:FFFF:203.0.113.7")).toBe(true);
    expect(parsedLo).toBe(lo);
    expect(showIp("::ffff:203.0.113.7")).toBe("203.0.113.7");
  });

  it("does not treat the deprecated IPv4-compatible form as IPv4", () => {
    expect(ip("::1.2.3.4")).toBe(true);
    expect(isV4(parsedHi, parsedLo)).toBe(false);
    expect(formatAddress(parsedHi, parsedLo)).toBe("::102:304");
  });

  it("parses the longest textual form (45 characters)", () => {
    expect(showIp("0000:0000:0000:0000:0000:ffff:255.255.255.255")).toBe("255.255.255.255");
  });

  it("rejects hostile and malformed IPv6 strings", () => {
    let bad = [
      "::ffff:", ":::", "1::2::3", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7", ":1::", "1:", ":", "1::2:", "12345::",
      "g::", "::1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8::", "fe80::1%eth0", "[::1]", "::ffff:01.2.3.4", "::ffff:1.2.3",
      "1:2:3:4:5:6:7:1.2.3.4", "::1.2.3.4:5", "1.2.3.4::", "::ffff:256.1.1.1", "0000:0000:0000:0000:0000:ffff:255.255.255.2555",
      ":: ", " ::", "::-1",
    ];
    let accepted: string[] = [];
    for (let i = 0; i < bad.length; i++) if (ip(bad[i])) accepted.push(bad[i]);
    expect(accepted.join(" | ")).toBe("");
  });
});

describe("client addresses with ports, brackets and spaces", () => {
  it("parses IPv4 with a port", () => {
    expect(show("1.2.3.4:80")).toBe("1.2.3.4");
    expect(show("1.2.3.4:0")).toBe("1.2.3.4");
    expect(show("1.2.3.4:65535")).toBe("1.2.3.4");
  });

  it("rejects ports above 65535, empty ports and non-numeric ports", () => {
    expect(addr("1.2.3.4:65536")).toBe(false);
    expect(addr("1.2.3.4:99999")).toBe(false);
    expect(addr("1.2.3.4:123456")).toBe(false);
    expect(addr("1.2.3.4:")).toBe(false);
    expect(addr("1.2.3.4:http")).toBe(false);
    expect(addr("1.2.3.4:-1")).toBe(false);
    expect(addr("1.2.3.4: 80")).toBe(false);
    expect(addr("1.2.3.4:80:90")).toBe(false);
    expect(addr(":80")).toBe(false);
  });

  it("parses bracketed IPv6 with and without a port", () => {
    expect(show("[::1]:80")).toBe("::1");
    expect(show("[::1]")).toBe("::1");
    expect(show("[2001:db8::1]:65535")).toBe("2001:db8::1");
    expect(show("[::ffff:1.2.3.4]:443")).toBe("1.2.3.4");
    expect(show("2001:db8::1")).toBe("2001:db8::1");
  });

  it("rejects broken brackets and bracketed IPv4", () => {
    expect(addr("[::1")).toBe(false);
    expect(addr("[::1]:")).toBe(false);
    expect(addr("[::1]:65536")).toBe(false);
    expect(addr("[::1]80")).toBe(false);
    expect(addr("[::1]x")).toBe(false);
    expect(addr("::1]")).toBe(false);
    expect(addr("[]")).toBe(false);
    expect(addr("[1.2.3.4]")).toBe(false);
    expect(addr("[[::1]]")).toBe(false);
  });

  it("ignores surrounding spaces and tabs but not inner ones", () => {
    expect(show("  203.0.113.7\t")).toBe("203.0.113.7");
    expect(show("\t[::1]:80 ")).toBe("::1");
    expect(addr("1.2.3.4 :80")).toBe(false);
    expect(addr("2001:db8:: 1")).toBe(false);
    expect(addr("\n1.2.3.4")).toBe(false, "only spaces and tabs are trimmed");
  });

  it("survives huge strings without accepting them", () => {
    expect(addr("1".repeat(100000))).toBe(false);
    expect(addr(":".repeat(100000))).toBe(false);
    expect(addr("[" + "1:".repeat(50000) + "]:80")).toBe(false);
    expect(addr("1.2.3.4:" + "8".repeat(100000))).toBe(false);
    expect(addr(" ".repeat(100000) + "1.2.3.4" + " ".repeat(100000))).toBe(true);
  });

  it("rejects addresses that are not UTF-8 text at all", () => {
    let b = new ArrayBuffer(8);
    for (let i = 0; i < 8; i++) store<u8>(changetype<usize>(b) + i, <u8>(0xf8 + i));
    expect(parseAddress(changetype<usize>(b), 8)).toBe(false);
    expect(parseAddress(changetype<usize>(b), 0)).toBe(false);
  });

  it("leaves the previous result alone when parsing fails", () => {
    expect(ip("10.1.2.3")).toBe(true);
    expect(addr("nope")).toBe(false);
    expect(formatAddress(parsedHi, parsedLo)).toBe("10.1.2.3");
  });
});

describe("masks", () => {
  it("builds the high and low words of a prefix mask", () => {
    expect(maskHi(0)).toBe(0);
    expect(maskHi(-5)).toBe(0);
    expect(maskHi(1)).toBe(0x8000000000000000);
    expect(maskHi(48)).toBe(0xffffffffffff0000);
    expect(maskHi(64)).toBe(0xffffffffffffffff);
    expect(maskHi(128)).toBe(0xffffffffffffffff);
    expect(maskLo(64)).toBe(0);
    expect(maskLo(65)).toBe(0x8000000000000000);
    expect(maskLo(96)).toBe(0xffffffff00000000);
    expect(maskLo(120)).toBe(0xffffffffffffff00);
    expect(maskLo(128)).toBe(0xffffffffffffffff);
    expect(maskLo(200)).toBe(0xffffffffffffffff);
  });
});

describe("CIDRs", () => {
  it("matches addresses inside an IPv4 network and not outside", () => {
    expect(inNet("10.0.0.0/8", "10.255.1.2")).toBe(true);
    expect(inNet("10.0.0.0/8", "10.0.0.0")).toBe(true);
    expect(inNet("10.0.0.0/8", "11.0.0.0")).toBe(false);
    expect(inNet("10.0.0.0/8", "9.255.255.255")).toBe(false);
    expect(inNet("192.168.1.0/24", "192.168.1.255")).toBe(true);
    expect(inNet("192.168.1.0/24", "192.168.2.0")).toBe(false);
  });

  it("masks host bits so 10.1.2.3/8 is 10.0.0.0/8", () => {
    let a = cidr("10.1.2.3/8"), b = cidr("10.0.0.0/8");
    expect(a.hi).toBe(b.hi);
    expect(a.lo).toBe(b.lo);
    expect(a.mlo).toBe(b.mlo);
    expect(inNet("10.1.2.3/8", "10.200.0.1")).toBe(true);
    expect(inNet("2001:db8::ffff/32", "2001:db8:1::1")).toBe(true);
  });

  it("treats a bare address as a single host", () => {
    expect(inNet("192.168.1.1", "192.168.1.1")).toBe(true);
    expect(inNet("192.168.1.1", "192.168.1.2")).toBe(false);
    expect(inNet("::1", "::1")).toBe(true);
    expect(inNet("::1", "::2")).toBe(false);
    expect(inNet("1.2.3.4/32", "1.2.3.4")).toBe(true);
  });

  it("never matches a non-mapped IPv6 address with an IPv4 network, even /0", () => {
    expect(inNet("0.0.0.0/0", "1.2.3.4")).toBe(true);
    expect(inNet("0.0.0.0/0", "255.255.255.255")).toBe(true);
    expect(inNet("0.0.0.0/0", "::1")).toBe(false);
    expect(inNet("0.0.0.0/0", "2001:db8::1")).toBe(false);
    expect(inNet("0.0.0.0/0", "::")).toBe(false);
    expect(inNet("1.2.3.0/24", "::1.2.3.4")).toBe(false, "IPv4-compatible is not IPv4-mapped");
    expect(inNet("1.2.3.0/24", "::ffff:1.2.3.4")).toBe(true, "IPv4-mapped is IPv4");
  });

  it("matches everything with ::/0, IPv4 included", () => {
    expect(inNet("::/0", "1.2.3.4")).toBe(true);
    expect(inNet("::/0", "2001:db8::1")).toBe(true);
    expect(inNet("::/0", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")).toBe(true);
  });

  it("matches IPv6 networks across the 64-bit word boundary", () => {
    expect(inNet("fd00::/8", "fdff::1")).toBe(true);
    expect(inNet("fd00::/8", "fe00::1")).toBe(false);
    expect(inNet("2001:db8:1:2:8000::/65", "2001:db8:1:2:ffff::1")).toBe(true);
    expect(inNet("2001:db8:1:2:8000::/65", "2001:db8:1:2:7fff::1")).toBe(false);
  });

  it("reads a prefix written in IPv6 notation as an IPv6 prefix, also for IPv4-mapped networks", () => {
    // ::ffff:0:0/96 is the whole IPv4-mapped range; ::ffff:10.0.0.0/104 is 10.0.0.0/8 (RFC 4291 2.5.5.2).
    expect(inNet("::ffff:0:0/96", "8.8.8.8")).toBe(true);
    expect(inNet("::ffff:0:0/96", "2001:db8::1")).toBe(false);
    expect(inNet("::ffff:10.0.0.0/104", "10.20.30.40")).toBe(true);
    expect(inNet("::ffff:10.0.0.0/104", "11.0.0.1")).toBe(false);
  });

  it("rejects prefixes too long for the family, empty or non-numeric prefixes, and bad addresses", () => {
    let bad = ["10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/abc", "10.0.0.0/-1", "/8", "10.0.0.0/8/9", "10.0.0.0/0008",
      "nope", "", "10.0.0/8", " 10.0.0.0/8", "10.0.0.0/ 8", "[::1]/128", "1.2.3.4:80/32"];
    let accepted: string[] = [];
    for (let i = 0; i < bad.length; i++) if (parseCidr(bad[i]) !== null) accepted.push(bad[i]);
    expect(accepted.join(" | ")).toBe("");
  });

  it("finds an address in any network of a list", () => {
    let list: Cidr[] = [cidr("10.0.0.0/8"), cidr("fd00::/8")];
    expect(ip("fd12::1")).toBe(true);
    expect(anyContains(list, parsedHi, parsedLo)).toBe(true);
    expect(ip("10.9.9.9")).toBe(true);
    expect(anyContains(list, parsedHi, parsedLo)).toBe(true);
    expect(ip("172.16.0.1")).toBe(true);
    expect(anyContains(list, parsedHi, parsedLo)).toBe(false);
    expect(anyContains([], parsedHi, parsedLo)).toBe(false);
  });
});

describe("formatAddress", () => {
  it("prints IPv4 in dotted-quad form", () => {
    expect(formatAddress(0, V4_MARK | 0xcb007107)).toBe("203.0.113.7");
    expect(formatAddress(0, V4_MARK)).toBe("0.0.0.0");
  });

  it("compresses the longest run of zero groups", () => {
    expect(formatAddress(0, 0)).toBe("::");
    expect(formatAddress(0, 1)).toBe("::1");
    expect(formatAddress(0x20010db800000000, 1)).toBe("2001:db8::1");
    expect(formatAddress(0x0001000000000001, 0)).toBe("1:0:0:1::");
    expect(formatAddress(0x20010db800010002, 0)).toBe("2001:db8:1:2::");
    expect(showIp("1:0:0:2:0:0:0:3")).toBe("1:0:0:2::3");
  });

  it("compresses the first of two equally long zero runs", () => {
    expect(showIp("1:0:0:2:3:0:0:4")).toBe("1::2:3:0:0:4");
  });

  it("prints ::ffff:0:1 as the IPv4 address it maps", () => {
    expect(showIp("::ffff:0:1")).toBe("0.0.0.1");
  });

  it("does not compress a single zero group", () => {
    expect(showIp("1:0:2:3:4:5:6:7")).toBe("1:0:2:3:4:5:6:7");
    expect(showIp("0:1:2:3:4:5:6:7")).toBe("0:1:2:3:4:5:6:7");
  });

  it("prints hex groups in lowercase without leading zeros", () => {
    expect(showIp("2001:0DB8:00AB:000C::")).toBe("2001:db8:ab:c::");
    expect(formatAddress(0xffffffffffffffff, 0xffffffffffffffff)).toBe("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
  });

  it("round-trips parse and format for canonical addresses", () => {
    let samples = ["::", "::1", "1::", "2001:db8::1", "1:0:0:1::", "fe80::1:2", "2001:db8:1:2::", "1:2:3:4:5:6:7:8",
      "10.0.0.1", "255.255.255.255", "::fffe:0:1", "64:ff9c::c000:221"];
    let wrong: string[] = [];
    for (let i = 0; i < samples.length; i++) {
      let s = showIp(samples[i]);
      if (s != samples[i]) wrong.push(samples[i] + " -> " + s);
    }
    expect(wrong.join(", ")).toBe("");
  });
});

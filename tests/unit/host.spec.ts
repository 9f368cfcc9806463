// Host calls on the request path (assembly/host.ts) against the proxy-wasm host mock: values come back
// through the module's malloc into one reused scratch region, missing values have length 0, the clock,
// and that neither header size nor request count grows the memory.

import { readHeader, readProperty, findPair, pickPairs, pickedHeader, HeaderNames, PICK_MAX, valuePtr, hostBytes, resetHostBytes, scratchCapacity, malloc, nowMs, bytes, REQUEST_HEADERS, RESPONSE_HEADERS } from "../../assembly/host";
import * as mock from "./mock";

function text(n: i32): string { return String.UTF8.decodeUnsafe(valuePtr, <usize>n); }

describe("readHeader", () => {
  beforeEach(() => { mock.reset(); });

  it("returns a request header's value bytes through the module's malloc", () => {
    mock.setHeader(mock.REQUEST, "x-forwarded-for", "203.0.113.7, 10.0.0.1");
    let before = mock.mallocCount();
    expect(text(readHeader(REQUEST_HEADERS, bytes("x-forwarded-for")))).toBe("203.0.113.7, 10.0.0.1");
    expect(mock.mallocCount()).toBe(before + 1);
  });

  it("reads the response header map separately from the request map", () => {
    mock.setHeader(mock.RESPONSE, ":status", "404");
    mock.setHeader(mock.REQUEST, ":status", "999");
    expect(text(readHeader(RESPONSE_HEADERS, bytes(":status")))).toBe("404");
    expect(text(readHeader(REQUEST_HEADERS, bytes(":status")))).toBe("999");
  });

  it("returns length 0 for a missing header without any allocation by the host", () => {
    let before = mock.mallocCount();
    expect(readHeader(REQUEST_HEADERS, bytes("user-agent"))).toBe(0);
    expect(mock.mallocCount()).toBe(before);
  });

  it("returns length 0 for a header with an empty value", () => {
    mock.setHeader(mock.REQUEST, "user-agent", "");
    expect(readHeader(REQUEST_HEADERS, bytes("user-agent"))).toBe(0);
  });

  it("passes raw bytes through unchanged, including bytes that are not UTF-8", () => {
    let raw = new ArrayBuffer(4);
    store<u32>(changetype<usize>(raw), 0x00ff80fe);
    mock.setHeaderBytes(mock.REQUEST, "x-raw", raw);
    expect(readHeader(REQUEST_HEADERS, bytes("x-raw"))).toBe(4);
    expect(load<u32>(valuePtr)).toBe(0x00ff80fe);
  });

  it("reuses one scratch region for every value, so a value is valid until the next read", () => {
    mock.setHeader(mock.REQUEST, "a", "first");
    mock.setHeader(mock.REQUEST, "b", "second value");
    let a = readHeader(REQUEST_HEADERS, bytes("a"));
    let pa = valuePtr;
    expect(text(a)).toBe("first");
    let b = readHeader(REQUEST_HEADERS, bytes("b"));
    expect(valuePtr).toBe(pa);
    expect(text(b)).toBe("second value");
  });

  it("does not count header values as garbage, and a malloc outside a read is a managed buffer that is counted", () => {
    mock.setHeader(mock.REQUEST, "x-big", "v".repeat(50000));
    resetHostBytes();
    expect(readHeader(REQUEST_HEADERS, bytes("x-big"))).toBe(50000);
    expect(hostBytes).toBe(0);
    expect(scratchCapacity()).toBeGreaterThanOrEqual(50000);
    let p = malloc(100);
    expect(hostBytes).toBe(100);
    expect(changetype<ArrayBuffer>(p).byteLength).toBe(100);
    __unpin(p);
  });
});

describe("readProperty", () => {
  beforeEach(() => { mock.reset(); });

  it("reads a property by its NUL-separated path", () => {
    mock.setProperty("source.address", "192.0.2.50:41000");
    expect(text(readProperty(bytes("source\0address")))).toBe("192.0.2.50:41000");
  });

  it("returns length 0 for a missing property", () => {
    expect(readProperty(bytes("source\0address"))).toBe(0);
    mock.setProperty("source.address", "192.0.2.50:41000");
    expect(readProperty(bytes("source.address"))).toBe(0, "a dotted path is not the property");
  });
});

describe("nowMs", () => {
  beforeEach(() => { mock.reset(); });

  it("converts the host's nanoseconds to whole milliseconds, rounding down", () => {
    mock.setTimeNs(1_700_000_000_123_999_999);
    expect(nowMs()).toBe(1_700_000_000_123);
    mock.setTimeNs(999_999);
    expect(nowMs()).toBe(0);
    mock.setTimeMs(42);
    expect(nowMs()).toBe(42);
  });
});

describe("byte helpers", () => {
  it("encodes strings as UTF-8", () => {
    expect(bytes("x-forwarded-for").byteLength).toBe(15);
    expect(bytes("ž").byteLength).toBe(2);
  });
});

describe("memory", () => {
  beforeEach(() => { mock.reset(); });

  it("keeps memory flat over many large header and property reads, without any collection", () => {
    // 20000 x 60 KiB = 1.2 GB if each value were a fresh allocation.
    mock.setHeader(mock.REQUEST, "x-big", "v".repeat(60000));
    mock.setProperty("source.address", "192.0.2.50:41000");
    let name = bytes("x-big"), path = bytes("source\0address");
    readHeader(REQUEST_HEADERS, name);
    let before = memory.size();
    let total: i64 = 0;
    for (let i = 0; i < 20000; i++) {
      total += readHeader(REQUEST_HEADERS, name);
      total += readProperty(path);
    }
    expect(total).toBe(20000 * (60000 + 16));
    expect(memory.size() - before).toBe(0, "pages grown (64 KiB each)");
  });
});

// Builds proxy-wasm pairs bytes: a u32 count, the (name length, value length) pairs, then each name and
// value followed by a NUL.
function pairs(kv: string[]): ArrayBuffer {
  let count = kv.length / 2;
  let size = 4 + count * 8;
  for (let i = 0; i < kv.length; i++) size += String.UTF8.byteLength(kv[i]) + 1;
  let buf = new ArrayBuffer(size);
  let p = changetype<usize>(buf);
  store<u32>(p, count);
  let data = p + 4 + <usize>count * 8;
  for (let i = 0; i < count; i++) {
    let name = String.UTF8.encode(kv[2 * i]);
    let value = String.UTF8.encode(kv[2 * i + 1]);
    store<u32>(p + 4 + <usize>i * 8, name.byteLength);
    store<u32>(p + 8 + <usize>i * 8, value.byteLength);
    memory.copy(data, changetype<usize>(name), name.byteLength);
    data += name.byteLength + 1;
    memory.copy(data, changetype<usize>(value), value.byteLength);
    data += value.byteLength + 1;
  }
  return buf;
}

// findPair's answer, checked to be pickPairs' too (the request path's one pass for a configuration's
// names), with the name among others of its length and of other lengths.
function lookup(p: usize, n: i32, name: ArrayBuffer): i32 {
  let len = findPair(p, n, name);
  let at = valuePtr;
  let other = new ArrayBuffer(name.byteLength);
  memory.fill(changetype<usize>(other), 0x78, <usize>other.byteLength);
  let names = new HeaderNames([bytes(":method"), other, name, bytes("cookie")]); // held: pickedHeader reads it
  pickPairs(p, n, names);
  expect(pickedHeader(2)).toBe(len, "the pass's length");
  expect(valuePtr).toBe(at, "the pass's value");
  return len;
}

describe("findPair", () => {
  it("finds a header in a pairs block, and the first of two with one name, as a single read would", () => {
    let b = pairs([":method", "GET", ":path", "/a?b", "cookie", "a=1", "cookie", "b=2"]);
    let p = changetype<usize>(b);
    expect(text(lookup(p, b.byteLength, bytes(":path")))).toBe("/a?b");
    expect(text(lookup(p, b.byteLength, bytes("cookie")))).toBe("a=1");
    expect(text(lookup(p, b.byteLength, bytes(":method")))).toBe("GET");
  });

  it("reads an absent header, an empty value and a name that is only a prefix as length 0", () => {
    let b = pairs(["x-empty", "", "user-agent", "curl"]);
    let p = changetype<usize>(b);
    expect(lookup(p, b.byteLength, bytes("cookie"))).toBe(0);
    expect(lookup(p, b.byteLength, bytes("x-empty"))).toBe(0);
    expect(lookup(p, b.byteLength, bytes("user"))).toBe(0);
  });

  it("reads every header as absent from a truncated or lying block instead of reading past it", () => {
    let b = pairs(["user-agent", "curl/8", "accept", "*/*"]);
    let p = changetype<usize>(b);
    for (let n = 0; n < b.byteLength; n++) expect(lookup(p, n, bytes("accept"))).toBe(0, "truncated to " + n.toString());
    store<u32>(p, 0x7fffffff); // a count the block cannot hold
    expect(lookup(p, b.byteLength, bytes("user-agent"))).toBe(0);
    store<u32>(p, 2);
    store<u32>(p + 8, 0xfffffff0); // a value length past the end
    expect(lookup(p, b.byteLength, bytes("user-agent"))).toBe(0);
    store<u32>(p + 8, 0xffffffff); // a value length that wraps around in 32 bits (+2 for the NULs)
    expect(lookup(p, b.byteLength, bytes("user-agent"))).toBe(0);
    store<u32>(p + 8, 6);
    store<u32>(p + 4, 0xfffffffe); // a name length that wraps around
    expect(lookup(p, b.byteLength, bytes("accept"))).toBe(0);
  });

  it("finds headers past 32 pairs, and a name of a length shared modulo 32", () => {
    let list: string[] = [];
    for (let i = 0; i < 40; i++) {
      list.push("x-h" + i.toString());
      list.push("v" + i.toString());
    }
    list.push("x-" + "a".repeat(38));
    list.push("long");
    let b = pairs(list);
    let p = changetype<usize>(b);
    expect(text(lookup(p, b.byteLength, bytes("x-h0")))).toBe("v0");
    expect(text(lookup(p, b.byteLength, bytes("x-h39")))).toBe("v39");
    expect(text(lookup(p, b.byteLength, bytes("x-" + "a".repeat(38))))).toBe("long");
    let small = pairs(["x-" + "a".repeat(38), "long", "x-aaaaaa", "short"]); // name lengths 40 and 8
    let q = changetype<usize>(small);
    expect(text(lookup(q, small.byteLength, bytes("x-aaaaaa")))).toBe("short");
    expect(text(lookup(q, small.byteLength, bytes("x-" + "a".repeat(38))))).toBe("long");
    expect(lookup(q, small.byteLength, bytes("x-bbbbbb"))).toBe(0);
  });

  it("forgets the previous request's headers when a new map is picked", () => {
    let first = pairs(["cookie", "a=1"]);
    expect(text(lookup(changetype<usize>(first), first.byteLength, bytes("cookie")))).toBe("a=1");
    let second = pairs(["accept", "*/*"]);
    expect(lookup(changetype<usize>(second), second.byteLength, bytes("cookie"))).toBe(0);
  });
});

describe("pickPairs", () => {
  it("picks every name of a list in one pass, the first value of a repeated one, and none of an absent one", () => {
    let b = pairs([":method", "GET", "cookie", "a=1", ":path", "/", "cookie", "b=2", "accept", "*/*"]);
    pickPairs(changetype<usize>(b), b.byteLength, new HeaderNames([bytes("accept"), bytes("x-probe"), bytes("cookie"), bytes(":path")]));
    expect(text(pickedHeader(0))).toBe("*/*");
    expect(pickedHeader(1)).toBe(0);
    expect(valuePtr).toBe(0);
    expect(text(pickedHeader(2))).toBe("a=1");
    expect(text(pickedHeader(3))).toBe("/");
  });

  it("finds the names past its first 32 by walking the map", () => {
    let list: string[] = [];
    let names: ArrayBuffer[] = [];
    for (let i = 0; i < 40; i++) {
      list.push("x-h" + i.toString());
      list.push("v" + i.toString());
      names.push(bytes("x-h" + (39 - i).toString()));
    }
    let b = pairs(list);
    let set = new HeaderNames(names); // held: pickedHeader reads it
    pickPairs(changetype<usize>(b), b.byteLength, set);
    for (let i = 0; i < 40; i++) expect(text(pickedHeader(i))).toBe("v" + (39 - i).toString(), "name " + i.toString());
    expect(PICK_MAX).toBeLessThan(40);
  });
});

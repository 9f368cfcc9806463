// Host calls on the request path (assembly/host.ts) against the proxy-wasm host mock: values come back
// through the module's malloc, missing values are empty buffers, the clock, and that every buffer the
// host allocated is handed back to the GC (no pinned leak per request).

import { header, property, nowMs, bytes, startsWith, REQUEST_HEADERS, RESPONSE_HEADERS } from "../../assembly/host";
import * as mock from "./mock";

function text(b: ArrayBuffer): string { return String.UTF8.decode(b); }

describe("header", () => {
  beforeEach(() => { mock.reset(); });

  it("returns a request header's value bytes through the module's malloc", () => {
    mock.setHeader(mock.REQUEST, "x-forwarded-for", "203.0.113.7, 10.0.0.1");
    let before = mock.mallocCount();
    expect(text(header(REQUEST_HEADERS, bytes("x-forwarded-for")))).toBe("203.0.113.7, 10.0.0.1");
    expect(mock.mallocCount()).toBe(before + 1);
  });

  it("reads the response header map separately from the request map", () => {
    mock.setHeader(mock.RESPONSE, ":status", "404");
    mock.setHeader(mock.REQUEST, ":status", "999");
    expect(text(header(RESPONSE_HEADERS, bytes(":status")))).toBe("404");
    expect(text(header(REQUEST_HEADERS, bytes(":status")))).toBe("999");
  });

  it("returns an empty buffer for a missing header without any allocation by the host", () => {
    let before = mock.mallocCount();
    expect(header(REQUEST_HEADERS, bytes("user-agent")).byteLength).toBe(0);
    expect(mock.mallocCount()).toBe(before);
  });

  it("returns an empty buffer for a header with an empty value", () => {
    mock.setHeader(mock.REQUEST, "user-agent", "");
    expect(header(REQUEST_HEADERS, bytes("user-agent")).byteLength).toBe(0);
  });

  it("passes raw bytes through unchanged, including bytes that are not UTF-8", () => {
    let raw = new ArrayBuffer(4);
    store<u32>(changetype<usize>(raw), 0x00ff80fe);
    mock.setHeaderBytes(mock.REQUEST, "x-raw", raw);
    let got = header(REQUEST_HEADERS, bytes("x-raw"));
    expect(got.byteLength).toBe(4);
    expect(load<u32>(changetype<usize>(got))).toBe(0x00ff80fe);
  });

  it("does not mix up a value returned earlier with a later one", () => {
    mock.setHeader(mock.REQUEST, "a", "first");
    mock.setHeader(mock.REQUEST, "b", "second value");
    let a = header(REQUEST_HEADERS, bytes("a"));
    let b = header(REQUEST_HEADERS, bytes("b"));
    expect(text(a)).toBe("first");
    expect(text(b)).toBe("second value");
  });
});

describe("property", () => {
  beforeEach(() => { mock.reset(); });

  it("reads a property by its NUL-separated path", () => {
    mock.setProperty("source.address", "192.0.2.50:41000");
    expect(text(property(bytes("source\0address")))).toBe("192.0.2.50:41000");
  });

  it("returns an empty buffer for a missing property", () => {
    expect(property(bytes("source\0address")).byteLength).toBe(0);
    mock.setProperty("source.address", "192.0.2.50:41000");
    expect(property(bytes("source.address")).byteLength).toBe(0, "a dotted path is not the property");
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

  it("tests byte prefixes", () => {
    expect(startsWith(bytes("/healthz/live"), bytes("/healthz"))).toBe(true);
    expect(startsWith(bytes("/healthz"), bytes("/healthz"))).toBe(true);
    expect(startsWith(bytes("/health"), bytes("/healthz"))).toBe(false);
    expect(startsWith(bytes("/Healthz"), bytes("/healthz"))).toBe(false);
    expect(startsWith(bytes("/x"), new ArrayBuffer(0))).toBe(true);
    expect(startsWith(new ArrayBuffer(0), bytes("/"))).toBe(false);
  });
});

describe("memory", () => {
  beforeEach(() => { mock.reset(); });

  it("releases every buffer the host allocated, so memory stays flat over many requests", () => {
    // 20000 x 4 KiB = 80 MiB if malloc's pin were never released.
    mock.setHeader(mock.REQUEST, "x-big", "v".repeat(4096));
    mock.setProperty("source.address", "192.0.2.50:41000");
    let name = bytes("x-big"), path = bytes("source\0address");
    for (let i = 0; i < 500; i++) { header(REQUEST_HEADERS, name); property(path); }
    __collect();
    let before = memory.size();
    let total: i64 = 0;
    for (let i = 0; i < 20000; i++) {
      total += header(REQUEST_HEADERS, name).byteLength;
      total += property(path).byteLength;
    }
    __collect();
    expect(total).toBe(20000 * (4096 + 16));
    expect(memory.size() - before).toBeLessThan(64, "pages grown (64 KiB each)");
  });
});

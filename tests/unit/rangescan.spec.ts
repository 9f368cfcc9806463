// The range-answer reader (assembly/rangescan.ts): the fields it reports, spans of escaped strings
// refused, nested look-alikes ignored, and any malformed body rejected without reading past its end.

import * as scan from "../../assembly/rangescan";

class Collect extends scan.KvSink {
  base: usize = 0;
  out: string[] = [];
  span(s: i32, e: i32): string {
    return s < 0 ? "-" : String.UTF8.decodeUnsafe(this.base + <usize>s, <usize>(e - s));
  }
  kv(isObject: bool, ks: i32, ke: i32, ms: i32, me: i32, vs: i32, ve: i32): void {
    this.out.push(isObject ? this.span(ks, ke) + "|" + this.span(ms, me) + "|" + this.span(vs, ve) : "non-object");
  }
}

let sink = new Collect();
let buf = new ArrayBuffer(0);

function run(text: string): bool {
  buf = String.UTF8.encode(text);
  sink = new Collect();
  sink.base = changetype<usize>(buf);
  return scan.scan(changetype<usize>(buf), buf.byteLength, sink);
}

function rev(): i64 {
  return scan.spanDecimal(changetype<usize>(buf), scan.revStart, scan.revEnd);
}

describe("range answers", () => {
  it("reports the revision, count, more and each key-value", () => {
    expect(run("{\"header\":{\"cluster_id\":\"1\",\"revision\":\"42\"},\"kvs\":[{\"key\":\"a2V5\",\"create_revision\":\"3\",\"mod_revision\":\"40\",\"version\":\"1\",\"value\":\"dmFs\"},{\"key\":\"b\",\"mod_revision\":\"41\"}],\"more\":true,\"count\":\"7\"}")).toBe(true);
    expect(rev()).toBe(42);
    expect(scan.spanDecimal(changetype<usize>(buf), scan.countStart, scan.countEnd)).toBe(7);
    expect(scan.more).toBe(true);
    expect(sink.out.join(",")).toBe("a2V5|40|dmFs,b|41|-");
  });

  it("accepts an answer without kvs, more or count (etcd leaves out default values)", () => {
    expect(run(" {\"header\":{\"revision\":\"5\"}} ")).toBe(true);
    expect(rev()).toBe(5);
    expect(scan.countStart).toBe(-1);
    expect(scan.more).toBe(false);
    expect(sink.out.length).toBe(0);
  });

  it("ignores look-alike fields at other depths and refuses escaped spans", () => {
    expect(run("{\"x\":{\"count\":\"9\",\"revision\":\"8\",\"kvs\":[{\"key\":\"k\"}]},\"header\":{\"revision\":\"1\",\"y\":{\"revision\":\"2\"}},\"kvs\":[{\"key\":\"a\\u0041\",\"value\":{\"key\":\"z\"}},7]}")).toBe(true);
    expect(rev()).toBe(1);
    expect(scan.countStart).toBe(-1);
    expect(sink.out.join(",")).toBe("-|-|-,non-object");
  });

  it("flags kvs that is not a list", () => {
    expect(run("{\"header\":{\"revision\":\"1\"},\"kvs\":\"x\"}")).toBe(true);
    expect(scan.kvsNotArray).toBe(true);
  });

  it("rejects malformed bodies", () => {
    expect(run("")).toBe(false);
    expect(run("[]")).toBe(false);
    expect(run("{")).toBe(false);
    expect(run("{\"header\":")).toBe(false);
    expect(run("{\"a\":\"unterminated}")).toBe(false);
    expect(run("{\"a\":\"bad \\q escape\"}")).toBe(false);
    expect(run("{\"a\":1} trailing")).toBe(false);
    expect(run("{\"a\":tru}")).toBe(false);
    expect(run("{\"a\":[1,]}")).toBe(false);
    expect(run("{" + "\"a\":[".repeat(100) + "]".repeat(100) + "}")).toBe(false);
  });

  it("reads decimal spans strictly", () => {
    run("{\"header\":{\"revision\":\"12x\"}}");
    expect(rev()).toBe(-1);
    run("{\"header\":{\"revision\":\"\"}}");
    expect(rev()).toBe(-1);
    run("{\"header\":{\"revision\":\"1234567890123456789\"}}");
    expect(rev()).toBe(-1);
  });
});

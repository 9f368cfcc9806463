// Base64 as etcd's JSON gateway writes keys and values (assembly/base64.ts): RFC 4648 test vectors, and
// every malformed input refused.

import { encode, decode } from "../../assembly/base64";

function decoded(s: string): string {
  let b = decode(s);
  if (b === null) return "<invalid>";
  return String.UTF8.decode(changetype<ArrayBuffer>(b));
}

describe("base64", () => {
  it("encodes the RFC 4648 test vectors", () => {
    expect(encode("")).toBe("");
    expect(encode("f")).toBe("Zg==");
    expect(encode("fo")).toBe("Zm8=");
    expect(encode("foo")).toBe("Zm9v");
    expect(encode("foob")).toBe("Zm9vYg==");
    expect(encode("fooba")).toBe("Zm9vYmE=");
    expect(encode("foobar")).toBe("Zm9vYmFy");
    expect(encode("traffic-guard/default/bans/203.0.113.7")).toBe("dHJhZmZpYy1ndWFyZC9kZWZhdWx0L2JhbnMvMjAzLjAuMTEzLjc=");
  });

  it("decodes what it encodes", () => {
    expect(decoded("Zg==")).toBe("f");
    expect(decoded("Zm8=")).toBe("fo");
    expect(decoded("Zm9vYmFy")).toBe("foobar");
    expect(decoded("")).toBe("");
    expect(decoded("c3BpZmZlOi8vY2x1c3Rlci5sb2NhbC9ucy9zaG9wL3NhL3g=")).toBe("spiffe://cluster.local/ns/shop/sa/x");
  });

  it("refuses bad characters, lengths and padding", () => {
    expect(decoded("Zg=")).toBe("<invalid>");
    expect(decoded("Z===")).toBe("<invalid>");
    expect(decoded("Zg==Zg==")).toBe("<invalid>");
    expect(decoded("Zm9v*mFy")).toBe("<invalid>");
    expect(decoded("Zm9vYmF")).toBe("<invalid>");
    expect(decoded("=Zm9")).toBe("<invalid>");
    expect(decoded("Zm 9")).toBe("<invalid>");
    expect(decoded("Zm9v\n")).toBe("<invalid>");
  });
});

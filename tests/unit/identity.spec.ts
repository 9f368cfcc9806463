// Mesh identities (assembly/identity.ts): SPIFFE ID pattern validation and matching, and the table key
// of an identity.

import { spiffePatternProblem, spiffeMatch, identityKey, keyHi, keyLo, isIdentityKey } from "../../assembly/identity";

function matches(pattern: string, id: string): bool {
  expect(spiffePatternProblem(pattern)).toBe("", pattern);
  let p = String.UTF8.encode(pattern), s = String.UTF8.encode(id);
  return spiffeMatch(changetype<usize>(p), p.byteLength, changetype<usize>(s), s.byteLength);
}

describe("SPIFFE ID patterns", () => {
  it("match an exact ID and nothing longer, shorter or different", () => {
    const id = "spiffe://cluster.local/ns/shop/sa/frontend";
    expect(matches(id, id)).toBe(true);
    expect(matches(id, id + "2")).toBe(false);
    expect(matches(id, id + "/x")).toBe(false);
    expect(matches(id, "spiffe://cluster.local/ns/shop/sa")).toBe(false);
    expect(matches(id, "spiffe://cluster.local/ns/shop/sa/Frontend")).toBe(false);
    expect(matches(id, "https://cluster.local/ns/shop/sa/frontend")).toBe(false);
  });

  it("let '*' stand for exactly one non-empty segment, the trust domain included", () => {
    const p = "spiffe://*/ns/istio-system/sa/istio-ingressgateway-service-account";
    expect(matches(p, "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account")).toBe(true);
    expect(matches(p, "spiffe://td2/ns/istio-system/sa/istio-ingressgateway-service-account")).toBe(true);
    expect(matches(p, "spiffe:///ns/istio-system/sa/istio-ingressgateway-service-account")).toBe(false);
    expect(matches("spiffe://cluster.local/ns/*/sa/*", "spiffe://cluster.local/ns/shop/sa/crawler")).toBe(true);
    expect(matches("spiffe://cluster.local/ns/*/sa/*", "spiffe://cluster.local/ns/shop/sa/")).toBe(false);
    expect(matches("spiffe://cluster.local/ns/*/sa/*", "spiffe://cluster.local/ns/a/b/sa/c")).toBe(false);
  });

  it("reject what is not a pattern, naming the problem", () => {
    expect(spiffePatternProblem("cluster.local/ns/a/sa/b")).toBe("must start with \"spiffe://\"");
    expect(spiffePatternProblem("spiffe://cluster.local")).toBe("needs a path after the trust domain, like spiffe://cluster.local/ns/<ns>/sa/<sa>");
    expect(spiffePatternProblem("spiffe://cluster.local/ns//sa/b")).toBe("has an empty segment");
    expect(spiffePatternProblem("spiffe://cluster.local/ns/a*/sa/b")).toBe("uses '*' inside a segment (only a whole segment may be *)");
    expect(spiffePatternProblem("spiffe://Cluster.local/ns/a/sa/b")).toBe("has a trust domain with characters other than a-z, 0-9, '.', '-', '_'");
    expect(spiffePatternProblem("spiffe://cluster.local/ns/a b/sa/b")).toBe("has a path segment with characters other than letters, digits, '.', '-', '_'");
    expect(spiffePatternProblem("spiffe://cluster.local/ns/../sa/b")).toBe("has a \".\" or \"..\" segment");
  });
});

// Hashes an identity string into keyHi/keyLo.
function hash(id: string): void {
  let b = String.UTF8.encode(id);
  identityKey(changetype<usize>(b), <usize>b.byteLength);
}

describe("identity keys", () => {
  it("are stable, distinct per identity, and outside every client address (ff00::/8)", () => {
    hash("spiffe://cluster.local/ns/shop/sa/crawler");
    let h1 = keyHi, l1 = keyLo;
    hash("spiffe://cluster.local/ns/shop/sa/crawler");
    expect(keyHi).toBe(h1);
    expect(keyLo).toBe(l1);
    expect(isIdentityKey(h1)).toBe(true);
    hash("spiffe://cluster.local/ns/shop/sa/crawles");
    expect(keyHi != h1 || keyLo != l1).toBe(true);
    expect(isIdentityKey(keyHi)).toBe(true);
  });
});

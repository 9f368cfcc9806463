// Globbing (assembly/glob.ts) of User-Agents, paths and header values: '*' any run of bytes, '?' one byte, anchored at
// both ends, ASCII case-insensitive on the subject (patterns are lowercased at configure time).

import { globMatch, GlobSet } from "../../assembly/glob";

// Whether the subject matches any pattern of the list, as the filter matches it (a compiled GlobSet).
function anyOf(patterns: ArrayBuffer[], subject: ArrayBuffer): bool {
  return new GlobSet(patterns).matches(changetype<usize>(subject), subject.byteLength);
}
import { asciiLower } from "../../assembly/config";
import * as mock from "./mock";

function match(pattern: string, subject: string): bool {
  let p = String.UTF8.encode(asciiLower(pattern)), s = String.UTF8.encode(subject);
  return globMatch(changetype<usize>(p), <usize>p.byteLength, changetype<usize>(s), <usize>s.byteLength);
}

// Matches a pattern exactly as given (not lowercased).
function matchRaw(pattern: string, subject: string): bool {
  let p = String.UTF8.encode(pattern), s = String.UTF8.encode(subject);
  return globMatch(changetype<usize>(p), <usize>p.byteLength, changetype<usize>(s), <usize>s.byteLength);
}

describe("globMatch", () => {
  it("matches a prefix pattern", () => {
    expect(match("curl/*", "curl/8.5.0")).toBe(true);
    expect(match("curl/*", "curl/")).toBe(true);
    expect(match("curl/*", "curl")).toBe(false);
  });

  it("matches the subject case-insensitively", () => {
    expect(match("curl/*", "CURL/8.5.0")).toBe(true);
    expect(match("python-requests/*", "Python-Requests/2.31")).toBe(true);
    expect(match("*nikto*", "Mozilla/5.00 (Nikto/2.5.0)")).toBe(true);
  });

  it("expects the pattern already lowercased (parseConfig does that)", () => {
    expect(matchRaw("Curl/*", "curl/8")).toBe(false);
    expect(matchRaw("curl/*", "Curl/8")).toBe(true);
  });

  it("is anchored at both ends", () => {
    expect(match("curl/*", "xcurl/8")).toBe(false);
    expect(match("curl", "curl/8")).toBe(false);
    expect(match("curl", "curl")).toBe(true);
    expect(match("*curl", "libcurl")).toBe(true);
    expect(match("*curl", "libcurl/1")).toBe(false);
  });

  it("matches one byte with '?'", () => {
    expect(match("a?c", "abc")).toBe(true);
    expect(match("a?c", "ac")).toBe(false);
    expect(match("a?c", "abbc")).toBe(false);
    expect(match("???", "abc")).toBe(true);
    expect(match("a?c", "aéc")).toBe(false, "'?' is one byte and é is two in UTF-8");
    expect(match("a??c", "aéc")).toBe(true);
  });

  it("matches '*' against empty and long runs, anywhere in the pattern", () => {
    expect(match("*", "")).toBe(true);
    expect(match("*", "anything at all")).toBe(true);
    expect(match("**", "x")).toBe(true);
    expect(match("a*b*c", "abc")).toBe(true);
    expect(match("a*b*c", "a-b-c")).toBe(true);
    expect(match("a*b*c", "a-c-b")).toBe(false);
    expect(match("*sqlmap*", "sqlmap")).toBe(true);
    expect(match("*a*", "bbb")).toBe(false);
  });

  it("handles empty subjects and empty patterns", () => {
    expect(match("", "")).toBe(true);
    expect(match("", "x")).toBe(false);
    expect(match("?", "")).toBe(false);
    expect(match("a*", "")).toBe(false);
    expect(match("*?", "")).toBe(false);
  });

  it("treats other glob syntax literally", () => {
    expect(match("[ab]", "a")).toBe(false);
    expect(match("[ab]", "[ab]")).toBe(true);
    expect(match("a\\*", "a\\xyz")).toBe(true, "backslash is not an escape");
  });

  it("stays fast on pathological patterns against long subjects", () => {
    let subject = "a".repeat(200_000);
    let start = mock.clockMs();
    expect(match("*a*a*a*b", subject)).toBe(false);
    expect(match("*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b", subject)).toBe(false);
    expect(match("*?*?*?*?b", subject)).toBe(false);
    expect(match("*a*a*a*", subject)).toBe(true);
    let elapsed = mock.clockMs() - start;
    expect(elapsed).toBeLessThan(2000.0, "backtracking must stay linear-ish, took " + elapsed.toString() + " ms");
  });

  it("does not read outside the subject or pattern bytes", () => {
    // Bytes right after the subject must not count: the subject is a prefix of a longer buffer.
    let s = String.UTF8.encode("curl/8xxxx");
    let p = String.UTF8.encode("curl/8");
    expect(globMatch(changetype<usize>(p), 6, changetype<usize>(s), 6)).toBe(true);
    expect(globMatch(changetype<usize>(p), 5, changetype<usize>(s), 6)).toBe(false);
    expect(globMatch(changetype<usize>(p), 6, changetype<usize>(s), 5)).toBe(false);
  });
});

describe("a GlobSet of several patterns", () => {
  it("is true when any pattern matches", () => {
    let list: ArrayBuffer[] = [String.UTF8.encode("curl/*"), String.UTF8.encode("*bot*")];
    expect(anyOf(list, String.UTF8.encode("Googlebot/2.1"))).toBe(true);
    expect(anyOf(list, String.UTF8.encode("curl/7"))).toBe(true);
    expect(anyOf(list, String.UTF8.encode("Mozilla/5.0"))).toBe(false);
    expect(anyOf(list, new ArrayBuffer(0))).toBe(false);
  });

  it("is false for an empty pattern list", () => {
    expect(anyOf([], String.UTF8.encode("curl/8"))).toBe(false);
  });
});

// Patterns of every shape, and subjects around them: a GlobSet of one pattern must agree with globMatch.
const PATTERNS: string[] = ["", "*", "**", "curl/*", "*sqlmap*", "*.bak", "/admin", "a*b", "?ysql*", "*n*", "*x*y*", "*é*"];
const SUBJECTS: string[] = ["", "curl/8.5.0", "CURL/8", "xcurl/8", "Mozilla/5.0 SQLMap/1.7", "sqlmap", "/db.BAK", "/admin",
  "/ADMIN", "/admin/x", "ab", "a-b", "mysql-client", "n", "Nope", "xy", "yx", "café", "caf"];

describe("GlobSet", () => {
  it("agrees with globMatch for each pattern on its own", () => {
    for (let i = 0; i < PATTERNS.length; i++) {
      let pat = String.UTF8.encode(asciiLower(PATTERNS[i]));
      let set = new GlobSet([pat]);
      for (let j = 0; j < SUBJECTS.length; j++) {
        let subj = String.UTF8.encode(SUBJECTS[j]);
        let want = globMatch(changetype<usize>(pat), pat.byteLength, changetype<usize>(subj), subj.byteLength);
        expect(set.matches(changetype<usize>(subj), subj.byteLength)).toBe(want, PATTERNS[i] + " vs " + SUBJECTS[j]);
      }
    }
  });

  it("matches a subject when any of its patterns does, with the infix patterns searched in one pass", () => {
    let set = new GlobSet(patterns(["*sqlmap*", "*nikto*", "*nmap*", "*masscan*", "*zgrab*", "*nuclei*", "go-http-client/*"]));
    let hit = ["Mozilla/5.0 (compatible; Nmap Scripting Engine)", "nuclei - open-source", "Go-http-client/1.1", "x ZGRAB/0.x", "nmap", "masscan"];
    let miss = ["Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36", "nma", "go-http-clien"];
    for (let i = 0; i < hit.length; i++) {
      let s = String.UTF8.encode(hit[i]);
      expect(set.matches(changetype<usize>(s), s.byteLength)).toBe(true, hit[i]);
    }
    for (let i = 0; i < miss.length; i++) {
      let s = String.UTF8.encode(miss[i]);
      expect(set.matches(changetype<usize>(s), s.byteLength)).toBe(false, miss[i]);
    }
  });
});

// The patterns, lowercased as parseConfig lowercases them, as UTF-8 bytes.
function patterns(names: string[]): ArrayBuffer[] {
  let out: ArrayBuffer[] = [];
  for (let i = 0; i < names.length; i++) out.push(String.UTF8.encode(asciiLower(names[i])));
  return out;
}

// The masks of the patterns a subject matches, as the custom rules' matchers use them (one bit per matcher).
function maskOf(set: GlobSet, subject: string): u64 {
  let s = String.UTF8.encode(subject);
  return set.matchMask(changetype<usize>(s), s.byteLength);
}

describe("GlobSet masks", () => {
  it("ORs the masks of every matching pattern of every shape, not only the first", () => {
    let names = ["/admin", "/api/*", "*.bak", "*secret*", "/a?i/*", "*"];
    let masks: u64[] = [1, 2, 4, 8, 16, 32];
    let set = new GlobSet(patterns(names), masks);
    expect(set.union).toBe(63);
    expect(maskOf(set, "/admin")).toBe(1 | 32);
    expect(maskOf(set, "/api/secret.bak")).toBe(2 | 4 | 8 | 16 | 32);
    expect(maskOf(set, "/API/x")).toBe(2 | 16 | 32);
    expect(maskOf(set, "/other")).toBe(32);
  });

  it("finds each infix literal among several sharing a first byte, wherever it starts", () => {
    let names = ["*nmap*", "*nikto*", "*nuclei*", "*zgrab*", "*nuclei*"];
    let masks: u64[] = [1, 2, 4, 8, (<u64>1) << 32];
    let set = new GlobSet(patterns(names), masks);
    expect(maskOf(set, "Nuclei and NMAP")).toBe(1 | 4 | ((<u64>1) << 32));
    expect(maskOf(set, "x-nikto")).toBe(2);
    expect(maskOf(set, "zgra")).toBe(0);
    expect(maskOf(set, "")).toBe(0);
  });

  it("skips every literal for a subject shorter than the shortest one, and still tries the other patterns", () => {
    let names = ["/search", "/api/*", "*.bak", "*secret*", "/?", "/"];
    let masks: u64[] = [1, 2, 4, 8, 16, 32];
    let pats = patterns(names);
    let set = new GlobSet(pats, masks);
    expect(maskOf(set, "/")).toBe(32); // the one-byte literal is the shortest: nothing is skipped
    let long = new GlobSet(pats.slice(0, 5), masks.slice(0, 5));
    expect(maskOf(long, "/")).toBe(0);
    expect(maskOf(long, "/x")).toBe(16);
    expect(maskOf(long, ".bak")).toBe(4);
    expect(maskOf(long, "")).toBe(0);
  });

  it("is zero for an empty set, and matches agrees with a non-zero mask", () => {
    let empty = new GlobSet([]);
    expect(maskOf(empty, "anything")).toBe(0);
    let set = new GlobSet([String.UTF8.encode("*sqlmap*")], [8]);
    let s = String.UTF8.encode("SQLMap/1.7");
    expect(set.matches(changetype<usize>(s), s.byteLength)).toBe(true);
    expect(maskOf(set, "SQLMap/1.7")).toBe(8);
    expect(maskOf(set, "sqlma")).toBe(0);
  });
});

describe("GlobSet duplicates", () => {
  it("matches a literal listed twice once, with both masks", () => {
    let names = ["*sqlmap*", "/x", "*SQLMAP*", "/x"];
    let set = new GlobSet(patterns(names), [1, 2, 4, 8]);
    expect(maskOf(set, "sqlmap/1.7")).toBe(1 | 4);
    expect(maskOf(set, "/x")).toBe(2 | 8);
    expect(set.union).toBe(15);
  });
});


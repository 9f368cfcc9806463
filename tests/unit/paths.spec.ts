// skipPaths matching (assembly/paths.ts): a configured path matches on segment boundaries.

import { pathUnder } from "../../assembly/paths";

function under(path: string, prefix: string): bool {
  let p = String.UTF8.encode(path);
  return pathUnder(changetype<usize>(p), p.byteLength, String.UTF8.encode(prefix));
}

describe("pathUnder", () => {
  it("matches the path itself, a trailing slash, a query and a fragment", () => {
    expect(under("/healthz", "/healthz")).toBe(true);
    expect(under("/healthz/", "/healthz")).toBe(true);
    expect(under("/healthz?x", "/healthz")).toBe(true);
    expect(under("/healthz#top", "/healthz")).toBe(true);
  });

  it("matches paths below it on a segment boundary", () => {
    expect(under("/healthz/live", "/healthz")).toBe(true);
  });

  it("does not match a longer segment that merely starts with the same bytes", () => {
    expect(under("/healthzadmin", "/healthz")).toBe(false);
    expect(under("/healthz.json", "/healthz")).toBe(false);
  });

  it("does not match a shorter path, another case or another path", () => {
    expect(under("/health", "/healthz")).toBe(false);
    expect(under("/Healthz", "/healthz")).toBe(false);
    expect(under("", "/")).toBe(false);
  });

  it("treats a configured path ending with a slash as everything below it", () => {
    expect(under("/static/app.js", "/static/")).toBe(true);
    expect(under("/static", "/static/")).toBe(false);
    expect(under("/anything", "/")).toBe(true);
  });
});

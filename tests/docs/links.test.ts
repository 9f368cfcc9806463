// The documentation is a runnable path: every relative link in README.md, DEVELOPMENT.md and docs/*.md must lead
// somewhere, anchors included; README.md stays an index (at most 15 KB); and each fact table lives on one page only.
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { test } from "node:test";
import assert from "node:assert/strict";

/** Repository root. */
const ROOT = resolve(fileURLToPath(new URL("../..", import.meta.url)));
/** Largest README.md allowed, in bytes: the README is an index, the depth lives in docs/. */
const README_MAX_BYTES = 15_000;

/** The documentation pages under test, relative to `root`. */
function pages(root: string): string[] {
  const docs = existsSync(join(root, "docs"))
    ? readdirSync(join(root, "docs")).filter((f) => f.endsWith(".md")).sort().map((f) => `docs/${f}`)
    : [];
  return ["README.md", "DEVELOPMENT.md", ...docs];
}

/** The lines of a markdown text outside fenced code blocks, with their 1-based line numbers. */
function proseLines(text: string): { line: string; n: number }[] {
  const out: { line: string; n: number }[] = [];
  let fence: string | undefined;
  text.split("\n").forEach((line, i) => {
    const m = /^\s*(```+|~~~+)/.exec(line);
    if (m) {
      if (fence === undefined) fence = m[1][0];
      else if (m[1][0] === fence) fence = undefined;
      return;
    }
    if (fence === undefined) out.push({ line, n: i + 1 });
  });
  return out;
}

/**
 * GitHub's heading anchor: the heading's text as rendered (inline code keeps its content, link text stays,
 * emphasis markers go), lowercased, every character that is not a letter, digit, space, `-` or `_` removed, spaces
 * turned into `-`. A repeated slug gets `-1`, `-2`, … in order of appearance.
 */
export function slugs(text: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  for (const { line } of proseLines(text)) {
    const m = /^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (!m) continue;
    const rendered = m[1].replace(/!?\[([^\]]*)\]\([^)]*\)/g, "$1").replace(/[`*]/g, "");
    const base = rendered.toLowerCase().replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, "").replace(/ /g, "-");
    const count = seen.get(base) ?? 0;
    seen.set(base, count + 1);
    out.add(count === 0 ? base : `${base}-${count}`);
  }
  return out;
}

/** Inline links `[text](target)` in prose (not in code spans or fenced blocks), with their line numbers. */
function links(text: string): { target: string; n: number }[] {
  const out: { target: string; n: number }[] = [];
  for (const { line, n } of proseLines(text)) {
    const prose = line.replace(/`[^`]*`/g, "``");
    for (const m of prose.matchAll(/\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)) out.push({ target: m[1], n });
  }
  return out;
}

/** Every broken relative link or anchor in the pages under `root`, one line each (`file:line: target: why`). */
export function brokenLinks(root: string): string[] {
  const problems: string[] = [];
  const anchorCache = new Map<string, Set<string>>();
  const anchorsOf = (file: string) => {
    if (!anchorCache.has(file)) anchorCache.set(file, slugs(readFileSync(file, "utf8")));
    return anchorCache.get(file)!;
  };
  for (const page of pages(root)) {
    const file = join(root, page);
    if (!existsSync(file)) {
      problems.push(`${page}: missing`);
      continue;
    }
    for (const { target, n } of links(readFileSync(file, "utf8"))) {
      if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // http:, https:, mailto:
      const where = `${page}:${n}: ${target}`;
      const hash = target.indexOf("#");
      const path = decodeURIComponent(hash === -1 ? target : target.slice(0, hash));
      const anchor = hash === -1 ? undefined : decodeURIComponent(target.slice(hash + 1));
      const dest = path === "" ? file : resolve(dirname(file), path);
      if (relative(root, dest).startsWith("..")) {
        problems.push(`${where}: leaves the repository`);
        continue;
      }
      if (!existsSync(dest)) {
        problems.push(`${where}: ${relative(root, dest)} does not exist`);
        continue;
      }
      if (anchor === undefined) continue;
      if (statSync(dest).isDirectory() || !dest.endsWith(".md")) {
        problems.push(`${where}: an anchor into a file that is not markdown`);
      } else if (!anchorsOf(dest).has(anchor)) {
        problems.push(`${where}: no heading with anchor #${anchor} in ${relative(root, dest)}`);
      }
    }
  }
  return problems;
}

/**
 * Markdown tables that repeat one on another page: the same header row, and the same first cell in the first data
 * row (the key of the fact; a reworded description in the other cells is still a copy). Two tables of one shape
 * on the same page (two benchmark runs) are different facts.
 */
export function duplicatedTables(root: string): string[] {
  const seen = new Map<string, { page: string; at: string }>();
  const problems: string[] = [];
  const norm = (row: string) => row.trim().replace(/\s+/g, " ");
  for (const page of pages(root)) {
    const file = join(root, page);
    if (!existsSync(file)) continue;
    const lines = proseLines(readFileSync(file, "utf8"));
    for (let i = 0; i + 2 < lines.length; i++) {
      const [header, rule, first] = [lines[i], lines[i + 1], lines[i + 2]];
      if (!header.line.trim().startsWith("|") || !/^\s*\|[\s:|-]+\|\s*$/.test(rule.line)) continue;
      if (i > 0 && lines[i - 1].line.trim().startsWith("|") && lines[i - 1].n === header.n - 1) continue;
      const firstCell = norm(first.line).split("|")[1]?.trim() ?? "";
      const key = `${norm(header.line)}\n${firstCell}`;
      const here = `${page}:${header.n}`;
      const before = seen.get(key);
      if (before && before.page !== page) {
        problems.push(`the table at ${here} repeats the one at ${before.at}: ${norm(header.line)} / ${firstCell}`);
      } else if (!before) seen.set(key, { page, at: here });
    }
  }
  return problems;
}

test("every relative link in README.md, DEVELOPMENT.md and docs/ resolves, anchors included", () => {
  assert.deepEqual(brokenLinks(ROOT), []);
});

test("README.md is an index of at most 15 KB", () => {
  const size = statSync(join(ROOT, "README.md")).size;
  assert.ok(size <= README_MAX_BYTES, `README.md is ${size} bytes; move depth into docs/ (limit ${README_MAX_BYTES})`);
});

test("no fact table appears on two pages", () => {
  assert.deepEqual(duplicatedTables(ROOT), []);
});

test("anchors follow GitHub's slug rules, duplicates numbered", () => {
  const s = slugs(
    [
      "# Deploy to Istio",
      "## 2. Check the policy",
      "### Keep it reconciled: `sync --watch`",
      "## What the sidecar *actually* saw",
      "## Notes",
      "## Notes",
      "```sh",
      "# not a heading",
      "```",
      "## snake_case and [a link](x.md)",
    ].join("\n"),
  );
  assert.deepEqual(
    [...s],
    ["deploy-to-istio", "2-check-the-policy", "keep-it-reconciled-sync---watch", "what-the-sidecar-actually-saw", "notes", "notes-1", "snake_case-and-a-link"],
  );
});

test("the checker reports a missing file, a missing anchor and a repeated table", (t) => {
  const root = mkdtempSync(join(tmpdir(), "tg-links-"));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  mkdirSync(join(root, "docs"));
  const table = "| a | b |\n| --- | --- |\n| 1 | 2 |\n";
  const reworded = "| a | b |\n| --- | --- |\n| 1 | two, said otherwise |\n";
  writeFileSync(join(root, "README.md"), `# R\n\n[ok](docs/p.md#part) [gone](docs/gone.md) [bad](docs/p.md#nope) [self](#r)\n\n${table}`);
  writeFileSync(join(root, "DEVELOPMENT.md"), "# D\n\n[up](README.md#r) `[code](ignored.md)`\n");
  writeFileSync(join(root, "docs", "p.md"), `# P\n\n## Part\n\n[back](../README.md) [out](../../x.md)\n\n${reworded}`);
  assert.deepEqual(brokenLinks(root), [
    "README.md:3: docs/gone.md: docs/gone.md does not exist",
    "README.md:3: docs/p.md#nope: no heading with anchor #nope in docs/p.md",
    "docs/p.md:5: ../../x.md: leaves the repository",
  ]);
  assert.deepEqual(duplicatedTables(root), ["the table at docs/p.md:7 repeats the one at README.md:5: | a | b | / 1"]);
});

// The TypeScript side of the shared decision record (tools/lib/decision-record.ts) against the fixtures the filter's
// tests read too (tests/fixtures/decisions/records.json): what the filter applies, the CLI reads as a decision;
// what the filter skips, the CLI reports as malformed.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { encodeRecord, normaliseClient, parseDuration, parseRecord } from "../../tools/lib/decision-record.ts";
import { ROOT } from "./helpers.ts";

const fixtures = JSON.parse(readFileSync(join(ROOT, "tests/fixtures/decisions/records.json"), "utf8")) as {
  valid: { name: string; client: string; value: string }[];
  malformed: { name: string; client: string; value: string }[];
};

test("every valid fixture record has a client in the filter's key form and a value that parses", () => {
  assert.ok(fixtures.valid.length > 0);
  for (const r of fixtures.valid) {
    const n = normaliseClient(r.client);
    assert.ok("client" in n && n.client === r.client, `${r.name}: ${JSON.stringify(n)}`);
    const p = parseRecord(r.value);
    assert.ok("record" in p, `${r.name}: ${JSON.stringify(p)}`);
  }
});

test("every malformed fixture record is refused, by its key or by its value", () => {
  assert.ok(fixtures.malformed.length > 0);
  for (const r of fixtures.malformed) {
    const n = normaliseClient(r.client);
    const p = parseRecord(r.value);
    assert.ok("problem" in n || "problem" in p, `${r.name} must be refused`);
  }
});

test("a record the CLI writes reads back unchanged, fields in the documented order", () => {
  const rec = { until: 4102444800000, reason: "manual", strike: 0, origin: "operator:alice", created: 1700000000000 };
  assert.equal(encodeRecord(rec), '{"until":4102444800000,"reason":"manual","strike":0,"origin":"operator:alice","created":1700000000000}');
  assert.deepEqual(parseRecord(encodeRecord(rec)), { record: rec });
});

test("clients are normalised the way the filter names them", () => {
  const cases: [string, string][] = [
    ["203.0.113.7", "203.0.113.7"],
    ["::ffff:203.0.113.7", "203.0.113.7"],
    ["64:ff9b::203.0.113.7", "203.0.113.7"],
    ["203.0.113.7/32", "203.0.113.7"],
    ["203.0.113.77/24", "203.0.113.0/24"],
    ["2001:DB8:0001:0002::5/64", "2001:db8:1:2::/64"],
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
    ["::ffff:10.0.0.0/104", "10.0.0.0/8"],
    ["spiffe://cluster.local/ns/shop/sa/web", "spiffe://cluster.local/ns/shop/sa/web"],
  ];
  for (const [given, want] of cases) assert.deepEqual((normaliseClient(given) as { client: string }).client, want, given);
  for (const bad of ["", "1.2.3", "1.2.3.4.5", "01.2.3.4", "256.1.1.1", "1.2.3.4/", "1.2.3.4/x", "::1/129", "1::2::3", "spiffe://x", "spiffe://td/ns/*/sa/a", "spiffe://TD/ns/a", "example.com"]) {
    assert.ok("problem" in normaliseClient(bad), `${JSON.stringify(bad)} refused`);
  }
});

test("durations parse as the filter's do", () => {
  assert.equal(parseDuration("1h30m"), 5_400_000);
  assert.equal(parseDuration("500ms"), 500);
  assert.equal(parseDuration("1d"), 86_400_000);
  for (const bad of ["", "1", "h", "1y", "1.5h", "-1h", "1h "]) assert.equal(parseDuration(bad), undefined, bad);
});

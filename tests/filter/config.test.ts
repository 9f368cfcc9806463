// Configuration through proxy_on_configure: the shared fixtures, rejection messages, and a later
// valid configuration applied with client state kept.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync, existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Host } from "../emulator/emulator.ts";
import { M, cfg, rateRule, assertPassed, assertDenied, bans, tableKeys } from "./helpers.ts";

const FIXTURES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../fixtures/config");
const PREFIX = "traffic-guard: invalid config: ";

/** Configures a fresh VM and returns what Envoy would see: the result and the log lines. */
function configure(config: string | Uint8Array) {
  const h = Host.load();
  const ok = h.vm(0).configure(config);
  const critical = h.logs.filter((l) => l.level === 5);
  const configured = h.logs.filter((l) => l.text.startsWith("traffic-guard: configured "));
  return { ok, critical, configured, h };
}

/** The problems of a rejection: the single critical line after the prefix, split on "; ". */
function problems(config: string | Uint8Array): string[] {
  const r = configure(config);
  assert.equal(r.ok, false, "proxy_on_configure must return 0");
  assert.equal(r.critical.length, 1, `exactly one critical line, got ${JSON.stringify(r.critical.map((l) => l.text))}`);
  const text = r.critical[0].text;
  assert.ok(text.startsWith(PREFIX), `critical line starts with "${PREFIX}": ${text}`);
  assert.ok(!text.includes("\n"), "one line");
  assert.equal(r.configured.length, 0, "no configured line for a rejected config");
  return text.slice(PREFIX.length).split("; ");
}

function fixtures(kind: "valid" | "invalid"): string[] {
  const dir = path.join(FIXTURES, kind);
  assert.ok(existsSync(dir), `${dir} is missing (the shared config fixtures of docs/testing.md)`);
  const files = readdirSync(dir).filter((f) => f.endsWith(".json")).sort();
  assert.ok(files.length > 0, `no fixtures in ${dir}`);
  return files;
}

test("every valid config fixture is accepted by the compiled filter", () => {
  const files = fixtures("valid");
  for (const f of files) {
    const r = configure(readFileSync(path.join(FIXTURES, "valid", f)));
    assert.equal(r.ok, true, `valid/${f} rejected: ${r.critical.map((l) => l.text).join(" | ")}`);
    assert.equal(r.critical.length, 0, `valid/${f}: no critical line`);
    assert.equal(r.configured.length, 1, `valid/${f}: one configured line`);
  }
});

test("every invalid config fixture is rejected with exactly the problems in its .expected file", () => {
  const files = fixtures("invalid");
  for (const f of files) {
    const base = f.replace(/\.json$/, "");
    const expectedFile = path.join(FIXTURES, "invalid", `${base}.expected`);
    assert.ok(existsSync(expectedFile), `invalid/${base}.expected is missing`);
    const expected = readFileSync(expectedFile, "utf8").split("\n").filter((l, i, all) => l !== "" || i < all.length - 1);
    const got = problems(readFileSync(path.join(FIXTURES, "invalid", f)));
    assert.deepEqual(got, expected, `invalid/${f}`);
  }
  const orphans = readdirSync(path.join(FIXTURES, "invalid")).filter((f) => f.endsWith(".expected") && !files.includes(f.replace(/\.expected$/, ".json")));
  assert.deepEqual(orphans, [], "every .expected file has its .json");
});

test("a bad duration is rejected with the contract's example message", () => {
  assert.deepEqual(problems('{"rules":{"rate":{"limit":{"requests":10,"per":"abc"}}}}'), ['rules.rate.limit.per: expected a duration like "60s", got "abc"']);
});

test("each kind of bad config is rejected with one critical line naming the field path", () => {
  const cases: [string, RegExp][] = [
    ['{"mode":"block"}', /^mode: /],
    ['{"capacity":1023}', /^capacity: /],
    ['{"capacity":100000000000}', /^capacity: /],
    ['{"response":{"status":399}}', /^response\.status: /],
    ['{"response":{"status":600}}', /^response\.status: /],
    ['{"response":{"status":"403"}}', /^response\.status: /],
    ['{"colour":"blue"}', /^colour: .*unknown/],
    ['{"rules":{"rate":{"limit":{"requests":10,"per":"1m"},"bann":"5m"}}}', /^rules\.rate\.bann: /],
    ['{"rules":{"rate":{"limit":{"requests":0,"per":"1m"}}}}', /^rules\.rate\.limit\.requests: /],
    ['{"rules":{"rate":{"limit":{"requests":-5,"per":"1m"}}}}', /^rules\.rate\.limit\.requests: /],
    ['{"rules":{"errors":{"statuses":["6xx"]}}}', /^rules\.errors\.statuses/],
    ['{"rules":{"userAgent":{"match":"curl/*"}}}', /^rules\.userAgent\.match: /],
    ['{"rules":{"rate":{"ban":"forever"}}}', /^rules\.rate\.ban: /],
    ['{"rules":{"rate":{"ban":300}}}', /^rules\.rate\.ban: /],
    ['{"clientAddress":{"source":"remote"}}', /^clientAddress\.source: /],
    ['{"clientAddress":{"source":"xff","trustedHops":-1}}', /^clientAddress\.trustedHops: /],
    ['{"allow":["10.0.0.0/33"]}', /^allow/],
    ['{"deny":["not-a-cidr"]}', /^deny/],
    ['{"prefixes":{"ipv6":129}}', /^prefixes\.ipv6: /],
    ['{"ban":{"max":"eventually"}}', /^ban\.max: /],
    ['{"ban":{"forgetAfter":"1y"}}', /^ban\.forgetAfter: /],
    ["{", /./],
    ["[]", /./],
    ["null", /./],
    ['"{}"', /./],
  ];
  for (const [config, re] of cases) {
    const p = problems(config);
    assert.equal(p.length, 1, `${config}: one problem, got ${JSON.stringify(p)}`);
    assert.match(p[0], re, `${config}`);
  }
});

test("several problems are all reported in one line, separated by '; '", () => {
  const p = problems('{"mode":"loud","capacity":5,"rules":{"rate":{"limit":{"requests":10,"per":"abc"}}}}');
  assert.equal(p.length, 3, JSON.stringify(p));
  assert.ok(p.some((x) => x.startsWith("mode: ")));
  assert.ok(p.some((x) => x.startsWith("capacity: ")));
  assert.ok(p.some((x) => x.startsWith("rules.rate.limit.per: ")));
});

test("boundary values are accepted: capacity 1024, response.status 400 and 599, durations like 1h30m", () => {
  for (const c of [
    '{"capacity":1024}',
    '{"response":{"status":400}}',
    '{"response":{"status":599}}',
    '{"rules":{"rate":{"limit":{"requests":1,"per":"1h30m"},"ban":"0s"}}}',
    '{"ban":{"escalation":1,"max":"90s","forgetAfter":"10m"}}',
    '  {"mode":"dry-run"}\n',
  ]) {
    const r = configure(c);
    assert.equal(r.ok, true, `${c}: ${r.critical.map((l) => l.text).join(" | ")}`);
  }
});

test("a compound duration such as 1h30m is applied as 90 minutes", async () => {
  const h = await Host.start({ config: cfg({ rules: { rate: rateRule(1, "24h", "1h30m") } }) });
  h.vm(0).send({ peer: "198.51.100.7:1" });
  assert.equal(assertDenied(h.vm(0).send({ peer: "198.51.100.7:1" })).header("retry-after"), "5400");
});

test("a rejected config leaves the previous one in force, and a later valid one applies with client state kept", async () => {
  const h = await Host.start({ vms: 2, config: cfg({ rules: { rate: rateRule(2, "1h", "1h") } }) });
  const C = { peer: "198.51.100.7:1" };
  h.vm(0).send(C);
  h.vm(1).send(C);
  assertDenied(h.vm(0).send(C), 403, "banned under the first config");
  h.clock.advance("10m");

  h.clearLogs();
  assert.equal(h.configure('{"rules":{"rate":{"limit":{"requests":10,"per":"abc"}}}}'), false, "bad config rejected by every VM");
  assert.equal(h.logsAtLeast("critical").length, 2, "one critical line per VM (each VM's root context rejects it)");
  assert.equal(assertDenied(h.vm(1).send(C)).header("retry-after"), "3000", "old config and the ban still in force");
  assertPassed(h.vm(0).send({ peer: "198.51.100.8:1" }));
  assertPassed(h.vm(0).send({ peer: "198.51.100.8:1" }));
  assertDenied(h.vm(0).send({ peer: "198.51.100.8:1" }), 403, "the old rate limit still applies to others");

  h.clearLogs();
  const next = cfg({ rules: { rate: rateRule(5, "1h", "1h") }, response: { status: 429, body: "slow down\n", headers: { "content-type": "text/plain" } } });
  assert.equal(h.configure(next), true);
  assert.equal(h.logs.filter((l) => l.text.startsWith("traffic-guard: configured ")).length, 2);
  const reply = assertDenied(h.vm(0).send(C), 429, "new response applies, and the ban survived the reconfigure");
  assert.equal(reply.body, "slow down\n");
  assert.equal(reply.header("retry-after"), "3000");
  assert.equal(bans(h).length, 0, "no new ban");
  assert.equal(h.metrics.get(M.bansRate), 2, "metrics survive the reconfigure");
});

test("a ban survives a reconfigure that changes the table capacity", async () => {
  const h = await Host.start({ config: cfg({ capacity: 65536, rules: { rate: rateRule(2, "1h", "1h") } }) });
  const C = { peer: "198.51.100.7:1" };
  h.vm(0).send(C);
  h.vm(0).send(C);
  assertDenied(h.vm(0).send(C), 403, "banned");
  assert.equal(h.configure(cfg({ capacity: 131072, rules: { rate: rateRule(2, "1h", "1h") } })), true);
  const r = h.vm(0).send(C);
  assert.ok(r.localReply, "the existing client state (the ban) must be kept across a valid reconfigure, capacity change included");
  assert.equal(r.localReply.header("retry-after"), "3600");
});

/** Occupied records in the client table, read from shared data with the contract's record layout (flags at byte 46, bit 0). */
function occupiedRecords(h: Host): number {
  let n = 0;
  for (const k of tableKeys(h)) {
    const v = h.store.get(k)!.value;
    for (let off = 0; off + 48 <= v.length; off += 48) if (v[off + 46] & 1) n++;
  }
  return n;
}

test("the tracked-clients gauge keeps matching the occupied records, and stays <= capacity, across capacity changes", async () => {
  const conf = (capacity: number) => cfg({ capacity, rules: { rate: rateRule(2, "1h", "1h") } });
  const h = await Host.start({ config: conf(1024) });
  let n = 0;
  const churn = (k: number) => {
    for (let i = 0; i < k; i++, n++) h.vm(0).send({ peer: `100.64.${(n >> 8) & 255}.${n & 255}:1` });
  };
  const check = (capacity: number, what: string) => {
    const tracked = h.metrics.get(M.tracked);
    assert.ok(tracked <= capacity, `${what}: gauge ${tracked} <= capacity ${capacity}`);
    assert.equal(tracked, occupiedRecords(h), `${what}: gauge equals the occupied records`);
  };
  churn(5000);
  check(1024, "full table of 1024");
  assert.ok(h.configure(conf(2048)));
  churn(5000);
  check(2048, "grown to 2048 and full again");
  assert.ok(h.configure(conf(1024)));
  // Requests drain the 256 old sets, 8 per request; meanwhile both geometries hold records.
  check(2048 + 1024, "shrinking to 1024, before any request");
  churn(32);
  check(1024, "shrunk back to 1024 once 32 requests drained the old sets");
  h.clock.advance("3h"); // every record expired
  assert.ok(h.configure(conf(4096)));
  churn(16);
  check(4096, "grown to 4096 after every record expired");
});

test("while workers apply a new capacity one after the other, a banned client stays banned on every worker", async () => {
  const conf = (capacity: number) => cfg({ capacity, rules: { rate: rateRule(2, "1h", "1h") } });
  const h = await Host.start({ vms: 2, config: conf(1024) });
  const C = { peer: "198.51.100.7:1" };
  h.vm(0).send(C);
  h.vm(0).send(C);
  assertDenied(h.vm(0).send(C), 403, "banned");
  // Envoy configures each worker's VM separately: VM 0 already has the new capacity, VM 1 not yet.
  assert.ok(h.vm(0).configure(conf(2048)));
  assertDenied(h.vm(1).send(C), 403, "VM 1, still on the old capacity, must not forget the ban");
  assertDenied(h.vm(0).send(C), 403, "VM 0, on the new capacity");
  const D = { peer: "198.51.100.8:1" };
  h.vm(1).send(D);
  h.vm(1).send(D);
  assertDenied(h.vm(1).send(D), 403, "VM 1 bans another client before it is reconfigured");
  assert.ok(h.vm(1).configure(conf(2048)));
  assertDenied(h.vm(0).send(D), 403, "that ban is kept after every worker switched");
  assertDenied(h.vm(1).send(C), 403);
});

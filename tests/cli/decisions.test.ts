// `traffic-guard decisions` against a real etcd (the binary scripts/kube-bins.sh builds): list, add, delete and
// watch round trips, --json, auth, TLS, every bad input writing nothing, and an unreachable etcd. Without etcd the
// tests skip locally and fail under CI=true.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { CLI, ensureBuilt, runCli } from "./helpers.ts";
import { enableAuth, etcdBinary, gateway, startEtcd, type EtcdServer } from "./etcd-server.ts";

const b64 = (s: string) => Buffer.from(s).toString("base64");
const PREFIX = "traffic-guard/default/bans/";

/** The store's revision and live leases: what any write (or lease grant) would change. */
async function storeState(endpoint: string, token?: string): Promise<string> {
  const range = await gateway(endpoint, "/v3/kv/range", { key: b64("\0"), range_end: b64("\0"), count_only: true }, token);
  const leases = await gateway(endpoint, "/v3/lease/leases", {}, token);
  return JSON.stringify({ revision: (range.header as { revision: string }).revision, leases: leases.leases ?? [] });
}

/** The decoded records under the default prefix (a value that is not JSON comes back as its text). */
async function records(endpoint: string, token?: string): Promise<Record<string, { value: Record<string, unknown>; lease?: string }>> {
  const parse = (text: string): Record<string, unknown> => {
    try {
      return JSON.parse(text) as Record<string, unknown>;
    } catch {
      return { text };
    }
  };
  const res = await gateway(endpoint, "/v3/kv/range", { key: b64(PREFIX), range_end: b64("traffic-guard/default/bans0") }, token);
  const out: Record<string, { value: Record<string, unknown>; lease?: string }> = {};
  for (const kv of (res.kvs ?? []) as { key: string; value?: string; lease?: string }[]) {
    out[Buffer.from(kv.key, "base64").toString().slice(PREFIX.length)] = { value: parse(Buffer.from(kv.value ?? "", "base64").toString()), lease: kv.lease };
  }
  return out;
}

describe("traffic-guard decisions with a plain etcd", () => {
  let etcd: EtcdServer | undefined;
  let bin: string | undefined;
  before(async () => {
    bin = etcdBinary(undefined);
    if (!bin) return;
    ensureBuilt();
    etcd = await startEtcd(bin);
  });
  after(async () => etcd?.stop());

  test("add writes the shared record with a lease as long as the ban, list shows it, delete lifts it", async (t) => {
    if (!etcd) return t.skip("etcd is not available (run scripts/kube-bins.sh)");
    const e = etcd.endpoint;
    const add = await runCli(["decisions", "add", "2001:DB8:1:2::7/64", "--for", "1h", "--reason", "scraping", "--etcd", e]);
    assert.equal(add.code, 0, add.stderr);
    assert.match(add.stdout, /banned 2001:db8:1:2::\/64 for 1h/);
    const before = Date.now();
    const recs = await records(e);
    const rec = recs["2001:db8:1:2::/64"];
    assert.ok(rec, `record under the normalised key: ${JSON.stringify(recs)}`);
    assert.equal(rec.value.reason, "scraping");
    assert.equal(rec.value.strike, 0);
    assert.match(String(rec.value.origin), /^operator:/);
    assert.ok(Math.abs((rec.value.until as number) - (rec.value.created as number) - 3_600_000) < 1000);
    const ttl = await gateway(e, "/v3/lease/timetolive", { ID: rec.lease });
    const secs = Number(ttl.TTL);
    assert.ok(secs > 3590 && secs <= 3600, `lease TTL ${secs}s is the remaining ban`);
    assert.ok((rec.value.until as number) > before);

    const list = await runCli(["decisions", "list", "--etcd", e]);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /^CLIENT\s+REASON\s+ORIGIN\s+LEFT\s+STRIKE\n/);
    assert.match(list.stdout, /2001:db8:1:2::\/64\s+scraping\s+operator:\S+\s+(59m\d+s|1h)\s+0\n/);

    const json = await runCli(["decisions", "list", "--json", "--etcd", e]);
    const parsed = JSON.parse(json.stdout) as { client: string; reason: string; leftMs: number }[];
    assert.deepEqual(parsed.map((d) => [d.client, d.reason]), [["2001:db8:1:2::/64", "scraping"]]);
    assert.ok(parsed[0].leftMs > 3_500_000);

    const del = await runCli(["decisions", "delete", "2001:db8:1:2::/64", "--etcd", e]);
    assert.equal(del.code, 0, del.stderr);
    assert.deepEqual(await records(e), {});
    const again = await runCli(["decisions", "delete", "2001:db8:1:2::/64", "--etcd", e]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /^error: no decision for 2001:db8:1:2::\/64 under traffic-guard\/default\/bans\//);
    const empty = await runCli(["decisions", "list", "--etcd", e]);
    assert.equal(empty.stdout, "no active decisions under traffic-guard/default/bans/\n");
  });

  test("list shows the filter's records and flags the malformed fixtures, delete --all --reason picks one rule", async (t) => {
    if (!etcd) return t.skip("etcd is not available (run scripts/kube-bins.sh)");
    const e = etcd.endpoint;
    const { readFile } = await import("node:fs/promises");
    const fixtures = JSON.parse(await readFile(join(import.meta.dirname, "../fixtures/decisions/records.json"), "utf8")) as {
      valid: { client: string; value: string }[];
      malformed: { client: string; value: string }[];
    };
    for (const r of [...fixtures.valid, ...fixtures.malformed]) {
      await gateway(e, "/v3/kv/put", { key: b64(PREFIX + r.client), value: b64(r.value) });
    }
    const json = JSON.parse((await runCli(["decisions", "list", "--json", "--etcd", e])).stdout) as { client: string; reason?: string; problem?: string }[];
    const byClient = new Map(json.map((d) => [d.client, d]));
    for (const r of fixtures.valid) assert.ok(byClient.get(r.client)?.reason !== undefined, `valid ${r.client} listed as a decision`);
    for (const r of fixtures.malformed) assert.ok(byClient.get(r.client)?.problem, `malformed ${r.client} listed with its problem`);
    const table = await runCli(["decisions", "list", "--etcd", e]);
    assert.match(table.stdout, /203\.0\.113\.30\s+\(malformed: not JSON\)/);

    const del = await runCli(["decisions", "delete", "--all", "--reason", "rate", "--etcd", e]);
    assert.equal(del.code, 0, del.stderr);
    assert.equal(del.stdout, "deleted 1 decision with reason rate under traffic-guard/default/bans/\n");
    assert.equal((await records(e))["203.0.113.7"], undefined);
    const all = await runCli(["decisions", "delete", "--all", "--etcd", e]);
    assert.equal(all.code, 0, all.stderr);
    assert.match(all.stdout, /^deleted 12 decisions under/);
    const left = await gateway(e, "/v3/kv/range", { key: b64(PREFIX), range_end: b64("traffic-guard/default/bans0"), count_only: true });
    assert.equal(left.count, undefined, "nothing left (a zero count is omitted by the gateway)");
  });

  test("watch prints a line as a decision appears, and one as its lease expires", async (t) => {
    if (!etcd) return t.skip("etcd is not available (run scripts/kube-bins.sh)");
    const e = etcd.endpoint;
    await runCli(["decisions", "add", "198.51.100.0/24", "--for", "10m", "--etcd", e]);
    const child = spawn(process.execPath, [CLI, "decisions", "watch", "--etcd", e], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
    const exited = new Promise<number | null>((r) => child.on("close", r));
    const waitFor = async (re: RegExp) => {
      const deadline = Date.now() + 20_000;
      while (!re.test(out)) {
        if (Date.now() > deadline) throw new Error(`no line matching ${re} in:\n${out}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    try {
      await waitFor(/ = 198\.51\.100\.0\/24 reason=manual origin=operator:\S+ left=\d+m\d*s? strike=0\n/);
      await waitFor(/ watching traffic-guard\/default\/bans\/ at /);
      await runCli(["decisions", "add", "spiffe://cluster.local/ns/shop/sa/scraper", "--for", "2s", "--etcd", e]);
      await waitFor(/ \+ spiffe:\/\/cluster\.local\/ns\/shop\/sa\/scraper reason=manual/);
      // The lease ends with the ban: etcd deletes the record, and the watch says so.
      await waitFor(/ - spiffe:\/\/cluster\.local\/ns\/shop\/sa\/scraper\n/);
      await runCli(["decisions", "delete", "198.51.100.0/24", "--etcd", e]);
      await waitFor(/ - 198\.51\.100\.0\/24\n/);
    } finally {
      child.kill("SIGINT");
    }
    assert.equal(await exited, 0, "watch ends cleanly on SIGINT");
  });

  test("every bad input exits 1 with one error line and writes nothing", async (t) => {
    if (!etcd) return t.skip("etcd is not available (run scripts/kube-bins.sh)");
    const e = etcd.endpoint;
    const cases: [string[], RegExp][] = [
      [["add", "203.0.113.999", "--for", "1h"], /is not an IPv4\/IPv6 address, a network/],
      [["add", "010.0.0.1", "--for", "1h"], /is not an IPv4\/IPv6 address/],
      [["add", "10.0.0.0/33", "--for", "1h"], /bad prefix length "\/33"/],
      [["add", "spiffe://*/ns/shop/sa/x", "--for", "1h"], /is not a SPIFFE ID: it is a pattern/],
      [["add", "203.0.113.7", "--for", "366d"], /longer than the filter's maximum ban duration \(365d\)/],
      [["add", "203.0.113.7", "--for", "1y"], /is not a duration/],
      [["add", "203.0.113.7", "--for", "1s"], /shorter than 2s/],
      [["add", "203.0.113.7", "--for", "1h", "--reason", ""], /--reason must be/],
      [["add", "203.0.113.7", "--for", "1h", "--prefix", "no-slash"], /prefix "no-slash" must be/],
      [["add", "203.0.113.7", "--for", "1h", "--cacert", "/nonexistent/ca.crt"], /cannot read --cacert \/nonexistent\/ca\.crt/],
      [["add", "203.0.113.7", "--for", "1h", "--user", "root"], /needs the password in \$TRAFFIC_GUARD_ETCD_PASSWORD/],
      [["delete", "not-an-address with space"], /is not an IPv4\/IPv6 address/],
      [["delete", "203.0.113.7", "--reason", "rate"], /--reason selects decisions for --all/],
      [["delete"], /give the client to unban, or --all/],
    ];
    const state = await storeState(e);
    for (const [args, re] of cases) {
      const r = await runCli(["decisions", ...args, "--etcd", e], { env: { TRAFFIC_GUARD_ETCD_PASSWORD: undefined } });
      assert.equal(r.code, 1, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, re, args.join(" "));
      assert.equal(r.stderr.split("\n").filter(Boolean).length, 1, `one error line for ${args.join(" ")}: ${r.stderr}`);
      assert.equal(r.stdout, "");
    }
    assert.equal(await storeState(e), state, "no key written and no lease granted");
    const noEtcd = await runCli(["decisions", "list"], { env: { TRAFFIC_GUARD_ETCD_ENDPOINT: undefined } });
    assert.equal(noEtcd.code, 1);
    assert.match(noEtcd.stderr, /^error: no etcd given: pass --etcd <url> or set TRAFFIC_GUARD_ETCD_ENDPOINT\n$/);
  });

  test("an unreachable etcd is one clear error and exit 1", async (t) => {
    if (!bin) return t.skip("etcd is not available (run scripts/kube-bins.sh)");
    const { freePort } = await import("../kube/harness.ts");
    const url = `http://127.0.0.1:${await freePort()}`;
    for (const args of [["list"], ["add", "203.0.113.7", "--for", "1h"], ["delete", "203.0.113.7"], ["watch"]]) {
      const r = await runCli(["decisions", ...args, "--etcd", url]);
      assert.equal(r.code, 1, `${args[0]}: ${r.stderr}`);
      assert.equal(r.stderr, `error: cannot reach etcd at ${url}: ECONNREFUSED connect ECONNREFUSED ${url.slice("http://".length)}\n`);
    }
  });
});

describe("traffic-guard decisions with etcd auth", () => {
  let etcd: EtcdServer | undefined;
  let token = "";
  before(async () => {
    const bin = etcdBinary(undefined);
    if (!bin) return;
    ensureBuilt();
    etcd = await startEtcd(bin);
    await enableAuth(etcd.endpoint);
    token = String((await gateway(etcd.endpoint, "/v3/auth/authenticate", { name: "root", password: "rootpw" })).token);
  });
  after(async () => etcd?.stop());

  test("a user with the password in the environment adds and lists; wrong or missing credentials write nothing", async (t) => {
    if (!etcd) return t.skip("etcd is not available (run scripts/kube-bins.sh)");
    const e = etcd.endpoint;
    const ok = { TRAFFIC_GUARD_ETCD_PASSWORD: "operatorpw" };
    const add = await runCli(["decisions", "add", "203.0.113.7", "--for", "10m", "--user", "operator", "--etcd", e], { env: ok });
    assert.equal(add.code, 0, add.stderr);
    const list = await runCli(["decisions", "list", "--user", "operator", "--etcd", e], { env: ok });
    assert.match(list.stdout, /203\.0\.113\.7\s+manual/);

    const state = await storeState(e, token);
    const wrong = await runCli(["decisions", "add", "203.0.113.8", "--for", "10m", "--user", "operator", "--etcd", e], { env: { TRAFFIC_GUARD_ETCD_PASSWORD: "nope" } });
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /^error: etcd at http:\/\/127\.0\.0\.1:\d+ refused the credentials of user "operator": .*authentication failed.*\n$/);
    const none = await runCli(["decisions", "add", "203.0.113.8", "--for", "10m", "--etcd", e]);
    assert.equal(none.code, 1);
    assert.match(none.stderr, /^error: etcd at http:\/\/127\.0\.0\.1:\d+ needs authentication: pass --user and set \$TRAFFIC_GUARD_ETCD_PASSWORD/);
    // The operator's role covers traffic-guard/default/ only.
    const other = await runCli(["decisions", "add", "203.0.113.8", "--for", "10m", "--prefix", "traffic-guard/other/", "--user", "operator", "--etcd", e], { env: ok });
    assert.equal(other.code, 1);
    assert.match(other.stderr, /^error: etcd at http:\/\/127\.0\.0\.1:\d+ denied the operation to user "operator": .*permission denied/);
    // The denied put came after its lease grant (key permissions do not cover leases): the CLI revoked it.
    assert.equal(await storeState(e, token), state, "no key written and no lease left");
  });
});

describe("traffic-guard decisions with etcd over TLS", () => {
  let etcd: EtcdServer | undefined;
  before(async () => {
    const bin = etcdBinary(undefined);
    if (!bin) return;
    ensureBuilt();
    etcd = await startEtcd(bin, { tls: true });
  });
  after(async () => etcd?.stop());

  test("the CA, client certificate and key reach an etcd that requires client certificates; without them it is one error", async (t) => {
    if (!etcd) return t.skip("etcd is not available (run scripts/kube-bins.sh)");
    const d = etcd.dir;
    const tls = ["--cacert", join(d, "ca.crt"), "--cert", join(d, "client.crt"), "--key", join(d, "client.key"), "--etcd", etcd.endpoint];
    const add = await runCli(["decisions", "add", "192.0.2.1", "--for", "5m", ...tls]);
    assert.equal(add.code, 0, add.stderr);
    const list = await runCli(["decisions", "list", ...tls]);
    assert.match(list.stdout, /192\.0\.2\.1\s+manual/);
    const noCa = await runCli(["decisions", "list", "--etcd", etcd.endpoint]);
    assert.equal(noCa.code, 1);
    assert.match(noCa.stderr, /^error: cannot reach etcd at https:\/\/127\.0\.0\.1:\d+: .*(certificate|verify)/i);
    const noCert = await runCli(["decisions", "list", "--cacert", join(d, "ca.crt"), "--etcd", etcd.endpoint]);
    assert.equal(noCert.code, 1);
    assert.equal(noCert.stderr.split("\n").filter(Boolean).length, 1, noCert.stderr);
  });
});

// Fuzz-style robustness: many random requests with hostile header sets, addresses and statuses, across
// several clientAddress configurations and two VMs. The VM must never trap, always return a valid
// action, never stall a request, never misuse the ABI, and keep its metrics consistent.
//
// The seed is printed; reproduce a failure with TRAFFIC_GUARD_FUZZ_SEED=<seed> (and TRAFFIC_GUARD_FUZZ_N=<requests>).
import { test } from "node:test";
import assert from "node:assert/strict";
import { Host, TrapError, type Bytes, type RequestOptions } from "../emulator/emulator.ts";
import { M, cfg, rateRule, uaRule, errorsRule, prng, keyPrefixOf, isTableKeyOf, CLOCK_KEY } from "./helpers.ts";

const SEED = process.env.TRAFFIC_GUARD_FUZZ_SEED ? Number(process.env.TRAFFIC_GUARD_FUZZ_SEED) : Date.now() % 2 ** 31;
const N = process.env.TRAFFIC_GUARD_FUZZ_N ? Number(process.env.TRAFFIC_GUARD_FUZZ_N) : 12_000;

const GARBAGE_ADDRESSES = [
  "999.1.1.1", "::ffff:", "[::1", "1.2.3.4:99999", "", " ", ",", ", ,", "unknown", "1.2.3", "1.2.3.4.5", "256.256.256.256",
  "::1::1", ":::", "[]", "[]:80", "[::1]:", "[::1]:99999", "1.2.3.4:", ":80", "-1.2.3.4", "1.2.3.4/32", "0x7f000001",
  "fe80::1%eth0", "[fe80::1%25eth0]:80", "::ffff:999.1.1.1", "::ffff:1.2.3", "1:2:3:4:5:6:7:8:9", "g::1", "1.2.3.4\u0000", "\u0000",
  "١٢٣.١.١.١", "1.2.3.4 ", " 1.2.3.4", "01.02.03.04", "1..2.3", "[1.2.3.4]:80", "1.2.3.4:80:80", "::ffff:1.2.3.4:80",
];
const UAS = [
  "curl/8.5.0", "Wget/1.21", "python-requests/2.31", "Mozilla/5.0", "", "sqlmap/1.7", "nuclei", "Go-http-client/1.1",
  "*", "**********", "curl/*", "CURL/", "\u00ff\u00fe", "\u0000curl/1", "curl/\u0000",
];

function hostileBytes(rand: () => number, max: number): Uint8Array {
  const n = Math.floor(rand() * max);
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(rand() * 256);
  return b;
}

function pick<T>(rand: () => number, xs: readonly T[]): T {
  return xs[Math.floor(rand() * xs.length)];
}

// A few recurring clients, so that buckets empty and bans, denials and escalation are exercised too.
const POOL_V4 = ["198.51.100.7", "198.51.100.8", "203.0.113.9", "10.1.2.3", "192.0.2.1", "::ffff:198.51.100.7"];
const POOL_V6 = ["2001:db8:1:2::1", "2001:db8:1:2::2", "fd00::1", "2001:db9::5"];

function randomV4(rand: () => number): string {
  if (rand() < 0.4) return pick(rand, POOL_V4);
  return Array.from({ length: 4 }, () => Math.floor(rand() * 256)).join(".");
}

function randomV6(rand: () => number): string {
  if (rand() < 0.4) return pick(rand, POOL_V6);
  const groups = Array.from({ length: 8 }, () => Math.floor(rand() * 65536).toString(16));
  if (rand() < 0.3) return `${groups[0]}:${groups[1]}::${groups[7]}`;
  if (rand() < 0.1) return `::ffff:${randomV4(rand)}`;
  return groups.join(":");
}

function randomAddress(rand: () => number): Bytes {
  const r = rand();
  if (r < 0.35) return randomV4(rand);
  if (r < 0.55) return randomV6(rand);
  if (r < 0.85) return pick(rand, GARBAGE_ADDRESSES);
  if (r < 0.95) return hostileBytes(rand, 64);
  return "9".repeat(Math.floor(rand() * 70_000));
}

function randomPeer(rand: () => number): Bytes | null {
  const r = rand();
  if (r < 0.05) return null; // property missing
  if (r < 0.5) return `${randomV4(rand)}:${Math.floor(rand() * 65536)}`;
  if (r < 0.75) return `[${randomV6(rand)}]:${Math.floor(rand() * 65536)}`;
  return randomAddress(rand);
}

function randomXff(rand: () => number): Bytes {
  const r = rand();
  if (r < 0.1) return hostileBytes(rand, 256);
  if (r < 0.15) return Array.from({ length: 2000 + Math.floor(rand() * 10_000) }, () => randomV4(rand)).join(", ");
  const n = Math.floor(rand() * 12);
  const seps = [", ", ",", " , ", ",,", " "];
  return Array.from({ length: n }, () => (rand() < 0.7 ? (rand() < 0.7 ? randomV4(rand) : randomV6(rand)) : String(randomAddress(rand)).slice(0, 100))).join(pick(rand, seps));
}

function randomValue(rand: () => number): Bytes {
  const r = rand();
  if (r < 0.5) return pick(rand, UAS);
  if (r < 0.8) return hostileBytes(rand, 200);
  return "A".repeat(Math.floor(rand() * 100_000));
}

function randomRequest(rand: () => number): RequestOptions {
  const headers: [string, Bytes][] = [];
  if (rand() < 0.8) headers.push(["user-agent", randomValue(rand)]);
  if (rand() < 0.6) headers.push(["x-forwarded-for", randomXff(rand)]);
  if (rand() < 0.1) headers.push(["x-forwarded-for", randomXff(rand)]); // repeated header
  if (rand() < 0.3) headers.push(["x-envoy-external-address", randomAddress(rand)]);
  if (rand() < 0.3) headers.push(["x-real-ip", randomAddress(rand)]);
  for (let i = Math.floor(rand() * 4); i > 0; i--) headers.push([`x-junk-${i}`, randomValue(rand)]);
  const paths: Bytes[] = ["/", "/healthz", "/healthz/x", "/db", "/.env", "", "healthz", "/\u0000", "/" + "a".repeat(50_000)];
  const req: RequestOptions = { peer: randomPeer(rand), headers, path: rand() < 0.9 ? String(pick(rand, paths)) : undefined };
  if (rand() < 0.05) {
    // No pseudo-headers at all (as if the map were empty), or :path with raw bytes.
    req.rawHeaders = rand() < 0.5 ? [] : [[":path", hostileBytes(rand, 40)], ...headers];
  }
  return req;
}

const STATUSES: (number | Bytes)[] = [200, 200, 200, 204, 301, 304, 400, 401, 403, 404, 404, 429, 499, 500, 503, 599, 0, 99, 600, 999, 1000, 4040, "", "abc", "40", "4x4", "-404", " 404", new Uint8Array([0x34, 0, 0x34])];

// Custom rules and presets (docs/rules.md) whose matchers read hostile headers, paths and statuses.
const CUSTOM = {
  presets: ["sensitive-files", "crawl-non-static", "no-cookies", "redirect-loop", "scanner-user-agents"],
  custom: [
    {
      name: "every-matcher",
      take: { request: { method: ["GET", "POST"], path: ["/*", "*.php"], header: { accept: "*html*", cookie: "absent", "x-a": "present" }, userAgent: ["*"] } },
      give: { request: { query: "present", header: { "x-b": "?*" } }, response: { status: ["2xx", 404], header: { "set-cookie": "absent" } } },
      limit: { requests: 3, per: "1m" },
      ban: "30s",
    },
  ],
};

const CONFIGS = [
  { clientAddress: { source: "peer" } },
  { clientAddress: { source: "xff", trustedHops: 1 }, rules: CUSTOM },
  { clientAddress: { source: "xff", trustedHops: 0 } },
  { clientAddress: { source: "xff", trustedHops: 1 } },
  { clientAddress: { source: "xff", trustedHops: 2 }, prefixes: { ipv4: 24, ipv6: 48 } },
  { clientAddress: { source: "header:x-real-ip" } },
  { clientAddress: { source: "auto", trustedHops: 1 }, mode: "dry-run" },
  { clientAddress: { source: "auto" }, allow: ["10.0.0.0/8", "fd00::/8"], deny: ["203.0.113.0/24", "2001:db8::/32"], skipPaths: ["/healthz"] },
].map((extra) =>
  cfg({
    ...extra,
    capacity: 1024,
    rules: { rate: rateRule(5, "1m", "30s"), userAgent: uaRule(["curl/*", "*sqlmap*", "*"], 3, "1m", "1m"), errors: errorsRule(["4xx", 503], 4, "1m", "0s"), ...((extra as Record<string, any>).rules ?? {}) },
    response: { status: 429, body: "x", headers: { "content-type": "text/plain" } },
  }),
);

test(`random hostile requests never trap the VM and always get a valid action (seed ${SEED}, ${N} requests)`, async (t) => {
  t.diagnostic(`fuzz seed ${SEED}: reproduce with TRAFFIC_GUARD_FUZZ_SEED=${SEED} TRAFFIC_GUARD_FUZZ_N=${N}`);
  const rand = prng(SEED);
  const t0 = performance.now();
  let sent = 0;
  let denied = 0;
  for (const [ci, config] of CONFIGS.entries()) {
    const rootId = pick(rand, ["traffic-guard", "", "x"]);
    const h = await Host.start({ config, vms: 2, rootId });
    const perConfig = Math.ceil(N / CONFIGS.length);
    for (let i = 0; i < perConfig; i++) {
      const where = `seed ${SEED}, config ${ci}, request ${i}`;
      const vm = h.vm(rand() < 0.5 ? 0 : 1);
      const req = randomRequest(rand);
      try {
        const s = vm.request(req);
        assert.ok(s.requestAction >= 0 && s.requestAction <= 4, `${where}: invalid request action ${s.requestAction}`);
        assert.ok(!s.stalled, `${where}: request paused without a local reply`);
        if (s.localReply) {
          denied++;
          assert.equal(s.localReply.status, 429, `${where}: local reply uses the configured status`);
          assert.equal(s.responseAction, 0, `${where}: local reply passes the encoder`);
        }
        if (rand() < 0.03) s.finish(); // client went away before a response
        else s.respond(pick(rand, STATUSES));
        assert.ok(s.responseAction === -1 || s.responseAction === 0, `${where}: response action ${s.responseAction}`);
      } catch (e) {
        if (e instanceof TrapError) assert.fail(`${where}: ${e.message}`);
        throw e;
      }
      sent++;
      if (rand() < 0.2) h.clock.advance(Math.floor(rand() * 3000));
      if (rand() < 0.001) h.clock.advance("3h");
    }
    assert.equal(h.metrics.get(M.requests), perConfig, `seed ${SEED}, config ${ci}: every request counted once`);
    assert.ok(h.metrics.get(M.tracked) <= 1024, "tracked clients <= capacity");
    const keys = h.store.keys();
    const meta = keyPrefixOf(rootId) + "meta";
    const ranges = keyPrefixOf(rootId) + "r";
    const layout = keyPrefixOf(rootId) + "layout/"; // the custom rules' bucket names (assembly/layout.ts)
    assert.ok(keys.every((k) => isTableKeyOf(rootId, k) || k === meta || k === ranges || k === CLOCK_KEY || k.startsWith(layout)), `only keys of plugin "${rootId}" written`);
    assert.ok(keys.filter((k) => isTableKeyOf(rootId, k)).length <= 128);
    for (const vm of h.vms) assert.ok(vm.memoryBytes <= 64 * 1024 * 1024, `VM memory ${vm.memoryBytes} B stays bounded`);
    h.assertClean();
  }
  const ms = performance.now() - t0;
  t.diagnostic(`fuzz: ${sent} requests (${denied} local replies) in ${ms.toFixed(0)} ms`);
  assert.ok(sent >= 10_000 || N < 10_000);
  assert.ok(denied > N / 20, `the fuzz must also exercise denials (got ${denied})`);
});

/**
 * VM memory under hostile headers: header values never reach the collected heap and garbage is
 * collected by bytes, so the module's linear memory (which never shrinks) stays bounded whatever
 * clients send, with streams held open too.
 */
import test from "node:test";
import assert from "node:assert/strict";
import { start, rateRule, uaRule, errorsRule, assertPassed, M } from "./helpers.ts";
import type { HttpStream } from "../emulator/emulator.ts";

const MiB = 1 << 20;

/** An x-forwarded-for value of about `size` bytes whose rightmost entry is `last`. */
function longXff(size: number, last: string): string {
  const entry = "198.51.100.77, ";
  return entry.repeat(Math.ceil(size / entry.length)) + last;
}

test("thousands of requests with 60 KB User-Agent and x-forwarded-for headers, some held open, grow the module's memory by less than 2 MiB", async () => {
  const h = await start({
    clientAddress: { source: "xff", trustedHops: 0 },
    rules: {
      userAgent: uaRule(["*sqlmap*", "curl/*", "*nikto*"], 1_000_000, "60s", "1m"),
      rate: rateRule(1_000_000, "60s", "1m"),
      errors: errorsRule([404], 1_000_000, "60s", "1m"),
    },
  });
  const vm = h.vm(0);
  const ua = "Mozilla/5.0 " + "x".repeat(60_000);
  const warm = vm.send({ headers: { "user-agent": ua, "x-forwarded-for": longXff(58_000, "203.0.113.1") } });
  assertPassed(warm);
  const before = vm.memoryBytes;
  const open: HttpStream[] = [];
  for (let i = 0; i < 4000; i++) {
    const s = vm.request({
      headers: { "user-agent": ua, "x-forwarded-for": longXff(58_000, `203.0.${(i >> 8) & 255}.${i & 255}`) },
    });
    assertPassed(s, `request ${i}`);
    if (i % 100 === 0) open.push(s);
    else s.respond(i % 7 === 0 ? 404 : 200);
  }
  for (const s of open) s.respond(200);
  const grown = vm.memoryBytes - before;
  assert.ok(grown < 2 * MiB, `linear memory grew by ${(grown / MiB).toFixed(2)} MiB over 4000 hostile requests`);
  assert.equal(h.metrics.get(M.internalErrors), 0);
  assert.equal(h.metrics.get(M.requests), 4001);
  assertPassed(vm.send({ peer: "192.0.2.9:1000" }), "a normal request afterwards");
  h.assertClean();
});

test("requests whose streams all stay open still have their garbage collected", async () => {
  // Each request reads and rewrites its client's set in shared data (managed garbage the host copies
  // in). With 20 000 distinct clients and every stream left open, nothing is ever deleted.
  const h = await start({ capacity: 65536, rules: { rate: rateRule(1_000_000, "60s", "1m") } });
  const vm = h.vm(0);
  vm.send();
  const before = vm.memoryBytes;
  for (let i = 0; i < 20_000; i++) {
    assertPassed(vm.request({ peer: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}:1000` }), `request ${i}`);
  }
  const grown = vm.memoryBytes - before;
  // The open contexts themselves stay alive (about 100 bytes each with their map entries).
  assert.ok(grown < 6 * MiB, `linear memory grew by ${(grown / MiB).toFixed(2)} MiB over 20 000 open streams`);
  h.assertClean();
});

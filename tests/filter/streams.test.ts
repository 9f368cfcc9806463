/**
 * What a stream carries from its request to its end (assembly/streams.ts): the module exports only
 * proxy_on_request_headers and proxy_on_log among the stream callbacks, keeps each open stream's state in
 * a fixed per-worker table indexed by context id, and reads the response in proxy_on_log.
 */
import test from "node:test";
import assert from "node:assert/strict";
import { M, start, errorsRule, rulesOff, assertPassed, assertHostClean, bans } from "./helpers.ts";

/** streams.ts SLOTS. */
const SLOTS = 8192;
const PROBER = { peer: "203.0.113.9:4000", path: "/missing" };

test("a stream's response counts when it ends, however many streams started and ended while it was open", async () => {
  const h = await start({ rules: { ...rulesOff(), errors: errorsRule([404], 1, "1m", "10m") } });
  const vm = h.vm(0);
  const first = vm.request(PROBER);
  const long = vm.request(PROBER);
  assertPassed(long);
  // Other clients' streams come and go while `long` waits for its response.
  for (let i = 0; i < 3 * SLOTS; i++) vm.request({ peer: `198.51.100.${i % 200}:5000` }).respond(200);
  first.respond(404);
  assert.equal(bans(h).length, 0, "one 404 is within the limit");
  long.respond(404);
  assert.equal(bans(h).length, 1, "the long stream's 404 counted at its end");
  assert.equal(h.metrics.get(M.internalErrors), 0);
  assertHostClean(h);
});

test("with 8192 streams open at once on a worker, the oldest loses its slot: its response is not counted, and the takeover is", async () => {
  const h = await start({ rules: { ...rulesOff(), errors: errorsRule([404], 1, "1m", "10m") } });
  const vm = h.vm(0);
  vm.request(PROBER).respond(404);
  const long = vm.request(PROBER);
  // The younger streams stay open too, so the one SLOTS ids after `long` finds every slot it may use taken.
  const open = [];
  for (let i = 0; i < SLOTS; i++) open.push(vm.request({ peer: `198.51.100.${i % 200}:5000` }));
  assert.equal(h.metrics.get(M.internalErrors), 1, "the stream that took the slot counted the takeover");
  long.respond(404);
  assert.equal(bans(h).length, 0, "the second 404 was not counted: its stream had lost its state");
  for (const s of open) s.respond(200);
  vm.request(PROBER).respond(404);
  assert.equal(bans(h).length, 1, "later streams count again");
  assertHostClean(h);
});

test("a stream the filter never saw in its request phase ends without effect", async () => {
  const h = await start({ rules: { ...rulesOff(), errors: errorsRule([404], 1, "1m", "10m") } });
  const vm = h.vm(0);
  // Envoy runs proxy_on_log also for streams rejected before any filter ran (a malformed request).
  for (let i = 0; i < 3; i++) vm.call("proxy_on_log", undefined, 1_000_000 + i);
  vm.request(PROBER).respond(404);
  assert.equal(bans(h).length, 0);
  assert.equal(h.metrics.get(M.internalErrors), 0);
  assertHostClean(h);
});

// Several VMs (Envoy workers) over one shared-data store: exact limits, CAS conflicts, the documented
// first write to a never-used key, and failing open when shared data misbehaves.
import { test } from "node:test";
import assert from "node:assert/strict";
import { WasmResult, type HttpStream } from "../emulator/emulator.ts";
import {
  M, start, tableKeys, rateRule, uaRule, errorsRule, assertPassed, assertDenied, assertHostClean, bans, prng, passedCount,
} from "./helpers.ts";

const C = { peer: "198.51.100.7:4000" };

test("two VMs interleaving one client's requests ban it at exactly the limit: requests 1..10 pass, the 11th is denied", async () => {
  for (const seed of [1, 2, 3, 4, 5]) {
    const rand = prng(seed);
    const h = await start({ rules: { rate: rateRule(10, "1h", "1h") } }, { vms: 2 });
    for (let i = 1; i <= 10; i++) assertPassed(h.vm(rand() < 0.5 ? 0 : 1).send(C), `request ${i} (seed ${seed})`);
    const last = rand() < 0.5 ? 0 : 1;
    assertDenied(h.vm(last).send(C), 403, `11th request on VM ${last} (seed ${seed})`);
    assertDenied(h.vm(1 - last).send(C), 403, "the ban is visible to the other VM");
    assert.equal(h.metrics.get(M.bansRate), 1, "one stat shared by both VMs");
    assert.equal(h.metrics.get(M.requests), 12);
    assert.equal(bans(h).length, 1);
    assertHostClean(h);
  }
});

test("two VMs count a client's 4xx responses and scripted requests together", async () => {
  const h = await start({ rules: { errors: errorsRule(["4xx"], 5, "1h", "1h"), userAgent: uaRule(["curl/*"], 4, "1h", "1h") } }, { vms: 2 });
  for (let i = 0; i < 6; i++) assertPassed(h.vm(i % 2).send({ peer: "198.51.100.8:1" }, 404), `404 number ${i + 1}`);
  assert.deepEqual(bans(h).map((b) => b.rule), ["errors"], "the 6th 404 across both VMs bans");
  assertDenied(h.vm(0).send({ peer: "198.51.100.8:1" }));
  for (let i = 0; i < 4; i++) assertPassed(h.vm(1 - (i % 2)).send({ peer: "198.51.100.9:1", headers: { "user-agent": "curl/8" } }));
  assertDenied(h.vm(1).send({ peer: "198.51.100.9:1", headers: { "user-agent": "curl/8" } }), 403, "5th curl request across both VMs");
});

test("an update from VM B landing between VM A's get and set is not lost: A retries on CAS mismatch", async () => {
  const h = await start({ rules: { rate: rateRule(10, "1h", "1h") } }, { vms: 2 });
  for (let i = 1; i <= 8; i++) assertPassed(h.vm(i % 2).send(C), `request ${i}`);
  const [key] = tableKeys(h);
  let inner: HttpStream | undefined;
  const mismatchesBefore = h.store.casMismatches;
  // VM A (0) serves request 9; while it is between its get and its set, VM B (1) serves request 10.
  h.store.onBeforeSet(key, () => {
    inner = h.vm(1).send(C);
  });
  const outer = h.vm(0).send(C);
  assert.ok(inner, "the hook ran VM B's request inside VM A's update");
  assertPassed(inner!, "request 10 (VM B, interleaved)");
  assertPassed(outer, "request 9 (VM A, retried after the conflict)");
  assert.ok(h.store.casMismatches > mismatchesBefore, "VM A's first set really hit a CAS mismatch");
  assertDenied(h.vm(0).send(C), 403, "11th request: both interleaved updates counted");
  assert.equal(h.metrics.get(M.internalErrors), 0, "the retry succeeded, nothing failed open");
  assertHostClean(h);
});

test("a CAS conflict during the errors update on a response is retried too", async () => {
  const h = await start({ rules: { errors: errorsRule([404], 4, "1h", "1h") } }, { vms: 2 });
  assertPassed(h.vm(0).send(C, 404)); // writes the set
  const [key] = tableKeys(h);
  const s = h.vm(0).request(C);
  h.store.onBeforeSet(key, () => void h.vm(1).send(C, 404));
  s.respond(404); // A's response update, with B's response update landing in between
  assertPassed(h.vm(1).send(C, 404), "4th 404 still within the limit");
  assert.equal(bans(h).length, 0);
  h.vm(0).send(C, 404);
  assert.equal(bans(h).length, 1, "the 5th 404 bans: no 404 was lost");
  assert.equal(h.metrics.get(M.internalErrors), 0);
});

test("a set that changes under every attempt is given up after bounded retries: the request passes and counts an internal error", async () => {
  const h = await start({ rules: { rate: rateRule(1, "1h", "1h") } }, { vms: 1 });
  h.vm(0).send(C); // writes the key
  const [key] = tableKeys(h);
  let attempts = 0;
  let busy = false;
  const remove = h.store.onBeforeSet(key, (k) => {
    if (busy) return;
    attempts++;
    busy = true;
    const cur = h.store.get(k)!;
    h.store.set(k, cur.value, 0); // another worker wins the race every time
    busy = false;
  }, { once: false });
  const r = h.vm(0).send(C);
  remove();
  assertPassed(r, "fail open");
  assert.ok(attempts >= 2 && attempts <= 9, `bounded CAS retries (contract: up to 8), saw ${attempts} attempts`);
  assert.equal(h.metrics.get(M.internalErrors), 1);
  assertHostClean(h);
});

test("two VMs racing on a never-written set lose no update: the first write uses a non-zero CAS", async (t) => {
  const outcomes: number[] = [];
  for (const order of ["A-then-B", "B-then-A"]) {
    const h = await start({ rules: { rate: rateRule(10, "1h", "1h") } }, { vms: 2 });
    // VM A's get finds the set absent; before A's set lands, VM B writes the same set from scratch.
    const [a, b] = order === "A-then-B" ? [0, 1] : [1, 0];
    let inner: HttpStream | undefined;
    h.store.onBeforeSet(null, () => {
      inner = h.vm(b).send(C);
    });
    const outer = h.vm(a).send(C);
    assertPassed(outer);
    assert.ok(inner, "the hook ran VM B's request inside VM A's update");
    assertPassed(inner);
    const rest = Array.from({ length: 15 }, (_, i) => h.vm(i % 2).send(C));
    const passed = 2 + passedCount(rest);
    outcomes.push(passed);
    assert.equal(passed, 10, `exactly 10 requests pass (an 11th would mean a lost update), got ${passed}`);
    assert.ok(rest.slice(passed - 2).every((r) => r.localReply), "after the first denial every request is denied");
    assert.equal(h.metrics.get(M.internalErrors), 0);
  }
  t.diagnostic(`first-write race: requests passed before the ban = ${outcomes.join(", ")} (10 = no update lost)`);
});

test("shared data that refuses every set makes the filter fail open and count internal errors, without trapping", async () => {
  for (const forced of [WasmResult.CasMismatch, WasmResult.InternalFailure, WasmResult.Unimplemented]) {
    const h = await start({ rules: { rate: rateRule(1, "1h", "1h"), userAgent: uaRule(["curl/*"], 1, "1h", "1h"), errors: errorsRule(["4xx"], 1, "1h", "1h") } });
    h.store.forceSetResult = forced;
    for (let i = 0; i < 20; i++) assertPassed(h.vm(0).send({ ...C, headers: { "user-agent": "curl/8" } }, 200), `request ${i + 1} with set -> ${forced}`);
    assert.equal(h.metrics.get(M.internalErrors), 20, `one internal error per request (set -> ${forced})`);
    for (let i = 0; i < 5; i++) assertPassed(h.vm(0).send({ peer: `198.51.100.${i + 20}:1` }, 404));
    assert.equal(h.metrics.get(M.internalErrors), 30, "request and error-response updates both fail open and count");
    assert.equal(tableKeys(h).length, 0);
    assert.deepEqual(bans(h), []);
    assertHostClean(h);
  }
});

test("shared data whose get fails makes the filter fail open and count internal errors", async () => {
  const h = await start({ rules: { rate: rateRule(1, "1h", "1h") } });
  h.store.forceGetResult = WasmResult.InternalFailure;
  for (let i = 0; i < 10; i++) assertPassed(h.vm(0).send(C));
  assert.equal(h.metrics.get(M.internalErrors), 10);
  h.store.forceGetResult = null;
  assertPassed(h.vm(0).send(C), "recovers once shared data works again");
  assertDenied(h.vm(0).send(C));
});

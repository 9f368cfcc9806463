// The table's hash secret comes from the host's WASI random_get, so nobody outside the process can
// compute which addresses share a set (tests/filter/table-attacks.test.ts shows what that prevents).
import assert from "node:assert/strict";
import { test } from "node:test";
import { Host } from "../emulator/emulator.ts";
import { META_KEY, assertHostClean, assertPassed, cfg, start } from "./helpers.ts";

// The 16 secret bytes of the meta value: u32 sets, u32 previous sets, u64 k0, u64 k1 (assembly/table.ts).
function secretOf(meta: Uint8Array | undefined): string {
  assert.ok(meta && meta.length >= 24, "the meta key holds the geometry and the secret");
  return Buffer.from(meta.subarray(8, 24)).toString("hex");
}

test("the table secret is drawn from the host's random_get: another seed gives another secret, the same seed the same", async () => {
  const a = await start({}, { randomSeed: 1n });
  const b = await start({}, { randomSeed: 2n });
  const a2 = await start({}, { randomSeed: 1n });
  assert.ok((a.vms[0].importCalls.get("random_get") ?? 0) >= 1, "configure called random_get");
  const sa = secretOf(a.store.get(META_KEY)?.value);
  assert.notEqual(sa, secretOf(b.store.get(META_KEY)?.value));
  assert.equal(sa, secretOf(a2.store.get(META_KEY)?.value));
});

test("every worker of one process uses the secret the first one drew, and draws no other", async () => {
  const h = await start({}, { vms: 3, randomSeed: 7n });
  const draws = h.vms.map((vm) => vm.importCalls.get("random_get") ?? 0);
  assert.equal(draws.reduce((x, y) => x + y, 0), 1, `one draw in the process, got ${draws.join(",")}`);
});

test("a host without random_get still gets a secret, from clock material, that differs with the time the table was created", async () => {
  const secrets: string[] = [];
  for (const startMs of [Date.UTC(2024, 0, 15, 12), Date.UTC(2024, 0, 15, 12, 0, 0, 1)]) {
    const h = Host.load({ startMs });
    h.random.available = false;
    assert.ok(h.configure(cfg()), "configure succeeds without random_get");
    assert.ok((h.vms[0].importCalls.get("random_get") ?? 0) >= 1, "random_get was tried first");
    const secret = secretOf(h.store.get(META_KEY)?.value);
    assert.notEqual(secret, "0".repeat(32), "the secret is not zero (zero means no secret)");
    secrets.push(secret);
    assertPassed(h.vm(0).send({ peer: "203.0.113.7:1" }));
    assertHostClean(h);
  }
  assert.notEqual(secrets[0], secrets[1], "another creation time gives another secret");
});

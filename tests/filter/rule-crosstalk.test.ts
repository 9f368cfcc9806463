// A request's custom-rule matches belong to that request alone: an error response (which the errors rule
// counts) must not spend a custom rule's token again, nor spend one for another client whose request
// happened to be the last one the worker matched. tests/e2e/behaviour-rules.test.ts shows the same
// with curl's `.env` probes, answered 404, in real Envoy.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Host } from "../emulator/emulator.ts";

const PRESET = JSON.stringify({ clientAddress: { source: "peer" }, rules: { presets: ["sensitive-files"] } });

test("three .env probes answered 404 pass under sensitive-files and the fourth is refused, as with 200", async () => {
  for (const status of [200, 404]) {
    const h = await Host.start({ config: PRESET, vms: 1 });
    const seen: string[] = [];
    for (const path of ["/.env", "/.git/config", "/.git/HEAD", "/app/.env"]) {
      const r = h.vm(0).request({ path, peer: "203.0.113.7:4000", headers: { "user-agent": "scanner" } }).respond(status);
      seen.push(r.localReply ? String(r.localReply.status) : "upstream");
    }
    assert.deepEqual(seen, ["upstream", "upstream", "upstream", "403"], `probes answered ${status}`);
  }
});

test("a client whose pages are missing is never banned by sensitive-files because another client probes on the same worker", async () => {
  const h = await Host.start({ config: PRESET, vms: 1 });
  for (let i = 0; i < 5; i++) {
    const reader = h.vm(0).request({ path: `/missing/${i}`, peer: "198.51.100.9:4000", headers: { "user-agent": "reader" } });
    h.vm(0).request({ path: "/.env", peer: "203.0.113.7:4000", headers: { "user-agent": "scanner" } });
    reader.respond(404);
    assert.equal(reader.localReply?.status, undefined, `the reader's request ${i} reached the upstream`);
  }
  const banned = h.logs.filter((l) => /banned/.test(l.text)).map((l) => l.text.split(":")[1]);
  assert.deepEqual(banned, [" banned 203.0.113.7 for 3600s"], "only the prober is banned");
});

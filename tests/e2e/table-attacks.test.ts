// Attacks on the shared client table in real Envoy (edge topology, --concurrency 2): addresses aimed at
// a banned client's set with the formerly unkeyed hash, and two traffic-guard plugins in one proxy.
import assert from "node:assert/strict";
import { edgeSpec } from "../../dev/envoy-topologies.ts";
import { aimedAt } from "../filter/unkeyed-hash.ts";
import { banLines, e2e, get, guardFilter, portOf } from "./harness.ts";

e2e("at capacity 1024, eight loopback addresses aimed at a banned client's set and banned themselves do not lift its ban", async (s, t) => {
  const app = await s.app();
  const envoy = await s.envoy({
    label: "aimed-ban",
    concurrency: 2,
    spec: edgeSpec({
      upstreamPort: app.port,
      filters: [guardFilter({ capacity: 1024, clientAddress: { source: "peer" }, rules: { rate: { limit: { requests: 1, per: "24h" }, ban: "1h" } } })],
    }),
  });
  const port = portOf(envoy, "edge");
  const target = "127.0.0.7";
  const aimed = aimedAt(target, 8, 1024 / 8, "127.1");
  t.diagnostic(`aimed with the unkeyed hash: ${aimed.join(" ")}`);
  const status = async (from: string) => (await get("127.0.0.1", port, "/", { from })).status;
  assert.equal(await status(target), 200);
  assert.equal(await status(target), 403, "the target is banned");
  for (const a of aimed) {
    assert.equal(await status(a), 200, `${a} first request`);
    assert.equal(await status(a), 403, `${a} gets itself banned`);
  }
  assert.equal(await status(target), 403, "the target is still banned");
  assert.equal(banLines(envoy.log()).length, 9, "nine bans, none lost");
});

e2e("two traffic-guard plugins with one root id in one Envoy keep separate tables and never migrate each other's", async (s) => {
  const app = await s.app();
  const rate = (requests: number) => ({ rate: { limit: { requests, per: "24h" }, ban: "1h" } });
  const envoy = await s.envoy({
    label: "two-plugins",
    concurrency: 2,
    spec: edgeSpec({
      upstreamPort: app.port,
      filters: [
        guardFilter({ capacity: 1024, clientAddress: { source: "peer" }, rules: rate(2) }, { namespace: "team-a", name: "guard" }),
        guardFilter({ capacity: 4096, clientAddress: { source: "peer" }, rules: rate(3) }, { namespace: "team-b", name: "guard" }),
      ],
    }),
  });
  const port = portOf(envoy, "edge");
  const statuses: number[] = [];
  for (let i = 0; i < 4; i++) statuses.push((await get("127.0.0.1", port, "/", { from: "127.0.0.9" })).status);
  // Plugin A (2 a day) passes two and bans on the third; plugin B never gets past its own 3. Had they
  // shared one record, every request would take two tokens and the second would already be denied.
  assert.deepEqual(statuses, [200, 200, 403, 403]);
  const other: number[] = [];
  for (let i = 0; i < 3; i++) other.push((await get("127.0.0.1", port, "/", { from: "127.0.0.10" })).status);
  assert.deepEqual(other, [200, 200, 403]);
  assert.deepEqual(banLines(envoy.log()).map((b) => [b.address, b.limit]), [["127.0.0.9", "2/86400s"], ["127.0.0.10", "2/86400s"]]);
  assert.doesNotMatch(envoy.log(), /capacity changed/, "neither plugin's configure moved the other's table");
});

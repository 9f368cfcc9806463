// Admission to the full client table: a flood of one-request addresses must not wash out the evidence a
// low-and-slow prober accumulates (see docs/state-and-limits.md, "Admission").
import { test } from "node:test";
import assert from "node:assert/strict";
import { Host } from "../emulator/emulator.ts";
import { M, cfg, rateRule, errorsRule, bans, assertHostClean } from "./helpers.ts";

/** The i-th flood address: distinct IPv4 addresses from 100.64.0.0 upwards. */
function floodPeer(i: number): string {
  const a = (0x64400000 + i) >>> 0;
  return `${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}:1`;
}

test("a prober sending 25 probes a minute against an errors limit of 20 a minute is banned within 2 minutes while 5 000 new addresses a second churn through a table of 1024 (39 newcomers per set per second)", async (t) => {
  const h = await Host.start({
    config: cfg({
      capacity: 1024,
      rules: { rate: rateRule(600, "1m", "5m"), errors: errorsRule(["4xx"], 20, "1m", "30m") },
    }),
  });
  const t0 = performance.now();
  const prober = { peer: "198.51.100.66:1", path: "/.env" };
  // 5 000 new addresses per second of emulated time into 128 sets: the same pressure per set as 20 000 a
  // second into the 512 sets of a table of 4096, with a quarter of the emulator calls.
  const PER_MS = 5;
  let flood = 0;
  let probes = 0;
  let bannedAtMs = -1;
  // Each minute the prober sends 25 probes, one a second, then pauses for 35 s: the pause is when an
  // unprotected record is evicted by the flood (about 39 newcomers per set per second).
  for (let ms = 0; ms < 120_000 && bannedAtMs < 0; ms++) {
    for (let k = 0; k < PER_MS; k++) {
      const r = h.vm(0).send({ peer: floodPeer(flood++) });
      if (!r.upstreamReached) assert.fail(`flood request ${flood} was denied`);
    }
    const second = Math.floor(ms / 1000);
    if (ms % 1000 === 0 && second % 60 < 25) {
      probes++;
      const r = h.vm(0).send(prober, 404);
      if (!r.upstreamReached) bannedAtMs = ms;
    }
    h.clock.advance(1);
  }
  const evictions = h.metrics.get(M.evictions);
  const refused = h.metrics.get(M.admissionsRefused);
  t.diagnostic(
    `prober denied at ${bannedAtMs} ms after ${probes} probes; ${flood} flood addresses, ${evictions} evictions, ` +
      `${refused} admissions refused, tracked ${h.metrics.get(M.tracked)}, ${(performance.now() - t0).toFixed(0)} ms`,
  );
  const ban = bans(h).find((b) => b.address === "198.51.100.66");
  assert.ok(ban, "the prober was banned");
  assert.equal(ban.rule, "errors");
  assert.ok(bannedAtMs >= 0 && bannedAtMs < 120_000, `denied within 2 minutes (at ${bannedAtMs} ms)`);
  assert.equal(h.metrics.get(M.bansErrors), 1, "only the prober was banned");
  assert.equal(h.metrics.get(M.tracked), 1024, "the table was full all along");
  assert.ok(evictions >= flood - 1024, `the flood kept evicting one-request records (${evictions})`);
  assert.equal(h.metrics.get(M.internalErrors), 0);
  assertHostClean(h);
});

/**
 * gRPC errors in rules.errors: "grpc:N" statuses count responses whose grpc-status is N, whether it
 * arrives in the trailers (a normal gRPC response) or in the headers of a trailers-only response.
 */
import test from "node:test";
import assert from "node:assert/strict";
import { M, start, errorsRule, assertPassed, assertDenied, assertHostClean, bans } from "./helpers.ts";

const P = { peer: "198.51.100.20:5000", path: "/pkg.Service/Method", method: "POST", headers: { "content-type": "application/grpc" } };
const GRPC = { "content-type": "application/grpc" };

test("a gRPC prober answered NOT_FOUND in trailers is banned like an HTTP prober", async () => {
  const h = await start({ rules: { errors: errorsRule(["grpc:5", "grpc:16"], 3, "1m", "10m") } });
  for (let i = 0; i < 3; i++) {
    const s = h.vm(0).request(P);
    assertPassed(s, `call ${i + 1}`);
    s.respond(200, GRPC, { "grpc-status": "5", "grpc-message": "not found" });
  }
  assert.equal(bans(h).length, 0, "three errors are within the limit");
  const s = h.vm(0).request(P);
  s.respond(200, GRPC, { "grpc-status": "5" });
  assert.equal(bans(h).length, 1);
  assert.equal(bans(h)[0].rule, "errors");
  assertDenied(h.vm(0).send(P), 403, "banned after the 4th NOT_FOUND");
  assert.equal(h.metrics.get(M.bansErrors), 1);
  assertHostClean(h);
});

test("a trailers-only gRPC response (grpc-status in the headers) counts too", async () => {
  const h = await start({ rules: { errors: errorsRule(["grpc:16"], 2, "1m", "10m") } });
  for (let i = 0; i < 3; i++) h.vm(0).request(P).respond(200, { ...GRPC, "grpc-status": "16" });
  assert.equal(bans(h).length, 1);
  assertDenied(h.vm(0).send(P), 403);
  assertHostClean(h);
});

test("gRPC statuses that are not configured, OK, garbage and HTTP 200 without grpc-status never count", async () => {
  const h = await start({ rules: { errors: errorsRule(["grpc:5"], 1, "1m", "10m") } });
  const statuses = ["0", "4", "14", "55", "05x", "", "-5", "5 "];
  for (const g of statuses) h.vm(0).request(P).respond(200, GRPC, { "grpc-status": g });
  for (const g of statuses) h.vm(0).request(P).respond(200, { ...GRPC, "grpc-status": g });
  for (let i = 0; i < 5; i++) h.vm(0).request(P).respond(200, GRPC, {});
  for (let i = 0; i < 5; i++) h.vm(0).send(P, 200);
  assert.equal(bans(h).length, 0);
  assertPassed(h.vm(0).send(P));
  assertHostClean(h);
});

test("HTTP statuses and gRPC statuses count side by side; a gRPC status does not count when only HTTP statuses are configured", async () => {
  const h = await start({ rules: { errors: errorsRule([404, "grpc:5"], 2, "1m", "10m") } });
  h.vm(0).send(P, 404);
  h.vm(0).request(P).respond(200, GRPC, { "grpc-status": "5" });
  h.vm(0).request(P).respond(200, { ...GRPC, "grpc-status": "5" });
  assert.equal(bans(h).length, 1, "404 + two NOT_FOUND exceed 2 per minute");

  const http = await start({ rules: { errors: errorsRule(["4xx"], 1, "1m", "10m") } });
  for (let i = 0; i < 5; i++) http.vm(0).request(P).respond(200, GRPC, { "grpc-status": "5" });
  assert.equal(bans(http).length, 0);
  assertHostClean(h);
  assertHostClean(http);
});

test("in dry-run a gRPC error counts and bans are logged, but nothing is denied", async () => {
  const h = await start({ mode: "dry-run", rules: { errors: errorsRule(["grpc:5"], 1, "1m", "10m") } });
  for (let i = 0; i < 3; i++) h.vm(0).request(P).respond(200, GRPC, { "grpc-status": "5" });
  assert.equal(bans(h).length, 1);
  assert.ok(bans(h)[0].dryRun);
  assertPassed(h.vm(0).send(P));
  assertHostClean(h);
});

import { Host } from "../emulator/emulator.ts";
import { cfg } from "./helpers.ts";
import { EtcdFake } from "./etcd-fake.ts";
const h = await Host.start({ vms: 1, nodeId: "me", clusters: ["etcd"], config: cfg({ decisions: { cluster: "etcd", prefix: "p/" } }) });
const etcd = new EtcdFake(h);
for (let i = 0; i < 10000; i++) etcd.put(`p/bans/10.0.${i>>8}.${i&255}`, JSON.stringify({ until: h.clock.nowMs + 3600000, reason: "rate", strike: 1, origin: "x", created: h.clock.nowMs }), 3600000);
// pre-build responses to time only the wasm
function timeIt(label: string, f: () => void) { const t = performance.now(); f(); console.log(label, (performance.now() - t).toFixed(2), "ms"); }
h.clock.advance("1s");
timeIt("tick+first full range (incl fake etcd)", () => etcd.sync());
for (let k = 0; k < 3; k++) {
  h.clock.advance("1s");
  h.tick();
  const c = h.pendingCalls()[0];
  const resp = JSON.stringify({ header: { revision: String(etcd.revision) }, count: "10000" });
  timeIt("poll response", () => c.respond(200, resp));
}
// full range pages: capture
h.clock.advance("61s");
h.tick();
let total = 0; let n = 0;
for (;;) {
  const c = h.pendingCalls()[0]; if (!c) break;
  // get the answer body from fake by calling answer on a proxy object
  let body = ""; let status = 0;
  const fake = { header: (x: string) => c.header(x), json: () => c.json(), respond: (s: number, b: string) => { status = s; body = b; } } as any;
  etcd.answer(fake);
  const t = performance.now(); c.respond(status, body); total += performance.now() - t; n++;
}
console.log("full range of 10000:", n, "pages,", total.toFixed(1), "ms in wasm");

// The local reply for a blocked request (assembly/response.ts), as the host receives it through
// proxy_send_local_response: status, body, serialised header pairs, details and retry-after.

import { LocalReply } from "../../assembly/response";
import { parseConfig, Config } from "../../assembly/config";
import * as rules from "../../assembly/rules";
import * as mock from "./mock";

function cfgOf(text: string): Config {
  let r = parseConfig(text);
  expect(r.errors.join("; ")).toBe("");
  return changetype<Config>(r.config);
}

function headers(): string {
  let out: string[] = [];
  for (let i = 0; i < mock.replyHeaderCount(); i++) out.push(mock.replyHeader(i));
  return out.join(" | ");
}

describe("local reply", () => {
  beforeEach(() => { mock.reset(); });

  it("sends the default 403 with a text/plain body and the reason in the details", () => {
    let reply = new LocalReply(cfgOf("{}"));
    reply.send(rules.DENY_RATE, 0);
    expect(mock.replyCount()).toBe(1);
    expect(mock.replyStatus()).toBe(403);
    expect(mock.replyBody()).toBe("Forbidden\n");
    expect(headers()).toBe("content-type: text/plain");
    expect(mock.replyDetails()).toBe("traffic_guard_rate");
    expect(mock.replyGrpc()).toBe(-1, "not a gRPC reply");
  });

  it("names every denial reason in the response code details", () => {
    let reply = new LocalReply(cfgOf("{}"));
    let reasons: i32[] = [rules.DENY_RATE, rules.DENY_UA, rules.DENY_ERRORS, rules.DENY_BANNED, rules.DENY_LIST];
    let got: string[] = [];
    for (let i = 0; i < reasons.length; i++) {
      reply.send(reasons[i], 0);
      got.push(mock.replyDetails());
    }
    expect(got.join(",")).toBe("traffic_guard_rate,traffic_guard_user_agent,traffic_guard_errors,traffic_guard_banned,traffic_guard_deny");
  });

  it("adds retry-after in whole seconds for a banned client, after the configured headers", () => {
    let reply = new LocalReply(cfgOf("{}"));
    reply.send(rules.DENY_BANNED, 300);
    expect(headers()).toBe("content-type: text/plain | retry-after: 300");
    expect(mock.replyDetails()).toBe("traffic_guard_banned");
  });

  it("does not keep retry-after for the next reply", () => {
    let reply = new LocalReply(cfgOf("{}"));
    reply.send(rules.DENY_BANNED, 17);
    reply.send(rules.DENY_RATE, 0);
    expect(headers()).toBe("content-type: text/plain");
    reply.send(rules.DENY_BANNED, 86400);
    expect(headers()).toBe("content-type: text/plain | retry-after: 86400");
  });

  it("uses the configured status, body and headers, UTF-8 included", () => {
    let reply = new LocalReply(cfgOf("{\"response\":{\"status\":429,\"body\":\"zpomalte prosím ✋\\n\",\"headers\":{\"Content-Type\":\"text/plain; charset=utf-8\",\"x-why\":\"traffic-guard ✓\"}}}"));
    reply.send(rules.DENY_UA, 0);
    expect(mock.replyStatus()).toBe(429);
    expect(mock.replyBody()).toBe("zpomalte prosím ✋\n");
    expect(headers()).toBe("content-type: text/plain; charset=utf-8 | x-why: traffic-guard ✓");
  });

  it("sends an empty body and no headers when configured so", () => {
    let reply = new LocalReply(cfgOf("{\"response\":{\"status\":429,\"body\":\"\",\"headers\":{}}}"));
    reply.send(rules.DENY_RATE, 0);
    expect(mock.replyBody()).toBe("");
    expect(mock.replyHeaderCount()).toBe(0);
    reply.send(rules.DENY_BANNED, 5);
    expect(headers()).toBe("retry-after: 5");
  });

  it("serialises many headers so the host can decode every pair", () => {
    let text = "{\"response\":{\"headers\":{";
    for (let i = 0; i < 20; i++) text += (i > 0 ? "," : "") + "\"x-h" + i.toString() + "\":\"" + "v".repeat(i) + "\"";
    text += "}}}";
    let reply = new LocalReply(cfgOf(text));
    reply.send(rules.DENY_BANNED, 1);
    expect(mock.replyHeaderCount()).toBe(21);
    expect(mock.replyHeader(0)).toBe("x-h0: ");
    expect(mock.replyHeader(19)).toBe("x-h19: " + "v".repeat(19));
    expect(mock.replyHeader(20)).toBe("retry-after: 1");
  });
});

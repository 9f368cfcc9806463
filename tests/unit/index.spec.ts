// The entry module (assembly/index.ts) driven through its proxy-wasm exports, the way Envoy calls them,
// against the host mock: configure log lines, the request path order of docs/design.md, local replies,
// the ban log line, metrics, dry-run and fail-open. (tests/filter runs the same contract end to end on
// the compiled release module; this checks the wiring at unit level.)

import { proxy_on_configure, proxy_on_request_headers, proxy_on_log } from "../../assembly/index";
import * as mock from "./mock";

const CONTINUE: i32 = 0;
const STOP: i32 = 1;
const INFO: i32 = 2;
const WARN: i32 = 3;
const CRITICAL: i32 = 5;
const INTERNAL_FAILURE: i32 = 10;

// Every test uses a fresh root context id (a new GuardRoot) and fresh stream ids.
let nextRoot: u32 = 1000;
let root: u32 = 0;
let nextStream: u32 = 1;

// Resets the host and configures a new root context; returns proxy_on_configure's result.
function configure(config: string): u32 {
  mock.reset();
  root = nextRoot;
  nextRoot += 1000;
  return reconfigure(config);
}

function reconfigure(config: string): u32 {
  mock.setPluginConfig(config);
  return proxy_on_configure(root, String.UTF8.encode(config).byteLength);
}

let lastStream: u32 = 0;
// One request from `peer` with an optional User-Agent and path; returns the filter's status.
function request(peer: string, ua: string, path: string): i32 {
  mock.removeHeader(mock.REQUEST, "user-agent");
  mock.removeHeader(mock.REQUEST, ":path");
  mock.setProperty("source.address", peer);
  if (ua.length > 0) mock.setHeader(mock.REQUEST, "user-agent", ua);
  mock.setHeader(mock.REQUEST, ":path", path.length > 0 ? path : "/");
  lastStream = root + nextStream++;
  return proxy_on_request_headers(lastStream, 3, 1);
}

// The response to the last request, with `status`, and the end of the stream: Envoy's access-log phase
// (proxy_on_log), where the filter reads the response (the only stream callback after the request's).
function respond(status: string): void {
  mock.setHeader(mock.RESPONSE, ":status", status);
  proxy_on_log(lastStream);
}

function counter(name: string): i64 { return mock.metricValue("traffic_guard_" + name); }

// Log lines at `level` since the mock was reset.
function logsAt(level: i32): string {
  let out: string[] = [];
  for (let i = 0; i < mock.logCount(); i++) if (mock.logLevel(i) == level) out.push(mock.logMessage(i));
  return out.join("\n");
}

describe("configure", () => {
  it("logs one info line with mode, capacity and the enabled rules", () => {
    expect(configure("{\"mode\":\"dry-run\",\"capacity\":2048,\"rules\":{\"userAgent\":{\"enabled\":false}}}")).toBe(1);
    expect(logsAt(INFO)).toBe("traffic-guard: configured mode=dry-run capacity=2048 rules=rate,errors");
    expect(logsAt(CRITICAL)).toBe("");
  });

  it("accepts an empty configuration with the defaults", () => {
    expect(configure("")).toBe(1);
    expect(logsAt(INFO)).toBe("traffic-guard: configured mode=enforce capacity=65536 rules=rate,userAgent,errors");
  });

  it("defines every metric at configure time", () => {
    configure("{}");
    expect(mock.metricCount()).toBe(22);
    expect(counter("requests_total")).toBe(0);
  });

  it("rejects an invalid configuration with exactly one critical line listing every problem", () => {
    expect(configure("{\"mode\":\"block\",\"capacity\":1}")).toBe(0);
    expect(logsAt(CRITICAL)).toBe("traffic-guard: invalid config: mode: expected \"enforce\" or \"dry-run\", got \"block\"; " +
      "capacity: expected an integer from 1024 to 1048576, got 1");
    expect(logsAt(INFO)).toBe("");
  });

  it("keeps the previous configuration in force after a rejected one", () => {
    configure("{\"rules\":{\"rate\":{\"limit\":{\"requests\":1},\"ban\":\"0s\"}}}");
    expect(reconfigure("{\"mode\":1}")).toBe(0);
    expect(request("203.0.113.7:1000", "", "/")).toBe(CONTINUE);
    expect(request("203.0.113.7:1000", "", "/")).toBe(STOP, "the 1-per-minute limit still applies");
  });
});

describe("request path", () => {
  it("blocks the (N+1)-th request with a 403, logs the ban once and counts it", () => {
    configure("{\"rules\":{\"rate\":{\"limit\":{\"requests\":3,\"per\":\"1m\"},\"ban\":\"5m\"}}}");
    mock.setTimeMs(1_000_000);
    for (let i = 0; i < 3; i++) expect(request("203.0.113.7:4000", "", "/")).toBe(CONTINUE);
    let logs = mock.logCount();
    expect(request("203.0.113.7:4000", "", "/")).toBe(STOP);
    expect(mock.replyStatus()).toBe(403);
    expect(mock.replyDetails()).toBe("traffic_guard_rate");
    expect(mock.logCount()).toBe(logs + 1);
    expect(mock.logLevel(logs)).toBe(WARN);
    expect(mock.logMessage(logs)).toBe("traffic-guard: banned 203.0.113.7 for 300s: rule=rate limit=3/60s ban=1");
    expect(counter("requests_total")).toBe(4);
    expect(counter("denied_rate_total")).toBe(1);
    expect(counter("bans_rate_total")).toBe(1);
    expect(counter("tracked_clients")).toBe(1);
  });

  it("denies a banned client with retry-after in whole seconds, rounded up", () => {
    configure("{\"rules\":{\"rate\":{\"limit\":{\"requests\":1,\"per\":\"1m\"},\"ban\":\"5m\"}}}");
    mock.setTimeMs(1_000_000);
    request("203.0.113.7:4000", "", "/");
    request("203.0.113.7:4000", "", "/");
    mock.setTimeMs(1_000_000 + 100_500);
    let logs = mock.logCount();
    expect(request("203.0.113.7:4000", "", "/")).toBe(STOP);
    expect(mock.replyDetails()).toBe("traffic_guard_banned");
    expect(mock.replyHeader(mock.replyHeaderCount() - 1)).toBe("retry-after: 200");
    expect(counter("denied_banned_total")).toBe(1);
    expect(mock.logCount()).toBe(logs, "nothing is logged for an already banned client");
  });

  it("logs the aggregated prefix of an IPv6 client in the ban line", () => {
    configure("{\"rules\":{\"userAgent\":{\"limit\":{\"requests\":1,\"per\":\"1m\"},\"ban\":\"10m\"}}}");
    request("[2001:db8:1:2:3:4:5:6]:443", "curl/8.5.0", "/");
    let logs = mock.logCount();
    expect(request("[2001:db8:1:2:ffff::1]:443", "curl/8.5.0", "/")).toBe(STOP);
    expect(mock.logMessage(logs)).toBe("traffic-guard: banned 2001:db8:1:2::/64 for 600s: rule=userAgent limit=1/60s ban=1");
    expect(mock.replyDetails()).toBe("traffic_guard_user_agent");
    expect(counter("bans_user_agent_total")).toBe(1);
  });

  it("passes skipPaths without touching any state", () => {
    configure("{\"skipPaths\":[\"/healthz\"],\"rules\":{\"rate\":{\"limit\":{\"requests\":1},\"ban\":\"0s\"}}}");
    let keys = mock.sharedKeyCount();
    for (let i = 0; i < 5; i++) expect(request("203.0.113.7:4000", "curl/8", "/healthz/live")).toBe(CONTINUE);
    expect(mock.sharedKeyCount()).toBe(keys);
    expect(counter("requests_total")).toBe(5);
  });

  it("never counts allow-listed clients and denies deny-listed ones without state", () => {
    configure("{\"allow\":[\"10.0.0.0/8\"],\"deny\":[\"203.0.113.0/24\",\"10.1.0.0/16\"],\"rules\":{\"rate\":{\"limit\":{\"requests\":1},\"ban\":\"0s\"}}}");
    let keys = mock.sharedKeyCount();
    for (let i = 0; i < 5; i++) expect(request("10.1.2.3:1", "", "/")).toBe(CONTINUE, "allow wins over deny");
    expect(request("203.0.113.7:1", "", "/")).toBe(STOP);
    expect(mock.replyDetails()).toBe("traffic_guard_deny");
    expect(mock.replyHeaderCount()).toBe(1, "no retry-after for the deny list");
    expect(counter("denied_deny_total")).toBe(1);
    expect(mock.sharedKeyCount()).toBe(keys);
  });

  it("counts but never blocks in dry-run mode", () => {
    configure("{\"mode\":\"dry-run\",\"rules\":{\"rate\":{\"limit\":{\"requests\":1,\"per\":\"1m\"},\"ban\":\"1m\"}}}");
    expect(request("203.0.113.7:4000", "", "/")).toBe(CONTINUE);
    let logs = mock.logCount();
    expect(request("203.0.113.7:4000", "", "/")).toBe(CONTINUE);
    expect(request("203.0.113.7:4000", "", "/")).toBe(CONTINUE);
    expect(mock.replyCount()).toBe(0);
    expect(mock.logMessage(logs)).toBe("traffic-guard: banned 203.0.113.7 for 60s: rule=rate limit=1/60s ban=1 (dry-run)");
    expect(counter("denied_rate_total")).toBe(1);
    expect(counter("denied_banned_total")).toBe(1);
    expect(counter("dry_run_would_deny_total")).toBe(2);
  });

  it("logs nothing for requests that pass", () => {
    configure("{}");
    let logs = mock.logCount();
    for (let i = 0; i < 20; i++) {
      request("203.0.113.7:4000", "Mozilla/5.0", "/");
      respond("200");
    }
    expect(mock.logCount()).toBe(logs);
  });
});

describe("host calls", () => {
  it("uses only host functions the mock models (none answered Unimplemented)", () => {
    configure("{\"rules\":{\"rate\":{\"limit\":{\"requests\":1},\"ban\":\"1m\"}}}");
    request("203.0.113.7:4000", "curl/8", "/");
    respond("404");
    request("203.0.113.7:4000", "curl/8", "/");
    respond("403");
    request("203.0.113.7:4000", "curl/8", "/");
    expect(mock.replyCount()).toBe(2);
    expect(mock.unimplementedCount()).toBe(0);
  });
});

describe("response path", () => {
  it("counts matching error statuses and bans on the (N+1)-th", () => {
    configure("{\"rules\":{\"errors\":{\"statuses\":[404],\"limit\":{\"requests\":2,\"per\":\"1m\"},\"ban\":\"30m\"}}}");
    for (let i = 0; i < 2; i++) { request("203.0.113.7:4000", "", "/x"); respond("404"); }
    request("203.0.113.7:4000", "", "/x");
    respond("500");
    expect(counter("bans_errors_total")).toBe(0, "500 does not match [404]");
    let logs = mock.logCount();
    request("203.0.113.7:4000", "", "/x");
    respond("404"); // the response itself goes through: proxy_on_log runs after it was sent

    expect(counter("bans_errors_total")).toBe(1);
    expect(mock.logMessage(logs)).toBe("traffic-guard: banned 203.0.113.7 for 1800s: rule=errors limit=2/60s ban=1");
    expect(request("203.0.113.7:4000", "", "/x")).toBe(STOP);
    expect(mock.replyDetails()).toBe("traffic_guard_banned");
  });

  it("never counts the filter's own local replies", () => {
    configure("{\"rules\":{\"rate\":{\"limit\":{\"requests\":1},\"ban\":\"0s\"},\"errors\":{\"limit\":{\"requests\":1},\"ban\":\"1h\"}}}");
    request("203.0.113.7:4000", "", "/");
    respond("200");
    for (let i = 0; i < 5; i++) {
      expect(request("203.0.113.7:4000", "", "/")).toBe(STOP);
      respond("403");
    }
    expect(counter("bans_errors_total")).toBe(0);
  });

  it("ignores malformed statuses", () => {
    configure("{\"rules\":{\"errors\":{\"limit\":{\"requests\":1},\"ban\":\"1h\"}}}");
    let bad = ["", "4040", "40", "4x4", "-04", "999"];
    for (let i = 0; i < bad.length; i++) { request("203.0.113.7:4000", "", "/"); respond(bad[i]); }
    expect(counter("bans_errors_total")).toBe(0);
  });
});

describe("client address and fail-open", () => {
  it("counts a fallback when the configured header is unusable", () => {
    configure("{\"clientAddress\":{\"source\":\"xff\",\"trustedPeers\":[\"203.0.113.0/24\"]}}");
    mock.setHeader(mock.REQUEST, "x-forwarded-for", "garbage");
    expect(request("203.0.113.7:4000", "", "/")).toBe(CONTINUE);
    expect(counter("client_address_fallbacks_total")).toBe(1);
  });

  it("passes and counts an internal error when no address can be resolved", () => {
    configure("{\"clientAddress\":{\"source\":\"peer\"}}");
    expect(request("not-an-address", "", "/")).toBe(CONTINUE);
    expect(counter("internal_errors_total")).toBe(1);
    expect(mock.sharedKeyCount()).toBeLessThanOrEqual(1, "only the meta key, no client state");
  });

  it("passes and counts an internal error when shared data fails", () => {
    configure("{\"rules\":{\"rate\":{\"limit\":{\"requests\":1},\"ban\":\"0s\"}}}");
    mock.failNextGet(INTERNAL_FAILURE, 3);
    for (let i = 0; i < 3; i++) expect(request("203.0.113.7:4000", "", "/")).toBe(CONTINUE);
    expect(counter("internal_errors_total")).toBe(3);
  });

  it("passes and counts an internal error when CAS conflicts never end", () => {
    configure("{}");
    request("203.0.113.7:4000", "", "/");
    mock.interfereNextSets(8);
    expect(request("203.0.113.7:4000", "", "/")).toBe(CONTINUE);
    expect(counter("internal_errors_total")).toBe(1);
  });
});

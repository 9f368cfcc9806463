// Observation filter for topology B (gateway -> sidecar): it copies what a filter in the sidecar
// sees — the x-forwarded-for, x-envoy-external-address and x-forwarded-client-cert request headers and
// the `source.address`, `connection.mtls` and `connection.uri_san_peer_certificate` properties (and the
// result code of that last lookup) — into x-probe-* request headers, so the upstream can echo them back to the test.
// An absent (or empty) value is reported as "-" so the test can tell it apart from an address.
export * from "@solo-io/proxy-runtime/assembly/proxy";
import { RootContext, Context, registerRootContext, FilterHeadersStatusValues, stream_context } from "@solo-io/proxy-runtime/assembly";
import { get_property } from "@solo-io/proxy-runtime/assembly/runtime";
import * as imports from "@solo-io/proxy-runtime/assembly/imports";

// The host's result code for a property lookup (0 Ok, 1 NotFound, ...), which get_property hides.
const OUT = memory.data(8);
function lookupResult(path: string): string {
  let p = String.UTF8.encode(path);
  return imports.proxy_get_property(changetype<usize>(p), p.byteLength, OUT, OUT + 4).toString();
}

/** Root context of the probe. */
class ProbeRoot extends RootContext {
  // The SDK's default onConfigure passes the configuration size where the host expects a pointer
  // (and traps when there is no configuration); this filter reads no configuration at all.
  onConfigure(configuration_size: u32): bool {
    return true;
  }

  createContext(context_id: u32): Context {
    return new ProbeStream(context_id, this);
  }
}

function orDash(v: string): string {
  return v.length == 0 ? "-" : v;
}

/** Stream context that records what it sees on the request path. */
class ProbeStream extends Context {
  onRequestHeaders(headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const req = stream_context.headers.request;
    const xff = req.get("x-forwarded-for");
    const external = req.get("x-envoy-external-address");
    const source = String.UTF8.decode(get_property("source\0address"));
    req.replace("x-probe-xff", orDash(xff));
    req.replace("x-probe-external-address", orDash(external));
    req.replace("x-probe-source-address", orDash(source));
    const mtls = get_property("connection\0mtls");
    req.replace("x-probe-mtls", mtls.byteLength == 1 ? (load<u8>(changetype<usize>(mtls)) != 0 ? "true" : "false") : "-");
    req.replace("x-probe-uri-san", orDash(String.UTF8.decode(get_property("connection\0uri_san_peer_certificate"))));
    req.replace("x-probe-uri-san-result", lookupResult("connection\0uri_san_peer_certificate"));
    req.replace("x-probe-xfcc", orDash(req.get("x-forwarded-client-cert")));
    return FilterHeadersStatusValues.Continue;
  }
}

registerRootContext((context_id: u32): RootContext => new ProbeRoot(context_id), "probe");

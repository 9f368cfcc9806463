// The benchmark floor: a filter that does nothing, built with the same patched proxy-runtime SDK and
// the same asc options as traffic-guard. Whatever it costs per request is the price of the SDK's
// context bookkeeping plus V8 host calls, which traffic-guard cannot go below.
export * from "@solo-io/proxy-runtime/assembly/proxy";
import { RootContext, Context, registerRootContext, FilterHeadersStatusValues } from "@solo-io/proxy-runtime/assembly";

/** Root context that only hands out no-op stream contexts. */
class NoopRoot extends RootContext {
  // The SDK's default onConfigure passes the configuration size where the host expects a pointer
  // (and traps when there is no configuration); this filter reads no configuration at all.
  onConfigure(configuration_size: u32): bool {
    return true;
  }

  createContext(context_id: u32): Context {
    return new NoopStream(context_id, this);
  }
}

/** Stream context that continues every request untouched. */
class NoopStream extends Context {
  onRequestHeaders(headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    return FilterHeadersStatusValues.Continue;
  }
}

registerRootContext((context_id: u32): RootContext => new NoopRoot(context_id), "noop");

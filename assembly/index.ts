export * from "@solo-io/proxy-runtime/assembly/proxy";
import { RootContext, Context, registerRootContext, FilterHeadersStatusValues } from "@solo-io/proxy-runtime/assembly";

class R extends RootContext {
  createContext(context_id: u32): Context { return new C(context_id, this); }
}
class C extends Context {
  onRequestHeaders(a: u32, eos: bool): FilterHeadersStatusValues { return FilterHeadersStatusValues.Continue; }
}
registerRootContext((id: u32): RootContext => new R(id), "traffic-guard");

// The local reply for a blocked request. Body, headers and details are encoded once per configuration;
// a banned client's reply also carries retry-after, appended to a copy of the prebuilt header block.

import * as imports from "@solo-io/proxy-runtime/assembly/imports";
import { Config } from "./config";

const RETRY_AFTER = String.UTF8.encode("retry-after");
const NO_GRPC_STATUS: u32 = 0xffffffff; // -1: not a gRPC reply

/** Response code details per rules.DENY_* reason, as seen in Envoy's access log (%RESPONSE_CODE_DETAILS%). */
const DETAILS: string[] = ["", "traffic_guard_rate", "traffic_guard_user_agent", "traffic_guard_errors", "traffic_guard_banned", "traffic_guard_deny", "traffic_guard_rule"];

// Serialises header pairs as the ABI wants them: count, (key length, value length)*, then key\0value\0...
// With retryAfter > 0 a retry-after pair is appended, its digits written in place (no string is built).
function serialize(names: ArrayBuffer[], values: ArrayBuffer[], retryAfter: u64): ArrayBuffer {
  let n = names.length;
  let digits = 0;
  for (let v = retryAfter; v > 0; v /= 10) digits++;
  let pairs = n + (digits > 0 ? 1 : 0);
  let size = 4 + 8 * pairs;
  for (let i = 0; i < n; i++) size += names[i].byteLength + values[i].byteLength + 2;
  if (digits > 0) size += RETRY_AFTER.byteLength + digits + 2;
  let out = new ArrayBuffer(size); // zero-filled, so every NUL terminator is already in place
  let p = changetype<usize>(out);
  store<u32>(p, pairs);
  let data = p + 4 + 8 * <usize>pairs;
  for (let i = 0; i < n; i++) {
    store<u32>(p + 4 + 8 * <usize>i, names[i].byteLength);
    store<u32>(p + 8 + 8 * <usize>i, values[i].byteLength);
    memory.copy(data, changetype<usize>(names[i]), names[i].byteLength);
    data += <usize>names[i].byteLength + 1;
    memory.copy(data, changetype<usize>(values[i]), values[i].byteLength);
    data += <usize>values[i].byteLength + 1;
  }
  if (digits > 0) {
    store<u32>(p + 4 + 8 * <usize>n, RETRY_AFTER.byteLength);
    store<u32>(p + 8 + 8 * <usize>n, digits);
    memory.copy(data, changetype<usize>(RETRY_AFTER), RETRY_AFTER.byteLength);
    data += <usize>RETRY_AFTER.byteLength + 1;
    for (let i = digits - 1, v = retryAfter; i >= 0; i--, v /= 10) store<u8>(data + <usize>i, <u8>(0x30 + v % 10));
  }
  return out;
}

/** Prebuilt pieces of the local reply for one configuration. */
export class LocalReply {
  status: u32;
  body: ArrayBuffer;
  names: ArrayBuffer[] = [];
  values: ArrayBuffer[] = [];
  headers: ArrayBuffer = new ArrayBuffer(0);
  details: ArrayBuffer[] = [];

  constructor(cfg: Config) {
    this.status = cfg.responseStatus;
    this.body = cfg.responseBody;
    for (let i = 0; i < cfg.responseHeaderNames.length; i++) {
      this.names.push(String.UTF8.encode(cfg.responseHeaderNames[i]));
      this.values.push(String.UTF8.encode(cfg.responseHeaderValues[i]));
    }
    this.headers = serialize(this.names, this.values, 0);
    for (let i = 0; i < DETAILS.length; i++) this.details.push(String.UTF8.encode(DETAILS[i]));
  }

  /** Sends the reply for `reason`; retryAfter > 0 adds a retry-after header with that many seconds. */
  send(reason: i32, retryAfter: u64): void {
    let headers = retryAfter > 0 ? serialize(this.names, this.values, retryAfter) : this.headers;
    let details = this.details[reason];
    imports.proxy_send_local_response(this.status, changetype<usize>(details), details.byteLength,
      changetype<usize>(this.body), this.body.byteLength, changetype<usize>(headers), headers.byteLength, NO_GRPC_STATUS);
  }
}

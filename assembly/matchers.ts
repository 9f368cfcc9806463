// The matchers of custom rules (rules.custom and rules.presets, see rule-config.ts) and their evaluation.
//
// A rule has a `take` matcher and optionally a `give` matcher; each has a request part, a response part
// or both. Everything inside one matcher must match (AND); a list inside it means any of its items (OR).
// At configure time a Plan gathers every matcher of the configuration and the header names they read, so
// that per request each header is read once (host.ts requestHeader: a value read on its own lives in one
// scratch block, so it must be used before the next read): each read updates a bitmask of the matchers
// still matching, bit 2i for rule i's take and bit 2i+1 for its give. Nothing here allocates per request and no regular
// expression is involved: paths, header values and User-Agents are globs (glob.ts, ASCII case-insensitive).

import { readHeader, requestHeader, valuePtr, bytes, REQUEST_HEADERS, RESPONSE_HEADERS } from "./host";
import { GlobSet } from "./glob";

/** A header condition: the header must be present. */
export const HDR_PRESENT: i32 = 0;
/** A header condition: the header must be absent (or empty). */
export const HDR_ABSENT: i32 = 1;
/** A header condition: the header's value must match a glob. */
export const HDR_GLOB: i32 = 2;

/** request.query: not constrained. */
export const QUERY_ANY: i32 = 0;
/** request.query: "present" (the path has a '?'). */
export const QUERY_PRESENT: i32 = 1;
/** request.query: "absent". */
export const QUERY_ABSENT: i32 = 2;

/** One header condition of a matcher. */
export class HeaderCond {
  /** Lowercased header name. */
  name: string;
  kind: i32;
  /** Lowercased glob bytes (HDR_GLOB only). */
  glob: ArrayBuffer;

  constructor(name: string, kind: i32, glob: ArrayBuffer) {
    this.name = name;
    this.kind = kind;
    this.glob = glob;
  }
}

/** A take or give matcher: a request part and/or a response part, all of whose conditions must match. */
export class Matcher {
  /** Whether the matcher has a request part (`request: {}` alone matches every request). */
  request: bool = false;
  /** Whether the matcher has a response part; it is then decided when the stream ends (proxy_on_log), from the response headers. */
  response: bool = false;
  /** Uppercase method names (exact); empty = any method. */
  methods: ArrayBuffer[] = [];
  /** Lowercased path globs, matched against the path without its query; empty = any path. */
  paths: ArrayBuffer[] = [];
  query: i32 = QUERY_ANY;
  headers: HeaderCond[] = [];
  /** Lowercased User-Agent globs; empty = any User-Agent. */
  userAgents: ArrayBuffer[] = [];
  /** statuses[code] for response.status; null = any status. */
  statuses: StaticArray<bool> | null = null;
  responseHeaders: HeaderCond[] = [];
}

const METHOD = bytes(":method");
const PATH = bytes(":path");
const STATUS = bytes(":status");
const USER_AGENT = bytes("user-agent");

// One header read of a plan: the header's name and the conditions (matcher bit, kind, glob) on it.
class Slot {
  name: ArrayBuffer;
  bits: u32[] = [];
  kinds: i32[] = [];
  globs: GlobSet[] = [];
  /** Bits of every matcher with a condition on this header (to skip the read when none is alive). */
  any: u32 = 0;

  constructor(name: string) {
    this.name = bytes(name);
  }
}

// Finds or adds the slot of header `name`.
function slotFor(slots: Slot[], names: string[], name: string): Slot {
  let i = names.indexOf(name);
  if (i >= 0) return slots[i];
  let s = new Slot(name);
  slots.push(s);
  names.push(name);
  return s;
}

// Whether the n bytes at p equal the buffer b exactly.
function equalBytes(p: usize, n: i32, b: ArrayBuffer): bool {
  if (n != b.byteLength) return false;
  return memory.compare(p, changetype<usize>(b), <usize>n) == 0;
}

const NO_GLOBS = new GlobSet([]);

/** Every matcher of one configuration, arranged so that each header is read at most once per phase. */
export class Plan {
  /** Matchers by bit (2i take, 2i+1 give); null where a rule has no give. */
  matchers: Array<Matcher | null> = [];
  /** Bits of every matcher. */
  allBits: u32 = 0;
  /** Bits of matchers with a request part / with a response part. */
  requestBits: u32 = 0;
  responseBits: u32 = 0;
  /** Bits of the matchers that constrain the method, the path or query, the User-Agent. */
  methodBits: u32 = 0;
  pathBits: u32 = 0;
  uaBits: u32 = 0;
  /** Bits of the matchers that constrain the status. */
  statusBits: u32 = 0;
  private requestSlots: Slot[] = [];
  private responseSlots: Slot[] = [];
  // Each matcher's path and User-Agent globs, compiled (by bit; empty sets where it has none).
  private pathSets: GlobSet[] = [];
  private uaSets: GlobSet[] = [];

  /** Adds the matcher for `bit` (null for a rule without give). */
  add(bit: i32, mt: Matcher | null): void {
    while (this.matchers.length <= bit) {
      this.matchers.push(null);
      this.pathSets.push(NO_GLOBS);
      this.uaSets.push(NO_GLOBS);
    }
    this.matchers[bit] = mt;
    if (mt === null) return;
    this.pathSets[bit] = new GlobSet(mt.paths);
    this.uaSets[bit] = new GlobSet(mt.userAgents);
    let b = (<u32>1) << <u32>bit;
    this.allBits |= b;
    if (mt.request) this.requestBits |= b;
    if (mt.response) this.responseBits |= b;
    if (mt.methods.length > 0) this.methodBits |= b;
    if (mt.paths.length > 0 || mt.query != QUERY_ANY) this.pathBits |= b;
    if (mt.userAgents.length > 0) this.uaBits |= b;
    if (mt.statuses !== null) this.statusBits |= b;
    this.conditions(this.requestSlots, mt.headers, b);
    this.conditions(this.responseSlots, mt.responseHeaders, b);
  }

  private conditions(slots: Slot[], conds: HeaderCond[], b: u32): void {
    let names: string[] = [];
    for (let i = 0; i < slots.length; i++) names.push(String.UTF8.decode(slots[i].name));
    for (let i = 0; i < conds.length; i++) {
      let c = conds[i];
      let s = slotFor(slots, names, c.name);
      s.bits.push(b);
      s.kinds.push(c.kind);
      s.globs.push(c.kind == HDR_GLOB ? new GlobSet([c.glob]) : NO_GLOBS);
      s.any |= b;
    }
  }

  /** Header names read on requests (beyond :method, :path and user-agent), for tests and docs. */
  requestHeaderCount(): i32 {
    return this.requestSlots.length;
  }

  /** Request headers the matchers may read: the method, the path, the User-Agent and every named header. */
  requestReads(): i32 {
    if (this.requestBits == 0) return 0;
    return (this.methodBits != 0 ? 1 : 0) + (this.pathBits != 0 ? 1 : 0) + (this.uaBits != 0 ? 1 : 0) + this.requestSlots.length;
  }

  /** Whether the User-Agent matched the built-in userAgent rule's patterns (matchRequest's `builtInUa`). */
  builtInUa: bool = false;

  /**
   * Evaluates the request parts: returns the bits of the matchers whose request part matched, plus the
   * bits of response-only matchers (decided later by matchResponse). `builtInUa`, when not null, are the
   * built-in userAgent rule's patterns: the User-Agent is read once for both, and the result is left in
   * `this.builtInUa`.
   */
  matchRequest(builtInUa: GlobSet | null): u32 {
    let alive = this.requestBits;
    let responseOnly = this.allBits & ~this.requestBits;
    this.builtInUa = false;
    if (alive == 0) {
      if (builtInUa !== null) {
        let n = requestHeader(USER_AGENT); // sets valuePtr, so it is read first
        this.builtInUa = builtInUa.matches(valuePtr, n);
      }
      return responseOnly;
    }
    let matchers = this.matchers;
    if ((alive & this.methodBits) != 0) {
      let n = requestHeader(METHOD);
      let bits = alive & this.methodBits;
      while (bits != 0) {
        let i = <i32>ctz(bits);
        bits &= bits - 1;
        let mt = changetype<Matcher>(unchecked(matchers[i]));
        let hit = false;
        for (let k = 0, m = mt.methods.length; k < m; k++) {
          if (equalBytes(valuePtr, n, unchecked(mt.methods[k]))) { hit = true; break; }
        }
        if (!hit) alive &= ~((<u32>1) << <u32>i);
      }
    }
    if ((alive & this.pathBits) != 0) {
      let n = requestHeader(PATH);
      let p = valuePtr;
      let len = 0;
      while (len < n && load<u8>(p + <usize>len) != 0x3f) len++;
      let hasQuery = len < n;
      let bits = alive & this.pathBits;
      while (bits != 0) {
        let i = <i32>ctz(bits);
        bits &= bits - 1;
        let mt = changetype<Matcher>(unchecked(matchers[i]));
        let ok = mt.query == QUERY_ANY || (mt.query == QUERY_PRESENT) == hasQuery;
        if (ok && mt.paths.length > 0) ok = unchecked(this.pathSets[i]).matches(p, len);
        if (!ok) alive &= ~((<u32>1) << <u32>i);
      }
    }
    if ((alive & this.uaBits) != 0 || builtInUa !== null) {
      let n = requestHeader(USER_AGENT);
      if (builtInUa !== null) this.builtInUa = builtInUa.matches(valuePtr, n);
      let bits = alive & this.uaBits;
      while (bits != 0) {
        let i = <i32>ctz(bits);
        bits &= bits - 1;
        let mt = changetype<Matcher>(unchecked(matchers[i]));
        if (!unchecked(this.uaSets[i]).matches(valuePtr, n)) alive &= ~((<u32>1) << <u32>i);
      }
    }
    alive = evalSlots(this.requestSlots, REQUEST_HEADERS, alive);
    return alive | responseOnly;
  }

  /** Whether any matcher in `pending` constrains the response status. */
  needsStatus(pending: u32): bool {
    return (pending & this.responseBits & this.statusBits) != 0;
  }

  /**
   * Evaluates the response parts of the matchers in `pending`; returns the bits that matched. `code` is
   * the response status (readStatus), read by the caller when needsStatus says so.
   */
  matchResponse(pending: u32, code: i32): u32 {
    let alive = pending & this.responseBits;
    if (alive == 0) return 0;
    if ((alive & this.statusBits) != 0) {
      let bits = alive & this.statusBits;
      while (bits != 0) {
        let i = <i32>ctz(bits);
        bits &= bits - 1;
        let mt = changetype<Matcher>(unchecked(this.matchers[i]));
        let st = changetype<StaticArray<bool>>(mt.statuses);
        if (code < 100 || code > 599 || !unchecked(st[code])) alive &= ~((<u32>1) << <u32>i);
      }
    }
    return evalSlots(this.responseSlots, RESPONSE_HEADERS, alive);
  }
}

/** The response's :status as a number, or -1 when it is not three digits. */
export function readStatus(): i32 {
  let n = readHeader(RESPONSE_HEADERS, STATUS);
  if (n != 3) return -1;
  let code: i32 = 0;
  for (let i = 0; i < 3; i++) {
    let d = <i32>load<u8>(valuePtr + <usize>i) - 0x30;
    if (d < 0 || d > 9) return -1;
    code = code * 10 + d;
  }
  return code;
}

// Reads each slot's header once (skipping slots no alive matcher needs) and clears the bits of the
// matchers whose condition fails.
function evalSlots(slots: Slot[], map: i32, alive: u32): u32 {
  for (let s = 0, k = slots.length; s < k; s++) {
    let slot = unchecked(slots[s]);
    if ((alive & slot.any) == 0) continue;
    let n = map == REQUEST_HEADERS ? requestHeader(slot.name) : readHeader(map, slot.name);
    for (let c = 0, m = slot.bits.length; c < m; c++) {
      let b = unchecked(slot.bits[c]);
      if ((alive & b) == 0) continue;
      let kind = unchecked(slot.kinds[c]);
      let ok = kind == HDR_PRESENT ? n > 0 : kind == HDR_ABSENT ? n == 0 : unchecked(slot.globs[c]).matches(valuePtr, n);
      if (!ok) alive &= ~b;
    }
  }
  return alive;
}

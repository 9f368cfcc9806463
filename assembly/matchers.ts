// The matchers of custom rules (rules.custom and rules.presets, see rule-config.ts) and their evaluation.
//
// A rule has a `take` matcher and optionally a `give` matcher; each has a request part, a response part
// or both. Everything inside one matcher must match (AND); a list inside it means any of its items (OR).
// At configure time a Plan gathers every matcher of the configuration and the header names they read, so
// that per request the request's headers are picked in one pass over its header map (host.ts
// pickRequestHeaders; or read one by one, each used before the next read, when the configuration reads
// only one): each value updates a bitmask of the matchers still matching, bit 2i for rule i's take and
// bit 2i+1 for its give. Nothing here allocates per request and no regular expression is involved: paths,
// header values and User-Agents are globs (glob.ts, ASCII case-insensitive).

import { readHeader, readHeaderAt, pickRequestHeaders, pickedHeader, pickedAbsent, HeaderNames, PICK_MAX, valuePtr, bytes, REQUEST_HEADERS, RESPONSE_HEADERS } from "./host";
import { GlobSet } from "./glob";
import { sameBytes } from "./bytes";

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

const STATUS = bytes(":status");
const METHOD = bytes(":method");
const PATH = bytes(":path");
const USER_AGENT = bytes("user-agent");
// Ids of the names a Plan picks (Plan.finish).
const METHOD_ID = 0;
const PATH_ID = 1;
const UA_ID = 2;
const SLOT_BASE = 3;

// One header read of a plan: the header's name and, as matcher bits, the conditions on it.
class Slot {
  name: ArrayBuffer;
  /** Bits of every matcher with a condition on this header (to skip the read when none is alive). */
  any: u32 = 0;
  /** Bits of the matchers requiring the header present / absent / matching a glob. */
  present: u32 = 0;
  absent: u32 = 0;
  globBits: u32 = 0;
  /** The glob conditions on this header, each with its matcher's bit (compiled by Plan.finish). */
  globList: ArrayBuffer[] = [];
  globMasks: u64[] = [];

  constructor(name: string) {
    this.name = bytes(name);
  }
}

// Finds or adds the slot of header `name`.
function slotFor(slots: Slot[], name: string): Slot {
  let want = bytes(name);
  for (let i = 0; i < slots.length; i++) {
    let s = slots[i];
    if (equalBytes(changetype<usize>(want), want.byteLength, s.name)) return s;
  }
  let s = new Slot(name);
  slots.push(s);
  return s;
}

// Whether the n bytes at p equal the buffer b exactly.
function equalBytes(p: usize, n: i32, b: ArrayBuffer): bool {
  if (n != b.byteLength) return false;
  return sameBytes(p, changetype<usize>(b), <usize>n);
}

const NO_GLOBS = new GlobSet([]);

// Bytes before the name of a packed slot (Plan.packSlots).
const SLOT_HEAD: usize = 28;

/** The mask bit of the built-in userAgent rule's patterns in the plan's User-Agent set (above the 32 matcher bits). */
const BUILT_IN_UA: u64 = (<u64>1) << 32;

/**
 * Every matcher of one configuration, arranged so that each header is read at most once per phase and
 * each condition is decided for all matchers at once: a header's value gives, per kind of condition, the
 * bits of the matchers it satisfies (one compiled GlobSet per header, with each glob carrying its
 * matcher's bit), and the bits of the matchers it fails are cleared together.
 */
export class Plan {
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
  // Bits of the matchers with path globs, requiring a query, requiring none.
  private pathGlobBits: u32 = 0;
  private queryPresentBits: u32 = 0;
  private queryAbsentBits: u32 = 0;
  // The distinct method names, each with the bits of the matchers listing it; packed by finish as
  // [u32 length][u32 bits][name] each, in one buffer.
  private methodNames: ArrayBuffer[] = [];
  private methodMasks: u32[] = [];
  private methodData: ArrayBuffer = new ArrayBuffer(0);
  // Every path glob, every User-Agent glob (and the built-in rule's, as BUILT_IN_UA), with their bits.
  private pathList: ArrayBuffer[] = [];
  private pathMasks: u64[] = [];
  private uaList: ArrayBuffer[] = [];
  private uaMasks: u64[] = [];
  private pathSet: GlobSet = NO_GLOBS;
  private uaSet: GlobSet = NO_GLOBS;
  // By status code (0-599): the bits of the matchers whose status list includes it.
  private statusMasks: StaticArray<u32> = new StaticArray<u32>(0);
  private requestSlots: Slot[] = [];
  private responseSlots: Slot[] = [];
  // The slots packed by finish (see packSlots), and their glob sets by index.
  private requestSlotData: ArrayBuffer = new ArrayBuffer(0);
  private responseSlotData: ArrayBuffer = new ArrayBuffer(0);
  private slotGlobs: GlobSet[] = [];
  // The request headers matchRequest picks (finish): by id, the method, the path, the User-Agent, then
  // the request slots in order (SLOT_BASE + k).
  private names: HeaderNames = new HeaderNames([METHOD, PATH, USER_AGENT]);

  /** Adds the matcher for `bit` (null for a rule without give). */
  add(bit: i32, mt: Matcher | null): void {
    if (mt === null) return;
    let b = (<u32>1) << <u32>bit;
    this.allBits |= b;
    if (mt.request) this.requestBits |= b;
    if (mt.response) this.responseBits |= b;
    if (mt.methods.length > 0) {
      this.methodBits |= b;
      for (let k = 0; k < mt.methods.length; k++) {
        let name = mt.methods[k];
        let at = -1;
        for (let j = 0; j < this.methodNames.length; j++) {
          if (equalBytes(changetype<usize>(name), name.byteLength, this.methodNames[j])) at = j;
        }
        if (at < 0) {
          at = this.methodNames.length;
          this.methodNames.push(name);
          this.methodMasks.push(0);
        }
        this.methodMasks[at] |= b;
      }
    }
    if (mt.paths.length > 0 || mt.query != QUERY_ANY) this.pathBits |= b;
    if (mt.paths.length > 0) this.pathGlobBits |= b;
    if (mt.query == QUERY_PRESENT) this.queryPresentBits |= b;
    if (mt.query == QUERY_ABSENT) this.queryAbsentBits |= b;
    for (let k = 0; k < mt.paths.length; k++) {
      this.pathList.push(mt.paths[k]);
      this.pathMasks.push(<u64>b);
    }
    if (mt.userAgents.length > 0) this.uaBits |= b;
    for (let k = 0; k < mt.userAgents.length; k++) {
      this.uaList.push(mt.userAgents[k]);
      this.uaMasks.push(<u64>b);
    }
    let st = mt.statuses;
    if (st !== null) {
      this.statusBits |= b;
      if (this.statusMasks.length == 0) this.statusMasks = new StaticArray<u32>(600);
      for (let code = 0; code < 600; code++) if (st[code]) this.statusMasks[code] |= b;
    }
    this.conditions(this.requestSlots, mt.headers, b);
    this.conditions(this.responseSlots, mt.responseHeaders, b);
  }

  private conditions(slots: Slot[], conds: HeaderCond[], b: u32): void {
    for (let i = 0; i < conds.length; i++) {
      let c = conds[i];
      let s = slotFor(slots, c.name);
      s.any |= b;
      if (c.kind == HDR_PRESENT) s.present |= b;
      else if (c.kind == HDR_ABSENT) s.absent |= b;
      else {
        s.globBits |= b;
        s.globList.push(c.glob);
        s.globMasks.push(<u64>b);
      }
    }
  }

  /**
   * Compiles the globs gathered by add, with the built-in userAgent rule's patterns (`builtInUa`) in the
   * same User-Agent set, so that one pass over the User-Agent decides both; call once every matcher is added.
   */
  finish(builtInUa: ArrayBuffer[]): void {
    this.pathSet = new GlobSet(this.pathList, this.pathMasks);
    let list = this.uaList.slice(0);
    let masks = this.uaMasks.slice(0);
    for (let i = 0; i < builtInUa.length; i++) {
      list.push(builtInUa[i]);
      masks.push(BUILT_IN_UA);
    }
    this.uaSet = new GlobSet(list, masks);
    let size = 0;
    for (let i = 0; i < this.methodNames.length; i++) size += 8 + this.methodNames[i].byteLength;
    let data = new ArrayBuffer(size);
    let q = changetype<usize>(data);
    for (let i = 0; i < this.methodNames.length; i++) {
      let name = this.methodNames[i];
      store<u32>(q, <u32>name.byteLength);
      store<u32>(q, this.methodMasks[i], 4);
      memory.copy(q + 8, changetype<usize>(name), <usize>name.byteLength);
      q += 8 + <usize>name.byteLength;
    }
    this.methodData = data;
    let names = [METHOD, PATH, USER_AGENT];
    for (let i = 0; i < this.requestSlots.length; i++) names.push(this.requestSlots[i].name);
    this.names = new HeaderNames(names);
    this.requestSlotData = this.packSlots(this.requestSlots);
    this.responseSlotData = this.packSlots(this.responseSlots);
  }

  // Packs slots into one buffer, each as SLOT_HEAD bytes ([u32 name length][u32 any][u32 present]
  // [u32 absent][u32 globBits][u32 index in slotGlobs][u32 the bits an absent header fails]) and the name,
  // so evaluating them touches few cache lines.
  private packSlots(slots: Slot[]): ArrayBuffer {
    let size = 0;
    for (let i = 0; i < slots.length; i++) size += <i32>SLOT_HEAD + slots[i].name.byteLength;
    let data = new ArrayBuffer(size);
    let q = changetype<usize>(data);
    for (let i = 0; i < slots.length; i++) {
      let s = slots[i];
      let globIndex: u32 = 0;
      // An absent header fails "present" and every glob that does not match the empty value.
      let absentFails = s.present;
      if (s.globList.length > 0) {
        globIndex = <u32>this.slotGlobs.length;
        let set = new GlobSet(s.globList, s.globMasks);
        this.slotGlobs.push(set);
        absentFails |= s.globBits & ~<u32>set.matchMask(0, 0);
      }
      store<u32>(q, <u32>s.name.byteLength);
      store<u32>(q, s.any, 4);
      store<u32>(q, s.present, 8);
      store<u32>(q, s.absent, 12);
      store<u32>(q, s.globBits, 16);
      store<u32>(q, globIndex, 20);
      store<u32>(q, absentFails, 24);
      memory.copy(q + SLOT_HEAD, changetype<usize>(s.name), <usize>s.name.byteLength);
      q += SLOT_HEAD + <usize>s.name.byteLength;
    }
    return data;
  }

  // Reads each packed slot's header once (skipping slots no alive matcher needs) and clears the bits of
  // the matchers whose condition on it fails. The request's were picked (matchRequest): slot k is name
  // SLOT_BASE + k, and a header the pick's pass did not find costs no read at all.
  private evalSlots(data: ArrayBuffer, map: i32, alive: u32): u32 {
    let q = changetype<usize>(data);
    let end = q + <usize>data.byteLength;
    let id = SLOT_BASE;
    let gone = map == REQUEST_HEADERS ? pickedAbsent() : 0;
    while (q < end) {
      let len = <usize>load<u32>(q);
      let name = q + SLOT_HEAD;
      let any = load<u32>(q, 4);
      if ((alive & any) != 0) {
        if (id < <i32>PICK_MAX && (gone & ((<u32>1) << <u32>id)) != 0) {
          alive &= ~load<u32>(q, 24);
        } else {
          let n = map == REQUEST_HEADERS ? pickedHeader(id) : readHeaderAt(map, name, len);
          alive &= ~(n > 0 ? load<u32>(q, 12) : load<u32>(q, 8));
          let globBits = load<u32>(q, 16);
          if ((alive & globBits) != 0) alive &= ~globBits | <u32>unchecked(this.slotGlobs[load<u32>(q, 20)]).matchMask(valuePtr, n);
        }
      }
      q = name + len;
      id++;
    }
    return alive;
  }

  /** Request headers the matchers may read: the method, the path, the User-Agent and every named header. */
  requestReads(): i32 {
    if (this.requestBits == 0) return 0;
    return (this.methodBits != 0 ? 1 : 0) + (this.pathBits != 0 ? 1 : 0) + (this.uaBits != 0 ? 1 : 0) + this.requestSlots.length;
  }

  /** Whether the User-Agent matched the built-in userAgent rule's patterns (matchRequest with `builtInUa`). */
  builtInUa: bool = false;

  /**
   * Evaluates the request parts: returns the bits of the matchers whose request part matched, plus the
   * bits of response-only matchers (decided later by matchResponse). With `builtInUa` (the built-in
   * userAgent rule is on), the User-Agent is also matched against that rule's patterns (given to finish)
   * in the same pass, and the result is left in `this.builtInUa`.
   */
  matchRequest(builtInUa: bool): u32 {
    let alive = this.requestBits;
    let responseOnly = this.allBits & ~this.requestBits;
    this.builtInUa = false;
    if (alive == 0 && !builtInUa) return responseOnly;
    pickRequestHeaders(this.names);
    if ((alive & this.methodBits) != 0) {
      let n = <usize>pickedHeader(METHOD_ID);
      let hit: u32 = 0;
      let q = changetype<usize>(this.methodData);
      let end = q + <usize>this.methodData.byteLength;
      while (q < end) {
        let len = <usize>load<u32>(q);
        if (len == n && sameBytes(valuePtr, q + 8, n)) hit |= load<u32>(q, 4);
        q += 8 + len;
      }
      alive &= ~this.methodBits | hit;
    }
    if ((alive & this.pathBits) != 0) {
      let n = pickedHeader(PATH_ID);
      let p = valuePtr;
      let len = 0;
      while (len < n && load<u8>(p + <usize>len) != 0x3f) len++;
      alive &= ~(len < n ? this.queryAbsentBits : this.queryPresentBits);
      if ((alive & this.pathGlobBits) != 0) alive &= ~this.pathGlobBits | <u32>this.pathSet.matchMask(p, len);
    }
    if ((alive & this.uaBits) != 0 || builtInUa) {
      let n = pickedHeader(UA_ID);
      let hit = this.uaSet.matchMask(valuePtr, n);
      this.builtInUa = builtInUa && (hit & BUILT_IN_UA) != 0;
      alive &= ~this.uaBits | <u32>hit;
    }
    if (alive != 0) alive = this.evalSlots(this.requestSlotData, REQUEST_HEADERS, alive);
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
      let hit: u32 = code >= 100 && code <= 599 ? unchecked(this.statusMasks[code]) : 0;
      alive &= ~this.statusBits | hit;
    }
    return alive == 0 ? 0 : this.evalSlots(this.responseSlotData, RESPONSE_HEADERS, alive);
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


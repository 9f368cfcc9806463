// The record layout of one configuration, and the conversion of sets written under another one.
//
// A record is the 48-byte base (address, times, ban, strikes, the built-in buckets) plus one 4-byte bucket
// per custom bucket (record.ts). Without custom rules a set value is exactly 8 base records, as it always
// was. With custom buckets the value ends in a 4-byte tag: a hash of the bucket names in order, and the
// names themselves are published once under "traffic-guard/<plugin>/layout/<tag in hex>" (shared-data keys
// are never deleted; one key per layout ever configured). A set written under another layout (rules
// added, removed or reordered, on this worker before a reconfigure or on a worker not reconfigured yet) is
// converted when it is read: the base record is kept as it is, so bans and strikes survive every rule
// change, and each bucket is carried over by its rule's name; a bucket whose rule is new starts full. The
// converted set is written back with the CAS of the read, so a concurrent writer is never overwritten.

import { get_shared_data, set_shared_data, WasmResultValues } from "@solo-io/proxy-runtime/assembly/runtime";
import { Config } from "./config";
import * as rec from "./record";

/** Bytes of the layout tag at the end of a set value with custom buckets. */
export const TAG_SIZE: i32 = 4;
/** Most buckets a layout can have (16 rules with a `then` bucket each). */
const MAX_BUCKETS: i32 = 32;

/** FNV-1a over the bucket names joined by newlines; never 0. */
export function layoutTag(names: string[]): u32 {
  let h: u32 = 0x811c9dc5;
  for (let i = 0; i < names.length; i++) {
    let s = names[i];
    if (i > 0) h = (h ^ 0x0a) * 0x01000193;
    for (let k = 0; k < s.length; k++) h = (h ^ <u32>s.charCodeAt(k)) * 0x01000193;
  }
  return h == 0 ? 1 : h;
}

/** One configuration's layout of a set value. */
export class Layout {
  /** Custom buckets per record. */
  buckets: i32 = 0;
  /** Bytes per record. */
  recordSize: i32 = 0;
  /** Bytes of a set value (8 records, then the tag when there are custom buckets). */
  valueSize: i32 = 0;
  tag: u32 = 0;
  private names: string[] = [];
  private capacities: f64[] = [];
  private prefix: string = "";
  // The last foreign layout converted from: its tag, bucket count and, per bucket of ours, its bucket or -1.
  private otherTag: u32 = 0;
  private otherBuckets: i32 = -1;
  private otherMap: StaticArray<i32> = new StaticArray<i32>(MAX_BUCKETS);

  constructor(cfg: Config, prefix: string) {
    this.names = cfg.custom.bucketNames;
    this.buckets = this.names.length;
    this.recordSize = rec.recordSize(cfg);
    this.valueSize = this.recordSize * rec.WAYS + (this.buckets > 0 ? TAG_SIZE : 0);
    this.tag = this.buckets > 0 ? layoutTag(this.names) : 0;
    this.prefix = prefix;
    for (let j = 0; j < this.buckets; j++) this.capacities.push(<f64>cfg.custom.buckets[j].requests);
  }

  /** Publishes the bucket names under this layout's key, for workers converting from it (configure time). */
  publish(): void {
    if (this.buckets == 0) return;
    set_shared_data(this.keyOf(this.tag), String.UTF8.encode(this.names.join("\n")), 0);
  }

  private keyOf(tag: u32): ArrayBuffer {
    return String.UTF8.encode(this.prefix + "layout/" + tag.toString(16));
  }

  /** Whether a set value is in this layout. */
  isOurs(v: ArrayBuffer): bool {
    if (v.byteLength != this.valueSize) return false;
    return this.buckets == 0 || load<u32>(changetype<usize>(v) + <usize>(this.valueSize - TAG_SIZE)) == this.tag;
  }

  /** Stamps the tag at the end of a set value of this layout at `base`. */
  stamp(base: usize): void {
    if (this.buckets > 0) store<u32>(base + <usize>(this.valueSize - TAG_SIZE), this.tag);
  }

  /**
   * Converts a non-empty set value of another layout into `out` (valueSize bytes); false when the value
   * is of no layout this version writes (it is then treated as empty, as before).
   */
  convert(v: ArrayBuffer, out: usize): bool {
    let len = v.byteLength;
    let src = changetype<usize>(v);
    let buckets: i32, tag: u32;
    if (len == rec.RECORD_SIZE * rec.WAYS) {
      buckets = 0;
      tag = 0;
    } else {
      let body = len - TAG_SIZE;
      if (body <= rec.RECORD_SIZE * rec.WAYS || body % rec.WAYS != 0) return false;
      let extra = body / rec.WAYS - rec.RECORD_SIZE;
      if (extra % rec.BUCKET_SIZE != 0 || extra / rec.BUCKET_SIZE > MAX_BUCKETS) return false;
      buckets = extra / rec.BUCKET_SIZE;
      tag = load<u32>(src + <usize>body);
    }
    if (tag != this.otherTag || buckets != this.otherBuckets) this.mapFrom(tag, buckets);
    let oldSize = rec.RECORD_SIZE + buckets * rec.BUCKET_SIZE;
    memory.fill(out, 0, <usize>this.valueSize);
    for (let w = 0; w < rec.WAYS; w++) {
      let s = src + <usize>(w * oldSize);
      let d = out + <usize>(w * this.recordSize);
      memory.copy(d, s, <usize>rec.RECORD_SIZE);
      if (!rec.isUsed(d)) continue;
      for (let j = 0; j < this.buckets; j++) {
        let k = unchecked(this.otherMap[j]);
        rec.setCustomTokens(d, j, k >= 0 ? rec.customTokens(s, k) : unchecked(this.capacities[j]));
      }
    }
    this.stamp(out);
    return true;
  }

  // Maps our buckets to those of layout `tag` by name, from its published names (none: every bucket new).
  private mapFrom(tag: u32, buckets: i32): void {
    this.otherTag = tag;
    this.otherBuckets = buckets;
    let theirs: string[] = [];
    if (buckets > 0) {
      let sd = get_shared_data(this.keyOf(tag));
      if (sd.result == WasmResultValues.Ok) theirs = String.UTF8.decode(sd.value).split("\n");
      if (theirs.length != buckets) theirs = [];
    }
    for (let j = 0; j < this.buckets; j++) this.otherMap[j] = theirs.indexOf(this.names[j]);
  }
}

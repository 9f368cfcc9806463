// The shared decision record, on the TypeScript side (the filter's reader is assembly/decisions.ts; the format is
// described once in docs/decisions.md): one etcd key per banned client, `<prefix>bans/<client>`, whose value is
// JSON {until, reason, strike, origin, created} (ms since the epoch for times) and whose lease ends with the ban.
//
// A client is written the way the filter names it in its keys and ban lines: an address in its canonical text
// (IPv4 dotted, IPv6 lowercase with the longest zero run compressed, an IPv4-mapped or NAT64 64:ff9b::/96 address
// as the IPv4 it embeds), a network as its masked address and prefix length ("2001:db8:1:2::/64"), a SPIFFE ID
// as is. The filter keys an IPv6 client by its /64 (`prefixes.ipv6`), so that is how its IPv6 bans appear.

/** The default key space, as in the filter's `decisions.prefix`. */
export const DEFAULT_PREFIX = "traffic-guard/default/";

/** The longest ban a record may carry: the filter's longest duration (assembly/config.ts MAX_DURATION_MS, 365 days). */
export const MAX_BAN_MS = 365 * 86_400_000;

/** The shortest lease etcd grants, in seconds. */
export const MIN_LEASE_SECONDS = 2;

/** Longest `reason` and `origin` the filter accepts (assembly/decisions.ts parseRecord). */
export const MAX_REASON = 256;
/** Longest `origin` the filter accepts. */
export const MAX_ORIGIN = 512;
/** Longest record value the filter reads (bytes). */
export const MAX_RECORD_BYTES = 4096;

/** A decoded record value. */
export interface DecisionRecord {
  /** When the ban ends, ms since the epoch. */
  until: number;
  /** The rule that banned, or "manual". */
  reason: string;
  /** The ban's strike (0 for a manual ban). */
  strike: number;
  /** Who published it: a proxy's node id, or "operator:<user>" for the CLI. */
  origin: string;
  /** When it was published, ms since the epoch. */
  created: number;
}

/** A record with the client its key names. */
export interface Decision extends DecisionRecord {
  client: string;
}

/** The key prefix of every ban under `prefix`. */
export function bansPrefix(prefix: string): string {
  return `${prefix}bans/`;
}

/** The key of `client`'s record under `prefix`. */
export function decisionKey(prefix: string, client: string): string {
  return `${bansPrefix(prefix)}${client}`;
}

/** Checks a key prefix the way the filter's config does: 1 to 256 printable characters, no spaces, ending in "/". */
export function prefixProblem(prefix: string): string | undefined {
  if (prefix.length === 0 || prefix.length > 256 || !/^[\x21-\x7e]+$/.test(prefix) || !prefix.endsWith("/")) {
    return `prefix "${prefix}" must be 1 to 256 printable characters without spaces, ending in "/" (like "${DEFAULT_PREFIX}")`;
  }
  return undefined;
}

/** The JSON value of a record, fields in the documented order. */
export function encodeRecord(r: DecisionRecord): string {
  return JSON.stringify({ until: r.until, reason: r.reason, strike: r.strike, origin: r.origin, created: r.created });
}

const isInt = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v);

/**
 * Reads a record value with the filter's rules: `until` a positive integer; `reason`, `strike`, `origin`, `created`
 * optional but well-typed when present; unknown fields ignored. Returns the record or what is wrong.
 */
export function parseRecord(text: string): { record: DecisionRecord } | { problem: string } {
  if (Buffer.byteLength(text) > MAX_RECORD_BYTES) return { problem: `longer than ${MAX_RECORD_BYTES} bytes` };
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return { problem: "not JSON" };
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) return { problem: "not a JSON object" };
  const o = v as Record<string, unknown>;
  if (!isInt(o.until) || o.until <= 0) return { problem: "until is not a positive integer (ms since the epoch)" };
  if (o.reason !== undefined && (typeof o.reason !== "string" || o.reason.length > MAX_REASON)) return { problem: `reason is not a string of at most ${MAX_REASON} characters` };
  if (o.strike !== undefined && (!isInt(o.strike) || o.strike < 0 || o.strike > 1e6)) return { problem: "strike is not a non-negative integer" };
  if (o.origin !== undefined && (typeof o.origin !== "string" || o.origin.length > MAX_ORIGIN)) return { problem: `origin is not a string of at most ${MAX_ORIGIN} characters` };
  if (o.created !== undefined && (!isInt(o.created) || o.created < 0)) return { problem: "created is not a non-negative integer" };
  return {
    record: {
      until: o.until,
      reason: (o.reason as string | undefined) ?? "",
      strike: (o.strike as number | undefined) ?? 0,
      origin: (o.origin as string | undefined) ?? "",
      created: (o.created as number | undefined) ?? 0,
    },
  };
}

// ---- clients --------------------------------------------------------------------------------------------------

const V4_MARK = 0xffffn << 32n;
const NAT64_HI = 0x0064ff9b00000000n;

// Dotted-quad IPv4 without leading zeros (the filter's parseV4), or undefined.
function parseV4(s: string): bigint | undefined {
  const parts = s.split(".");
  if (parts.length !== 4) return undefined;
  let v = 0n;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p) || (p.length > 1 && p[0] === "0") || Number(p) > 255) return undefined;
    v = (v << 8n) | BigInt(p);
  }
  return v;
}

// An IPv6 address (RFC 4291 text forms, "::" and an optional dotted-quad tail) as 128 bits, or undefined.
function parseV6(s: string): bigint | undefined {
  if (s.length < 2 || s.length > 45) return undefined;
  const halves = s.split("::");
  if (halves.length > 2) return undefined;
  const groups = (h: string): number[] | undefined => {
    if (h === "") return [];
    const out: number[] = [];
    const parts = h.split(":");
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i];
      if (i === parts.length - 1 && p.includes(".")) {
        const v4 = parseV4(p);
        if (v4 === undefined) return undefined;
        out.push(Number(v4 >> 16n), Number(v4 & 0xffffn));
      } else if (/^[0-9a-fA-F]{1,4}$/.test(p)) out.push(parseInt(p, 16));
      else return undefined;
    }
    return out;
  };
  const head = groups(halves[0]);
  const tail = halves.length === 2 ? groups(halves[1]) : [];
  if (!head || !tail) return undefined;
  if (halves.length === 2 && head.length + tail.length > 7) return undefined;
  if (halves.length === 1 && head.length !== 8) return undefined;
  const all = [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
  let v = 0n;
  for (const g of all) v = (v << 16n) | BigInt(g);
  return v;
}

// The filter's 128-bit form: IPv4 held as ::ffff:a.b.c.d; NAT64 64:ff9b::a.b.c.d is the same address.
function toMapped(v: bigint): bigint {
  return v >> 32n === NAT64_HI << 32n ? V4_MARK | (v & 0xffffffffn) : v;
}

function isV4(v: bigint): boolean {
  return v >> 32n === 0xffffn;
}

/** Renders a 128-bit address as the filter's formatAddress does. */
export function formatAddress(v: bigint): string {
  if (isV4(v)) {
    const x = Number(v & 0xffffffffn);
    return `${x >>> 24}.${(x >>> 16) & 255}.${(x >>> 8) & 255}.${x & 255}`;
  }
  const groups: string[] = [];
  for (let i = 7; i >= 0; i--) groups.push(((v >> BigInt(16 * i)) & 0xffffn).toString(16));
  // The WHATWG URL serializer writes IPv6 the RFC 5952 way (lowercase, the first longest run of two or
  // more zero groups as "::"), as the filter's formatAddress does.
  return new URL(`http://[${groups.join(":")}]/`).hostname.slice(1, -1);
}

// A SPIFFE ID (not a pattern) as the filter's spiffePatternProblem reads one, with no '*' segment.
function spiffeProblem(s: string): string | undefined {
  if (s.length > 2048) return "is longer than 2048 characters";
  const parts = s.slice("spiffe://".length).split("/");
  if (parts.length < 2) return "needs a path after the trust domain, like spiffe://cluster.local/ns/<ns>/sa/<sa>";
  for (let i = 0; i < parts.length; i++) {
    const seg = parts[i];
    if (seg.length === 0) return "has an empty segment";
    if (seg.includes("*")) return "is a pattern ('*'); a decision names one identity";
    if (seg === "." || seg === "..") return "has a \".\" or \"..\" segment";
    if (!(i === 0 ? /^[a-z0-9._-]+$/ : /^[A-Za-z0-9._-]+$/).test(seg)) {
      return i === 0 ? "has a trust domain with characters other than a-z, 0-9, '.', '-', '_'" : "has a path segment with characters other than letters, digits, '.', '-', '_'";
    }
  }
  return undefined;
}

/**
 * The key form of a client given on the command line or found in a key: an address, a network or a SPIFFE ID,
 * normalised as the filter names it. Returns the client or the problem.
 */
export function normaliseClient(text: string): { client: string; kind: "address" | "range" | "identity" } | { problem: string } {
  if (text.startsWith("spiffe://")) {
    const p = spiffeProblem(text);
    return p ? { problem: `"${text}" is not a SPIFFE ID: it ${p}` } : { client: text, kind: "identity" };
  }
  const what = `"${text}" is not an IPv4/IPv6 address, a network like 203.0.113.0/24 or a SPIFFE ID like spiffe://cluster.local/ns/shop/sa/web`;
  const slash = text.indexOf("/");
  const addr = slash < 0 ? text : text.slice(0, slash);
  let v: bigint | undefined;
  let written4 = false;
  if (!addr.includes(":")) {
    const v4 = parseV4(addr);
    if (v4 !== undefined) v = V4_MARK | v4;
    written4 = true;
  } else {
    const v6 = parseV6(addr);
    if (v6 !== undefined) v = toMapped(v6);
  }
  if (v === undefined) return { problem: what };
  let bits = written4 ? 32 : 128;
  if (slash >= 0) {
    const p = text.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p) || Number(p) > bits) return { problem: `${what} (bad prefix length "/${p}")` };
    bits = Number(p);
  }
  // In 128-bit terms; an IPv4(-mapped) network written in IPv6 notation keeps its IPv6 length.
  const total = written4 ? 96 + bits : bits;
  const mask = total === 0 ? 0n : ((1n << 128n) - 1n) ^ ((1n << BigInt(128 - total)) - 1n);
  const net = v & mask;
  // Written back the way the filter writes it: an IPv4 address in dotted form with an IPv4 prefix length.
  if (isV4(net) && total >= 96) {
    const b4 = total - 96;
    return b4 === 32 ? { client: formatAddress(net), kind: "address" } : { client: `${formatAddress(net)}/${b4}`, kind: "range" };
  }
  if (total === 128) return { client: formatAddress(net), kind: "address" };
  return { client: `${formatAddress(net)}/${total}`, kind: "range" };
}

/**
 * Parses a duration the way the filter does ("90s", "10m", "1h30m", "500ms", "1d"; assembly/config.ts
 * parseDuration); undefined when invalid. The caller compares it with MAX_BAN_MS, to say which is wrong.
 */
export function parseDuration(s: string): number | undefined {
  if (s === "0") return 0;
  if (s.length === 0 || s.length > 32) return undefined;
  const units: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
  let total = 0;
  const re = /(\d{1,12})(ms|s|m|h|d)/y;
  let i = 0;
  while (i < s.length) {
    re.lastIndex = i;
    const m = re.exec(s);
    if (!m) return undefined;
    total += Number(m[1]) * units[m[2]];
    i = re.lastIndex;
  }
  return total;
}

/** "1h2m", "45s", "3d4h": a time left, to the second, for tables and lines. */
export function formatLeft(ms: number): string {
  if (ms <= 0) return "0s";
  let s = Math.ceil(ms / 1000);
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  const parts = [d && `${d}d`, h && `${h}h`, m && `${m}m`, s && `${s}s`].filter(Boolean);
  return parts.slice(0, 2).join("");
}

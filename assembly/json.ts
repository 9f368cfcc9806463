// A small, strict JSON reader for the plugin configuration. It keeps object keys in document order and
// reports the first syntax error with its character offset, so a bad pluginConfig gets a message that
// says where it is broken. It is only used at configure time, never on the request path.

/** The kind of a parsed JSON value. */
export const enum JKind { Null, Bool, Number, String, Array, Object }

/** A parsed JSON value: a tagged union with the payload in the field matching `kind`. */
export class JValue {
  kind: JKind = JKind.Null;
  bool: bool = false;
  num: f64 = 0;
  str: string = "";
  items: JValue[] = [];
  keys: string[] = [];

  /** Returns the value under `key` of an object, or null when absent. */
  get(key: string): JValue | null {
    for (let i = 0; i < this.keys.length; i++) {
      if (this.keys[i] == key) return this.items[i];
    }
    return null;
  }

  /** Whether this is a number without a fractional part. */
  isInteger(): bool {
    return this.kind == JKind.Number && Math.floor(this.num) == this.num && Math.abs(this.num) < 9007199254740992.0;
  }

  /** A short rendering of the value for error messages ("abc" in quotes, numbers, or its kind). */
  describe(): string {
    switch (this.kind) {
      case JKind.Null: return "null";
      case JKind.Bool: return this.bool ? "true" : "false";
      case JKind.Number: return formatNumber(this.num);
      case JKind.String: return quote(this.str.length > 64 ? this.str.substring(0, 61) + "..." : this.str);
      case JKind.Array: return "an array";
      default: return "an object";
    }
  }
}

/** Quotes a string the way JSON would (backslash, quote and control characters escaped). */
export function quote(s: string): string {
  let out = "\"";
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    if (c == 0x22 || c == 0x5c) out += "\\" + String.fromCharCode(c);
    else if (c == 0x0a) out += "\\n";
    else if (c < 0x20) out += "\\u00" + (c < 16 ? "0" : "") + (<u32>c).toString(16);
    else out += String.fromCharCode(c);
  }
  return out + "\"";
}

// Formats a number for messages without pulling in a float printer: integers exactly, others with up
// to six decimals.
function formatNumber(n: f64): string {
  if (!isFinite(n) || Math.abs(n) >= 1e15) return "a number out of range";
  let neg = n < 0;
  let a = Math.abs(n);
  let whole = <i64>Math.floor(a);
  let frac = <i64>Math.round((a - <f64>whole) * 1e6);
  if (frac >= 1_000_000) { whole++; frac = 0; }
  let out = (neg ? "-" : "") + whole.toString();
  if (frac > 0) {
    let digits = 6; // frac's decimals, less the trailing zeros dropped below
    while (frac % 10 == 0) { frac /= 10; digits--; }
    let f = frac.toString();
    out += "." + "00000".substring(0, digits - f.length) + f;
  }
  return out;
}

/** The outcome of parsing: a value, or an error naming the offset and what was expected. */
export class JsonResult {
  value: JValue | null = null;
  error: string = "";
}

const MAX_DEPTH = 32;

class Reader {
  s: string;
  pos: i32 = 0;
  error: string = "";

  constructor(s: string) { this.s = s; }

  fail(what: string): JValue | null {
    let found = this.pos >= this.s.length ? "end of input" : "'" + this.s.charAt(this.pos) + "'";
    return this.failWith("expected " + what + ", found " + found);
  }

  failWith(message: string): JValue | null {
    if (this.error.length == 0) this.error = "invalid JSON at position " + this.pos.toString() + ": " + message;
    return null;
  }

  ws(): void {
    while (this.pos < this.s.length) {
      let c = this.s.charCodeAt(this.pos);
      if (c == 0x20 || c == 0x09 || c == 0x0a || c == 0x0d) this.pos++;
      else break;
    }
  }

  value(depth: i32): JValue | null {
    if (depth > MAX_DEPTH) return this.fail("at most " + MAX_DEPTH.toString() + " levels of nesting");
    this.ws();
    if (this.pos >= this.s.length) return this.fail("a value");
    let c = this.s.charCodeAt(this.pos);
    if (c == 0x7b) return this.object(depth);
    if (c == 0x5b) return this.array(depth);
    if (c == 0x22) {
      let str = this.string();
      if (str === null) return null;
      let v = new JValue();
      v.kind = JKind.String;
      v.str = str;
      return v;
    }
    if (c == 0x2d || (c >= 0x30 && c <= 0x39)) return this.number();
    if (this.word("true")) { let v = new JValue(); v.kind = JKind.Bool; v.bool = true; return v; }
    if (this.word("false")) { let v = new JValue(); v.kind = JKind.Bool; return v; }
    if (this.word("null")) return new JValue();
    return this.fail("a value");
  }

  word(w: string): bool {
    if (this.s.substr(this.pos, w.length) == w) { this.pos += w.length; return true; }
    return false;
  }

  object(depth: i32): JValue | null {
    this.pos++; // {
    let v = new JValue();
    v.kind = JKind.Object;
    this.ws();
    if (this.pos < this.s.length && this.s.charCodeAt(this.pos) == 0x7d) { this.pos++; return v; }
    while (true) {
      this.ws();
      if (this.pos >= this.s.length || this.s.charCodeAt(this.pos) != 0x22) return this.fail("a string key");
      let keyStart = this.pos;
      let key = this.string();
      if (key === null) return null;
      if (v.get(key) !== null) {
        this.pos = keyStart;
        return this.failWith("duplicate key " + quote(key));
      }
      this.ws();
      if (this.pos >= this.s.length || this.s.charCodeAt(this.pos) != 0x3a) return this.fail("':'");
      this.pos++;
      let item = this.value(depth + 1);
      if (item === null) return null;
      v.keys.push(key);
      v.items.push(item);
      this.ws();
      if (this.pos < this.s.length) {
        let c = this.s.charCodeAt(this.pos);
        if (c == 0x2c) { this.pos++; continue; }
        if (c == 0x7d) { this.pos++; return v; }
      }
      return this.fail("',' or '}'");
    }
  }

  array(depth: i32): JValue | null {
    this.pos++; // [
    let v = new JValue();
    v.kind = JKind.Array;
    this.ws();
    if (this.pos < this.s.length && this.s.charCodeAt(this.pos) == 0x5d) { this.pos++; return v; }
    while (true) {
      let item = this.value(depth + 1);
      if (item === null) return null;
      v.items.push(item);
      this.ws();
      if (this.pos < this.s.length) {
        let c = this.s.charCodeAt(this.pos);
        if (c == 0x2c) { this.pos++; continue; }
        if (c == 0x5d) { this.pos++; return v; }
      }
      return this.fail("',' or ']'");
    }
  }

  string(): string | null {
    this.pos++; // opening quote
    let out = "";
    let start = this.pos;
    while (true) {
      if (this.pos >= this.s.length) { this.fail("'\"' to close the string"); return null; }
      let c = this.s.charCodeAt(this.pos);
      if (c == 0x22) {
        out += this.s.substring(start, this.pos);
        this.pos++;
        return out;
      }
      if (c < 0x20) { this.fail("no control character in a string"); return null; }
      if (c == 0x5c) {
        out += this.s.substring(start, this.pos);
        this.pos++;
        if (this.pos >= this.s.length) { this.fail("an escape character"); return null; }
        let e = this.s.charCodeAt(this.pos);
        // \" \\ \/ stand for themselves; \b \f \n \r \t for their control characters.
        let plain = e == 0x22 || e == 0x5c || e == 0x2f ? e : e == 0x62 ? 0x08 : e == 0x66 ? 0x0c : e == 0x6e ? 0x0a : e == 0x72 ? 0x0d : e == 0x74 ? 0x09 : -1;
        if (plain >= 0) out += String.fromCharCode(plain);
        else if (e == 0x75) {
          let code: i32 = 0;
          for (let k = 1; k <= 4; k++) {
            if (this.pos + k >= this.s.length) { this.pos += k; this.fail("four hex digits"); return null; }
            let h = this.s.charCodeAt(this.pos + k);
            let d: i32 = h >= 0x30 && h <= 0x39 ? h - 0x30 : (h | 0x20) >= 0x61 && (h | 0x20) <= 0x66 ? (h | 0x20) - 0x61 + 10 : -1;
            if (d < 0) { this.pos += k; this.fail("four hex digits"); return null; }
            code = (code << 4) | d;
          }
          out += String.fromCharCode(code);
          this.pos += 4;
        } else { this.fail("a valid escape"); return null; }
        this.pos++;
        start = this.pos;
        continue;
      }
      this.pos++;
    }
  }

  number(): JValue | null {
    let start = this.pos;
    if (this.s.charCodeAt(this.pos) == 0x2d) this.pos++;
    if (this.pos + 1 < this.s.length && this.s.charCodeAt(this.pos) == 0x30) {
      let next = this.s.charCodeAt(this.pos + 1);
      if (next >= 0x30 && next <= 0x39) { this.pos++; return this.fail("no leading zeros"); }
    }
    if (!this.digits()) return this.fail("a digit");
    if (this.pos < this.s.length && this.s.charCodeAt(this.pos) == 0x2e) {
      this.pos++;
      if (!this.digits()) return this.fail("a digit");
    }
    if (this.pos < this.s.length && (this.s.charCodeAt(this.pos) | 0x20) == 0x65) {
      this.pos++;
      if (this.pos < this.s.length && (this.s.charCodeAt(this.pos) == 0x2b || this.s.charCodeAt(this.pos) == 0x2d)) this.pos++;
      if (!this.digits()) return this.fail("a digit");
    }
    let v = new JValue();
    v.kind = JKind.Number;
    v.num = decimal(this.s, start, this.pos);
    return v;
  }

  digits(): bool {
    let start = this.pos;
    while (this.pos < this.s.length) {
      let c = this.s.charCodeAt(this.pos);
      if (c < 0x30 || c > 0x39) break;
      this.pos++;
    }
    return this.pos > start;
  }
}

// Converts a validated JSON number literal to f64 (exact for integers below 2^53; config values need no
// more precision than that).
function decimal(s: string, start: i32, end: i32): f64 {
  let i = start;
  let neg = s.charCodeAt(i) == 0x2d;
  if (neg) i++;
  let v: f64 = 0;
  while (i < end && s.charCodeAt(i) >= 0x30 && s.charCodeAt(i) <= 0x39) v = v * 10 + <f64>(s.charCodeAt(i++) - 0x30);
  let scale: i32 = 0;
  if (i < end && s.charCodeAt(i) == 0x2e) {
    i++;
    while (i < end && s.charCodeAt(i) >= 0x30 && s.charCodeAt(i) <= 0x39) { v = v * 10 + <f64>(s.charCodeAt(i++) - 0x30); scale--; }
  }
  if (i < end) { // exponent
    i++;
    let eneg = s.charCodeAt(i) == 0x2d;
    if (s.charCodeAt(i) == 0x2d || s.charCodeAt(i) == 0x2b) i++;
    let e: i32 = 0;
    while (i < end) { e = e * 10 + (s.charCodeAt(i++) - 0x30); if (e > 400) e = 400; }
    scale += eneg ? -e : e;
  }
  while (scale > 0) { v *= 10; scale--; }
  while (scale < 0) { v /= 10; scale++; }
  return neg ? -v : v;
}

/** Parses a complete JSON document; trailing non-whitespace is an error. */
export function parseJson(text: string): JsonResult {
  let r = new Reader(text);
  let res = new JsonResult();
  let v = r.value(0);
  if (v !== null) {
    r.ws();
    if (r.pos < text.length) v = r.fail("end of input");
  }
  if (v === null) res.error = r.error;
  else res.value = v;
  return res;
}

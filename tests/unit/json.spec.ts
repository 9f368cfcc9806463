// The configuration's JSON reader (assembly/json.ts): strict syntax, keys in document order, duplicate
// keys and trailing garbage rejected, a nesting limit, and errors that name the character offset.

import { parseJson, JValue, JKind, quote } from "../../assembly/json";
import { expectIncludes } from "./helpers";

// Parses text that must be valid and returns the value.
function ok(text: string): JValue {
  let r = parseJson(text);
  if (r.value === null) {
    expect(r.error).toBe("", "expected " + quote(text) + " to parse");
    return new JValue();
  }
  expect(r.error).toBe("");
  return changetype<JValue>(r.value);
}

// Parses text that must be rejected and returns the error message.
function err(text: string): string {
  let r = parseJson(text);
  expect(r.value).toBeNull(quote(text) + " must be rejected");
  return r.error;
}

function repeat(s: string, n: i32): string {
  return s.repeat(n);
}

describe("JSON values", () => {
  it("parses null, true and false", () => {
    expect(ok("null").kind).toBe(JKind.Null);
    let t = ok("true");
    expect(t.kind).toBe(JKind.Bool);
    expect(t.bool).toBe(true);
    let f = ok("false");
    expect(f.kind).toBe(JKind.Bool);
    expect(f.bool).toBe(false);
  });

  it("keeps object keys in document order and finds values by key", () => {
    let v = ok('{"b":1,"a":"x","c":[true]}');
    expect(v.kind).toBe(JKind.Object);
    expect(v.keys.join(",")).toBe("b,a,c");
    expect(changetype<JValue>(v.get("a")).str).toBe("x");
    expect(changetype<JValue>(v.get("b")).num).toBe(1);
    expect(changetype<JValue>(v.get("c")).items.length).toBe(1);
    expect(v.get("missing")).toBeNull();
  });

  it("parses nested arrays and objects with whitespace of every allowed kind", () => {
    let v = ok(' \t\r\n{ "a" : [ 1 , { "b" : [ ] } , { } ] } \n');
    let a = changetype<JValue>(v.get("a"));
    expect(a.kind).toBe(JKind.Array);
    expect(a.items.length).toBe(3);
    expect(a.items[1].kind).toBe(JKind.Object);
    expect(changetype<JValue>(a.items[1].get("b")).items.length).toBe(0);
    expect(a.items[2].keys.length).toBe(0);
  });

  it("rejects whitespace JSON does not allow (form feed, no-break space)", () => {
    expect(err("\f1")).toBe("invalid JSON at position 0: expected a value, found '\f'");
    expect(err("\u00a01")).toBe("invalid JSON at position 0: expected a value, found '\u00a0'");
  });
});

describe("JSON numbers", () => {
  it("parses integers, negative numbers and zero", () => {
    expect(ok("0").num).toBe(0);
    expect(ok("42").num).toBe(42);
    expect(ok("-17").num).toBe(-17);
    expect(ok("9007199254740991").num).toBe(9007199254740991.0);
    expect(ok("1000000").isInteger()).toBe(true);
  });

  it("parses fractions", () => {
    expect(ok("2.5").num).toBe(2.5);
    expect(ok("-0.25").num).toBe(-0.25);
    expect(ok("0.1").num).toBeCloseTo(0.1);
    expect(ok("2.5").isInteger()).toBe(false);
    expect(ok("3.0").isInteger()).toBe(true);
  });

  it("parses exponents with either case and sign", () => {
    expect(ok("1e3").num).toBe(1000);
    expect(ok("1E3").num).toBe(1000);
    expect(ok("15e+2").num).toBe(1500);
    expect(ok("25e-1").num).toBe(2.5);
    expect(ok("1.5e3").num).toBe(1500);
    expect(ok("-2E-2").num).toBeCloseTo(-0.02);
  });

  it("turns an enormous exponent into infinity, which is never an integer", () => {
    let v = ok("1e999999");
    expect(isFinite(v.num)).toBe(false);
    expect(v.isInteger()).toBe(false);
    expect(v.describe()).toBe("a number out of range");
    expect(ok("1e-999999").num).toBe(0);
  });

  it("treats numbers at or above 2^53 as not integers", () => {
    expect(ok("9007199254740992").isInteger()).toBe(false);
  });

  it("rejects malformed numbers with the offset of the problem", () => {
    expect(err("-")).toBe("invalid JSON at position 1: expected a digit, found end of input");
    expect(err("1.")).toBe("invalid JSON at position 2: expected a digit, found end of input");
    expect(err("1.e3")).toBe("invalid JSON at position 2: expected a digit, found 'e'");
    expect(err("1e")).toBe("invalid JSON at position 2: expected a digit, found end of input");
    expect(err("1e+")).toBe("invalid JSON at position 3: expected a digit, found end of input");
    expect(err(".5")).toBe("invalid JSON at position 0: expected a value, found '.'");
    expect(err("+1")).toBe("invalid JSON at position 0: expected a value, found '+'");
    expect(err("-a")).toBe("invalid JSON at position 1: expected a digit, found 'a'");
  });

  it("rejects numbers with leading zeros, which JSON does not allow", () => {
    // RFC 8259: int = zero / ( digit1-9 *DIGIT ). "01" is not a JSON number.
    expectIncludes(err("01"), "invalid JSON at position 1");
    expectIncludes(err('{"capacity":01024}'), "invalid JSON at position 13");
    expect(ok("0").num).toBe(0);
    expect(ok("0.5").num).toBe(0.5);
  });
});

describe("JSON strings", () => {
  it("decodes every simple escape", () => {
    expect(ok('"a\\"b\\\\c\\/d\\be\\ff\\ng\\rh\\ti"').str).toBe("a\"b\\c/d\be\ff\ng\rh\ti");
  });

  it("decodes \\u escapes in either case, including surrogate pairs", () => {
    expect(ok('"\\u0041\\u00e9\\u00E9"').str).toBe("Aéé");
    expect(ok('"\\ud83d\\ude00"').str).toBe("😀");
    expect(ok('"\\u0000"').str.length).toBe(1);
    expect(ok('"\\u0000"').str.charCodeAt(0)).toBe(0);
  });

  it("keeps non-ASCII characters as they are", () => {
    expect(ok('"žluťoučký kůň ✓"').str).toBe("žluťoučký kůň ✓");
  });

  it("rejects a bad \\u escape at the offending character", () => {
    expect(err('"\\u12"')).toBe("invalid JSON at position 5: expected four hex digits, found '\"'");
    expect(err('"\\u12g4"')).toBe("invalid JSON at position 5: expected four hex digits, found 'g'");
    expect(err('"\\u12')).toBe("invalid JSON at position 5: expected four hex digits, found end of input");
  });

  it("rejects unknown escapes, raw control characters and unterminated strings", () => {
    expect(err('"a\\x"')).toBe("invalid JSON at position 3: expected a valid escape, found 'x'");
    expect(err('"a\nb"')).toBe("invalid JSON at position 2: expected no control character in a string, found '\n'");
    expect(err('"a\tb"')).toBe("invalid JSON at position 2: expected no control character in a string, found '\t'");
    expect(err('"abc')).toBe("invalid JSON at position 4: expected '\"' to close the string, found end of input");
    expect(err('"abc\\')).toBe("invalid JSON at position 5: expected an escape character, found end of input");
  });
});

describe("JSON structure errors", () => {
  it("rejects an empty document", () => {
    expect(err("")).toBe("invalid JSON at position 0: expected a value, found end of input");
    expect(err("   ")).toBe("invalid JSON at position 3: expected a value, found end of input");
  });

  it("rejects trailing garbage after a complete value", () => {
    expect(err("{} x")).toBe("invalid JSON at position 3: expected end of input, found 'x'");
    expect(err("{}}")).toBe("invalid JSON at position 2: expected end of input, found '}'");
    expect(err("truex")).toBe("invalid JSON at position 4: expected end of input, found 'x'");
    expect(err("1 2")).toBe("invalid JSON at position 2: expected end of input, found '2'");
  });

  it("rejects duplicate keys at the second occurrence", () => {
    expect(err('{"mode":"enforce","mode":"dry-run"}')).toBe("invalid JSON at position 18: duplicate key \"mode\"");
    expect(err('{"a":{"x":1,"x":2}}')).toBe("invalid JSON at position 12: duplicate key \"x\"");
  });

  it("accepts the same key in different objects", () => {
    let v = ok('{"a":{"x":1},"b":{"x":2}}');
    expect(changetype<JValue>(changetype<JValue>(v.get("b")).get("x")).num).toBe(2);
  });

  it("rejects missing separators, bare keys and trailing commas", () => {
    expect(err('{"a" 1}')).toBe("invalid JSON at position 5: expected ':', found '1'");
    expect(err("{a:1}")).toBe("invalid JSON at position 1: expected a string key, found 'a'");
    expect(err('{"a":1,}')).toBe("invalid JSON at position 7: expected a string key, found '}'");
    expect(err("[1,]")).toBe("invalid JSON at position 3: expected a value, found ']'");
    expect(err("[1 2]")).toBe("invalid JSON at position 3: expected ',' or ']', found '2'");
    expect(err('{"a":1')).toBe("invalid JSON at position 6: expected ',' or '}', found end of input");
    expect(err("[")).toBe("invalid JSON at position 1: expected a value, found end of input");
    expect(err("tru")).toBe("invalid JSON at position 0: expected a value, found 't'");
    expect(err("{\"mode\": enforce}")).toBe("invalid JSON at position 9: expected a value, found 'e'");
  });

  it("accepts 32 levels of nesting and rejects the 33rd", () => {
    expect(ok(repeat("[", 32) + "1" + repeat("]", 32)).kind).toBe(JKind.Array);
    expect(err(repeat("[", 33) + "1" + repeat("]", 33)))
      .toBe("invalid JSON at position 33: expected at most 32 levels of nesting, found '1'");
    expect(err(repeat('{"a":', 33) + "1" + repeat("}", 33)))
      .toBe("invalid JSON at position 165: expected at most 32 levels of nesting, found '1'");
  });

  it("stops at the nesting limit on a hostile, deeply nested document", () => {
    expect(err(repeat("[", 100000))).toBe("invalid JSON at position 33: expected at most 32 levels of nesting, found '['");
  });
});

describe("JSON value descriptions for error messages", () => {
  it("describes each kind", () => {
    expect(ok("null").describe()).toBe("null");
    expect(ok("true").describe()).toBe("true");
    expect(ok("[]").describe()).toBe("an array");
    expect(ok("{}").describe()).toBe("an object");
    expect(ok('"abc"').describe()).toBe("\"abc\"");
  });

  it("prints numbers exactly for integers and with up to six decimals otherwise, trailing zeros dropped and leading ones kept", () => {
    expect(ok("1800").describe()).toBe("1800");
    expect(ok("42").describe()).toBe("42");
    expect(ok("-1").describe()).toBe("-1");
    expect(ok("0.5").describe()).toBe("0.5");
    expect(ok("-0.5").describe()).toBe("-0.5");
    expect(ok("2.25").describe()).toBe("2.25");
    expect(ok("1.25").describe()).toBe("1.25");
    expect(ok("0.00005").describe()).toBe("0.00005");
    expect(ok("3.000001").describe()).toBe("3.000001");
    expect(ok("0.1234567").describe()).toBe("0.123457");
    expect(ok("1.9999999").describe()).toBe("2");
    expect(ok("2.0000004").describe()).toBe("2");
    expect(ok("0.9999996").describe()).toBe("1");
    expect(ok("1e15").describe()).toBe("a number out of range");
  });

  it("quotes strings with escapes and shortens long ones to 64 characters", () => {
    expect(ok('"a\\nb"').describe()).toBe("\"a\\nb\"");
    expect(ok('"q\\"\\\\"').describe()).toBe("\"q\\\"\\\\\"");
    expect(ok('"\\u0001"').describe()).toBe("\"\\u0001\"");
    let long = ok("\"" + repeat("x", 100) + "\"").describe();
    expect(long).toBe("\"" + repeat("x", 61) + "...\"");
    expect(ok("\"" + repeat("y", 64) + "\"").describe()).toBe("\"" + repeat("y", 64) + "\"");
  });
});

// Small assertion helpers shared by the spec files.

/** Asserts that `text` contains `part` (as-pect's toContain compares array items, not substrings). */
export function expectIncludes(text: string, part: string, message: string = ""): void {
  if (!text.includes(part)) expect(text).toBe(part, "should contain the expected text. " + message);
}

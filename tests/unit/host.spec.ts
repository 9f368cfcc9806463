import { header, property, nowMs, bytes, startsWith, REQUEST_HEADERS, RESPONSE_HEADERS } from "../../assembly/host";
import * as mock from "./mock";

function text(b: ArrayBuffer): string { return String.UTF8.decode(b); }

describe("host calls", () => {
  beforeEach(() => { mock.reset(); });

  it("returns a request header's value bytes through the module's malloc", () => {
    mock.setHeader(mock.REQUEST, "x-forwarded-for", "203.0.113.7, 10.0.0.1");
    let before = mock.mallocCount();
    expect(text(header(REQUEST_HEADERS, bytes("x-forwarded-for")))).toBe("203.0.113.7, 10.0.0.1");
    expect(mock.mallocCount()).toBe(before + 1);
  });
});

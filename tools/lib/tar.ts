// A reproducible ustar writer: the same entries always give the same bytes (mtime 0, uid/gid 0, no user or group
// names, fixed modes, entries in the order given). That is what makes the OCI layer digest a function of its files
// alone. Only what the OCI images need is supported: regular files and directories with short ASCII names. Modes
// default to 0644 (files) and 0755 (directories); an entry may ask for another mode (an executable: 0755).

/** One tar entry. Directory names end with "/". */
export interface TarEntry {
  name: string;
  /** File content; omitted for directories. */
  data?: Uint8Array;
  /** Permission bits; default 0644 for files, 0755 for directories. */
  mode?: number;
}

const BLOCK = 512;

function writeOctal(header: Uint8Array, offset: number, width: number, value: number): void {
  // width-1 octal digits, zero padded, then NUL (the classic ustar numeric field).
  const text = value.toString(8).padStart(width - 1, "0");
  if (text.length > width - 1) throw new Error(`tar field overflow: ${value}`);
  header.set(new TextEncoder().encode(text), offset);
  header[offset + width - 1] = 0;
}

function header(entry: TarEntry): Uint8Array {
  const isDir = entry.name.endsWith("/");
  const name = new TextEncoder().encode(entry.name);
  if (name.length > 100 || /[^\x20-\x7e]/.test(entry.name)) throw new Error(`tar entry name not supported: ${entry.name}`);
  const h = new Uint8Array(BLOCK);
  h.set(name, 0);
  writeOctal(h, 100, 8, entry.mode ?? (isDir ? 0o755 : 0o644)); // mode
  writeOctal(h, 108, 8, 0); // uid
  writeOctal(h, 116, 8, 0); // gid
  writeOctal(h, 124, 12, isDir ? 0 : entry.data?.length ?? 0); // size
  writeOctal(h, 136, 12, 0); // mtime: the epoch, so rebuilding never changes the digest
  h.fill(0x20, 148, 156); // checksum is computed with its own field as spaces
  h[156] = isDir ? 0x35 /* '5' */ : 0x30; /* '0' */
  h.set(new TextEncoder().encode("ustar\0"), 257); // POSIX ustar magic
  h.set(new TextEncoder().encode("00"), 263); // version
  writeOctal(h, 329, 8, 0); // devmajor
  writeOctal(h, 337, 8, 0); // devminor
  let sum = 0;
  for (const byte of h) sum += byte;
  writeOctal(h, 148, 7, sum); // six digits + NUL, followed by the space already there
  return h;
}

/** Builds a tar archive from entries, in the given order, ending with the two zero blocks. */
export function createTar(entries: TarEntry[]): Uint8Array {
  const parts: Uint8Array[] = [];
  let size = 0;
  for (const entry of entries) {
    const h = header(entry);
    parts.push(h);
    size += BLOCK;
    if (!entry.name.endsWith("/") && entry.data && entry.data.length > 0) {
      const padded = Math.ceil(entry.data.length / BLOCK) * BLOCK;
      const body = new Uint8Array(padded);
      body.set(entry.data);
      parts.push(body);
      size += padded;
    }
  }
  parts.push(new Uint8Array(BLOCK * 2));
  size += BLOCK * 2;
  const out = new Uint8Array(size);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** Reads the regular files of a ustar archive (used to check layers); returns name → content. */
export function readTar(archive: Uint8Array): Map<string, Uint8Array> {
  const files = new Map<string, Uint8Array>();
  let at = 0;
  const decoder = new TextDecoder();
  while (at + BLOCK <= archive.length) {
    const h = archive.subarray(at, at + BLOCK);
    if (h.every((b) => b === 0)) break;
    const field = (start: number, len: number) => decoder.decode(h.subarray(start, start + len)).replace(/\0.*$/s, "");
    const prefix = field(345, 155);
    const name = (prefix ? `${prefix}/` : "") + field(0, 100);
    const size = parseInt(field(124, 12).trim() || "0", 8);
    const type = String.fromCharCode(h[156] || 0x30);
    at += BLOCK;
    if (type === "0" || type === "\0") files.set(name, archive.slice(at, at + size));
    at += Math.ceil(size / BLOCK) * BLOCK;
  }
  return files;
}

// Image references (`registry/repository:tag` or `…@sha256:…`), parsed with the rules of the distribution
// reference grammar that Docker, skopeo and go-containerregistry (and so Istio's fetcher) share:
// the first path component is a registry when it contains "." or ":" or is "localhost"; otherwise the image is on
// Docker Hub and single-component names live under "library/".
import { UserError } from "./errors.ts";

/** A parsed image reference. */
export interface ImageReference {
  /** host[:port] as written (Docker Hub is `docker.io`). */
  registry: string;
  /** Repository path inside the registry, e.g. `platform/traffic-guard`. */
  repository: string;
  tag?: string;
  /** `sha256:<64 hex>` */
  digest?: string;
}

const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const HOST = /^(?:(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?))*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$/;
const DIGEST = /^sha256:[a-f0-9]{64}$/;

/** Parses a reference, accepting an optional `oci://` or `docker://` prefix; throws a UserError naming the problem. */
export function parseReference(input: string): ImageReference {
  const bad = (why: string): never => {
    throw new UserError(`invalid image reference "${input}": ${why}`);
  };
  let rest = input.trim();
  if (rest !== input || rest === "") bad(rest === "" ? "it is empty" : "it has surrounding spaces");
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(rest);
  if (scheme) {
    if (!["oci", "docker"].includes(scheme[1].toLowerCase())) bad(`unsupported scheme ${scheme[1]}:// (use oci:// or none)`);
    rest = rest.slice(scheme[0].length);
  }
  let digest: string | undefined;
  const at = rest.indexOf("@");
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) bad(`digest "${digest}" is not sha256: followed by 64 lowercase hex digits`);
  }
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf("/");
  const colon = rest.lastIndexOf(":");
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) bad(`tag "${tag}" must be 1-128 characters of letters, digits, "_", "." and "-", not starting with "." or "-"`);
  }
  const parts = rest.split("/");
  let registry = "docker.io";
  if (parts.length > 1 && (parts[0].includes(".") || parts[0].includes(":") || parts[0] === "localhost" || parts[0].startsWith("["))) {
    registry = parts.shift()!;
    if (!HOST.test(registry)) bad(`registry "${registry}" is not a host name with an optional port`);
    const port = /:(\d+)$/.exec(registry);
    if (port && (Number(port[1]) < 1 || Number(port[1]) > 65535)) bad(`registry port ${port[1]} is out of range`);
  }
  if (parts.length === 0 || parts.some((p) => p === "")) bad("the repository path is missing or has an empty component");
  for (const p of parts) {
    if (!PATH_COMPONENT.test(p)) bad(`repository component "${p}" must be lowercase letters and digits separated by ".", "_", "__" or "-"`);
  }
  if (registry === "docker.io" && parts.length === 1) parts.unshift("library");
  const repository = parts.join("/");
  if (registry.length + 1 + repository.length > 255) bad("it is longer than 255 characters");
  return { registry, repository, tag, digest };
}

/** Formats a reference back to `registry/repository[:tag][@digest]`. */
export function formatReference(ref: ImageReference): string {
  return `${ref.registry}/${ref.repository}${ref.tag ? `:${ref.tag}` : ""}${ref.digest ? `@${ref.digest}` : ""}`;
}

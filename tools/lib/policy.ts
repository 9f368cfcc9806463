// Reading policies (the filter's pluginConfig) from .json or .yaml files, and checking them with the compiled filter.
import { readFile } from "node:fs/promises";
import { extname } from "node:path";
import { parseAllDocuments } from "yaml";
import { UserError } from "./errors.ts";
import { configureFilter, type ConfigureOutcome } from "./proxy-wasm-host.ts";

/** A policy file as the filter will see it. */
export interface PolicyFile {
  path: string;
  /** The JSON text handed to the filter: a .json file's exact bytes, or the YAML document converted to JSON. */
  json: string;
  /** The parsed value (undefined when a .json file is not valid JSON: the filter itself reports that). */
  value: unknown;
}

/** Reads a policy; YAML is converted to JSON with the `yaml` package, JSON is kept byte for byte. */
export async function readPolicyFile(path: string): Promise<PolicyFile> {
  const ext = extname(path).toLowerCase();
  if (![".json", ".yaml", ".yml"].includes(ext)) {
    throw new UserError(`policy ${path}: expected a .json, .yaml or .yml file`);
  }
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new UserError(`policy file not found: ${path}`);
    if (code === "EISDIR") throw new UserError(`policy ${path} is a directory`);
    throw new UserError(`cannot read policy ${path}: ${(err as Error).message}`);
  }
  if (ext === ".json") {
    let value: unknown;
    try {
      value = text.trim() === "" ? undefined : JSON.parse(text);
    } catch {
      value = undefined;
    }
    return { path, json: text, value };
  }
  return { path, ...yamlToJson(text, path) };
}

/** Converts one YAML document to the JSON text Istio would hand to the filter; an empty document is the empty config. */
export function yamlToJson(text: string, label: string): { json: string; value: unknown } {
  const docs = parseAllDocuments(text, { prettyErrors: true });
  if (!Array.isArray(docs)) return { json: "", value: undefined }; // an empty stream
  if (docs.length > 1) throw new UserError(`policy ${label}: expected one YAML document, found ${docs.length}`);
  if (docs.length === 0) return { json: "", value: undefined };
  const doc = docs[0];
  if (doc.errors.length > 0) {
    throw new UserError(`policy ${label} is not valid YAML: ${doc.errors[0].message.split("\n")[0]}`);
  }
  const value = doc.toJS({ maxAliasCount: 100 }) as unknown;
  if (value === null || value === undefined) return { json: "", value: undefined };
  const bad = findNonJson(value, "");
  if (bad) throw new UserError(`policy ${label}: ${bad}`);
  return { json: JSON.stringify(value), value };
}

// YAML can express values JSON cannot (.inf, .nan); JSON.stringify would silently turn them into null.
function findNonJson(value: unknown, path: string): string | undefined {
  if (typeof value === "number" && !Number.isFinite(value)) {
    return `${path || "(top level)"}: ${value} cannot be represented in JSON`;
  }
  if (typeof value === "bigint") return `${path || "(top level)"}: number ${value} is too large`;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const found = findNonJson(value[i], `${path}[${i}]`);
      if (found) return found;
    }
  } else if (value && typeof value === "object") {
    if (value instanceof Map || value instanceof Set || value instanceof Date || value instanceof Uint8Array) {
      return `${path || "(top level)"}: a YAML ${value.constructor.name} cannot be represented in JSON`;
    }
    for (const [key, child] of Object.entries(value)) {
      const found = findNonJson(child, path ? `${path}.${key}` : key);
      if (found) return found;
    }
  }
  return undefined;
}

/** The filter's verdict on a policy. */
export interface PolicyVerdict {
  ok: boolean;
  /** One entry per problem, `<field.path>: <message>` as the filter logged it. */
  problems: string[];
  outcome: ConfigureOutcome;
}

/** Runs `json` through the compiled filter's configure and returns its verdict. */
export async function checkPolicy(module: WebAssembly.Module, json: string): Promise<PolicyVerdict> {
  const outcome = await configureFilter(module, json);
  if (outcome.accepted) return { ok: true, problems: [], outcome };
  let problems = outcome.problems;
  if (problems.length === 0) {
    const detail = outcome.trap ? `the filter aborted (${outcome.trap})` : "the filter rejected the configuration";
    const last = outcome.logs.at(-1)?.message;
    problems = [last ? `${detail}: ${last}` : `${detail} without logging a reason`];
  }
  return { ok: false, problems, outcome };
}

/** Returns the policy as a pluginConfig object, or throws a UserError when it is not a mapping. */
export function policyAsPluginConfig(policy: PolicyFile): Record<string, unknown> {
  const value = policy.value;
  if (value === undefined) {
    if (policy.json.trim() === "") return {};
    throw new UserError(`policy ${policy.path} is not valid JSON`);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new UserError(`policy ${policy.path}: expected a mapping of settings (the pluginConfig object), got ${Array.isArray(value) ? "a list" : JSON.stringify(value)}`);
  }
  return value as Record<string, unknown>;
}

// Where push credentials come from, in order: flags, environment variables, then the Docker CLI's config file
// (`$DOCKER_CONFIG/config.json`, default `~/.docker/config.json`, as written by `docker login` / `skopeo login
// --authfile`). Credential helpers (`credsStore`, `credHelpers`) run external programs and are not supported;
// if the registry then demands credentials, the error says so.
import { readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { UserError } from "./errors.ts";

/** Environment variable holding the registry user name. */
export const ENV_USERNAME = "TRAFFIC_GUARD_REGISTRY_USERNAME";
/** Environment variable holding the registry password or token. */
export const ENV_PASSWORD = "TRAFFIC_GUARD_REGISTRY_PASSWORD";

/** Credentials for one registry, and where they came from (shown in errors, never the secret itself). */
export interface Credentials {
  username: string;
  password: string;
  source: string;
}

/** Inputs for {@link resolveCredentials}. */
export interface CredentialInputs {
  username?: string;
  password?: string;
  env?: NodeJS.ProcessEnv;
}

/** Normalises a docker config `auths` key (`https://host/v1/`, `host`) to the bare host[:port]. */
export function registryKey(key: string): string {
  let k = key.trim().replace(/^[a-z]+:\/\//i, "");
  k = k.replace(/\/.*$/, "");
  if (k === "index.docker.io" || k === "registry-1.docker.io") k = "docker.io";
  return k.toLowerCase();
}

/** The credentials to use (none: anonymous), plus a hint for the error message should the registry want some. */
export interface ResolvedCredentials {
  credentials?: Credentials;
  hint?: string;
}

/** Returns the credentials to use for `registry`; without any, access is anonymous. */
export async function resolveCredentials(registry: string, inputs: CredentialInputs): Promise<ResolvedCredentials> {
  const env = inputs.env ?? process.env;
  if (inputs.username !== undefined || inputs.password !== undefined) {
    if (!inputs.username || inputs.password === undefined) {
      throw new UserError("--username and --password (or --password-stdin) must be given together");
    }
    return { credentials: { username: inputs.username, password: inputs.password, source: "command-line flags" } };
  }
  const envUser = env[ENV_USERNAME];
  const envPass = env[ENV_PASSWORD];
  if (envUser !== undefined || envPass !== undefined) {
    if (!envUser || envPass === undefined) throw new UserError(`${ENV_USERNAME} and ${ENV_PASSWORD} must be set together`);
    return { credentials: { username: envUser, password: envPass, source: `${ENV_USERNAME}/${ENV_PASSWORD}` } };
  }
  return fromDockerConfig(registry, env);
}

async function fromDockerConfig(registry: string, env: NodeJS.ProcessEnv): Promise<ResolvedCredentials> {
  const dir = env.DOCKER_CONFIG || join(env.HOME || homedir(), ".docker");
  const path = join(dir, "config.json");
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch {
    return {};
  }
  let config: { auths?: Record<string, { auth?: string; username?: string; password?: string; identitytoken?: string }>; credsStore?: string; credHelpers?: Record<string, string> };
  try {
    config = JSON.parse(text);
  } catch {
    throw new UserError(`${path} is not valid JSON`);
  }
  const want = registryKey(registry);
  for (const [key, entry] of Object.entries(config.auths ?? {})) {
    if (registryKey(key) !== want || !entry) continue;
    if (entry.auth) {
      const decoded = Buffer.from(entry.auth, "base64").toString("utf8");
      const colon = decoded.indexOf(":");
      if (colon <= 0) throw new UserError(`${path}: auths["${key}"].auth is not base64 of user:password`);
      return { credentials: { username: decoded.slice(0, colon), password: decoded.slice(colon + 1), source: path } };
    }
    if (entry.username && entry.password !== undefined) {
      return { credentials: { username: entry.username, password: entry.password, source: path } };
    }
    if (entry.identitytoken) {
      return { hint: `${path} holds only an identity token for ${key}, which traffic-guard push does not use; pass --username/--password` };
    }
  }
  const helper = config.credHelpers?.[want] ?? config.credHelpers?.[registry] ?? config.credsStore;
  if (helper) {
    // Docker would ask the helper program; this tool does not run external programs, so it goes anonymous and
    // says why if the registry then asks for credentials.
    return { hint: `${path} delegates credentials to docker-credential-${helper}, which traffic-guard push does not run` };
  }
  return {};
}

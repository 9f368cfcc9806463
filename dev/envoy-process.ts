/**
 * Starts and stops real Envoy processes for the end-to-end tests, the demo and the benchmark:
 * writes the generated bootstrap to a file, checks it with `envoy --mode validate`, starts Envoy on
 * ephemeral loopback ports, waits for the admin `/ready` endpoint and reads the bound listener ports
 * back from `/listeners`. Every started process is killed when the Node process exits.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, openSync, closeSync, readFileSync, writeFileSync, existsSync, rmSync, renameSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { ecdsResponse, envoyBootstrap, type EnvoySpec, type WasmFilterSpec } from "./envoy-config.ts";
import { ensureEnvoy } from "./envoy.ts";

/** Bound addresses of one listener. */
export interface ListenerPorts {
  /** Port of the IPv4 address. */
  ipv4: number;
  /** Port of the additional IPv6 address, when the listener has one. */
  ipv6?: number;
}

/** Options for {@link startEnvoy}. */
export interface StartOptions {
  /** The configuration to render. */
  spec: EnvoySpec;
  /** Short label used in file names and messages. */
  label: string;
  /** Worker threads (`--concurrency`). */
  concurrency: number;
  /** Envoy's `-l` level (default `info`, which shows the filter's info/warn/critical lines). */
  logLevel?: string;
  /** How long to wait for `/ready` (default 30 s). */
  readyTimeoutMs?: number;
  /**
   * Run `envoy --mode validate` first (default true). Only a test that wants to watch Envoy itself
   * refuse a configuration at startup turns this off.
   */
  validate?: boolean;
  /**
   * A command Envoy runs under, with its arguments (`["valgrind", "--tool=callgrind"]`): Envoy's command line
   * follows them, and the child process is the wrapper's (valgrind runs Envoy in its own process).
   */
  wrapper?: string[];
}

/** A running Envoy. */
export interface RunningEnvoy {
  /** Label given at start. */
  label: string;
  /** `http://127.0.0.1:<port>` of the admin interface. */
  adminUrl: string;
  /** Bound ports per listener name. */
  ports: Map<string, ListenerPorts>;
  /** Rendered bootstrap file. */
  configPath: string;
  /** File receiving Envoy's stdout and stderr. */
  logPath: string;
  /** The child process. */
  child: ChildProcess;
  /** Envoy's log so far. */
  log(): string;
  /** GET an admin path and return the body (throws on a non-2xx status). */
  admin(path: string): Promise<string>;
  /** Stops Envoy (SIGTERM, then SIGKILL after 5 s) and resolves when it has exited. */
  stop(): Promise<void>;
}

/** Raised when a generated configuration does not pass `envoy --mode validate`. */
export class EnvoyConfigInvalidError extends Error {
  override name = "EnvoyConfigInvalidError";
}

const live = new Set<ChildProcess>();
process.on("exit", () => {
  for (const child of live) child.kill("SIGKILL");
});

/** Writes a rendered bootstrap into a fresh temporary directory and returns the file path. */
export function writeBootstrap(spec: EnvoySpec, label: string): string {
  const dir = mkdtempSync(join(tmpdir(), `traffic-guard-envoy-${label.replace(/[^a-z0-9-]/gi, "_")}-`));
  const path = join(dir, "envoy.json");
  writeFileSync(path, `${JSON.stringify(envoyBootstrap(spec), null, 2)}\n`);
  return path;
}

/**
 * Checks a bootstrap file with `envoy --mode validate`; throws {@link EnvoyConfigInvalidError} with
 * Envoy's own message when Envoy rejects it. Returns Envoy's output on success.
 */
export function validateBootstrap(configPath: string): string {
  const { bin } = ensureEnvoy();
  const r = spawnSync(bin, ["--mode", "validate", "-c", configPath, "-l", "warning", "--disable-hot-restart"], {
    encoding: "utf8",
    timeout: 60_000,
  });
  const out = `${r.stdout ?? ""}${r.stderr ?? ""}`;
  if (r.status !== 0 || !out.includes("OK")) {
    throw new EnvoyConfigInvalidError(`envoy --mode validate rejected ${configPath} (exit ${r.status}):\n${out}`);
  }
  return out;
}

async function httpGet(url: string, timeoutMs = 2000): Promise<{ status: number; body: string }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  return { status: res.status, body: await res.text() };
}

interface AdminListener {
  name: string;
  local_address?: { socket_address?: { port_value?: number } };
  additional_local_addresses?: { socket_address?: { port_value?: number } }[];
}

/**
 * Renders, validates and starts Envoy; resolves once `/ready` answers 200 and every listener is
 * bound. On failure the process is killed and the error carries the end of Envoy's log.
 */
export async function startEnvoy(opts: StartOptions): Promise<RunningEnvoy> {
  const { bin } = ensureEnvoy();
  const configPath = writeBootstrap(opts.spec, opts.label);
  if (opts.validate !== false) validateBootstrap(configPath);
  const dir = join(configPath, "..");
  const logPath = join(dir, "envoy.log");
  const adminAddressPath = join(dir, "admin-address");
  const fd = openSync(logPath, "a");
  const [cmd, ...pre] = opts.wrapper?.length ? [...opts.wrapper, bin] : [bin];
  const child = spawn(
    cmd,
    [
      ...pre,
      "-c", configPath,
      "--concurrency", String(opts.concurrency),
      "-l", opts.logLevel ?? "info",
      "--disable-hot-restart",
      "--admin-address-path", adminAddressPath,
      "--drain-time-s", "0",
      "--parent-shutdown-time-s", "1",
    ],
    { stdio: ["ignore", fd, fd] },
  );
  closeSync(fd);
  live.add(child);
  let exitCode: number | null | undefined;
  const exited = new Promise<void>((resolve) => {
    child.on("exit", (code, signal) => {
      exitCode = code ?? (signal ? -1 : null);
      live.delete(child);
      resolve();
    });
  });
  const log = () => (existsSync(logPath) ? readFileSync(logPath, "utf8") : "");
  const stop = async () => {
    if (exitCode !== undefined) return;
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
    await exited;
    clearTimeout(timer);
  };
  const fail = async (why: string): Promise<never> => {
    await stop();
    const tail = log().split("\n").slice(-60).join("\n");
    throw new Error(`Envoy "${opts.label}" ${why}\n--- envoy log (${logPath}) ---\n${tail}`);
  };

  const deadline = Date.now() + (opts.readyTimeoutMs ?? 30_000);
  let adminUrl = "";
  for (;;) {
    if (exitCode !== undefined) return fail(`exited with code ${exitCode} before becoming ready`);
    if (Date.now() > deadline) return fail("did not become ready in time");
    if (!adminUrl && existsSync(adminAddressPath)) {
      const addr = readFileSync(adminAddressPath, "utf8").trim();
      if (addr) adminUrl = `http://${addr}`;
    }
    if (adminUrl) {
      try {
        const r = await httpGet(`${adminUrl}/ready`);
        if (r.status === 200) break;
      } catch {
        // admin not accepting yet
      }
    }
    await sleep(50);
  }

  const admin = async (path: string) => {
    const r = await httpGet(`${adminUrl}${path}`, 10_000);
    if (r.status < 200 || r.status > 299) throw new Error(`admin GET ${path} answered ${r.status}: ${r.body}`);
    return r.body;
  };
  const ports = new Map<string, ListenerPorts>();
  const listed = JSON.parse(await admin("/listeners?format=json")) as { listener_statuses?: AdminListener[] };
  for (const l of listed.listener_statuses ?? []) {
    const ipv4 = l.local_address?.socket_address?.port_value;
    if (!ipv4) return fail(`listener ${l.name} reports no bound port`);
    const ipv6 = l.additional_local_addresses?.[0]?.socket_address?.port_value;
    ports.set(l.name, ipv6 ? { ipv4, ipv6 } : { ipv4 });
  }
  for (const l of opts.spec.listeners) {
    if (!ports.has(l.name)) return fail(`listener ${l.name} is not bound`);
  }
  return { label: opts.label, adminUrl, ports, configPath, logPath, child, log, admin, stop };
}

/** Removes a bootstrap's temporary directory (used by callers that keep no logs). */
export function removeBootstrapDir(configPath: string): void {
  rmSync(join(configPath, ".."), { recursive: true, force: true });
}

/** A fresh temporary directory for ECDS files (one per Envoy, so watches do not interfere). */
export function makeEcdsDir(label: string): string {
  return mkdtempSync(join(tmpdir(), `traffic-guard-ecds-${label.replace(/[^a-z0-9-]/gi, "_")}-`));
}

/**
 * Writes (or replaces) the ECDS file of a Wasm filter atomically: Envoy watches the directory and
 * reloads when a file is moved into place, as it would apply a new push from istiod.
 */
export function writeEcdsFile(spec: WasmFilterSpec, version: string): void {
  if (!spec.ecdsPath) throw new Error(`filter ${spec.namespace}.${spec.name} has no ecdsPath`);
  const tmp = `${spec.ecdsPath}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(ecdsResponse(spec, version), null, 2)}\n`);
  renameSync(tmp, spec.ecdsPath);
}

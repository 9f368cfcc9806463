// The controller image in tests: built once per test process (the single executable is cached by input hash, see
// scripts/controller-image.ts), its layer extracted with tar, and its executable run as a container runtime would:
// in a private mount namespace whose root is the extracted layer, read-only, as uid/gid 65532, with a fresh
// environment, /proc, a minimal /dev and the ServiceAccount files a kubelet mounts. Nothing of the host's
// filesystem is visible to the process, so a library or file missing from the layer makes it fail.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildControllerImage, IMAGE_PATHS } from "../../scripts/controller-image.ts";
import type { OciImage } from "../../tools/lib/oci.ts";
import { liveChildren } from "./harness.ts";
import { until, type CliResult, type PodIdentity } from "./helpers.ts";

/** A built image layout. */
export interface BuiltImage {
  layout: string;
  image: OciImage;
  buildMs: number;
}

let built: Promise<BuiltImage> | undefined;

/** Builds the image layout once per test process (into a temporary directory). */
export function controllerImage(): Promise<BuiltImage> {
  built ??= (async () => {
    const layout = join(await mkdtemp(join(tmpdir(), "traffic-guard-image-")), "layout");
    const started = Date.now();
    const image = await buildControllerImage(layout, { cache: true });
    return { layout, image, buildMs: Date.now() - started };
  })();
  return built;
}

/** Extracts the image's single layer with tar into a new directory; returns it. */
export async function extractLayer(built: BuiltImage): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), "traffic-guard-rootfs-"));
  const layer = join(built.layout, "blobs", "sha256", built.image.layers[0].digest.slice("sha256:".length));
  const r = spawnSync("tar", ["-xzf", layer, "-C", root], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`tar -xzf ${layer}: ${r.stderr}`);
  // mkdtemp makes the directory 0700; a runtime's root directory is 0755, so that the non-root user can enter it.
  await chmod(root, 0o755);
  return root;
}

/** Why running the image's executable cannot work here (not root, no unshare or chroot), or undefined. */
export function containerSimulationUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return "running the image's executable in a private root needs root (unshare --mount, chroot)";
  for (const tool of ["unshare", "chroot", "env"]) {
    if (spawnSync("sh", ["-c", `command -v ${tool}`]).status !== 0) return `${tool} is not installed`;
  }
  const probe = spawnSync("unshare", ["--mount", "--propagation", "private", "sh", "-c", "mount -t tmpfs tmpfs /mnt"], { encoding: "utf8" });
  if (probe.status !== 0) return `unshare --mount failed: ${probe.error?.message ?? probe.stderr.trim()}`;
  return undefined;
}

// Runs in the new mount namespace: mount points as a runtime creates them, then the root made read-only.
const CONTAINER_SCRIPT = [
  "set -e",
  'R="$ROOTFS"',
  "sa=var/run/secrets/kubernetes.io/serviceaccount",
  'mkdir -p "$R/proc" "$R/dev" "$R/$sa"',
  'mount --bind "$R" "$R"',
  'mount -t proc proc "$R/proc"',
  'mount -t tmpfs -o mode=755 tmpfs "$R/dev"',
  'for d in null zero random urandom; do touch "$R/dev/$d"; mount --bind "/dev/$d" "$R/dev/$d"; done',
  'mount -t tmpfs tmpfs "$R/$sa"',
  'cp "$POD_TOKEN" "$R/$sa/token"; cp "$POD_CA" "$R/$sa/ca.crt"; printf %s "$POD_NAMESPACE" > "$R/$sa/namespace"',
  'chmod 644 "$R/$sa/token" "$R/$sa/ca.crt" "$R/$sa/namespace"',
  'mount -o remount,bind,ro "$R/$sa"',
  'mount -o remount,bind,ro "$R"',
  'CHROOT=$(command -v chroot)',
  'exec env -i KUBERNETES_SERVICE_HOST=127.0.0.1 KUBERNETES_SERVICE_PORT="$API_PORT" PATH=/opt/traffic-guard/dist HOSTNAME=controller \\',
  '  "$CHROOT" --userspec=65532:65532 "$R" "$ENTRYPOINT" "$@"',
].join("\n");

/** The image's entrypoint running in `root` (an extracted layer) as a pod with `pod`'s ServiceAccount. */
export class ContainerProcess {
  readonly child: ChildProcess;
  stdout = "";
  stderr = "";
  private readonly exited: Promise<CliResult>;
  private readonly secrets: string;

  private constructor(child: ChildProcess, secrets: string) {
    this.child = child;
    this.secrets = secrets;
    liveChildren.add(child);
    child.on("exit", () => liveChildren.delete(child));
    child.stdout!.on("data", (d) => (this.stdout += d));
    child.stderr!.on("data", (d) => (this.stderr += d));
    this.exited = new Promise((resolve) => {
      child.on("close", (code, signal) => resolve({ code, signal, stdout: this.stdout, stderr: this.stderr }));
    });
  }

  /** Starts the entrypoint with `args`. unshare, sh, env and chroot all exec, so the child's pid is the controller. */
  static async start(root: string, args: string[], pod: PodIdentity): Promise<ContainerProcess> {
    const secrets = await mkdtemp(join(tmpdir(), "traffic-guard-pod-"));
    await writeFile(join(secrets, "token"), pod.token);
    const child = spawn("unshare", ["--mount", "--propagation", "private", "sh", "-c", CONTAINER_SCRIPT, "sh", ...args], {
      env: {
        PATH: process.env.PATH, ROOTFS: root, ENTRYPOINT: IMAGE_PATHS.executable, API_PORT: String(pod.port),
        POD_TOKEN: join(secrets, "token"), POD_CA: pod.caFile, POD_NAMESPACE: pod.namespace,
      },
    });
    return new ContainerProcess(child, secrets);
  }

  /** Runs to completion (for one-shot commands). */
  static async run(root: string, args: string[], pod: PodIdentity, timeoutMs = 60_000): Promise<CliResult> {
    const p = await ContainerProcess.start(root, args, pod);
    return p.exit(timeoutMs);
  }

  /** Waits until `stream` matches `pattern`; fails early if the process exits. */
  async waitFor(pattern: RegExp, timeoutMs = 20_000, stream: "stdout" | "stderr" = "stdout"): Promise<void> {
    await until(`${stream} to match ${pattern}; stdout so far:\n${this.stdout}\nstderr so far:\n${this.stderr}`, timeoutMs, async () => {
      if (this.child.exitCode !== null) throw new Error(`the controller exited early (${this.child.exitCode}): ${this.stderr}`);
      return pattern.test(this[stream]);
    });
  }

  /** Waits for the process to exit by itself; kills it and fails after `timeoutMs`. */
  async exit(timeoutMs: number): Promise<CliResult> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        this.child.kill("SIGKILL");
        reject(new Error(`did not exit within ${timeoutMs} ms\nstdout:\n${this.stdout}\nstderr:\n${this.stderr}`));
      }, timeoutMs);
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
      await rm(this.secrets, { recursive: true, force: true });
    }
  }

  /** Sends `signal` and waits for the exit. */
  async stop(signal: NodeJS.Signals = "SIGTERM", timeoutMs = 15_000): Promise<CliResult> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    return this.exit(timeoutMs);
  }
}

/** Every regular file of a layer's tar (paths as stored), read with `tar -tvzf`, with its mode string and owner. */
export function layerListing(layerPath: string): string[] {
  const r = spawnSync("tar", ["--numeric-owner", "-tvzf", layerPath], { encoding: "utf8", maxBuffer: 16 * 1024 * 1024 });
  if (r.status !== 0) throw new Error(`tar -tvzf ${layerPath}: ${r.stderr}`);
  return r.stdout.trim().split("\n");
}

// The in-cluster controller, end to end without a container engine: the image built by
// scripts/controller-image.ts, its layer extracted, and its executable run exactly as extracted, in a private
// read-only root that holds nothing but the layer (tests/kube/image.ts), with the arguments of the Deployment that
// `manifests --controller` prints and the ServiceAccount token of the RBAC it prints, against a real kube-apiserver.
// Also: every object of `manifests --controller` is accepted by the API server, the pod template passes the
// "restricted" Pod Security Standard enforced by the API server's PodSecurity admission, two builds give the same
// digest, skopeo reads the layout and the pushed image, and the layer holds exactly the expected files.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { isDeepStrictEqual } from "node:util";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { parseAllDocuments } from "yaml";
import { buildControllerImage, IMAGE_PATHS, IMAGE_USER, sharedLibraries } from "../../scripts/controller-image.ts";
import { freePort, IN_CI, type TestCluster } from "./harness.ts";
import { Admin, MODULE_ARGS, runCli, startCluster, until, workDir } from "./helpers.ts";
import { containerSimulationUnavailable, ContainerProcess, controllerImage, extractLayer, layerListing, type BuiltImage } from "./image.ts";
import { startRegistry } from "../cli/registry-server.ts";

/** How long a change may take to show up while the controller is connected. */
const FOLLOW_MS = 5_000;
const NS = "tg-system";

let cluster: TestCluster | undefined;
let skip: string | undefined;
let admin: Admin;
let work: Awaited<ReturnType<typeof workDir>>;
let built: BuiltImage;
let rootfs: string;

type Obj = Record<string, any>;

function which(program: string): string | undefined {
  const r = spawnSync("sh", ["-c", `command -v ${program}`], { encoding: "utf8" });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

async function controllerManifests(imageRef: string, policy: string): Promise<Obj[]> {
  const r = await runCli(["manifests", "--controller", "--controller-image", imageRef, ...MODULE_ARGS, "--policy", policy, "--namespace", NS]);
  assert.equal(r.code, 0, r.stderr);
  return parseAllDocuments(r.stdout).map((d) => d.toJS() as Obj);
}

const API_PATHS: Record<string, (o: Obj) => string> = {
  ServiceAccount: (o) => `/api/v1/namespaces/${o.metadata.namespace}/serviceaccounts`,
  ClusterRole: () => "/apis/rbac.authorization.k8s.io/v1/clusterroles",
  ClusterRoleBinding: () => "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
  Role: (o) => `/apis/rbac.authorization.k8s.io/v1/namespaces/${o.metadata.namespace}/roles`,
  RoleBinding: (o) => `/apis/rbac.authorization.k8s.io/v1/namespaces/${o.metadata.namespace}/rolebindings`,
  ConfigMap: (o) => `/api/v1/namespaces/${o.metadata.namespace}/configmaps`,
  Deployment: (o) => `/apis/apps/v1/namespaces/${o.metadata.namespace}/deployments`,
};

async function metrics(port: number): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  assert.equal(res.status, 200);
  return res.text();
}

function sample(text: string, name: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.slice(name.length + 1));
}

describe("the controller image, run as extracted from its layer against a real API server", { timeout: 600_000 }, () => {
  before(async () => {
    ({ cluster, skip } = await startCluster());
    if (!cluster) return;
    const unavailable = containerSimulationUnavailable();
    if (unavailable) {
      if (IN_CI) throw new Error(`CI=true and the controller image cannot be run: ${unavailable}`);
      skip = unavailable;
      await cluster.stop();
      cluster = undefined;
      return;
    }
    admin = new Admin(cluster.kubeconfig);
    await admin.installWasmPluginCrd(cluster);
    work = await workDir();
    built = await controllerImage();
    rootfs = await extractLayer(built);
  });
  after(async () => {
    await cluster?.stop();
    await work?.cleanup();
    if (rootfs) await rm(rootfs, { recursive: true, force: true });
  });

  test("the layer holds exactly the executable, the filter, the libraries ldd lists and the loader, all owned by 0:0 with mtime 0", async (t) => {
    if (!cluster) return t.skip(skip);
    const layer = join(built.layout, "blobs/sha256", built.image.layers[0].digest.slice(7));
    const listing = layerListing(layer);
    const files = listing.filter((l) => l.startsWith("-")).map((l) => "/" + l.split(/\s+/).at(-1));
    const exe = join(rootfs, IMAGE_PATHS.executable);
    const expected = [IMAGE_PATHS.executable, IMAGE_PATHS.wasm, ...sharedLibraries(exe)].sort();
    assert.deepEqual(files.sort(), expected);
    assert.ok(expected.includes("/lib64/ld-linux-x86-64.so.2"), `the loader: ${expected.join(", ")}`);
    for (const line of listing) {
      assert.match(line, /^[-d]\S+ 0\/0 .* 1970-01-01 00:00 /, line);
    }
    assert.match(listing.find((l) => l.endsWith(IMAGE_PATHS.executable.slice(1)))!, /^-rwxr-xr-x /);
    t.diagnostic(`image build ${built.buildMs} ms; layer ${(built.image.layers[0].size / 2 ** 20).toFixed(1)} MiB gzip, ${files.length} files`);
  });

  test("two builds from the same inputs give the same digest (the second without the executable cache)", async (t) => {
    if (!cluster) return t.skip(skip);
    const dir = await mkdtemp(join(tmpdir(), "traffic-guard-image-again-"));
    try {
      const again = await buildControllerImage(join(dir, "layout"), { cache: false });
      assert.equal(again.manifest.digest, built.image.manifest.digest);
      assert.equal(again.layers[0].digest, built.image.layers[0].digest);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test("skopeo reads the layout and, after the project's own push, the registry's copy: linux/amd64, user 65532, the entrypoint", async (t) => {
    if (!cluster) return t.skip(skip);
    const skopeo = which("skopeo");
    const registryBin = which("docker-registry");
    if (!skopeo || !registryBin) {
      if (IN_CI) throw new Error("CI=true and skopeo or docker-registry is missing");
      return t.skip("skopeo or docker-registry is not installed");
    }
    const inspect = (args: string[]) => {
      const r = spawnSync(skopeo, args, { encoding: "utf8" });
      assert.equal(r.status, 0, r.stderr);
      return JSON.parse(r.stdout) as Obj;
    };
    const local = inspect(["inspect", `oci:${built.layout}`]);
    assert.equal(local.Digest, built.image.manifest.digest);
    assert.equal(local.Architecture, "amd64");
    assert.equal(local.Os, "linux");
    const config = inspect(["inspect", "--config", `oci:${built.layout}`]);
    assert.equal(config.config.User, IMAGE_USER);
    assert.deepEqual(config.config.Entrypoint, [IMAGE_PATHS.executable]);
    assert.equal(config.created, undefined, "no timestamp in the config");

    const registry = await startRegistry(registryBin, { kind: "none" });
    try {
      const pushed = await runCli(["push", built.layout, `${registry.host}/traffic-guard/controller:test`, "--insecure"], {}, 180_000);
      assert.equal(pushed.code, 0, pushed.stderr);
      assert.equal(pushed.stdout.trim(), `${registry.host}/traffic-guard/controller:test@${built.image.manifest.digest}`);
      const remote = inspect(["inspect", "--tls-verify=false", `docker://${registry.host}/traffic-guard/controller:test`]);
      assert.equal(remote.Digest, built.image.manifest.digest);
      assert.equal(remote.Architecture, "amd64");
      const raw = spawnSync(skopeo, ["inspect", "--raw", "--tls-verify=false", `docker://${registry.host}/traffic-guard/controller:test`], { encoding: "utf8" });
      assert.equal(`sha256:${createHash("sha256").update(raw.stdout).digest("hex")}`, built.image.manifest.digest, "the registry serves the exact manifest bytes");
    } finally {
      await registry.stop();
    }
  });

  test("manifests --controller: every object is accepted, the pod passes the restricted Pod Security Standard, and the controller it describes follows labels, the policy ConfigMap and an API server restart", async (t) => {
    if (!cluster) return t.skip(skip);
    const imageRef = `registry.example.com/traffic-guard/controller:0.1.0@${built.image.manifest.digest}`;
    const objects = await controllerManifests(imageRef, work.policy);
    assert.deepEqual(objects.map((o) => o.kind), ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ConfigMap", "Deployment"]);

    // The namespace enforces the restricted profile, so a pod that breaks it is refused by the API server.
    await admin.createNamespace(NS, { "pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest" });
    for (const obj of objects) {
      const r = await cluster.adminRequest("POST", `${API_PATHS[obj.kind](obj)}?fieldValidation=Strict`, obj);
      assert.equal(r.status, 201, `${obj.kind} ${obj.metadata.name}: ${JSON.stringify(r.body)}`);
    }
    const deployment = objects.at(-1)!;
    const template = deployment.spec.template;
    const podPath = `/api/v1/namespaces/${NS}/pods`;
    const pod = { apiVersion: "v1", kind: "Pod", metadata: { name: "controller-template", namespace: NS, labels: template.metadata.labels }, spec: template.spec };
    const accepted = await cluster.adminRequest("POST", `${podPath}?dryRun=All`, pod);
    assert.equal(accepted.status, 201, `the Deployment's pod template breaks the restricted profile: ${JSON.stringify(accepted.body)}`);
    const loose = structuredClone(pod);
    loose.spec.containers[0].securityContext.allowPrivilegeEscalation = true;
    const refused = await cluster.adminRequest("POST", `${podPath}?dryRun=All`, loose);
    assert.equal(refused.status, 403, `PodSecurity admission is not enforcing (a pod allowing privilege escalation was accepted): ${JSON.stringify(refused.body)}`);

    // The controller, as the Deployment runs it: same args (but a free port for /metrics, since the test shares the
    // host's network), with the ServiceAccount's token.
    const token = await admin.core.createNamespacedServiceAccountToken({
      name: deployment.spec.template.spec.serviceAccountName, namespace: NS, body: { spec: { audiences: [], expirationSeconds: 3600 } },
    });
    const port = await freePort();
    const args = [...template.spec.containers[0].args, "--listen", `127.0.0.1:${port}`];
    const podIdentity = { token: token.status!.token!, caFile: join(cluster.dir, "ca.crt"), namespace: NS, port: cluster.apiPort };
    const controller = await ContainerProcess.start(rootfs, args, podIdentity);
    try {
      await controller.waitFor(/^policy {7}tg-system\/traffic-guard-sync-policy \(resourceVersion \d+\): loaded$/m, 30_000);
      await controller.waitFor(/0 namespaces opt in with label traffic-guard/, 30_000);
      await until("/readyz to answer 200", 10_000, async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200);
      assert.equal((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200);

      // Label a namespace: its WasmPlugin exists within 5 s.
      await admin.createNamespace("shop");
      let started = Date.now();
      await admin.label("shop", { "traffic-guard": "enabled" });
      await until("shop's WasmPlugin", FOLLOW_MS, async () => (await admin.plugin("shop")) !== undefined);
      t.diagnostic(`label -> WasmPlugin: ${Date.now() - started} ms`);
      await controller.waitFor(/^created {6}shop\/traffic-guard \(mode enforce\)$/m, FOLLOW_MS);
      assert.deepEqual((await admin.plugin("shop"))!.spec.pluginConfig, { rules: { rate: { limit: { requests: 100, per: "1s" }, ban: "60s" } } });

      // dry-run: the mode follows.
      await admin.label("shop", { "traffic-guard": "dry-run" });
      await until("shop's mode to be dry-run", FOLLOW_MS, async () => (await admin.plugin("shop"))!.spec.pluginConfig!.mode === "dry-run");
      await controller.waitFor(/^updated {6}shop\/traffic-guard \(mode dry-run\)$/m, FOLLOW_MS);

      // Edit the policy ConfigMap: every managed WasmPlugin gets the new policy (shop keeps its dry-run mode).
      await admin.createNamespace("cart", { "traffic-guard": "enabled" });
      await until("cart's WasmPlugin", FOLLOW_MS, async () => (await admin.plugin("cart")) !== undefined);
      const cmPath = `/api/v1/namespaces/${NS}/configmaps/traffic-guard-sync-policy`;
      const patch = async (text: string) => {
        const cm = (await cluster!.adminRequest("GET", cmPath)).body as Obj;
        cm.data["policy.yaml"] = text;
        const put = await cluster!.adminRequest("PUT", cmPath, cm);
        assert.equal(put.status, 200, JSON.stringify(put.body));
      };
      started = Date.now();
      await patch("rules:\n  rate:\n    limit: { requests: 50, per: 1s }\n    ban: 30s\n");
      const newRate = { limit: { requests: 50, per: "1s" }, ban: "30s" };
      await until("both WasmPlugins to carry the edited policy", FOLLOW_MS, async () => {
        const [shop, cart] = [await admin.plugin("shop"), await admin.plugin("cart")];
        return isDeepStrictEqual(shop!.spec.pluginConfig, { rules: { rate: newRate }, mode: "dry-run" }) &&
          isDeepStrictEqual(cart!.spec.pluginConfig, { rules: { rate: newRate } });
      });
      t.diagnostic(`ConfigMap edit -> every WasmPlugin updated: ${Date.now() - started} ms`);
      await controller.waitFor(/changed, reconciling every namespace/, FOLLOW_MS);

      // A policy the filter rejects changes nothing and is reported (and counted).
      const before = await admin.versions();
      await patch("rules:\n  rate:\n    limit: { requests: -1, per: 1s }\n");
      await controller.waitFor(/policy: ConfigMap tg-system\/traffic-guard-sync-policy key policy\.yaml is rejected by the filter: rules\.rate\.limit\.requests: .*; keeping the last accepted policy/, FOLLOW_MS, "stderr");
      assert.deepEqual(await admin.versions(), before, "a rejected policy changed a WasmPlugin");
      assert.ok(sample(await metrics(port), 'traffic_guard_controller_errors_total{source="policy"}')! >= 1);

      // Remove the label: deleted.
      await admin.label("shop", { "traffic-guard": null });
      await until("shop's WasmPlugin to be deleted", FOLLOW_MS, async () => (await admin.plugin("shop")) === undefined);
      await controller.waitFor(/^deleted {6}shop\/traffic-guard \(namespace no longer opts in\)$/m, FOLLOW_MS);

      const text = await metrics(port);
      assert.ok(sample(text, 'traffic_guard_controller_reconciles_total{action="created"}')! >= 2, text);
      assert.ok(sample(text, 'traffic_guard_controller_reconciles_total{action="deleted"}')! >= 1, text);
      await until("managed namespaces gauge = 1 (cart)", FOLLOW_MS, async () => sample(await metrics(port), "traffic_guard_controller_managed_namespaces") === 1);
      assert.equal(sample(text, "traffic_guard_controller_opted_in_namespaces"), 1);
      const promtool = which("promtool");
      if (promtool) {
        const lint = spawnSync(promtool, ["check", "metrics"], { input: text, encoding: "utf8" });
        assert.equal(lint.status, 0, `promtool check metrics: ${lint.stdout}${lint.stderr}`);
      }

      // Restart the API server (etcd keeps the data): the controller recovers and follows the next change.
      await cluster.stopApiserver();
      await controller.waitFor(/watch (namespaces|WasmPlugins|policy ConfigMap): .*resuming in/, 30_000, "stderr");
      await cluster.startApiserver();
      started = Date.now();
      await admin.createNamespace("late", { "traffic-guard": "enabled" });
      await until("late's WasmPlugin after the restart", 60_000, async () => (await admin.plugin("late")) !== undefined);
      t.diagnostic(`after the restart, label -> WasmPlugin: ${Date.now() - started} ms`);
      await patch("rules:\n  rate:\n    limit: { requests: 70, per: 1s }\n");
      await until("the ConfigMap edit after the restart to reach cart and late", 60_000, async () =>
        [await admin.plugin("cart"), await admin.plugin("late")].every((p) => (p!.spec.pluginConfig as Obj).rules.rate.limit.requests === 70));

      assert.ok(sample(await metrics(port), 'traffic_guard_controller_errors_total{source="watch"}')! >= 1, "the lost watches are counted");

      const status = readFileSync(`/proc/${controller.child.pid}/status`, "utf8");
      t.diagnostic(`controller ${/^VmRSS:\s*(.*)$/m.exec(status)?.[1]} resident (the Deployment requests 128Mi, limit 256Mi)`);

      // SIGTERM: a clean exit.
      const result = await controller.stop("SIGTERM");
      assert.equal(result.code, 0, `exit ${result.code} ${result.signal}\n${result.stderr}`);
      assert.match(result.stderr, /sync: SIGTERM received, stopping\nsync: stopped\n$/);

      // One pass without --watch reads the policy ConfigMap once: everything is already as that policy asks.
      const once = await ContainerProcess.run(rootfs, ["sync", ...MODULE_ARGS, "--policy-configmap", `${NS}/traffic-guard-sync-policy`], podIdentity);
      assert.equal(once.code, 0, once.stderr);
      assert.match(once.stdout, /^unchanged {4}cart\/traffic-guard \(mode enforce\)\n^unchanged {4}late\/traffic-guard \(mode enforce\)$/m);
    } catch (err) {
      (err as Error).message += `\ncontroller stdout:\n${controller.stdout}\ncontroller stderr:\n${controller.stderr}`;
      throw err;
    } finally {
      if (controller.child.exitCode === null) await controller.stop("SIGKILL");
    }
  });
});

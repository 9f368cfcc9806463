// `traffic-guard sync` (one pass and --dry-run) against a real kube-apiserver + etcd. Every test drives the real
// CLI as a child process and checks the result through the API server. The tests share one cluster, so each one
// uses its own namespaces and asserts on its own report lines.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { parse, parseAllDocuments } from "yaml";
import { Admin, MODULE_ARGS, podSimulationUnavailable, runCli, runCliInPod, startCluster, workDir, type CliResult } from "./helpers.ts";
import { IN_CI, type TestCluster } from "./harness.ts";

let cluster: TestCluster | undefined;
/** Why the suite skips locally (binaries not built), when it does. */
let skip: string | undefined;
let admin: Admin;
let work: Awaited<ReturnType<typeof workDir>>;

/** `traffic-guard sync` as the admin, with the test policy and module. */
function sync(...extra: string[]): Promise<CliResult> {
  return runCli(["sync", "--kubeconfig", cluster!.kubeconfig, "--policy", work.policy, ...MODULE_ARGS, ...extra]);
}

/** The report lines of one namespace. */
function linesFor(result: CliResult, namespace: string): string[] {
  return result.stdout.split("\n").filter((l) => l.includes(` ${namespace}/`));
}

function explain(r: CliResult): string {
  return `exit ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`;
}

describe("traffic-guard sync against a real API server", { timeout: 180_000 }, () => {
  before(async () => {
    ({ cluster, skip } = await startCluster());
    if (!cluster) return;
    admin = new Admin(cluster.kubeconfig);
    await admin.installWasmPluginCrd(cluster);
    work = await workDir();
  });
  after(async () => {
    await cluster?.stop();
    await work?.cleanup();
  });

  test("creates a WasmPlugin in each labelled namespace, identical to what `manifests` prints, and mode dry-run where the label says dry-run", async (t) => {
    if (!cluster) return t.skip(skip);
    await admin.createNamespace("shop", { "traffic-guard": "enabled" });
    await admin.createNamespace("blog", { "traffic-guard": "dry-run" });
    await admin.createNamespace("plain");

    const r = await sync();
    assert.equal(r.code, 0, explain(r));
    assert.deepEqual(linesFor(r, "shop"), ["created      shop/traffic-guard (mode enforce)"]);
    assert.deepEqual(linesFor(r, "blog"), ["created      blog/traffic-guard (mode dry-run)"]);
    assert.deepEqual(linesFor(r, "plain"), []);
    assert.match(r.stdout, /2 namespaces opt in with label traffic-guard: 2 created, 0 updated, 0 unchanged, 0 deleted, 0 skipped, 0 failed/);

    assert.deepEqual(await admin.plugins("plain"), []);
    const shop = await admin.plugin("shop");
    const blog = await admin.plugin("blog");
    assert.ok(shop && blog, "both WasmPlugins exist");
    // The same object `traffic-guard manifests` prints for that namespace (the builder is shared, not copied).
    const printed = await runCli(["manifests", "--namespace", "shop", "--policy", work.policy, ...MODULE_ARGS, "--no-header"]);
    assert.equal(printed.code, 0, explain(printed));
    const manifest = parse(printed.stdout.replace(/^---\n/, "")) as { metadata: { labels: Record<string, string> }; spec: unknown };
    assert.deepEqual(shop.spec, manifest.spec);
    assert.deepEqual(shop.metadata!.labels, manifest.metadata.labels);
    assert.equal(shop.metadata!.labels!["app.kubernetes.io/managed-by"], "traffic-guard");
    assert.equal(shop.spec.pluginConfig!.mode, undefined, "enabled keeps the policy's own mode");
    assert.equal(blog.spec.pluginConfig!.mode, "dry-run");
    assert.deepEqual({ ...blog.spec.pluginConfig, mode: undefined }, { ...shop.spec.pluginConfig, mode: undefined });
    // Server-side apply with field manager traffic-guard.
    const managers = shop.metadata!.managedFields!.map((f) => `${f.manager}/${f.operation}`);
    assert.deepEqual(managers, ["traffic-guard/Apply"]);
  });

  test("a second pass changes nothing: every namespace unchanged, no object rewritten", async (t) => {
    if (!cluster) return t.skip(skip);
    const first = await sync();
    assert.equal(first.code, 0, explain(first));
    const before = await admin.versions();
    const r = await sync();
    assert.equal(r.code, 0, explain(r));
    const actions = r.stdout.trim().split("\n").slice(0, -1).map((l) => l.split(/\s+/)[0]);
    assert.ok(actions.length >= 2, explain(r));
    assert.deepEqual([...new Set(actions)], ["unchanged"], explain(r));
    assert.match(r.stdout, /0 created, 0 updated, \d+ unchanged, 0 deleted, 0 skipped, 0 failed/);
    assert.deepEqual(await admin.versions(), before, "resourceVersions are identical after the second pass");
  });

  test("relabelling a namespace to dry-run switches its WasmPlugin to mode dry-run, and enabled switches it back", async (t) => {
    if (!cluster) return t.skip(skip);
    await admin.label("shop", { "traffic-guard": "dry-run" });
    let r = await sync();
    assert.equal(r.code, 0, explain(r));
    assert.deepEqual(linesFor(r, "shop"), ["updated      shop/traffic-guard (mode dry-run)"]);
    assert.equal((await admin.plugin("shop"))!.spec.pluginConfig!.mode, "dry-run");

    await admin.label("shop", { "traffic-guard": "enabled" });
    r = await sync();
    assert.equal(r.code, 0, explain(r));
    assert.deepEqual(linesFor(r, "shop"), ["updated      shop/traffic-guard (mode enforce)"]);
    // Server-side apply drops the field sync no longer sets.
    assert.equal((await admin.plugin("shop"))!.spec.pluginConfig!.mode, undefined);
  });

  test("removing the label deletes the WasmPlugin sync created there", async (t) => {
    if (!cluster) return t.skip(skip);
    assert.ok(await admin.plugin("blog"));
    await admin.label("blog", { "traffic-guard": null });
    const r = await sync();
    assert.equal(r.code, 0, explain(r));
    assert.deepEqual(linesFor(r, "blog"), ["deleted      blog/traffic-guard (namespace no longer opts in)"]);
    assert.equal(await admin.plugin("blog"), undefined);
    assert.ok(await admin.plugin("shop"), "the labelled namespace keeps its WasmPlugin");
  });

  test("leaves WasmPlugins it does not manage alone: a same-named unmanaged one is skipped, a `manifests` one elsewhere is kept until its namespace opts in", async (t) => {
    if (!cluster) return t.skip(skip);
    // Hand-written, same name, no managed-by label, in a namespace that opts in.
    await admin.createNamespace("legacy");
    const handMade = {
      apiVersion: "extensions.istio.io/v1alpha1", kind: "WasmPlugin",
      metadata: { name: "traffic-guard", namespace: "legacy", labels: { team: "legacy" } },
      spec: { url: "oci://registry.example.com/legacy/filter:1.0", pluginConfig: { keep: "me" } },
    };
    const created = await cluster.adminRequest("POST", "/apis/extensions.istio.io/v1alpha1/namespaces/legacy/wasmplugins", handMade);
    assert.equal(created.status, 201, JSON.stringify(created.body));
    await admin.label("legacy", { "traffic-guard": "enabled" });
    // Printed by `traffic-guard manifests` and applied by someone else (managed-by label, another field manager)
    // in a namespace that does not opt in: sync did not create it, so sync must not delete it.
    await admin.createNamespace("mesh-root");
    const printed = await runCli(["manifests", "--namespace", "mesh-root", "--policy", work.policy, ...MODULE_ARGS, "--no-header"]);
    assert.equal(printed.code, 0, explain(printed));
    const fromManifests = parse(printed.stdout.replace(/^---\n/, ""));
    const applied = await cluster.adminRequest("POST", "/apis/extensions.istio.io/v1alpha1/namespaces/mesh-root/wasmplugins?fieldManager=kubectl-client-side-apply", fromManifests);
    assert.equal(applied.status, 201, JSON.stringify(applied.body));
    const before = await admin.versions();

    const r = await sync();
    assert.equal(r.code, 0, explain(r));
    assert.deepEqual(linesFor(r, "legacy"), [
      "skipped      legacy/traffic-guard: a WasmPlugin named traffic-guard that traffic-guard does not manage exists (no label app.kubernetes.io/managed-by=traffic-guard); left alone",
    ]);
    assert.deepEqual(linesFor(r, "mesh-root"), []);
    const after = await admin.versions();
    assert.equal(after.get("legacy/traffic-guard"), before.get("legacy/traffic-guard"), "the unmanaged object is not written");
    assert.equal(after.get("mesh-root/traffic-guard"), before.get("mesh-root/traffic-guard"), "the manifests object is not deleted");
    assert.deepEqual((await admin.plugin("legacy"))!.spec, handMade.spec);
    await admin.label("legacy", { "traffic-guard": null });

    // Once its namespace opts in, the `manifests` object is traffic-guard's: sync adopts it (one apply, which
    // makes it the field manager) and from then on removes it when the namespace opts out.
    await admin.label("mesh-root", { "traffic-guard": "enabled" });
    const adopt = await sync();
    assert.equal(adopt.code, 0, explain(adopt));
    assert.deepEqual(linesFor(adopt, "mesh-root"), ["updated      mesh-root/traffic-guard (mode enforce)"]);
    await admin.label("mesh-root", { "traffic-guard": null });
    const optOut = await sync();
    assert.deepEqual(linesFor(optOut, "mesh-root"), ["deleted      mesh-root/traffic-guard (namespace no longer opts in)"]);
    assert.deepEqual(linesFor(optOut, "legacy"), [], "the unmanaged object stays, label or not");
    assert.ok(await admin.plugin("legacy"));
  });

  test("--dry-run prints what would be created, updated and deleted, and changes nothing", async (t) => {
    if (!cluster) return t.skip(skip);
    await admin.createNamespace("newcomer", { "traffic-guard": "enabled" });
    await admin.label("shop", { "traffic-guard": "dry-run" });
    await admin.createNamespace("leaving", { "traffic-guard": "enabled" });
    const setup = await sync();
    assert.equal(setup.code, 0, explain(setup));
    await admin.label("leaving", { "traffic-guard": null });
    await admin.createNamespace("arriving", { "traffic-guard": "dry-run" });
    await admin.label("shop", { "traffic-guard": "enabled" });
    const before = await admin.versions();

    const r = await sync("--dry-run");
    assert.equal(r.code, 0, explain(r));
    assert.deepEqual(linesFor(r, "arriving"), ["would create arriving/traffic-guard (mode dry-run)"]);
    assert.deepEqual(linesFor(r, "shop"), ["would update shop/traffic-guard (mode enforce)"]);
    assert.deepEqual(linesFor(r, "leaving"), ["would delete leaving/traffic-guard (namespace no longer opts in)"]);
    assert.deepEqual(linesFor(r, "newcomer"), ["unchanged    newcomer/traffic-guard (mode enforce)"]);
    assert.match(r.stdout, /1 to create, 1 to update, \d+ unchanged, 1 to delete, 0 skipped, 0 failed \(dry run: nothing was changed\)/);
    assert.deepEqual(await admin.versions(), before, "no WasmPlugin was created, written or deleted");
    assert.equal((await admin.plugin("shop"))!.spec.pluginConfig!.mode, "dry-run");

    // The real pass then does exactly what the dry run announced.
    const real = await sync();
    assert.equal(real.code, 0, explain(real));
    assert.deepEqual(linesFor(real, "arriving"), ["created      arriving/traffic-guard (mode dry-run)"]);
    assert.deepEqual(linesFor(real, "shop"), ["updated      shop/traffic-guard (mode enforce)"]);
    assert.deepEqual(linesFor(real, "leaving"), ["deleted      leaving/traffic-guard (namespace no longer opts in)"]);
  });

  test("an unknown label value fails that namespace (exit 1) without touching it, and still reconciles the others", async (t) => {
    if (!cluster) return t.skip(skip);
    await admin.createNamespace("typo", { "traffic-guard": "enabled" });
    const setup = await sync();
    assert.equal(setup.code, 0, explain(setup));
    await admin.label("typo", { "traffic-guard": "yes" });
    await admin.createNamespace("fine", { "traffic-guard": "enabled" });
    const before = (await admin.versions()).get("typo/traffic-guard");

    const r = await sync();
    assert.equal(r.code, 1, explain(r));
    assert.deepEqual(linesFor(r, "typo"), [
      "failed       typo/traffic-guard: label traffic-guard=yes is not one of enabled, dry-run; namespace left as it is",
    ]);
    assert.deepEqual(linesFor(r, "fine"), ["created      fine/traffic-guard (mode enforce)"]);
    assert.match(r.stderr, /error: 1 namespace could not be reconciled/);
    assert.equal((await admin.versions()).get("typo/traffic-guard"), before, "a typo does not remove protection");

    await admin.label("typo", { "traffic-guard": "enabled" });
    const fixed = await sync();
    assert.equal(fixed.code, 0, explain(fixed));
  });

  test("the ServiceAccount, ClusterRole and ClusterRoleBinding of `manifests --rbac` are enough to run sync, with a kubeconfig or in a pod, and nothing less is", async (t) => {
    if (!cluster) return t.skip(skip);
    const printed = await runCli(["manifests", "--rbac"]);
    assert.equal(printed.code, 0, printed.stderr);
    const objects = parseAllDocuments(printed.stdout).map((d) => d.toJS() as { kind: string; metadata: { name: string; namespace?: string } });
    assert.deepEqual(objects.map((o) => o.kind), ["ServiceAccount", "ClusterRole", "ClusterRoleBinding"]);
    const sa = objects[0].metadata;
    await admin.createNamespace(sa.namespace!);
    const post = async (path: string, body: unknown) => {
      const res = await cluster!.adminRequest("POST", path, body);
      assert.equal(res.status, 201, `${path}: ${JSON.stringify(res.body)}`);
    };
    await post(`/api/v1/namespaces/${sa.namespace}/serviceaccounts`, objects[0]);
    await post("/apis/rbac.authorization.k8s.io/v1/clusterroles", objects[1]);

    // A real, API-server-signed ServiceAccount token (TokenRequest), as a pod would get.
    const tokenRequest = await admin.core.createNamespacedServiceAccountToken({
      name: sa.name, namespace: sa.namespace!, body: { spec: { audiences: [], expirationSeconds: 3600 } },
    });
    const kubeconfig = `${work.dir}/sa.kubeconfig`;
    await cluster.writeKubeconfig(kubeconfig, { name: "traffic-guard-sync", token: tokenRequest.status!.token });
    const asServiceAccount = (...extra: string[]) =>
      runCli(["sync", "--kubeconfig", kubeconfig, "--policy", work.policy, ...MODULE_ARGS, ...extra]);

    // Without the binding the ServiceAccount may do nothing: the test can tell "enough" from "not enough".
    const denied = await asServiceAccount();
    assert.equal(denied.code, 1, explain(denied));
    assert.match(denied.stderr, /error: not allowed to list namespaces: namespaces is forbidden: User "system:serviceaccount:istio-system:traffic-guard-sync" cannot list resource "namespaces"/);
    assert.match(denied.stderr, /traffic-guard manifests --rbac/);

    await post("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", objects[2]);
    await admin.createNamespace("rbac-in", { "traffic-guard": "enabled" });
    await admin.label("fine", { "traffic-guard": null });
    // RBAC changes reach the authorizer through its informer; give it a moment.
    let r: CliResult | undefined;
    for (let i = 0; i < 50; i++) {
      r = await asServiceAccount("--dry-run");
      if (r.code === 0) break;
      await new Promise((res) => setTimeout(res, 200));
    }
    assert.equal(r!.code, 0, explain(r!));
    r = await asServiceAccount();
    assert.equal(r.code, 0, explain(r));
    assert.deepEqual(linesFor(r, "rbac-in"), ["created      rbac-in/traffic-guard (mode enforce)"]);
    assert.deepEqual(linesFor(r, "fine"), ["deleted      fine/traffic-guard (namespace no longer opts in)"]);
    // The edits sync makes to its own objects need patch with force, and a hand-edited one is reclaimed.
    const edited = await cluster.adminRequest("GET", "/apis/extensions.istio.io/v1alpha1/namespaces/rbac-in/wasmplugins/traffic-guard");
    const obj = edited.body as { spec: Record<string, unknown> };
    obj.spec.priority = 5;
    const put = await cluster.adminRequest("PUT", "/apis/extensions.istio.io/v1alpha1/namespaces/rbac-in/wasmplugins/traffic-guard?fieldManager=kubectl-edit", obj);
    assert.equal(put.status, 200, JSON.stringify(put.body));
    r = await asServiceAccount();
    assert.equal(r.code, 0, explain(r));
    assert.deepEqual(linesFor(r, "rbac-in"), ["updated      rbac-in/traffic-guard (mode enforce)"]);
    assert.equal((await admin.plugin("rbac-in"))!.spec.priority, 1000);

    // The same ServiceAccount from inside a pod: no kubeconfig, the in-cluster configuration.
    const unavailable = podSimulationUnavailable();
    if (unavailable) {
      if (IN_CI) assert.fail(`CI=true: ${unavailable}`);
      return t.diagnostic(`in-pod run not checked: ${unavailable}`);
    }
    await admin.label("rbac-in", { "traffic-guard": "dry-run" });
    const inPod = await runCliInPod(["sync", "--policy", work.policy, ...MODULE_ARGS], {
      token: tokenRequest.status!.token, caFile: `${cluster.dir}/ca.crt`, namespace: sa.namespace!, port: cluster.apiPort,
    });
    assert.equal(inPod.code, 0, explain(inPod));
    assert.match(inPod.stderr, new RegExp(`^sync: https://127\\.0\\.0\\.1:${cluster.apiPort} \\(in-cluster configuration\\)$`, "m"));
    assert.deepEqual(linesFor(inPod, "rbac-in"), ["updated      rbac-in/traffic-guard (mode dry-run)"]);
    await admin.label("rbac-in", { "traffic-guard": null });
  });
});

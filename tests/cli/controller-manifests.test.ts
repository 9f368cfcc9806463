// `traffic-guard manifests --controller` and the controller options of `sync`, without a cluster: what is printed,
// what is refused. tests/kube/controller.test.ts applies the same output to a real API server and runs it.
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { before, describe, test } from "node:test";
import { parseAllDocuments } from "yaml";
import { parseListen } from "../../tools/lib/controller-http.ts";
import { ensureBuilt, runCli, tempDir } from "./helpers.ts";

const DIGEST = `sha256:${"c".repeat(64)}`;
const CONTROLLER = `registry.example.com/platform/traffic-guard-controller:0.1.0@${DIGEST}`;
const FILTER = ["--image", "registry.example.com/platform/traffic-guard:0.1.0", "--sha256", "d".repeat(64)];

type Obj = Record<string, any>;

before(() => ensureBuilt());

describe("traffic-guard manifests --controller", () => {
  test("prints the RBAC, the policy ConfigMap (the file's text as written) and a restricted-profile Deployment running sync --watch", async (t) => {
    const dir = await tempDir(t);
    const policy = join(dir, "policy.yaml");
    const text = "# shop-wide limits\nrules:\n  rate:\n    limit: { requests: 100, per: 1s }\n    ban: 60s\n";
    await writeFile(policy, text);
    const r = await runCli(["manifests", "--controller", "--controller-image", CONTROLLER, ...FILTER, "--policy", policy, "--namespace", "platform"]);
    assert.equal(r.code, 0, r.stderr);
    const objects = parseAllDocuments(r.stdout).map((d) => d.toJS() as Obj);
    assert.deepEqual(objects.map((o) => `${o.kind}/${o.metadata.name}`), [
      "ServiceAccount/traffic-guard-sync", "ClusterRole/traffic-guard-sync", "ClusterRoleBinding/traffic-guard-sync",
      "Role/traffic-guard-sync", "RoleBinding/traffic-guard-sync", "ConfigMap/traffic-guard-sync-policy", "Deployment/traffic-guard-sync",
    ]);
    for (const o of objects) if (!o.kind.startsWith("Cluster")) assert.equal(o.metadata.namespace, "platform", o.kind);
    const [, , , role, , configMap, deployment] = objects;
    assert.deepEqual(role.rules, [{ apiGroups: [""], resources: ["configmaps"], resourceNames: ["traffic-guard-sync-policy"], verbs: ["get", "list", "watch"] }]);
    assert.deepEqual(configMap.data, { "policy.yaml": text });

    assert.equal(deployment.spec.replicas, 1);
    assert.equal(deployment.spec.strategy.type, "Recreate");
    const pod = deployment.spec.template.spec;
    assert.equal(pod.serviceAccountName, "traffic-guard-sync");
    assert.deepEqual(pod.securityContext, { runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, seccompProfile: { type: "RuntimeDefault" } });
    const [container] = pod.containers;
    assert.equal(container.image, CONTROLLER);
    assert.deepEqual(container.args, [
      "sync", "--watch", ...FILTER, "--policy-configmap", "platform/traffic-guard-sync-policy", "--listen", ":9090",
    ]);
    assert.deepEqual(container.securityContext, {
      allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, runAsNonRoot: true,
      capabilities: { drop: ["ALL"] }, seccompProfile: { type: "RuntimeDefault" },
    });
    assert.equal(container.readinessProbe.httpGet.path, "/readyz");
    assert.equal(container.livenessProbe.httpGet.path, "/healthz");
    assert.ok(container.resources.requests.memory && container.resources.limits.memory);
    assert.doesNotMatch(r.stdout, /&a\d|\*a\d/, "no YAML anchors");
  });

  test("without --policy the ConfigMap holds an empty policy: the filter's defaults", async () => {
    const r = await runCli(["manifests", "--controller", "--controller-image", CONTROLLER, "--url", "https://wasm.example.com/tg.wasm", "--no-header"]);
    assert.equal(r.code, 0, r.stderr);
    const objects = parseAllDocuments(r.stdout).map((d) => d.toJS() as Obj);
    assert.deepEqual(objects[5].data, { "policy.yaml": "" });
    assert.equal(objects[0].metadata.namespace, "istio-system");
  });

  test("a controller image without a digest is refused: the Deployment must run exactly the built image", async () => {
    const r = await runCli(["manifests", "--controller", "--controller-image", "registry.example.com/tg-controller:0.1.0", ...FILTER]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /--controller-image "registry.example.com\/tg-controller:0.1.0" must be pinned by digest/);
    assert.equal(r.stdout, "");
  });

  test("a policy the filter rejects is refused before anything is printed", async (t) => {
    const dir = await tempDir(t);
    const policy = join(dir, "bad.yaml");
    await writeFile(policy, "rules:\n  rate:\n    limit: { requests: -1, per: 1s }\n");
    const r = await runCli(["manifests", "--controller", "--controller-image", CONTROLLER, ...FILTER, "--policy", policy]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /rules\.rate\.limit\.requests/);
    assert.equal(r.stdout, "");
  });

  for (const [what, args] of [
    ["--controller without --controller-image", ["manifests", "--controller", ...FILTER]],
    ["--controller without --image or --url", ["manifests", "--controller", "--controller-image", CONTROLLER]],
    ["--controller with --rbac", ["manifests", "--controller", "--rbac", "--controller-image", CONTROLLER, ...FILTER]],
    ["sync with both --policy and --policy-configmap", ["sync", "--url", "https://x.example/t.wasm", "--policy", "p.yaml", "--policy-configmap", "a/b"]],
    ["sync --listen without --watch", ["sync", "--url", "https://x.example/t.wasm", "--listen", ":9090"]],
    ["sync --policy-configmap without a namespace", ["sync", "--url", "https://x.example/t.wasm", "--policy-configmap", "policy"]],
    ["sync --listen with a bad port", ["sync", "--watch", "--url", "https://x.example/t.wasm", "--listen", ":99999"]],
  ] as Array<[string, string[]]>) {
    test(`${what} is a usage error with exit 2`, async () => {
      const r = await runCli(args);
      assert.equal(r.code, 2, `${r.stdout}${r.stderr}`);
      assert.equal(r.stdout, "");
    });
  }
});

describe("--listen addresses", () => {
  test("port, :port, host:port and [ipv6]:port; anything else is refused", () => {
    assert.deepEqual(parseListen("9090"), { host: "0.0.0.0", port: 9090 });
    assert.deepEqual(parseListen(":9090"), { host: "0.0.0.0", port: 9090 });
    assert.deepEqual(parseListen("127.0.0.1:8080"), { host: "127.0.0.1", port: 8080 });
    assert.deepEqual(parseListen("[::1]:8080"), { host: "::1", port: 8080 });
    for (const bad of ["", ":0", ":65536", "host:", "a:b:9090", "9090x"]) assert.throws(() => parseListen(bad), /not a listen address/, bad);
  });
});

// The golden manifests are accepted by a real Kubernetes API server that has Istio's WasmPlugin and
// TrafficExtension CRDs (from ../shared/reference, read at test time, not copied): the server applies the CRD's
// structural schema and its CEL rules, and strict field validation refuses unknown fields. The control plane is
// the one tests/kube runs (etcd + kube-apiserver built by scripts/kube-bins.sh).
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { parseAllDocuments } from "yaml";
import { wasmPluginProblems } from "../../tools/lib/manifests.ts";
import type { TestCluster } from "../kube/harness.ts";
import { clusterFor, until } from "../kube/helpers.ts";
import { ROOT } from "./helpers.ts";

const CRD_FILE = join(ROOT, "..", "shared", "reference", "istio-extensions-crds.yaml");
const PLURAL: Record<string, string> = { WasmPlugin: "wasmplugins", TrafficExtension: "trafficextensions" };

describe("golden manifests on a real Kubernetes API server with Istio's CRDs", () => {
  let cluster: TestCluster | undefined;
  let skipReason = "";

  before(async () => {
    if (!existsSync(CRD_FILE)) {
      skipReason = `${CRD_FILE} not found`;
      if (process.env.CI === "true") throw new Error(`CI=true and ${skipReason}`);
      return;
    }
    cluster = await clusterFor({ skip: (msg: string) => (skipReason = msg) });
    if (!cluster) return;
    for (const doc of parseAllDocuments(readFileSync(CRD_FILE, "utf8"))) {
      const crd = doc.toJS() as Record<string, any> | null;
      if (crd?.kind !== "CustomResourceDefinition") continue;
      const created = await cluster.adminRequest("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd);
      assert.equal(created.status, 201, JSON.stringify(created.body));
      await until(`${crd.metadata.name} to be served`, 30_000, async () => {
        const list = await cluster!.adminRequest("GET", `/apis/extensions.istio.io/v1alpha1/${crd.spec.names.plural}`);
        return list.status === 200;
      });
    }
  });
  after(() => cluster?.stop());

  const objectsPath = (obj: Record<string, any>) =>
    `/apis/extensions.istio.io/v1alpha1/namespaces/${obj.metadata.namespace}/${PLURAL[obj.kind]}`;

  async function ensureNamespace(name: string): Promise<void> {
    const r = await cluster!.adminRequest("POST", "/api/v1/namespaces", { apiVersion: "v1", kind: "Namespace", metadata: { name } });
    assert.ok(r.status === 201 || r.status === 409, JSON.stringify(r.body));
  }

  test("every object in manifests/*.yaml is created as written (strict field validation, CEL rules), nothing pruned", async (t) => {
    if (!cluster) return t.skip(skipReason);
    const files = readdirSync(join(ROOT, "manifests")).filter((f) => f.endsWith(".yaml"));
    assert.ok(files.length >= 4);
    let created = 0;
    for (const file of files) {
      for (const doc of parseAllDocuments(readFileSync(join(ROOT, "manifests", file), "utf8"))) {
        const obj = doc.toJS() as Record<string, any>;
        await ensureNamespace(obj.metadata.namespace);
        const r = await cluster.adminRequest("POST", `${objectsPath(obj)}?fieldValidation=Strict`, obj);
        assert.equal(r.status, 201, `${file} ${obj.kind} ${obj.metadata.namespace}/${obj.metadata.name}: ${JSON.stringify(r.body)}`);
        const stored = r.body as Record<string, any>;
        assert.deepEqual(stored.spec, obj.spec, `${file}: the API server changed the spec`);
        assert.deepEqual(stored.metadata.labels, obj.metadata.labels);
        created++;
      }
    }
    assert.ok(created >= 5, `created ${created} objects`);
  });

  test("objects the API server refuses (CRD schema or CEL rule) are refused by the CLI's own checks too", async (t) => {
    if (!cluster) return t.skip(skipReason);
    const base = {
      apiVersion: "extensions.istio.io/v1alpha1",
      kind: "WasmPlugin",
      metadata: { name: "bad", namespace: "default" },
      spec: { url: "oci://registry.example.com/tg:1", pluginName: "traffic-guard" },
    };
    const bad: Array<[string, Record<string, unknown>]> = [
      ["a wildcard selector value", { selector: { matchLabels: { app: "web*" } } }],
      ["an uppercase sha256", { sha256: "A".repeat(64) }],
      ["an unknown phase", { phase: "EARLY" }],
      ["selector and targetRefs together", { selector: { matchLabels: { app: "web" } }, targetRefs: [{ kind: "Service", name: "web" }] }],
      ["an unsupported url scheme", { url: "ftp://registry.example.com/tg.wasm" }],
    ];
    for (const [what, spec] of bad) {
      const obj = { ...base, spec: { ...base.spec, ...spec } };
      const r = await cluster.adminRequest("POST", `${objectsPath(obj)}?fieldValidation=Strict&dryRun=All`, obj);
      assert.equal(r.status, 422, `${what}: the API server accepted it: ${JSON.stringify(r.body)}`);
      assert.notDeepEqual(wasmPluginProblems(obj), [], `${what}: the API server refuses it but the CLI's checks pass it`);
    }
  });
});

// The WasmPlugin CustomResourceDefinition the test API server gets, derived at test time from Istio's published
// API instead of being copied into this repository.
//
// @kubernetes-models/istio (the dependency tools/lib/manifests.ts validates WasmPlugins with) does not ship the
// CRD's schema as data: it ships validators compiled from it. What it does ship is the exact Istio release its
// models were generated from (package.json "crd-generate".input, e.g. istio/istio/1.29.2/.../crd-all.gen.yaml).
// Istio publishes the same generated CRDs in its Go API module, istio.io/api, at
// kubernetes/customresourcedefinitions.gen.yaml. So the CRD installed here is the one of that same release,
// fetched through the Go module proxy (`go mod download`, cached in the Go module cache), which keeps the test
// API server and the client-side validator on one schema version.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import { REPO } from "./harness.ts";

/** The CRD's name. */
export const WASMPLUGIN_CRD = "wasmplugins.extensions.istio.io";

/** The Istio release @kubernetes-models/istio was generated from, read from its package.json. */
export async function istioModelsRelease(): Promise<string> {
  const pkg = JSON.parse(await readFile(join(REPO, "node_modules/@kubernetes-models/istio/package.json"), "utf8")) as {
    "crd-generate"?: { input?: string[] };
  };
  const inputs = pkg["crd-generate"]?.input ?? [];
  const versions = inputs.map((u) => /\/istio\/istio\/(\d+\.\d+\.\d+)\//.exec(u)?.[1]).filter((v): v is string => !!v);
  if (versions.length === 0) throw new Error("@kubernetes-models/istio/package.json names no istio/istio release in crd-generate.input");
  // The CRD bundle (crd-all.gen.yaml) comes from the newest release listed; older entries are legacy operator CRDs.
  return versions.sort((a, b) => a.localeCompare(b, undefined, { numeric: true })).at(-1)!;
}

function goBinary(): string {
  for (const candidate of [process.env.GO, "go", "/usr/local/go/bin/go"]) {
    if (!candidate) continue;
    if (spawnSync(candidate, ["version"]).status === 0) return candidate;
  }
  throw new Error("no Go toolchain found (needed to fetch istio.io/api from the Go module proxy); set GO=/path/to/go");
}

/** Downloads istio.io/api@v<release> with the Go toolchain and returns the WasmPlugin CRD object from it. */
export async function wasmPluginCrd(): Promise<Record<string, unknown>> {
  const release = await istioModelsRelease();
  const work = await mkdtemp(join(tmpdir(), "traffic-guard-istio-api-"));
  try {
    const r = spawnSync(goBinary(), ["mod", "download", "-json", `istio.io/api@v${release}`], {
      cwd: work,
      encoding: "utf8",
      env: { ...process.env, GOFLAGS: "-mod=mod" },
    });
    let info: { Dir?: string; Error?: string } = {};
    try {
      info = JSON.parse(r.stdout) as typeof info;
    } catch {
      // handled below
    }
    if (r.status !== 0 || !info.Dir) throw new Error(`go mod download istio.io/api@v${release} failed: ${info.Error ?? r.stderr}`);
    const file = join(info.Dir, "kubernetes/customresourcedefinitions.gen.yaml");
    if (!existsSync(file)) throw new Error(`istio.io/api@v${release} has no kubernetes/customresourcedefinitions.gen.yaml`);
    for (const doc of parseAllDocuments(await readFile(file, "utf8"))) {
      const crd = doc.toJS() as { kind?: string; metadata?: { name?: string } } | null;
      if (crd?.kind === "CustomResourceDefinition" && crd.metadata?.name === WASMPLUGIN_CRD) {
        return crd as Record<string, unknown>;
      }
    }
    throw new Error(`${WASMPLUGIN_CRD} not found in istio.io/api@v${release}`);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

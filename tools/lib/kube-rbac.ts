// The least privilege `traffic-guard sync` needs, as Kubernetes RBAC objects (`traffic-guard manifests --rbac`).
// tests/kube applies exactly these objects and runs sync with the ServiceAccount's token to prove they suffice.
import { VERSION } from "./manifests.ts";

/** Where the ServiceAccount lives and what the objects are called. */
export interface RbacOptions {
  /** Namespace of the ServiceAccount (where `sync --watch` runs). */
  namespace: string;
  /** Name of the ServiceAccount, ClusterRole and ClusterRoleBinding. */
  name: string;
}

/** Defaults for RbacOptions. */
export const RBAC_DEFAULTS: RbacOptions = { namespace: "istio-system", name: "traffic-guard-sync" };

/** The rules sync needs: read namespaces; read, create, apply and delete WasmPlugins. Nothing else. */
export const SYNC_RULES = [
  { apiGroups: [""], resources: ["namespaces"], verbs: ["get", "list", "watch"] },
  { apiGroups: ["extensions.istio.io"], resources: ["wasmplugins"], verbs: ["get", "list", "watch", "create", "patch", "delete"] },
];

/** ServiceAccount, ClusterRole and ClusterRoleBinding, in the order they should be applied. */
export function syncRbacObjects(options: Partial<RbacOptions> = {}): Array<Record<string, unknown>> {
  const { namespace, name } = { ...RBAC_DEFAULTS, ...options };
  const labels = { "app.kubernetes.io/name": "traffic-guard", "app.kubernetes.io/component": "sync", "app.kubernetes.io/version": VERSION };
  return [
    { apiVersion: "v1", kind: "ServiceAccount", metadata: { name, namespace, labels } },
    { apiVersion: "rbac.authorization.k8s.io/v1", kind: "ClusterRole", metadata: { name, labels }, rules: SYNC_RULES },
    {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "ClusterRoleBinding",
      metadata: { name, labels },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name },
      subjects: [{ kind: "ServiceAccount", name, namespace }],
    },
  ];
}

// The objects that run `traffic-guard sync --watch` in the cluster as a controller (`manifests --controller`):
// the ServiceAccount and ClusterRole(Binding) of `manifests --rbac`, a Role(Binding) to read the policy ConfigMap,
// the policy ConfigMap itself, and the Deployment of the controller image (scripts/controller-image.ts).
//
// One replica, strategy Recreate, no leader election: a second replica would do the same server-side applies with
// the same field manager (harmless, but every change done twice and deletes racing on their preconditions), and a
// reconciler that is down for the few seconds of a rollout only delays a label taking effect; the resync on start
// catches up. The pod satisfies the Kubernetes "restricted" Pod Security Standard: non-root (the image's numeric
// user 65532), no privilege escalation, every capability dropped, the runtime's default seccomp profile, and a
// read-only root filesystem (the controller writes nothing).
import { parseReference } from "./reference.ts";
import { UserError } from "./errors.ts";
import { RBAC_DEFAULTS, syncRbacObjects } from "./kube-rbac.ts";
import { VERSION } from "./manifests.ts";

/** The port the controller serves /healthz, /readyz and /metrics on. */
export const CONTROLLER_PORT = 9090;
/** The ConfigMap data key of the policy (the default of `sync --policy-key`). */
export const POLICY_KEY = "policy.yaml";

/** What `manifests --controller` needs. */
export interface ControllerInput {
  /** The controller image, pinned: registry/repo[:tag]@sha256:…. */
  controllerImage: string;
  /** `sync` arguments naming the filter module: --image/--url and --sha256 as given. */
  moduleArgs: string[];
  /** The policy text (YAML or JSON) for the ConfigMap; empty: the filter's defaults. */
  policyText: string;
  /** Namespace of everything namespaced; default istio-system. */
  namespace?: string;
  /** Name of the ServiceAccount, roles, ConfigMap prefix and Deployment; default traffic-guard-sync. */
  name?: string;
  /** Namespace label key the controller follows (`sync --label`); default: sync's default. */
  label?: string;
}

/** Labels of every controller object; the pod selector uses the first two. */
function labels(): Record<string, string> {
  return { "app.kubernetes.io/name": "traffic-guard", "app.kubernetes.io/component": "sync", "app.kubernetes.io/version": VERSION };
}

/** The policy ConfigMap's name for a controller called `name`. */
export function policyConfigMapName(name: string): string {
  return `${name}-policy`;
}

/** Every object, in apply order: ServiceAccount, ClusterRole, ClusterRoleBinding, Role, RoleBinding, ConfigMap, Deployment. */
export function controllerObjects(input: ControllerInput): Array<Record<string, unknown>> {
  const namespace = input.namespace ?? RBAC_DEFAULTS.namespace;
  const name = input.name ?? RBAC_DEFAULTS.name;
  const ref = parseReference(input.controllerImage);
  if (!ref.digest) {
    throw new UserError(`--controller-image "${input.controllerImage}" must be pinned by digest (…@sha256:<64 hex>), as \`traffic-guard push\` prints it`);
  }
  const configMap = policyConfigMapName(name);
  const l = labels();
  const selector = { "app.kubernetes.io/name": l["app.kubernetes.io/name"], "app.kubernetes.io/component": l["app.kubernetes.io/component"] };
  const args = [
    "sync", "--watch",
    ...input.moduleArgs,
    "--policy-configmap", `${namespace}/${configMap}`,
    ...(input.label ? ["--label", input.label] : []),
    "--listen", `:${CONTROLLER_PORT}`,
  ];
  const probe = (path: string) => ({ httpGet: { path, port: "http" } });
  return [
    ...syncRbacObjects({ namespace, name }),
    {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "Role",
      metadata: { name, namespace, labels: labels() },
      // Only the policy ConfigMap (list and watch are authorized by name through the metadata.name field selector).
      rules: [{ apiGroups: [""], resources: ["configmaps"], resourceNames: [configMap], verbs: ["get", "list", "watch"] }],
    },
    {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "RoleBinding",
      metadata: { name, namespace, labels: labels() },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name },
      subjects: [{ kind: "ServiceAccount", name, namespace }],
    },
    {
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: { name: configMap, namespace, labels: labels() },
      data: { [POLICY_KEY]: input.policyText },
    },
    {
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: { name, namespace, labels: labels() },
      spec: {
        replicas: 1,
        strategy: { type: "Recreate" },
        selector: { matchLabels: selector },
        template: {
          metadata: {
            labels: labels(),
            // The controller only talks to the API server; it needs no sidecar.
            annotations: { "sidecar.istio.io/inject": "false" },
          },
          spec: {
            serviceAccountName: name,
            securityContext: {
              runAsNonRoot: true,
              runAsUser: 65532,
              runAsGroup: 65532,
              seccompProfile: { type: "RuntimeDefault" },
            },
            containers: [{
              name: "sync",
              image: input.controllerImage,
              args,
              ports: [{ name: "http", containerPort: CONTROLLER_PORT, protocol: "TCP" }],
              readinessProbe: { ...probe("/readyz"), periodSeconds: 5, failureThreshold: 3 },
              livenessProbe: { ...probe("/healthz"), initialDelaySeconds: 10, periodSeconds: 10, failureThreshold: 3 },
              resources: { requests: { cpu: "20m", memory: "128Mi" }, limits: { memory: "256Mi" } },
              securityContext: {
                allowPrivilegeEscalation: false,
                readOnlyRootFilesystem: true,
                runAsNonRoot: true,
                capabilities: { drop: ["ALL"] },
                seccompProfile: { type: "RuntimeDefault" },
              },
            }],
          },
        },
      },
    },
  ];
}

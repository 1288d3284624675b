// The one entry point: every child object a HotStandbyCluster wants, in the
// order to apply them (identity and RBAC, stores, Services, StatefulSets,
// budgets), each a pure function of the cluster and the operator's context.
// Children not in the list (an external store's, a disabled budget) are the
// ones the operator prunes among those it owns.
import type { KubernetesObject } from '@kubernetes/client-node';
import { MAX_CLUSTER_NAME_LENGTH, type HotStandbyCluster } from '../../api/v1alpha1.ts';
import type { BuildContext } from './context.ts';
import { dragonflyService, dragonflyStatefulSet } from './dragonfly.ts';
import { etcdClientService, etcdPeerService, etcdStatefulSet } from './etcd.ts';
import { mastersStatefulSet } from './masters.ts';
import { etcdPdb, mastersPdb } from './pdb.ts';
import { agentRoleBinding, agentServiceAccount } from './rbac.ts';
import { leaderService, membersService, standbyService } from './services.ts';

export type { BuildContext } from './context.ts';
export { TEMPLATE_HASH_ANNOTATION } from './labels.ts';
export { storageStatus } from './storage.ts';
export { mastersPodTemplate, etcdEndpoints, redisUrl } from './masters.ts';
export * from './names.ts';

/** The kinds the operator owns: for its informers, its pruning and the chart's RBAC. */
export const childKinds = [
  { apiVersion: 'v1', kind: 'ServiceAccount', plural: 'serviceaccounts' },
  { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'RoleBinding', plural: 'rolebindings' },
  { apiVersion: 'v1', kind: 'Service', plural: 'services' },
  { apiVersion: 'apps/v1', kind: 'StatefulSet', plural: 'statefulsets' },
  { apiVersion: 'policy/v1', kind: 'PodDisruptionBudget', plural: 'poddisruptionbudgets' },
] as const;

/** Names the builders rely on; the CRD refuses others, this guards objects that bypassed it. */
function checkName(hsc: HotStandbyCluster): void {
  const name = hsc.metadata.name;
  if (!/^[a-z]([-a-z0-9]*[a-z0-9])?$/.test(name) || name.length > MAX_CLUSTER_NAME_LENGTH) {
    throw new Error(
      `HotStandbyCluster ${JSON.stringify(name)}: metadata.name must be at most ${MAX_CLUSTER_NAME_LENGTH} characters of lowercase letters, digits and '-', starting with a letter; choose a shorter name`,
    );
  }
}

export function desiredChildren(hsc: HotStandbyCluster, ctx: BuildContext): KubernetesObject[] {
  checkName(hsc);
  const all: Array<KubernetesObject | undefined> = [
    agentServiceAccount(hsc),
    agentRoleBinding(hsc, ctx),
    etcdPeerService(hsc),
    etcdClientService(hsc),
    etcdStatefulSet(hsc),
    dragonflyService(hsc),
    dragonflyStatefulSet(hsc),
    leaderService(hsc),
    standbyService(hsc),
    membersService(hsc),
    mastersStatefulSet(hsc, ctx),
    mastersPdb(hsc),
    etcdPdb(hsc),
  ];
  return all.filter((o): o is KubernetesObject => o !== undefined);
}

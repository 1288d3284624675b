// The agents' identity: a ServiceAccount per cluster, bound to the chart's
// agent ClusterRole by a RoleBinding in the cluster's namespace only (the
// agents label their own pods and read their cluster; nothing cluster-wide).
import type { V1RoleBinding, V1ServiceAccount } from '@kubernetes/client-node';
import type { HotStandbyCluster } from '../../api/v1alpha1.ts';
import type { BuildContext } from './context.ts';
import { childMeta } from './meta.ts';
import { agentName, namespaceOf } from './names.ts';

export function agentServiceAccount(hsc: HotStandbyCluster): V1ServiceAccount {
  return { apiVersion: 'v1', kind: 'ServiceAccount', metadata: childMeta(hsc, agentName(hsc.metadata.name), 'agent') };
}

export function agentRoleBinding(hsc: HotStandbyCluster, ctx: BuildContext): V1RoleBinding {
  const name = agentName(hsc.metadata.name);
  return {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'RoleBinding',
    metadata: childMeta(hsc, name, 'agent'),
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: ctx.agentClusterRole },
    subjects: [{ kind: 'ServiceAccount', name, namespace: namespaceOf(hsc) }],
  };
}

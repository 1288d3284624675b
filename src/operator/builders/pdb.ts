// PodDisruptionBudgets: the masters' from spec, and managed etcd's own.
import type { V1PodDisruptionBudget } from '@kubernetes/client-node';
import type { HotStandbyCluster } from '../../api/v1alpha1.ts';
import { podSelector } from './labels.ts';
import { childMeta } from './meta.ts';
import { etcdName, mastersName } from './names.ts';
import { defaultedSpec } from './spec.ts';

/**
 * `<name>`, when spec.podDisruptionBudget.enabled and there are at least two
 * masters (a budget cannot protect a single pod without blocking every drain).
 * Unhealthy masters may always be evicted: they serve nothing, and keeping them
 * would only block node drains.
 */
export function mastersPdb(hsc: HotStandbyCluster): V1PodDisruptionBudget | undefined {
  const spec = defaultedSpec(hsc);
  if (!spec.podDisruptionBudget.enabled || spec.replicas < 2) return undefined;
  const name = hsc.metadata.name;
  return {
    apiVersion: 'policy/v1',
    kind: 'PodDisruptionBudget',
    metadata: childMeta(hsc, mastersName(name), 'master'),
    spec: {
      maxUnavailable: spec.podDisruptionBudget.maxUnavailable,
      selector: { matchLabels: podSelector(name, 'master') },
      unhealthyPodEvictionPolicy: 'AlwaysAllow',
    },
  };
}

/** `<name>-etcd`, for managed etcd of 3 or 5 members: one member down at a time keeps quorum with room for one failure. */
export function etcdPdb(hsc: HotStandbyCluster): V1PodDisruptionBudget | undefined {
  const managed = defaultedSpec(hsc).etcd.managed;
  if (!managed || (managed.replicas ?? 3) < 3) return undefined;
  const name = hsc.metadata.name;
  return {
    apiVersion: 'policy/v1',
    kind: 'PodDisruptionBudget',
    metadata: childMeta(hsc, etcdName(name), 'etcd'),
    spec: { maxUnavailable: 1, selector: { matchLabels: podSelector(name, 'etcd') } },
  };
}

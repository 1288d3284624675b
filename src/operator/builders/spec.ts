// The spec as the builders read it: with the CRD's defaults applied, exactly
// as the API server stores it. Applying them here too makes a builder's output
// the same whether it is given a stored object or a hand-written one (tests).
import { applyDefaults } from '../../api/schema.ts';
import { hotStandbyClusterSpec, type HotStandbyCluster, type HotStandbyClusterSpec } from '../../api/v1alpha1.ts';

type Req<T, K extends keyof T> = T & { [P in K]-?: NonNullable<T[P]> };
type S = HotStandbyClusterSpec;

/** The fields the CRD defaults, typed as present. */
export type DefaultedSpec = Req<S, 'replicas' | 'election' | 'oplog' | 'snapshot' | 'etcd' | 'dragonfly' | 'service' | 'pod' | 'podDisruptionBudget' | 'deletionPolicy'> & {
  master: Req<S['master'], 'ports'>;
  agent: Req<NonNullable<S['agent']>, 'logLevel' | 'localApiPort'>;
  election: Req<NonNullable<S['election']>, 'leaseTTLSeconds' | 'maxLagOnFailover'>;
  oplog: Req<NonNullable<S['oplog']>, 'maxLength'>;
  snapshot: Req<NonNullable<S['snapshot']>, 'interval' | 'everyEntries' | 'keep'>;
  service: Req<NonNullable<S['service']>, 'type'>;
  podDisruptionBudget: Req<NonNullable<S['podDisruptionBudget']>, 'enabled' | 'maxUnavailable'>;
};

export function defaultedSpec(hsc: HotStandbyCluster): DefaultedSpec {
  return applyDefaults(hotStandbyClusterSpec.json, hsc.spec) as DefaultedSpec;
}

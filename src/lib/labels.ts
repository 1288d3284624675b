// Label keys and values shared by the operator (which selects on them) and the
// agent (which sets the role label on its own pod). One place, so the leader
// Service's selector and the agent's patch can never spell them differently.

/** Every object of a cluster carries this, with the HotStandbyCluster's name. */
export const CLUSTER_LABEL = 'hotstandby.dev/cluster';
/** Set on master pods by their agents: `leader` or `standby`. */
export const ROLE_LABEL = 'hotstandby.dev/role';
export const ROLE_LEADER = 'leader';
export const ROLE_STANDBY = 'standby';

export const APP_NAME = 'hotstandby';
export const MANAGED_BY = 'hotstandby-operator';
/** The operator's field manager for server-side apply. */
export const FIELD_MANAGER = 'hotstandby-operator';

/** Annotation on a HotStandbyCluster that asks for a planned switchover: a pod name or `any`. */
export const SWITCHOVER_ANNOTATION = 'hotstandby.dev/switchover-to';

/** Selector of every master pod of a cluster, as a label-selector string. */
export function masterPodSelector(cluster: string): string {
  return `${CLUSTER_LABEL}=${cluster},app.kubernetes.io/component=master`;
}

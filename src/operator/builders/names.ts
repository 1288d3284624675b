// Names of a HotStandbyCluster's children and the in-cluster addresses made
// from them: one place, so a builder and the URL another builder points at
// can never disagree.
import type { HotStandbyCluster } from '../../api/v1alpha1.ts';

/** The masters' StatefulSet and the leader Service. */
export const mastersName = (cluster: string): string => cluster;
export const standbyServiceName = (cluster: string): string => `${cluster}-standby`;
/** Headless Service giving each master pod a stable DNS name (the StatefulSet's serviceName). */
export const membersServiceName = (cluster: string): string => `${cluster}-members`;
/** ServiceAccount and RoleBinding of the agents. */
export const agentName = (cluster: string): string => `${cluster}-agent`;
/** Managed etcd's StatefulSet, client Service and PodDisruptionBudget. */
export const etcdName = (cluster: string): string => `${cluster}-etcd`;
/** Managed etcd's headless peer Service (the StatefulSet's serviceName). */
export const etcdPeerServiceName = (cluster: string): string => `${cluster}-etcd-peer`;
/** Managed Dragonfly's StatefulSet and Service. */
export const dragonflyName = (cluster: string): string => `${cluster}-dragonfly`;

export const ETCD_CLIENT_PORT = 2379;
export const ETCD_PEER_PORT = 2380;
/** etcd serves /livez, /readyz and /metrics here, apart from client traffic. */
export const ETCD_METRICS_PORT = 2381;
export const DRAGONFLY_PORT = 6379;
/** The agent's health endpoint (GET /healthz, GET /readyz), on every pod address. */
export const AGENT_HEALTH_PORT = 7071;

/** The namespace of a cluster; children live there. Throws when the object has none (a listed object always has one). */
export function namespaceOf(hsc: HotStandbyCluster): string {
  const ns = hsc.metadata.namespace;
  if (!ns) throw new Error(`HotStandbyCluster ${hsc.metadata.name}: metadata.namespace is missing; builders need the object as read from the API server`);
  return ns;
}

/** DNS name of one managed etcd member: `<name>-etcd-<i>.<name>-etcd-peer.<ns>.svc`. */
export function etcdMemberHost(cluster: string, namespace: string, ordinal: number): string {
  return `${etcdName(cluster)}-${ordinal}.${etcdPeerServiceName(cluster)}.${namespace}.svc`;
}

/** Client URL of managed etcd, through its client Service. */
export function managedEtcdUrl(cluster: string, namespace: string): string {
  return `http://${etcdName(cluster)}.${namespace}.svc:${ETCD_CLIENT_PORT}`;
}

/** URL of managed Dragonfly, through its Service. */
export function managedDragonflyUrl(cluster: string, namespace: string): string {
  return `redis://${dragonflyName(cluster)}.${namespace}.svc:${DRAGONFLY_PORT}`;
}

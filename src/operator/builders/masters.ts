// The masters: StatefulSet `<name>`, each pod the user's master container plus
// the agent as a native sidecar (an init container with restartPolicy Always:
// it starts first, its startup probe gates the master's start, and it stops
// after the master). OnDelete updates: the operator replaces pods in its own
// order (standbys, then a switchover, then the old leader).
import type { V1Affinity, V1Container, V1EnvVar, V1PodTemplateSpec, V1StatefulSet, V1Toleration, V1Volume, V1VolumeMount } from '@kubernetes/client-node';
import { AGENT_DEFAULT_RESOURCES } from '../../api/defaults.ts';
import type { HotStandbyCluster } from '../../api/v1alpha1.ts';
import type { BuildContext } from './context.ts';
import { childLabels, podSelector, TEMPLATE_HASH_ANNOTATION } from './labels.ts';
import { childMeta } from './meta.ts';
import { AGENT_HEALTH_PORT, agentName, managedDragonflyUrl, managedEtcdUrl, mastersName, membersServiceName, namespaceOf } from './names.ts';
import { downwardEnv, spreadOverNodes, templateHash } from './pod.ts';
import { durationSeconds } from './quantity.ts';
import { defaultedSpec, type DefaultedSpec } from './spec.ts';

/** Where the external etcd's TLS Secret (ca.crt, tls.crt, tls.key) is mounted in the agent. */
export const ETCD_TLS_DIR = '/etc/hotstandby/etcd-tls';
const ETCD_TLS_VOLUME = 'etcd-tls';
/** Annotation on the StatefulSet (not the pods) naming the operator version that wrote it. */
export const OPERATOR_VERSION_ANNOTATION = 'hotstandby.dev/operator-version';

/** The etcd the agents use: the managed client Service, or the external endpoints. */
export function etcdEndpoints(hsc: HotStandbyCluster, spec: DefaultedSpec = defaultedSpec(hsc)): string {
  const external = spec.etcd.external;
  return external ? external.endpoints.join(',') : managedEtcdUrl(hsc.metadata.name, namespaceOf(hsc));
}

/** The stream server the agents use: the managed Service, or the external URL. */
export function redisUrl(hsc: HotStandbyCluster, spec: DefaultedSpec = defaultedSpec(hsc)): string {
  const external = spec.dragonfly.external;
  return external ? external.url : managedDragonflyUrl(hsc.metadata.name, namespaceOf(hsc));
}

function agentEnv(hsc: HotStandbyCluster, spec: DefaultedSpec): V1EnvVar[] {
  const firstPort = spec.master.ports[0]!.containerPort;
  const env: V1EnvVar[] = [
    ...downwardEnv(),
    { name: 'HOTSTANDBY_CLUSTER', value: `$(POD_NAMESPACE)/${hsc.metadata.name}` },
    { name: 'HOTSTANDBY_MEMBER', value: '$(POD_NAME)' },
    { name: 'HOTSTANDBY_ADDRESS', value: `$(POD_IP):${firstPort}` },
    { name: 'HOTSTANDBY_ETCD', value: etcdEndpoints(hsc, spec) },
    { name: 'HOTSTANDBY_REDIS', value: redisUrl(hsc, spec) },
    { name: 'HOTSTANDBY_API_LISTEN', value: `127.0.0.1:${spec.agent.localApiPort}` },
    { name: 'HOTSTANDBY_HEALTH_LISTEN', value: `0.0.0.0:${AGENT_HEALTH_PORT}` },
    { name: 'HOTSTANDBY_POD_LABELS', value: 'on' },
    { name: 'HOTSTANDBY_LEASE_TTL', value: String(spec.election.leaseTTLSeconds) },
    { name: 'HOTSTANDBY_MAX_LAG_ON_FAILOVER', value: String(spec.election.maxLagOnFailover) },
    { name: 'HOTSTANDBY_OPLOG_MAX_LENGTH', value: String(spec.oplog.maxLength) },
    { name: 'HOTSTANDBY_SNAPSHOT_EVERY_ENTRIES', value: String(spec.snapshot.everyEntries) },
    { name: 'HOTSTANDBY_SNAPSHOT_INTERVAL_SECONDS', value: String(durationSeconds(spec.snapshot.interval, 'spec.snapshot.interval')) },
    { name: 'HOTSTANDBY_SNAPSHOT_KEEP', value: String(spec.snapshot.keep) },
    { name: 'HOTSTANDBY_MASTER_LIVENESS_TIMEOUT_MS', value: String(spec.agent.masterLivenessTimeoutMs) },
    { name: 'HOTSTANDBY_LOG_LEVEL', value: spec.agent.logLevel },
  ];
  if (spec.oplog.replication === 'sync') {
    // Only in sync mode: an async cluster's pod template stays as it was, so upgrading the operator rolls nothing.
    env.push(
      { name: 'HOTSTANDBY_REPLICATION', value: 'sync' },
      { name: 'HOTSTANDBY_MIN_SYNC_STANDBYS', value: String(spec.oplog.minSyncStandbys) },
      { name: 'HOTSTANDBY_SYNC_TIMEOUT_MS', value: String(spec.oplog.syncTimeoutMs) },
      { name: 'HOTSTANDBY_ON_SYNC_TIMEOUT', value: spec.oplog.onSyncTimeout },
    );
  }
  if (spec.etcd.external?.tlsSecret) {
    env.push(
      { name: 'HOTSTANDBY_ETCD_CA_FILE', value: `${ETCD_TLS_DIR}/ca.crt` },
      { name: 'HOTSTANDBY_ETCD_CERT_FILE', value: `${ETCD_TLS_DIR}/tls.crt` },
      { name: 'HOTSTANDBY_ETCD_KEY_FILE', value: `${ETCD_TLS_DIR}/tls.key` },
    );
  }
  const password = spec.dragonfly.external?.passwordSecret;
  if (password) {
    env.push({ name: 'HOTSTANDBY_REDIS_PASSWORD', valueFrom: { secretKeyRef: { name: password.name, key: password.key ?? 'password' } } });
  }
  return env;
}

function agentContainer(hsc: HotStandbyCluster, spec: DefaultedSpec, ctx: BuildContext): V1Container {
  const mounts: V1VolumeMount[] = spec.etcd.external?.tlsSecret ? [{ name: ETCD_TLS_VOLUME, mountPath: ETCD_TLS_DIR, readOnly: true }] : [];
  return {
    name: 'agent',
    image: spec.agent.image ?? ctx.agentImage,
    // The image's entrypoint is the `hotstandby` command.
    args: ['agent'],
    restartPolicy: 'Always',
    env: agentEnv(hsc, spec),
    ports: [{ name: 'agent-health', containerPort: AGENT_HEALTH_PORT, protocol: 'TCP' }],
    // The master starts once the agent's startup probe passes.
    startupProbe: { httpGet: { path: '/healthz', port: AGENT_HEALTH_PORT }, periodSeconds: 1, timeoutSeconds: 2, failureThreshold: 60 },
    livenessProbe: { httpGet: { path: '/healthz', port: AGENT_HEALTH_PORT }, periodSeconds: 5, timeoutSeconds: 2, failureThreshold: 3 },
    readinessProbe: { httpGet: { path: '/readyz', port: AGENT_HEALTH_PORT }, periodSeconds: 2, timeoutSeconds: 2, failureThreshold: 2 },
    resources: (spec.agent.resources as V1Container['resources']) ?? structuredClone(AGENT_DEFAULT_RESOURCES),
    securityContext: {
      runAsNonRoot: true,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'] },
      seccompProfile: { type: 'RuntimeDefault' },
    },
    ...(mounts.length > 0 ? { volumeMounts: mounts } : {}),
  };
}

function masterContainer(spec: DefaultedSpec): V1Container {
  const m = spec.master;
  const ours: V1EnvVar[] = [...downwardEnv(), { name: 'HOTSTANDBY_LOCAL_API', value: `http://127.0.0.1:${spec.agent.localApiPort}` }];
  // The user's env wins over ours for the same name (a duplicate name would make the apply fail).
  const userEnv = (m.env ?? []) as unknown as V1EnvVar[];
  const userNames = new Set(userEnv.map((e) => e.name));
  return {
    name: 'master',
    image: m.image,
    ...(m.command ? { command: m.command } : {}),
    ...(m.args ? { args: m.args } : {}),
    env: [...ours.filter((e) => !userNames.has(e.name)), ...userEnv],
    ports: m.ports.map((p) => ({ ...(p.name ? { name: p.name } : {}), containerPort: p.containerPort, protocol: p.protocol ?? 'TCP' })),
    ...(m.resources ? { resources: m.resources as V1Container['resources'] } : {}),
    ...(m.readinessProbe ? { readinessProbe: m.readinessProbe } : {}),
    ...(m.livenessProbe ? { livenessProbe: m.livenessProbe } : {}),
  };
}

/** The masters' pod template, with its hash annotation. */
export function mastersPodTemplate(hsc: HotStandbyCluster, ctx: BuildContext, spec: DefaultedSpec = defaultedSpec(hsc)): V1PodTemplateSpec {
  const name = hsc.metadata.name;
  const volumes: V1Volume[] = spec.etcd.external?.tlsSecret ? [{ name: ETCD_TLS_VOLUME, secret: { secretName: spec.etcd.external.tlsSecret.name } }] : [];
  const template: V1PodTemplateSpec = {
    metadata: { labels: childLabels(name, 'master') },
    spec: {
      serviceAccountName: agentName(name),
      enableServiceLinks: false,
      initContainers: [agentContainer(hsc, spec, ctx)],
      containers: [masterContainer(spec)],
      ...(volumes.length > 0 ? { volumes } : {}),
      affinity: (spec.pod.affinity as V1Affinity | undefined) ?? spreadOverNodes(podSelector(name, 'master')),
      ...(spec.pod.tolerations ? { tolerations: spec.pod.tolerations as V1Toleration[] } : {}),
      ...(spec.pod.nodeSelector ? { nodeSelector: spec.pod.nodeSelector } : {}),
      ...(spec.pod.priorityClassName ? { priorityClassName: spec.pod.priorityClassName } : {}),
    },
  };
  template.metadata!.annotations = { [TEMPLATE_HASH_ANNOTATION]: templateHash(template) };
  return template;
}

export function mastersStatefulSet(hsc: HotStandbyCluster, ctx: BuildContext): V1StatefulSet {
  const spec = defaultedSpec(hsc);
  const name = hsc.metadata.name;
  return {
    apiVersion: 'apps/v1',
    kind: 'StatefulSet',
    metadata: childMeta(hsc, mastersName(name), 'master', ctx.operatorVersion ? { [OPERATOR_VERSION_ANNOTATION]: ctx.operatorVersion } : undefined),
    spec: {
      serviceName: membersServiceName(name),
      replicas: spec.replicas,
      // Masters start independently (a standby catching up must not hold back the next pod).
      podManagementPolicy: 'Parallel',
      updateStrategy: { type: 'OnDelete' },
      selector: { matchLabels: podSelector(name, 'master') },
      template: mastersPodTemplate(hsc, ctx, spec),
    },
  };
}

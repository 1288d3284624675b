// Managed etcd: a StatefulSet of 1, 3 or 5 members bootstrapped as one static
// cluster from the members' stable DNS names, a headless peer Service that gives
// them those names (published before they are ready, so they can find each
// other to form a quorum), a client Service, and its own PodDisruptionBudget
// (pdb.ts). Nothing here when spec.etcd is external.
import type { V1Container, V1Service, V1StatefulSet } from '@kubernetes/client-node';
import { ETCD_DEFAULT_IMAGE, ETCD_DEFAULT_RESOURCES } from '../../api/defaults.ts';
import type { HotStandbyCluster } from '../../api/v1alpha1.ts';
import { childLabels, podSelector } from './labels.ts';
import { childMeta } from './meta.ts';
import { ETCD_CLIENT_PORT, ETCD_METRICS_PORT, ETCD_PEER_PORT, etcdMemberHost, etcdName, etcdPeerServiceName, namespaceOf } from './names.ts';
import { spreadOverNodes } from './pod.ts';
import { defaultedSpec } from './spec.ts';
import { DATA_VOLUME, dataVolume } from './storage.ts';

const DATA_MOUNT = '/var/lib/etcd';

/** `--initial-cluster`: every member's name and peer URL, from the stable DNS names. */
export function etcdInitialCluster(cluster: string, namespace: string, replicas: number): string {
  return Array.from({ length: replicas }, (_, i) => `${etcdName(cluster)}-${i}=http://${etcdMemberHost(cluster, namespace, i)}:${ETCD_PEER_PORT}`).join(',');
}

function etcdContainer(hsc: HotStandbyCluster, replicas: number, image: string, resources: V1Container['resources']): V1Container {
  const name = hsc.metadata.name;
  const ns = namespaceOf(hsc);
  // $(POD_NAME) is expanded by the kubelet: the image is distroless, there is no shell.
  const self = `$(POD_NAME).${etcdPeerServiceName(name)}.${ns}.svc`;
  return {
    name: 'etcd',
    image,
    command: ['/usr/local/bin/etcd'],
    args: [
      '--name=$(POD_NAME)',
      `--data-dir=${DATA_MOUNT}/data`,
      `--listen-client-urls=http://0.0.0.0:${ETCD_CLIENT_PORT}`,
      `--advertise-client-urls=http://${self}:${ETCD_CLIENT_PORT}`,
      `--listen-peer-urls=http://0.0.0.0:${ETCD_PEER_PORT}`,
      `--initial-advertise-peer-urls=http://${self}:${ETCD_PEER_PORT}`,
      `--listen-metrics-urls=http://0.0.0.0:${ETCD_METRICS_PORT}`,
      `--initial-cluster=${etcdInitialCluster(name, ns, replicas)}`,
      '--initial-cluster-state=new',
      `--initial-cluster-token=hotstandby-${ns}-${name}`,
      // Keeps the keyspace small (leases, member keys, delete events churn);
      // an hour of history is far more than a watch needs to resume.
      '--auto-compaction-mode=periodic',
      '--auto-compaction-retention=1h',
    ],
    env: [{ name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } }],
    ports: [
      { name: 'client', containerPort: ETCD_CLIENT_PORT, protocol: 'TCP' },
      { name: 'peer', containerPort: ETCD_PEER_PORT, protocol: 'TCP' },
      { name: 'metrics', containerPort: ETCD_METRICS_PORT, protocol: 'TCP' },
    ],
    // /readyz: serving with a leader; /livez: the process is not stuck.
    readinessProbe: { httpGet: { path: '/readyz', port: ETCD_METRICS_PORT }, periodSeconds: 5, timeoutSeconds: 3, failureThreshold: 3 },
    livenessProbe: { httpGet: { path: '/livez', port: ETCD_METRICS_PORT }, periodSeconds: 10, timeoutSeconds: 5, failureThreshold: 3 },
    // Replaying a large WAL after a restart may take a while; liveness waits for it.
    startupProbe: { httpGet: { path: '/livez', port: ETCD_METRICS_PORT }, periodSeconds: 5, timeoutSeconds: 5, failureThreshold: 60 },
    resources,
    volumeMounts: [{ name: DATA_VOLUME, mountPath: DATA_MOUNT }],
  };
}

export function etcdStatefulSet(hsc: HotStandbyCluster): V1StatefulSet | undefined {
  const spec = defaultedSpec(hsc);
  const managed = spec.etcd.managed;
  if (!managed) return undefined;
  const name = hsc.metadata.name;
  const replicas = managed.replicas ?? 3;
  const data = dataVolume(name, 'etcd', managed.storage);
  const selector = podSelector(name, 'etcd');
  return {
    apiVersion: 'apps/v1',
    kind: 'StatefulSet',
    metadata: childMeta(hsc, etcdName(name), 'etcd'),
    spec: {
      serviceName: etcdPeerServiceName(name),
      replicas,
      // All members start together: with OrderedReady, member 0 would wait for a
      // quorum that members 1 and 2 are not started to give it.
      podManagementPolicy: 'Parallel',
      updateStrategy: { type: 'RollingUpdate' },
      selector: { matchLabels: selector },
      template: {
        metadata: { labels: childLabels(name, 'etcd') },
        spec: {
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          affinity: spreadOverNodes(selector),
          containers: [etcdContainer(hsc, replicas, managed.image ?? ETCD_DEFAULT_IMAGE, (managed.resources as V1Container['resources']) ?? structuredClone(ETCD_DEFAULT_RESOURCES))],
          volumes: data.volumes,
        },
      },
      ...(data.claimTemplates.length > 0 ? { volumeClaimTemplates: data.claimTemplates } : {}),
      persistentVolumeClaimRetentionPolicy: { whenDeleted: spec.deletionPolicy, whenScaled: 'Retain' },
    },
  };
}

/** `<name>-etcd-peer`: headless; member DNS names, published before the members are ready. */
export function etcdPeerService(hsc: HotStandbyCluster): V1Service | undefined {
  if (!defaultedSpec(hsc).etcd.managed) return undefined;
  const name = hsc.metadata.name;
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: childMeta(hsc, etcdPeerServiceName(name), 'etcd'),
    spec: {
      clusterIP: 'None',
      publishNotReadyAddresses: true,
      selector: podSelector(name, 'etcd'),
      ports: [
        { name: 'client', port: ETCD_CLIENT_PORT, targetPort: ETCD_CLIENT_PORT, protocol: 'TCP' },
        { name: 'peer', port: ETCD_PEER_PORT, targetPort: ETCD_PEER_PORT, protocol: 'TCP' },
      ],
    },
  };
}

/** `<name>-etcd`: what the agents connect to (ready members only). */
export function etcdClientService(hsc: HotStandbyCluster): V1Service | undefined {
  if (!defaultedSpec(hsc).etcd.managed) return undefined;
  const name = hsc.metadata.name;
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: childMeta(hsc, etcdName(name), 'etcd'),
    spec: { type: 'ClusterIP', selector: podSelector(name, 'etcd'), ports: [{ name: 'client', port: ETCD_CLIENT_PORT, targetPort: ETCD_CLIENT_PORT, protocol: 'TCP' }] },
  };
}

// Managed Dragonfly: one pod (StatefulSet, so its claim follows it) and its
// Service. Started so that one cluster's keys, which all share the hash tag
// {<ns>/<name>}, are locked as one (--lock_on_hashtags), with snapshots to
// /data on a schedule and at shutdown so a restart keeps the stream, and with
// eviction off (cache mode) so no entry is ever dropped to make room.
// Nothing here when spec.dragonfly is external.
import type { V1Container, V1ResourceRequirements, V1Service, V1StatefulSet } from '@kubernetes/client-node';
import { DRAGONFLY_DEFAULT_IMAGE, DRAGONFLY_DEFAULT_MEMORY, DRAGONFLY_DEFAULT_RESOURCES, DRAGONFLY_MIN_MEMORY_PER_THREAD_BYTES } from '../../api/defaults.ts';
import type { HotStandbyCluster } from '../../api/v1alpha1.ts';
import { dragonflyServingArgs } from '../../lib/dragonfly.ts';
import { childLabels, podSelector } from './labels.ts';
import { childMeta } from './meta.ts';
import { DRAGONFLY_PORT, dragonflyName } from './names.ts';
import { parseQuantity } from './quantity.ts';
import { defaultedSpec } from './spec.ts';
import { DATA_VOLUME, dataVolume } from './storage.ts';

const DATA_MOUNT = '/data';
/** Snapshot file base name in /data (fixed, so each snapshot replaces the last and a restart loads it). */
export const DRAGONFLY_DB_FILENAME = 'hotstandby';
/** Threads when the resources name no CPU: the cluster's keys live on one shard anyway (one hash tag). */
const DEFAULT_THREADS = 2;
/** Share of the container's memory given to --maxmemory; the rest covers connections and snapshot buffers. */
const MAXMEMORY_SHARE = 0.8;

type Managed = NonNullable<NonNullable<HotStandbyCluster['spec']['dragonfly']>['managed']>;

export interface DragonflySizing {
  /** Container memory request and limit, as written. */
  memory: string;
  maxmemoryBytes: number;
  threads: number;
  resources: V1ResourceRequirements;
}

/**
 * Memory, --maxmemory and threads. Dragonfly exits unless --maxmemory gives
 * every thread 256 MiB, and by default starts one thread per node CPU, so the
 * thread count is always set: the CPU in the resources (limit, else request),
 * rounded up, else 2; fewer when memory is too small for that many.
 */
export function dragonflySizing(managed: Managed): DragonflySizing {
  const base = structuredClone((managed.resources as V1ResourceRequirements | undefined) ?? DRAGONFLY_DEFAULT_RESOURCES) as V1ResourceRequirements;
  const memory = String(managed.memory ?? base.limits?.memory ?? DRAGONFLY_DEFAULT_MEMORY);
  const memoryBytes = parseQuantity(memory, 'spec.dragonfly.managed.memory');
  const maxmemoryBytes = Math.floor((memoryBytes * MAXMEMORY_SHARE) / 2 ** 20) * 2 ** 20;
  const cpu = base.limits?.cpu ?? base.requests?.cpu;
  const wanted = cpu === undefined ? DEFAULT_THREADS : Math.max(1, Math.ceil(parseQuantity(cpu, 'spec.dragonfly.managed.resources.cpu')));
  const threads = Math.max(1, Math.min(wanted, Math.floor(maxmemoryBytes / DRAGONFLY_MIN_MEMORY_PER_THREAD_BYTES)));
  const resources: V1ResourceRequirements = {
    ...base,
    requests: { ...base.requests, memory: base.requests?.memory ?? memory },
    limits: { ...base.limits, memory },
  };
  return { memory, maxmemoryBytes, threads, resources };
}

/**
 * The server's flags (the image's entrypoint runs `dragonfly --logtostderr` with them): the
 * serving flags the local Dragonfly of tests and benchmarks also runs with.
 */
export function dragonflyArgs(sizing: DragonflySizing): string[] {
  return dragonflyServingArgs({
    port: DRAGONFLY_PORT,
    dir: DATA_MOUNT,
    dbfilename: DRAGONFLY_DB_FILENAME,
    maxmemoryBytes: sizing.maxmemoryBytes,
    threads: sizing.threads,
  });
}

export function dragonflyStatefulSet(hsc: HotStandbyCluster): V1StatefulSet | undefined {
  const spec = defaultedSpec(hsc);
  const managed = spec.dragonfly.managed;
  if (!managed) return undefined;
  const name = hsc.metadata.name;
  const sizing = dragonflySizing(managed);
  const data = dataVolume(name, 'dragonfly', managed.storage);
  const container: V1Container = {
    name: 'dragonfly',
    image: managed.image ?? DRAGONFLY_DEFAULT_IMAGE,
    args: dragonflyArgs(sizing),
    ports: [{ name: 'redis', containerPort: DRAGONFLY_PORT, protocol: 'TCP' }],
    readinessProbe: { tcpSocket: { port: DRAGONFLY_PORT }, periodSeconds: 5, timeoutSeconds: 3, failureThreshold: 3 },
    livenessProbe: { tcpSocket: { port: DRAGONFLY_PORT }, periodSeconds: 10, timeoutSeconds: 5, failureThreshold: 3 },
    // Loading a large snapshot at start may take minutes.
    startupProbe: { tcpSocket: { port: DRAGONFLY_PORT }, periodSeconds: 5, timeoutSeconds: 3, failureThreshold: 60 },
    resources: sizing.resources,
    volumeMounts: [{ name: DATA_VOLUME, mountPath: DATA_MOUNT }],
  };
  return {
    apiVersion: 'apps/v1',
    kind: 'StatefulSet',
    metadata: childMeta(hsc, dragonflyName(name), 'dragonfly'),
    spec: {
      serviceName: dragonflyName(name),
      replicas: 1,
      updateStrategy: { type: 'RollingUpdate' },
      selector: { matchLabels: podSelector(name, 'dragonfly') },
      template: {
        metadata: { labels: childLabels(name, 'dragonfly') },
        spec: {
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          // Time for the snapshot Dragonfly writes when it is stopped.
          terminationGracePeriodSeconds: 120,
          containers: [container],
          volumes: data.volumes,
        },
      },
      ...(data.claimTemplates.length > 0 ? { volumeClaimTemplates: data.claimTemplates } : {}),
      persistentVolumeClaimRetentionPolicy: { whenDeleted: spec.deletionPolicy, whenScaled: 'Retain' },
    },
  };
}

/** `<name>-dragonfly`: where the agents append and read the log. */
export function dragonflyService(hsc: HotStandbyCluster): V1Service | undefined {
  if (!defaultedSpec(hsc).dragonfly.managed) return undefined;
  const name = hsc.metadata.name;
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: childMeta(hsc, dragonflyName(name), 'dragonfly'),
    spec: { type: 'ClusterIP', selector: podSelector(name, 'dragonfly'), ports: [{ name: 'redis', port: DRAGONFLY_PORT, targetPort: DRAGONFLY_PORT, protocol: 'TCP' }] },
  };
}

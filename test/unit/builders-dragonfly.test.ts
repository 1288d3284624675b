// Managed Dragonfly: the flags (hash-tag locking, snapshots to /data on a
// schedule, cache mode off, memory and threads), the data volume, the
// Service, and nothing when external.
import { describe, expect, it } from 'vitest';
import type { V1Service, V1StatefulSet } from '@kubernetes/client-node';
import { desiredChildren } from '../../src/operator/builders/index.ts';
import { CTX, cluster, example, find, labelsFor } from './builders-fixtures.ts';

const MiB = 2 ** 20;
const master = { image: 'example/master:1' };
const dfSts = (spec: Record<string, unknown>): V1StatefulSet => find<V1StatefulSet>(desiredChildren(cluster('c1', spec), CTX), 'StatefulSet', 'c1-dragonfly');
const container = (sts: V1StatefulSet) => sts.spec!.template.spec!.containers[0]!;

const flags = (maxmemory: number, threads: number): string[] => [
  '--port=6379',
  '--lock_on_hashtags',
  '--dir=/data',
  '--dbfilename=hotstandby',
  '--snapshot_cron=* * * * *',
  '--cache_mode=false',
  `--maxmemory=${maxmemory}`,
  `--proactor_threads=${threads}`,
  '--version_check=false',
];

describe('Dragonfly StatefulSet', () => {
  it('the minimal example: pinned image, 1 GiB by default (80% for --maxmemory), one thread for the default 100m CPU, data in an emptyDir', () => {
    const sts = find<V1StatefulSet>(desiredChildren(example('minimal.yaml'), CTX), 'StatefulSet', 'mooncake-master-dragonfly');
    expect(sts.spec!.replicas).toBe(1);
    expect(sts.spec!.serviceName).toBe('mooncake-master-dragonfly');
    const c = container(sts);
    expect(c.image).toBe('docker.dragonflydb.io/dragonflydb/dragonfly:v1.40.1');
    expect(c.command).toBeUndefined(); // the image's entrypoint runs `dragonfly --logtostderr` with these flags
    expect(c.args).toEqual(flags(819 * MiB, 1));
    expect(c.resources).toEqual({ requests: { cpu: '100m', memory: '1Gi' }, limits: { memory: '1Gi' } });
    expect(c.ports).toEqual([{ name: 'redis', containerPort: 6379, protocol: 'TCP' }]);
    expect(c.readinessProbe!.tcpSocket).toEqual({ port: 6379 });
    expect(c.livenessProbe!.tcpSocket).toEqual({ port: 6379 });
    expect(c.startupProbe!.tcpSocket).toEqual({ port: 6379 });
    expect(c.volumeMounts).toEqual([{ name: 'data', mountPath: '/data' }]);
    expect(sts.spec!.template.spec!.volumes).toEqual([{ name: 'data', emptyDir: {} }]);
    expect(sts.spec!.volumeClaimTemplates).toBeUndefined();
    expect(sts.spec!.template.spec!.terminationGracePeriodSeconds).toBe(120);
  });

  it('the full example: memory 8Gi, two threads for 2 CPUs, data on a 20Gi claim', () => {
    const sts = find<V1StatefulSet>(desiredChildren(example('full.yaml'), CTX), 'StatefulSet', 'mooncake-master-full-dragonfly');
    const c = container(sts);
    expect(c.args).toEqual(flags(6553 * MiB, 2));
    expect(c.resources).toEqual({ requests: { cpu: '2', memory: '8Gi' }, limits: { memory: '8Gi' } });
    expect(sts.spec!.template.spec!.volumes).toEqual([]);
    expect(sts.spec!.volumeClaimTemplates).toEqual([
      {
        apiVersion: 'v1',
        kind: 'PersistentVolumeClaim',
        metadata: { name: 'data', labels: labelsFor('mooncake-master-full', 'dragonfly') },
        spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '20Gi' } } },
      },
    ]);
    expect(sts.spec!.persistentVolumeClaimRetentionPolicy).toEqual({ whenDeleted: 'Retain', whenScaled: 'Retain' });
  });

  it('threads follow the CPU limit, but never below 256 MiB of --maxmemory each', () => {
    expect(container(dfSts({ master, dragonfly: { managed: { memory: '320Mi', resources: { limits: { cpu: '4' } } } } })).args).toEqual(flags(256 * MiB, 1));
    expect(container(dfSts({ master, dragonfly: { managed: { memory: '1Gi', resources: { limits: { cpu: '4' } } } } })).args).toEqual(flags(819 * MiB, 3));
    expect(container(dfSts({ master, dragonfly: { managed: { memory: '16Gi', resources: { limits: { cpu: '4' }, requests: { cpu: '1' } } } } })).args).toEqual(
      flags(Math.floor(16 * 1024 * 0.8) * MiB, 4),
    );
    expect(container(dfSts({ master, dragonfly: { managed: { memory: '16Gi', resources: { requests: { cpu: '1500m' } } } } })).args).toEqual(
      flags(Math.floor(16 * 1024 * 0.8) * MiB, 2),
    );
  });

  it('without memory, the memory limit in resources sets it; a memory request of its own is kept', () => {
    const c = container(dfSts({ master, dragonfly: { managed: { resources: { requests: { memory: '2Gi' }, limits: { cpu: '8', memory: '4Gi' } } } } }));
    expect(c.args).toEqual(flags(3276 * MiB, 8));
    expect(c.resources).toEqual({ requests: { memory: '2Gi' }, limits: { cpu: '8', memory: '4Gi' } });
  });

  it('memory in the spec wins over the limit in resources; no CPU named means 2 threads', () => {
    const c = container(dfSts({ master, dragonfly: { managed: { memory: '2Gi', resources: { limits: { memory: '4Gi' } } } } }));
    expect(c.args).toEqual(flags(1638 * MiB, 2));
    expect(c.resources).toEqual({ requests: { memory: '2Gi' }, limits: { memory: '2Gi' } });
  });

  it('deletionPolicy Delete removes the claim with the cluster', () => {
    expect(dfSts({ master, deletionPolicy: 'Delete', dragonfly: { managed: { storage: { size: '5Gi', storageClassName: 'ssd' } } } }).spec!.persistentVolumeClaimRetentionPolicy).toEqual({
      whenDeleted: 'Delete',
      whenScaled: 'Retain',
    });
  });

  it('uses spec.dragonfly.managed.image when set', () => {
    expect(container(dfSts({ master, dragonfly: { managed: { image: 'ghcr.io/dragonflydb/dragonfly:v1.39.0' } } })).image).toBe('ghcr.io/dragonflydb/dragonfly:v1.39.0');
  });
});

describe('Dragonfly Service and external servers', () => {
  it('the Service selects the Dragonfly pod on 6379', () => {
    expect(find<V1Service>(desiredChildren(example('minimal.yaml'), CTX), 'Service', 'mooncake-master-dragonfly').spec).toEqual({
      type: 'ClusterIP',
      selector: { 'hotstandby.dev/cluster': 'mooncake-master', 'app.kubernetes.io/component': 'dragonfly' },
      ports: [{ name: 'redis', port: 6379, targetPort: 6379, protocol: 'TCP' }],
    });
  });

  it('an external server gets no Dragonfly child', () => {
    const children = desiredChildren(example('external-stores.yaml'), CTX);
    expect(children.filter((o) => o.metadata!.name!.includes('dragonfly') || o.metadata!.labels!['app.kubernetes.io/component'] === 'dragonfly')).toEqual([]);
  });
});

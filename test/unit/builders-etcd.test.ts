// Managed etcd: bootstrap strings for 1, 3 and 5 members, the peer and client
// Services, probes, data volume, disruption budget, and nothing when external.
import { describe, expect, it } from 'vitest';
import type { V1PodDisruptionBudget, V1Service, V1StatefulSet } from '@kubernetes/client-node';
import { desiredChildren } from '../../src/operator/builders/index.ts';
import { etcdInitialCluster } from '../../src/operator/builders/etcd.ts';
import { CTX, cluster, example, find, labelsFor } from './builders-fixtures.ts';

const master = { image: 'example/master:1' };
const etcdSts = (spec: Record<string, unknown>, name = 'c1'): V1StatefulSet => find<V1StatefulSet>(desiredChildren(cluster(name, spec), CTX), 'StatefulSet', `${name}-etcd`);

describe('etcd --initial-cluster from the stable DNS names', () => {
  it('1 member', () => {
    expect(etcdInitialCluster('c1', 'shop', 1)).toBe('c1-etcd-0=http://c1-etcd-0.c1-etcd-peer.shop.svc:2380');
  });
  it('3 members', () => {
    expect(etcdInitialCluster('c1', 'shop', 3)).toBe(
      'c1-etcd-0=http://c1-etcd-0.c1-etcd-peer.shop.svc:2380,c1-etcd-1=http://c1-etcd-1.c1-etcd-peer.shop.svc:2380,c1-etcd-2=http://c1-etcd-2.c1-etcd-peer.shop.svc:2380',
    );
  });
  it('5 members', () => {
    expect(etcdInitialCluster('c1', 'shop', 5).split(',')).toEqual([0, 1, 2, 3, 4].map((i) => `c1-etcd-${i}=http://c1-etcd-${i}.c1-etcd-peer.shop.svc:2380`));
  });
});

describe('etcd StatefulSet', () => {
  it('the minimal example: 3 members started in parallel, the pinned 3.6 image, flags naming each member by its pod', () => {
    const sts = find<V1StatefulSet>(desiredChildren(example('minimal.yaml'), CTX), 'StatefulSet', 'mooncake-master-etcd');
    expect(sts.spec!.replicas).toBe(3);
    expect(sts.spec!.serviceName).toBe('mooncake-master-etcd-peer');
    expect(sts.spec!.podManagementPolicy).toBe('Parallel');
    const pod = sts.spec!.template.spec!;
    expect(pod.automountServiceAccountToken).toBe(false);
    expect(pod.containers).toHaveLength(1);
    const c = pod.containers[0]!;
    expect(c.image).toBe('gcr.io/etcd-development/etcd:v3.6.16');
    expect(c.command).toEqual(['/usr/local/bin/etcd']);
    expect(c.args).toEqual([
      '--name=$(POD_NAME)',
      '--data-dir=/var/lib/etcd/data',
      '--listen-client-urls=http://0.0.0.0:2379',
      '--advertise-client-urls=http://$(POD_NAME).mooncake-master-etcd-peer.shop.svc:2379',
      '--listen-peer-urls=http://0.0.0.0:2380',
      '--initial-advertise-peer-urls=http://$(POD_NAME).mooncake-master-etcd-peer.shop.svc:2380',
      '--listen-metrics-urls=http://0.0.0.0:2381',
      `--initial-cluster=${etcdInitialCluster('mooncake-master', 'shop', 3)}`,
      '--initial-cluster-state=new',
      '--initial-cluster-token=hotstandby-shop-mooncake-master',
      '--auto-compaction-mode=periodic',
      '--auto-compaction-retention=1h',
    ]);
    expect(c.env).toEqual([{ name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } }]);
    expect(c.ports).toEqual([
      { name: 'client', containerPort: 2379, protocol: 'TCP' },
      { name: 'peer', containerPort: 2380, protocol: 'TCP' },
      { name: 'metrics', containerPort: 2381, protocol: 'TCP' },
    ]);
    expect(c.readinessProbe!.httpGet).toEqual({ path: '/readyz', port: 2381 });
    expect(c.livenessProbe!.httpGet).toEqual({ path: '/livez', port: 2381 });
    expect(c.startupProbe!.httpGet).toEqual({ path: '/livez', port: 2381 });
    expect(c.resources).toEqual({ requests: { cpu: '100m', memory: '128Mi' }, limits: { memory: '512Mi' } });
    // No storage: an emptyDir, no claim templates.
    expect(c.volumeMounts).toEqual([{ name: 'data', mountPath: '/var/lib/etcd' }]);
    expect(pod.volumes).toEqual([{ name: 'data', emptyDir: {} }]);
    expect(sts.spec!.volumeClaimTemplates).toBeUndefined();
    expect(pod.affinity!.podAntiAffinity!.preferredDuringSchedulingIgnoredDuringExecution![0]!.podAffinityTerm.labelSelector!.matchLabels).toEqual({
      'hotstandby.dev/cluster': 'mooncake-master',
      'app.kubernetes.io/component': 'etcd',
    });
  });

  it('the full example: data on a claim from storage, its image and resources, claims kept on delete (default Retain)', () => {
    const sts = find<V1StatefulSet>(desiredChildren(example('full.yaml'), CTX), 'StatefulSet', 'mooncake-master-full-etcd');
    const pod = sts.spec!.template.spec!;
    expect(pod.volumes).toEqual([]);
    expect(sts.spec!.volumeClaimTemplates).toEqual([
      {
        apiVersion: 'v1',
        kind: 'PersistentVolumeClaim',
        metadata: { name: 'data', labels: labelsFor('mooncake-master-full', 'etcd') },
        spec: { accessModes: ['ReadWriteOnce'], storageClassName: 'fast-ssd', resources: { requests: { storage: '10Gi' } } },
      },
    ]);
    expect(pod.containers[0]!.image).toBe('gcr.io/etcd-development/etcd:v3.6.16');
    expect(pod.containers[0]!.resources).toEqual({ requests: { cpu: '500m', memory: '1Gi' } });
    expect(sts.spec!.persistentVolumeClaimRetentionPolicy).toEqual({ whenDeleted: 'Retain', whenScaled: 'Retain' });
  });

  it('deletionPolicy Delete removes the claims with the cluster', () => {
    const sts = etcdSts({ master, deletionPolicy: 'Delete', etcd: { managed: { storage: { size: '1Gi' } } } });
    expect(sts.spec!.persistentVolumeClaimRetentionPolicy).toEqual({ whenDeleted: 'Delete', whenScaled: 'Retain' });
    expect(sts.spec!.volumeClaimTemplates![0]!.spec).toEqual({ accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '1Gi' } } });
  });

  it('uses spec.etcd.managed.image when set', () => {
    expect(etcdSts({ master, etcd: { managed: { image: 'quay.io/coreos/etcd:v3.6.9' } } }).spec!.template.spec!.containers[0]!.image).toBe('quay.io/coreos/etcd:v3.6.9');
  });

  it.each([1, 3, 5])('%i members: replicas and --initial-cluster agree', (n) => {
    const sts = etcdSts({ master, etcd: { managed: { replicas: n } } });
    expect(sts.spec!.replicas).toBe(n);
    expect(sts.spec!.template.spec!.containers[0]!.args).toContain(`--initial-cluster=${etcdInitialCluster('c1', 'shop', n)}`);
  });
});

describe('etcd Services', () => {
  const children = desiredChildren(example('minimal.yaml'), CTX);
  const selector = { 'hotstandby.dev/cluster': 'mooncake-master', 'app.kubernetes.io/component': 'etcd' };

  it('peer: headless, publishes members before they are ready (they need each other to become ready)', () => {
    expect(find<V1Service>(children, 'Service', 'mooncake-master-etcd-peer').spec).toEqual({
      clusterIP: 'None',
      publishNotReadyAddresses: true,
      selector,
      ports: [
        { name: 'client', port: 2379, targetPort: 2379, protocol: 'TCP' },
        { name: 'peer', port: 2380, targetPort: 2380, protocol: 'TCP' },
      ],
    });
  });

  it('client: ready members on 2379', () => {
    expect(find<V1Service>(children, 'Service', 'mooncake-master-etcd').spec).toEqual({
      type: 'ClusterIP',
      selector,
      ports: [{ name: 'client', port: 2379, targetPort: 2379, protocol: 'TCP' }],
    });
  });
});

describe('etcd PodDisruptionBudget', () => {
  const pdb = (n: number): V1PodDisruptionBudget | undefined =>
    desiredChildren(cluster('c1', { master, etcd: { managed: { replicas: n } } }), CTX).find((o) => o.kind === 'PodDisruptionBudget' && o.metadata!.name === 'c1-etcd') as
      | V1PodDisruptionBudget
      | undefined;

  it('none for 1 member (a budget would block every drain)', () => {
    expect(pdb(1)).toBeUndefined();
  });
  it.each([3, 5])('one member at a time for %i', (n) => {
    expect(pdb(n)!.spec).toEqual({ maxUnavailable: 1, selector: { matchLabels: { 'hotstandby.dev/cluster': 'c1', 'app.kubernetes.io/component': 'etcd' } } });
  });
});

describe('external etcd', () => {
  it('makes no etcd child at all', () => {
    const children = desiredChildren(example('external-stores.yaml'), CTX);
    expect(children.filter((o) => o.metadata!.labels!['app.kubernetes.io/component'] === 'etcd')).toEqual([]);
    expect(children.filter((o) => o.metadata!.name!.includes('-etcd'))).toEqual([]);
  });
});

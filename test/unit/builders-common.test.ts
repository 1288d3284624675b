// What every child shares: names and apply order per example, namespace,
// the controller owner reference, the labels, kinds the operator declares,
// and the guards on names and on objects not read from the API server.
import { describe, expect, it } from 'vitest';
import type { KubernetesObject, V1StatefulSet } from '@kubernetes/client-node';
import { hotStandbyClusterSpec } from '../../src/api/v1alpha1.ts';
import { applyDefaults } from '../../src/api/schema.ts';
import { childKinds, desiredChildren, storageStatus } from '../../src/operator/builders/index.ts';
import { durationSeconds, parseQuantity } from '../../src/operator/builders/quantity.ts';
import { CTX, NS, UID, cluster, example, exampleFiles, labelsFor } from './builders-fixtures.ts';

const ids = (objs: KubernetesObject[]): string[] => objs.map((o) => `${o.apiVersion} ${o.kind} ${o.metadata!.name}`);

const MANAGED_ORDER = (n: string): string[] => [
  `v1 ServiceAccount ${n}-agent`,
  `rbac.authorization.k8s.io/v1 RoleBinding ${n}-agent`,
  `v1 Service ${n}-etcd-peer`,
  `v1 Service ${n}-etcd`,
  `apps/v1 StatefulSet ${n}-etcd`,
  `v1 Service ${n}-dragonfly`,
  `apps/v1 StatefulSet ${n}-dragonfly`,
  `v1 Service ${n}`,
  `v1 Service ${n}-standby`,
  `v1 Service ${n}-members`,
  `apps/v1 StatefulSet ${n}`,
  `policy/v1 PodDisruptionBudget ${n}`,
  `policy/v1 PodDisruptionBudget ${n}-etcd`,
];

const EXPECTED: Record<string, string[]> = {
  'minimal.yaml': MANAGED_ORDER('mooncake-master'),
  'full.yaml': MANAGED_ORDER('mooncake-master-full'),
  // One etcd member: no etcd PodDisruptionBudget (there is no quorum to protect).
  'kvmaster-real.yaml': MANAGED_ORDER('kv').filter((id) => id !== 'policy/v1 PodDisruptionBudget kv-etcd'),
  'external-stores.yaml': [
    'v1 ServiceAccount mooncake-master-ext-agent',
    'rbac.authorization.k8s.io/v1 RoleBinding mooncake-master-ext-agent',
    'v1 Service mooncake-master-ext',
    'v1 Service mooncake-master-ext-standby',
    'v1 Service mooncake-master-ext-members',
    'apps/v1 StatefulSet mooncake-master-ext',
    'policy/v1 PodDisruptionBudget mooncake-master-ext',
  ],
};

const COMPONENT: Record<string, string> = {
  'ServiceAccount/-agent': 'agent',
  'RoleBinding/-agent': 'agent',
  'Service/-etcd-peer': 'etcd',
  'Service/-etcd': 'etcd',
  'StatefulSet/-etcd': 'etcd',
  'PodDisruptionBudget/-etcd': 'etcd',
  'Service/-dragonfly': 'dragonfly',
  'StatefulSet/-dragonfly': 'dragonfly',
  'Service/': 'master',
  'Service/-standby': 'master',
  'Service/-members': 'master',
  'StatefulSet/': 'master',
  'PodDisruptionBudget/': 'master',
};

describe('desiredChildren for every example', () => {
  it('covers every file in examples/', () => {
    expect(exampleFiles()).toEqual(Object.keys(EXPECTED).sort());
  });

  for (const file of Object.keys(EXPECTED)) {
    describe(file, () => {
      const hsc = example(file);
      const name = hsc.metadata.name;
      const children = desiredChildren(hsc, CTX);

      it('builds the expected children in apply order', () => {
        expect(ids(children)).toEqual(EXPECTED[file]);
      });

      it('puts every child in the cluster namespace with a controller owner reference to the cluster', () => {
        for (const o of children) {
          expect(o.metadata!.namespace).toBe(NS);
          expect(o.metadata!.ownerReferences).toEqual([
            { apiVersion: 'hotstandby.dev/v1alpha1', kind: 'HotStandbyCluster', name, uid: UID, controller: true, blockOwnerDeletion: true },
          ]);
        }
      });

      it('labels every child, pod template and claim template with name, instance, component, managed-by and cluster', () => {
        for (const o of children) {
          const component = COMPONENT[`${o.kind}/${o.metadata!.name!.slice(name.length)}`];
          expect(component, `${o.kind}/${o.metadata!.name}`).toBeDefined();
          expect(o.metadata!.labels).toEqual(labelsFor(name, component!));
          if (o.kind === 'StatefulSet') {
            const sts = o as V1StatefulSet;
            expect(sts.spec!.template.metadata!.labels).toEqual(labelsFor(name, component!));
            for (const claim of sts.spec!.volumeClaimTemplates ?? []) expect(claim.metadata!.labels).toEqual(labelsFor(name, component!));
            // The selector is a subset of the pod labels and never holds the role.
            expect(sts.spec!.selector.matchLabels).toEqual({ 'hotstandby.dev/cluster': name, 'app.kubernetes.io/component': component });
          }
        }
      });

      it('only makes kinds listed in childKinds', () => {
        const kinds = new Set(childKinds.map((k) => `${k.apiVersion} ${k.kind}`));
        for (const o of children) expect(kinds.has(`${o.apiVersion} ${o.kind}`), `${o.apiVersion} ${o.kind}`).toBe(true);
      });

      it('is a pure function: the same input gives the same output, and the input is not changed', () => {
        const before = JSON.stringify(hsc);
        expect(JSON.stringify(desiredChildren(hsc, CTX))).toBe(JSON.stringify(children));
        expect(JSON.stringify(hsc)).toBe(before);
      });
    });
  }

  it('shares no object between children, so the caller may change one without changing another', () => {
    const children = desiredChildren(example('minimal.yaml'), CTX);
    const seen = new Set<object>();
    const walk = (v: unknown, where: string): void => {
      if (v === null || typeof v !== 'object') return;
      expect(seen.has(v), `shared object at ${where}`).toBe(false);
      seen.add(v);
      for (const [k, c] of Object.entries(v)) walk(c, `${where}.${k}`);
    };
    children.forEach((c, i) => walk(c, `${i}`));
  });

  it('shares nothing with the input or module constants: changing every output object changes no later build', () => {
    for (const file of exampleFiles()) {
      const hsc = example(file);
      const first = desiredChildren(hsc, CTX);
      const expected = JSON.stringify(first);
      const scribble = (v: unknown): void => {
        if (v === null || typeof v !== 'object') return;
        for (const c of Object.values(v)) scribble(c);
        if (Array.isArray(v)) v.push('scribbled');
        else (v as Record<string, unknown>).scribbled = true;
      };
      scribble(first);
      expect(JSON.stringify(desiredChildren(hsc, CTX)), file).toBe(expected);
    }
  });
});

describe('guards', () => {
  const spec = { master: { image: 'example/master:1' } };

  it('refuses a name the children could not be named after, saying why and what to do', () => {
    expect(() => desiredChildren(cluster('a'.repeat(43), spec), CTX)).toThrow(/metadata.name must be at most 42 characters.*choose a shorter name/);
    expect(() => desiredChildren(cluster('9lives', spec), CTX)).toThrow(/starting with a letter/);
    expect(() => desiredChildren(cluster('a.b', spec), CTX)).toThrow(/lowercase letters, digits and '-'/);
    expect(desiredChildren(cluster('a'.repeat(42), spec), CTX).length).toBe(13);
  });

  it('refuses an object without namespace or uid (not read from the API server)', () => {
    const noNs = cluster('x', spec);
    delete noNs.metadata.namespace;
    expect(() => desiredChildren(noNs, CTX)).toThrow(/HotStandbyCluster x: metadata.namespace is missing/);
    const noUid = cluster('x', spec);
    delete noUid.metadata.uid;
    expect(() => desiredChildren(noUid, CTX)).toThrow(/HotStandbyCluster x: metadata.uid is missing/);
  });
});

describe('defaults', () => {
  it('applies the CRD defaults the way the API server does: top down, inside present sections, never over set values', () => {
    const out = applyDefaults(hotStandbyClusterSpec.json, { master: { image: 'm' }, election: { leaseTTLSeconds: 9 }, etcd: { external: { endpoints: ['http://e:2379'] } } });
    expect(out).toEqual({
      replicas: 3,
      master: { image: 'm', ports: [{ name: 'main', containerPort: 8080, protocol: 'TCP' }] },
      agent: { logLevel: 'info', localApiPort: 7070, masterLivenessTimeoutMs: 500 },
      election: { leaseTTLSeconds: 9, maxLagOnFailover: 1000 },
      oplog: { maxLength: 1_000_000, replication: 'async', minSyncStandbys: 1, syncTimeoutMs: 2000, onSyncTimeout: 'fail' },
      snapshot: { interval: '5m', everyEntries: 100_000, keep: 2 },
      etcd: { external: { endpoints: ['http://e:2379'] } },
      dragonfly: { managed: {} },
      service: { type: 'ClusterIP' },
      pod: {},
      podDisruptionBudget: { enabled: true, maxUnavailable: 1 },
      deletionPolicy: 'Retain',
    });
  });
});

describe('status.storage', () => {
  it('says EmptyDir (not durable) without storage, PersistentVolumeClaim with it, External for stores the user runs', () => {
    expect(storageStatus(example('minimal.yaml'))).toEqual({ etcd: 'EmptyDir', dragonfly: 'EmptyDir' });
    expect(storageStatus(example('full.yaml'))).toEqual({ etcd: 'PersistentVolumeClaim', dragonfly: 'PersistentVolumeClaim' });
    expect(storageStatus(example('external-stores.yaml'))).toEqual({ etcd: 'External', dragonfly: 'External' });
    expect(storageStatus(cluster('x', { master: { image: 'm' }, etcd: { managed: { storage: { size: '1Gi' } } } }))).toEqual({ etcd: 'PersistentVolumeClaim', dragonfly: 'EmptyDir' });
  });
});

describe('quantities and durations', () => {
  it('parses the quantities the CRD accepts', () => {
    expect(parseQuantity('512Mi', 'f')).toBe(512 * 2 ** 20);
    expect(parseQuantity('2Gi', 'f')).toBe(2 * 2 ** 30);
    expect(parseQuantity('1.5Gi', 'f')).toBe(1.5 * 2 ** 30);
    expect(parseQuantity('2G', 'f')).toBe(2e9);
    expect(parseQuantity('250m', 'f')).toBe(0.25);
    expect(parseQuantity('3', 'f')).toBe(3);
    expect(parseQuantity(4, 'f')).toBe(4);
    expect(() => parseQuantity('2 GB', 'spec.x')).toThrow('spec.x: "2 GB" is not a Kubernetes quantity');
  });

  it('turns durations into whole seconds, rounding up', () => {
    expect(durationSeconds('5m', 'f')).toBe(300);
    expect(durationSeconds('1h30m', 'f')).toBe(5400);
    expect(durationSeconds('10s', 'f')).toBe(10);
    expect(durationSeconds('10500ms', 'f')).toBe(11);
    expect(() => durationSeconds('often', 'spec.snapshot.interval')).toThrow('spec.snapshot.interval: "often" is not a duration');
  });
});

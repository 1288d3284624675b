// The HotStandbyCluster CRD in a real kube-apiserver: it installs, every
// example applies, every schema and CEL rule refuses a bad spec with its
// message (and creates nothing), printer columns show status written through
// the status subresource, and the scale subresource works.
import fs from 'node:fs';
import path from 'node:path';
import { stringify } from 'yaml';
import { beforeAll, describe, expect, it } from 'vitest';
import { describeE2E, useDevCluster } from '../harness/kube.ts';

const ROOT = path.resolve(import.meta.dirname, '../..');
const NS = 'crd-test';

function manifest(name: string, spec: Record<string, unknown>): string {
  return stringify({ apiVersion: 'hotstandby.dev/v1alpha1', kind: 'HotStandbyCluster', metadata: { name, namespace: NS }, spec });
}

const base = { master: { image: 'example/master:1' } };

/** One case per rule: a spec, and the message the API server must answer with. */
const REFUSED: Array<{ rule: string; spec: Record<string, unknown>; message: string | RegExp }> = [
  { rule: 'etcd: both managed and external', spec: { ...base, etcd: { managed: {}, external: { endpoints: ['http://e:2379'] } } }, message: 'spec.etcd: set exactly one of managed' },
  { rule: 'etcd: neither managed nor external', spec: { ...base, etcd: {} }, message: 'spec.etcd: set exactly one of managed' },
  { rule: 'dragonfly: both managed and external', spec: { ...base, dragonfly: { managed: {}, external: { url: 'redis://d:6379' } } }, message: 'spec.dragonfly: set exactly one of managed' },
  { rule: 'snapshot.interval below 10s', spec: { ...base, snapshot: { interval: '5s' } }, message: 'spec.snapshot.interval must be at least 10s' },
  { rule: 'snapshot.interval not a duration', spec: { ...base, snapshot: { interval: 'often' } }, message: /spec.snapshot.interval.*should match/ },
  { rule: 'PDB would allow every master down', spec: { ...base, replicas: 3, podDisruptionBudget: { maxUnavailable: 3 } }, message: 'spec.podDisruptionBudget.maxUnavailable must be below spec.replicas' },
  { rule: 'oplog shorter than two snapshot periods', spec: { ...base, oplog: { maxLength: 100000 }, snapshot: { everyEntries: 100000 } }, message: 'spec.oplog.maxLength must be at least twice spec.snapshot.everyEntries' },
  { rule: 'replicas above 9', spec: { ...base, replicas: 10 }, message: /spec.replicas.*should be less than or equal to 9/ },
  { rule: 'replicas below 1', spec: { ...base, replicas: 0 }, message: /spec.replicas.*should be greater than or equal to 1/ },
  { rule: 'lease TTL below 2 s', spec: { ...base, election: { leaseTTLSeconds: 1 } }, message: /spec.election.leaseTTLSeconds.*greater than or equal to 2/ },
  { rule: 'master image required', spec: { master: {} }, message: /spec.master.image: Required value/ },
  { rule: 'managed etcd of 2 members', spec: { ...base, etcd: { managed: { replicas: 2 } } }, message: /spec.etcd.managed.replicas: Unsupported value: 2/ },
  { rule: 'external etcd without endpoints', spec: { ...base, etcd: { external: { endpoints: [] } } }, message: /spec.etcd.external.endpoints.*at least 1 items/ },
  { rule: 'dragonfly URL not redis://', spec: { ...base, dragonfly: { external: { url: 'http://d:6379' } } }, message: /spec.dragonfly.external.url.*should match/ },
  { rule: 'Dragonfly memory below 320Mi', spec: { ...base, dragonfly: { managed: { memory: '256Mi' } } }, message: 'spec.dragonfly.managed.memory must be at least 320Mi' },
  { rule: 'Dragonfly memory in bytes below 320Mi', spec: { ...base, dragonfly: { managed: { memory: 1000 } } }, message: 'spec.dragonfly.managed.memory must be at least 320Mi' },
  { rule: 'storage without size', spec: { ...base, etcd: { managed: { storage: { storageClassName: 'ssd' } } } }, message: /spec.etcd.managed.storage.size: Required value/ },
  { rule: 'unknown deletion policy', spec: { ...base, deletionPolicy: 'Orphan' }, message: /spec.deletionPolicy: Unsupported value: "Orphan"/ },
  { rule: 'sync replication with as many sync standbys as replicas', spec: { ...base, replicas: 2, oplog: { replication: 'sync', minSyncStandbys: 2 } }, message: 'spec.oplog.minSyncStandbys must be below spec.replicas when spec.oplog.replication is sync' },
  { rule: 'unknown replication mode', spec: { ...base, oplog: { replication: 'semi' } }, message: /spec.oplog.replication: Unsupported value: "semi"/ },
  { rule: 'unknown sync timeout action', spec: { ...base, oplog: { onSyncTimeout: 'retry' } }, message: /spec.oplog.onSyncTimeout: Unsupported value: "retry"/ },
  { rule: 'master without ports', spec: { master: { image: 'example/master:1', ports: [] } }, message: /spec.master.ports.*at least 1 items/ },
];

/** Names the children could not be named after, refused with the name rule's message. */
const BAD_NAMES = ['a'.repeat(43), '9lives', 'a.b'];

describeE2E('HotStandbyCluster CRD', () => {
  const cluster = useDevCluster({ nodes: 1 });

  beforeAll(async () => {
    const c = cluster();
    await c.kubectl(['apply', '--server-side', '-f', path.join(ROOT, 'crds')]);
    await c.kubectl(['wait', '--for=condition=Established', 'crd/hotstandbyclusters.hotstandby.dev', '--timeout=60s']);
    await c.kubectl(['create', 'namespace', NS]);
  }, 120_000);

  it('the chart ships the same CRD as crds/', () => {
    const file = 'hotstandby.dev_hotstandbyclusters.yaml';
    expect(fs.readFileSync(path.join(ROOT, 'charts/hotstandby-operator/crds', file), 'utf8')).toBe(fs.readFileSync(path.join(ROOT, 'crds', file), 'utf8'));
  });

  it('every file in examples/ applies', async () => {
    const c = cluster();
    const files = fs.readdirSync(path.join(ROOT, 'examples')).filter((f) => f.endsWith('.yaml'));
    expect(files.length).toBeGreaterThanOrEqual(3);
    for (const f of files) await c.kubectl(['apply', '-n', NS, '-f', path.join(ROOT, 'examples', f)]);
    const names = (await c.kubectl(['get', 'hsc', '-n', NS, '-o', 'name'])).trim().split('\n');
    expect(names).toHaveLength(files.length);
  });

  it('defaults fill an omitted section', async () => {
    const c = cluster();
    await c.kubectl(['apply', '-f', '-'], { input: manifest('defaults', base) });
    const spec = JSON.parse(await c.kubectl(['get', 'hsc', 'defaults', '-n', NS, '-o', 'jsonpath={.spec}'])) as Record<string, Record<string, unknown>>;
    expect(spec.replicas).toBe(3);
    expect(spec.election).toEqual({ leaseTTLSeconds: 5, maxLagOnFailover: 1000 });
    expect(spec.etcd).toEqual({ managed: { replicas: 3 } });
    expect(spec.podDisruptionBudget).toEqual({ enabled: true, maxUnavailable: 1 });
    expect(spec.deletionPolicy).toBe('Retain');
    expect(spec.master).toEqual({ image: 'example/master:1', ports: [{ name: 'main', containerPort: 8080, protocol: 'TCP' }] });
  });

  it('a Dragonfly memory of 320Mi or more is accepted, as a quantity or in bytes', async () => {
    const c = cluster();
    await c.kubectl(['apply', '-f', '-'], { input: manifest('df-mem', { ...base, dragonfly: { managed: { memory: '320Mi' } } }) });
    await c.kubectl(['apply', '-f', '-'], { input: manifest('df-mem-bytes', { ...base, dragonfly: { managed: { memory: 2 ** 30 } } }) });
  });

  it('refuses names the children could not be named after, and accepts the longest allowed', async () => {
    const c = cluster();
    for (const name of BAD_NAMES) {
      const err = await c.kubectl(['apply', '-f', '-'], { input: manifest(name, base) }).then(
        () => undefined,
        (e: Error) => e,
      );
      expect(err?.message, name).toContain('metadata.name must be at most 42 characters');
    }
    await c.kubectl(['apply', '-f', '-'], { input: manifest('a'.repeat(42), base) });
  });

  describe('refuses a bad spec with its message and creates nothing', () => {
    REFUSED.forEach(({ rule, spec, message }, i) => {
      it(rule, async () => {
        const c = cluster();
        const name = `bad-${i}`;
        const err = await c.kubectl(['apply', '-f', '-'], { input: manifest(name, spec) }).then(
          () => undefined,
          (e: Error) => e,
        );
        expect(err, `${rule} was accepted`).toBeDefined();
        if (typeof message === 'string') expect(err!.message).toContain(message);
        else expect(err!.message).toMatch(message);
        const get = await c.kubectl(['get', 'hsc', name, '-n', NS]).then(
          () => 'exists',
          (e: Error) => e.message,
        );
        expect(get).toMatch(/NotFound/);
      });
    });

    it('etcd cannot switch from managed to external after creation', async () => {
      const c = cluster();
      await c.kubectl(['apply', '-f', '-'], { input: manifest('etcd-switch', base) });
      const err = await c
        .kubectl(['patch', 'hsc', 'etcd-switch', '-n', NS, '--type=merge', '-p', JSON.stringify({ spec: { etcd: { managed: null, external: { endpoints: ['http://e:2379'] } } } })])
        .then(
          () => undefined,
          (e: Error) => e,
        );
      expect(err?.message).toContain('spec.etcd: cannot switch between managed and external etcd after creation');
      expect(await c.kubectl(['get', 'hsc', 'etcd-switch', '-n', NS, '-o', 'jsonpath={.spec.etcd}'])).toBe('{"managed":{"replicas":3}}');
    });

    it('managed etcd cannot change its member count after creation', async () => {
      const c = cluster();
      await c.kubectl(['apply', '-f', '-'], { input: manifest('etcd-size', base) });
      const err = await c.kubectl(['patch', 'hsc', 'etcd-size', '-n', NS, '--type=merge', '-p', JSON.stringify({ spec: { etcd: { managed: { replicas: 5 } } } })]).then(
        () => undefined,
        (e: Error) => e,
      );
      expect(err?.message).toContain('spec.etcd.managed.replicas cannot change after creation');
      expect(await c.kubectl(['get', 'hsc', 'etcd-size', '-n', NS, '-o', 'jsonpath={.spec.etcd.managed.replicas}'])).toBe('3');
    });

    it('dragonfly cannot switch from managed to external after creation', async () => {
      const c = cluster();
      await c.kubectl(['apply', '-f', '-'], { input: manifest('df-switch', base) });
      const err = await c
        .kubectl(['patch', 'hsc', 'df-switch', '-n', NS, '--type=merge', '-p', JSON.stringify({ spec: { dragonfly: { managed: null, external: { url: 'redis://d:6379' } } } })])
        .then(
          () => undefined,
          (e: Error) => e,
        );
      expect(err?.message).toContain('spec.dragonfly: cannot switch between managed and external after creation');
    });
  });

  it('printer columns show the status written through the status subresource', async () => {
    const c = cluster();
    await c.kubectl(['apply', '-f', '-'], { input: manifest('shown', { ...base, replicas: 3 }) });
    const status = {
      phase: 'Running',
      replicas: 3,
      readyReplicas: 3,
      ready: '3/3',
      selector: 'hotstandby.dev/cluster=shown',
      leader: { pod: 'shown-1', epoch: 42, since: '2026-11-25T00:00:00Z' },
      maxLag: 7,
      oplog: { headSeq: 12345, length: 12000 },
      snapshot: { lastSeq: 12000, lastTime: '2026-11-25T00:00:00Z', sizeBytes: 4096, state: 'Stored' },
      failoverCount: 2,
    };
    await c.kubectl(['patch', 'hsc', 'shown', '-n', NS, '--subresource=status', '--type=merge', '-p', JSON.stringify({ status })]);
    const table = await c.kubectl(['get', 'hsc', 'shown', '-n', NS]);
    const [header, row] = table.trim().split('\n');
    expect(header!.split(/\s+/)).toEqual(['NAME', 'LEADER', 'READY', 'MAX-LAG', 'SNAPSHOT', 'AGE']);
    expect(row!.split(/\s+/).slice(0, 4)).toEqual(['shown', 'shown-1', '3/3', '7']);
    const wide = await c.kubectl(['get', 'hsc', 'shown', '-n', NS, '-o', 'wide']);
    const [wh, wr] = wide.trim().split('\n');
    expect(wh!.split(/\s+/).slice(6)).toEqual(['EPOCH', 'HEAD-SEQ', 'FAILOVERS', 'PHASE']);
    expect(wr!.split(/\s+/).slice(6)).toEqual(['42', '12345', '2', 'Running']);
    // A status written through the main resource is ignored: status is a subresource.
    await c.kubectl(['patch', 'hsc', 'shown', '-n', NS, '--type=merge', '-p', JSON.stringify({ status: { maxLag: 999 } })]);
    expect(await c.kubectl(['get', 'hsc', 'shown', '-n', NS, '-o', 'jsonpath={.status.maxLag}'])).toBe('7');
  });

  it('kubectl scale changes spec.replicas through the scale subresource', async () => {
    const c = cluster();
    await c.kubectl(['apply', '-f', '-'], { input: manifest('scaled', base) });
    await c.kubectl(['scale', 'hsc/scaled', '-n', NS, '--replicas=5']);
    expect(await c.kubectl(['get', 'hsc', 'scaled', '-n', NS, '-o', 'jsonpath={.spec.replicas}'])).toBe('5');
    const err = await c.kubectl(['scale', 'hsc/scaled', '-n', NS, '--replicas=12']).then(
      () => undefined,
      (e: Error) => e,
    );
    expect(err?.message).toMatch(/spec.replicas/);
  });
});

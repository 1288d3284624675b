// deletionPolicy: Delete's cleanup against a real etcd and a real redis-server:
// the cluster's etcd prefix and every stream key (more than one SCAN round)
// go; another cluster's keys, including one whose name shares a prefix, stay.
import { Etcd3 } from 'etcd3';
import { Redis } from 'ioredis';
import { KubeConfig } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useStores } from '../harness/stores.ts';
import { cleanupClusterData } from '../../src/operator/cleanup.ts';
import { KubeClient } from '../../src/operator/kube/client.ts';
import { etcdKeys, streamKeys } from '../../src/lib/keys.ts';
import { silentLogger } from '../../src/lib/log.ts';

describe('cluster data cleanup (deletionPolicy Delete)', () => {
  const stores = useStores();
  let etcd: Etcd3;
  let redis: Redis;
  // Never called: external stores without Secrets need no Kubernetes API.
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'none', server: 'https://127.0.0.1:1', skipTLSVerify: true }],
    users: [{ name: 'none' }],
    contexts: [{ name: 'none', cluster: 'none', user: 'none' }],
    currentContext: 'none',
  });
  const gone = { namespace: 'prod', name: 'kv' };
  const kept = [{ namespace: 'prod', name: 'kv2' }, { namespace: 'other', name: 'kv' }];

  beforeAll(async () => {
    etcd = new Etcd3({ hosts: stores().etcd.endpoint });
    redis = new Redis(stores().redis.url);
    for (const ref of [gone, ...kept]) {
      const k = etcdKeys(ref);
      await etcd.put(k.leader).value('{"member":"kv-0"}');
      await etcd.put(k.member('kv-0')).value('{}');
      await etcd.put(k.meta('a')).value('1');
      const s = streamKeys(ref);
      await redis.set(s.epoch, '3');
      await redis.xadd(s.log, '*', 'seq', '1');
      const pipe = redis.pipeline();
      for (let i = 0; i < 2500; i++) pipe.set(s.snapshotChunk('snap1', i), 'x');
      await pipe.exec();
    }
  });

  afterAll(async () => {
    etcd?.close();
    redis?.disconnect();
  });

  it('removes the etcd prefix and every stream key of the cluster, and nothing of the others', async () => {
    const report = await cleanupClusterData({
      client: new KubeClient(kc),
      cluster: gone,
      spec: { etcd: { external: { endpoints: [stores().etcd.endpoint] } }, dragonfly: { external: { url: stores().redis.url } } },
      log: silentLogger(),
      timeoutMs: 5000,
    });
    expect(report).toEqual({ etcdKeysDeleted: 3, streamKeysDeleted: 2502, pvcsDeleted: [] });
    expect((await etcd.getAll().prefix(etcdKeys(gone).prefix).keys()).length).toBe(0);
    expect(await redis.exists(streamKeys(gone).log, streamKeys(gone).epoch, streamKeys(gone).snapshotChunk('snap1', 7))).toBe(0);
    for (const ref of kept) {
      expect((await etcd.getAll().prefix(etcdKeys(ref).prefix).keys()).length).toBe(3);
      expect(await redis.exists(streamKeys(ref).log, streamKeys(ref).epoch, streamKeys(ref).snapshotChunk('snap1', 2499))).toBe(3);
    }
  });

  it('running it again finds nothing and succeeds (a retried cleanup)', async () => {
    const report = await cleanupClusterData({
      client: new KubeClient(kc),
      cluster: gone,
      spec: { etcd: { external: { endpoints: [stores().etcd.endpoint] } }, dragonfly: { external: { url: stores().redis.url } } },
      log: silentLogger(),
    });
    expect(report).toEqual({ etcdKeysDeleted: 0, streamKeysDeleted: 0, pvcsDeleted: [] });
  });

  it('an unreachable store fails within the deadline, naming it', async () => {
    const started = Date.now();
    await expect(
      cleanupClusterData({
        client: new KubeClient(kc),
        cluster: gone,
        spec: { etcd: { external: { endpoints: ['http://127.0.0.1:1'] } }, dragonfly: { external: { url: stores().redis.url } } },
        log: silentLogger(),
        timeoutMs: 1500,
      }),
    ).rejects.toThrow(/etcd http:\/\/127\.0\.0\.1:1/);
    expect(Date.now() - started).toBeLessThan(15_000);
  });
});

// The operator's per-cluster store clients against a real etcd: a change of
// the leader key or of the switchover request is reported at once, and new
// endpoints replace the clients.
import { describe, expect, it } from 'vitest';
import { useStores } from '../harness/stores.ts';
import { StoreClients } from '../../src/operator/store-clients.ts';
import { createLogger } from '../../src/lib/log.ts';
import { etcdKeys, type ClusterRef } from '../../src/lib/keys.ts';
import { waitFor } from '../../src/lib/time.ts';

describe('StoreClients', () => {
  const stores = useStores();

  it('reports leader and switchover changes of the cluster it watches, and nothing of other clusters', async () => {
    const changes: string[] = [];
    const clients = new StoreClients({ log: createLogger({ component: 'test', level: 'silent' }), onLeadershipChange: (ref) => changes.push(`${ref.namespace}/${ref.name}`) });
    const ref: ClusterRef = { namespace: 'ns', name: 'watched' };
    const endpoints = { etcdEndpoints: [stores().etcd.endpoint], redisUrl: stores().redis.url, fingerprint: 'a' };
    try {
      const c = clients.get(ref, endpoints);
      expect(clients.get(ref, endpoints)).toBe(c);
      // The watch is made asynchronously: wait until a put is seen.
      const keys = etcdKeys(ref);
      await waitFor(async () => {
        await c.etcd.put(keys.leader).value('{"member":"kv-0"}');
        return changes.length > 0;
      }, { timeoutMs: 10_000, intervalMs: 200, what: 'the leader watch to report a put' });
      const before = changes.length;
      await c.etcd.put(etcdKeys({ namespace: 'ns', name: 'other' }).leader).value('{}');
      await c.etcd.put(keys.member('kv-0')).value('{}');
      await c.etcd.put(keys.switchover).value('{"target":"kv-1"}');
      await waitFor(() => changes.length > before, { timeoutMs: 5000, intervalMs: 20, what: 'the switchover put to be reported' });
      await c.etcd.delete().key(keys.leader);
      await waitFor(() => changes.length > before + 1, { timeoutMs: 5000, intervalMs: 20, what: 'the leader delete to be reported' });
      expect(new Set(changes)).toEqual(new Set(['ns/watched']));

      // Clusters on the same stores share one connection; it closes with its last user.
      const other: ClusterRef = { namespace: 'ns', name: 'neighbour' };
      expect(clients.get(other, endpoints)).toBe(c);
      expect(clients.connectionCount).toBe(1);
      const replaced = clients.get(ref, { ...endpoints, fingerprint: 'b' });
      expect(replaced).not.toBe(c);
      expect(clients.connectionCount).toBe(2);
      clients.forget(other);
      expect(clients.connectionCount).toBe(1);
      expect(clients.known()).toEqual(['ns/watched']);
    } finally {
      clients.close();
    }
    expect(clients.known()).toEqual([]);
  });
});

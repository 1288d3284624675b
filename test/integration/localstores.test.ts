import { describe, expect, it } from 'vitest';
import { Etcd3 } from 'etcd3';
import { Redis } from 'ioredis';
import { useStores } from '../harness/stores.ts';

describe('local stores harness', () => {
  const stores = useStores();

  it('starts a real etcd and a real Redis-protocol server', async () => {
    const etcd = new Etcd3({ hosts: stores().etcd.endpoint });
    const redis = new Redis(stores().redis.url, { lazyConnect: true });
    try {
      await etcd.put('/probe').value('1');
      expect(await etcd.get('/probe').string()).toBe('1');
      await redis.connect();
      expect(await redis.xadd('s', '*', 'f', 'v')).toMatch(/^\d+-\d+$/);
    } finally {
      etcd.close();
      redis.disconnect();
    }
  });

  it('stop() ends the processes', async () => {
    const { etcd } = stores();
    expect(etcd.process.running).toBe(true);
  });
});

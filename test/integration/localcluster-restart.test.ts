// LocalCluster.restartRedisEmpty(), which the chaos kind restart-stream-server
// and the sync-replication tests rely on, must bring back an *empty* stream
// server every time. With one data directory shared by every restart, a
// second restart loaded the snapshot the first restarted server had saved
// (Dragonfly's every-minute cron; here a SAVE): a server back from an older
// copy, which is another fault than the one claimed.
import { Redis } from 'ioredis';
import { afterEach, expect, it } from 'vitest';
import { LocalCluster } from '../../src/demo/localcluster.ts';
import { describeEachStreamServer } from '../harness/stores.ts';

let cluster: LocalCluster | undefined;
afterEach(async () => {
  await cluster?.stop();
  cluster = undefined;
});

describeEachStreamServer('LocalCluster.restartRedisEmpty', (kind) => {
  it('brings back an empty server on every restart, even after the previous one saved a snapshot', async () => {
    cluster = await LocalCluster.start({ members: 2, leaseTtlSeconds: 2, streamServer: kind, logLevel: 'warn' });
    const c = cluster;
    for (let restart = 1; restart <= 2; restart++) {
      c.killRedis();
      await c.restartRedisEmpty();
      const redis = new Redis(c.redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
      try {
        await redis.connect();
        expect(await redis.get('probe'), `restart ${restart}: a key written before it`).toBeNull();
        await redis.set('probe', String(restart));
        // What a snapshot cron (Dragonfly: every minute) or a shutdown would leave in the data directory.
        await redis.call('SAVE');
      } finally {
        redis.disconnect();
      }
    }
    expect(c.redis.kind).toBe(kind);
  }, 90_000);
});

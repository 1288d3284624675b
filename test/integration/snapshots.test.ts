// Snapshots on real etcd + Dragonfly and redis-server: chunked round trips, keep N (and the
// dropped chunks go), the leadership guard, and corruption detected on read.
import { randomBytes } from 'node:crypto';
import { EtcdHttpClient } from '../../src/lib/etcd-http/client.ts';
import { Redis } from 'ioredis';
import { RespClient } from '../../src/lib/resp/client.ts';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { SnapshotCorruptError, SnapshotStore, SNAPSHOT_CHUNK_BYTES } from '../../src/agent/snapshots.ts';
import { NotLeaderError } from '../../src/agent/types.ts';
import { etcdKeys, streamKeys } from '../../src/lib/keys.ts';
import { silentLogger } from '../../src/lib/log.ts';
import { describeEachStreamServer, useStores } from '../harness/stores.ts';

describeEachStreamServer('SnapshotStore on real etcd', (streamServer) => {
  const stores = useStores({ streamServer });
  let etcd: EtcdHttpClient;
  let redis: Redis;
  let conn: RespClient;
  let n = 0;

  beforeAll(() => {
    etcd = new EtcdHttpClient({ endpoints: [stores().etcd.endpoint] });
    redis = new Redis(stores().redis.url);
    conn = RespClient.fromUrl(stores().redis.url, { commandTimeoutMs: 30_000 });
  });
  afterAll(() => {
    etcd.close();
    redis.disconnect();
    conn.disconnect();
  });

  /** A store for a fresh cluster whose leader key exists; returns the epoch (its create revision). */
  async function fresh(keep = 2): Promise<{ store: SnapshotStore; epoch: number; ref: { namespace: string; name: string } }> {
    const ref = { namespace: 'snap', name: `c${++n}` };
    const eKeys = etcdKeys(ref);
    await etcd.put({ key: eKeys.leader, value: JSON.stringify({ member: 'm-0' }) });
    const epoch = Number((await etcd.range({ key: eKeys.leader })).kvs[0]!.create_revision);
    const store = new SnapshotStore({ redis: conn, etcd, streamKeys: streamKeys(ref), etcdKeys: eKeys, keep, log: silentLogger() });
    return { store, epoch, ref };
  }

  const chunkCount = async (ref: { namespace: string; name: string }): Promise<number> => (await redis.keys(`hs:{${ref.namespace}/${ref.name}}:snap:*`)).length;

  it('round-trips an empty, a small and a multi-chunk snapshot', async () => {
    const { store, epoch } = await fresh(5);
    for (const data of [Buffer.alloc(0), Buffer.from('hello'), randomBytes(3 * 1024 * 1024 + 17)]) {
      const { descriptor } = await store.put(100, epoch, data);
      expect(descriptor.chunks).toBe(Math.max(1, Math.ceil(data.length / SNAPSHOT_CHUNK_BYTES)));
      expect((await store.read(descriptor)).equals(data)).toBe(true);
    }
    expect((await store.latest())!.sizeBytes).toBe(3 * 1024 * 1024 + 17);
  });

  it('keeps the newest N and deletes the chunks of the dropped ones', async () => {
    const { store, epoch, ref } = await fresh(2);
    for (let seq = 10; seq <= 40; seq += 10) await store.put(seq, epoch, randomBytes(SNAPSHOT_CHUNK_BYTES + 1));
    const kept = await store.list();
    expect(kept.map((d) => d.seq)).toEqual([30, 40]);
    expect(await chunkCount(ref)).toBe(4); // two snapshots of two chunks each
  });

  it('a deposed writer cannot publish and leaves nothing behind', async () => {
    const { store, epoch, ref } = await fresh(2);
    await expect(store.put(5, epoch + 1000, Buffer.from('stale'))).rejects.toBeInstanceOf(NotLeaderError);
    expect(await store.latest()).toBeUndefined();
    expect(await chunkCount(ref)).toBe(0);
  });

  it('a missing or corrupted chunk makes read() fail naming the snapshot', async () => {
    const { store, epoch, ref } = await fresh(2);
    const { descriptor } = await store.put(7, epoch, randomBytes(SNAPSHOT_CHUNK_BYTES * 2));
    const sk = streamKeys(ref);
    await redis.set(sk.snapshotChunk(descriptor.id, 1), randomBytes(SNAPSHOT_CHUNK_BYTES));
    await expect(store.read(descriptor)).rejects.toThrow(SnapshotCorruptError);
    await redis.del(sk.snapshotChunk(descriptor.id, 0));
    await expect(store.read(descriptor)).rejects.toThrow(new RegExp(`snapshot ${descriptor.id}: chunk 0`));
  });
});

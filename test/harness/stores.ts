// Test harness: a real etcd and a real Redis-protocol server per test file,
// on free loopback ports, stopped after the file's tests even when they fail.
import { afterAll, beforeAll } from 'vitest';
import {
  removeWorkDir,
  startEtcd,
  startRedis,
  type LocalEtcd,
  type LocalRedis,
  type StartEtcdOptions,
  type StartRedisOptions,
} from '../../src/lib/localstores.ts';

export interface Stores {
  etcd: LocalEtcd;
  redis: LocalRedis;
}

/**
 * Call at the top of a describe/file: starts both stores before the tests and
 * stops them after; with options, etcd over TLS or Redis with a password. Returns a getter because values exist only after beforeAll.
 */
export function useStores(opts: { etcd?: () => StartEtcdOptions; redis?: () => StartRedisOptions } = {}): () => Stores {
  let stores: Stores | undefined;
  beforeAll(async () => {
    // Options are functions: they may name files a beforeAll made (certificates).
    const [etcd, redis] = await Promise.all([startEtcd(opts.etcd?.()), startRedis(opts.redis?.())]);
    stores = { etcd, redis };
  });
  afterAll(async () => {
    await Promise.all([stores?.etcd.stop(), stores?.redis.stop()]);
    // Keep the logs of a failed run for inspection; clean up after a green one.
    if (stores && !process.env.HOTSTANDBY_KEEP_TEST_DIRS) {
      removeWorkDir(stores.etcd);
      removeWorkDir(stores.redis);
    }
  });
  return () => {
    if (!stores) throw new Error('stores are not started yet: use them inside a test or beforeAll');
    return stores;
  };
}

// Test harness: a real etcd and a real Redis-protocol server per test file,
// on free loopback ports, stopped after the file's tests even when they fail.
// Suites that must hold on both stream servers run once per kind with
// describeEachStreamServer: redis-server always, Dragonfly when it is built.
import { afterAll, beforeAll, describe } from 'vitest';
import { DRAGONFLY_BUILD_HINT, builtDragonfly, dragonflyBinaryPath } from '../../src/lib/dragonfly.ts';
import {
  DragonflyNotBuiltError,
  STREAM_SERVER_ENV,
  parseStreamServerKind,
  removeWorkDir,
  startEtcd,
  startStreamServer,
  type LocalEtcd,
  type LocalStreamServer,
  type StartEtcdOptions,
  type StartStreamServerOptions,
  type StreamServerKind,
} from '../../src/lib/localstores.ts';

export interface Stores {
  etcd: LocalEtcd;
  /** The Redis-protocol stream server: Dragonfly or redis-server. */
  redis: LocalStreamServer;
}

/**
 * Call at the top of a describe/file: starts both stores before the tests and
 * stops them after; with options, etcd over TLS or a stream server with a password. Returns a
 * getter because values exist only after beforeAll. The stream server's kind defaults to
 * chooseStreamServer() (HOTSTANDBY_STREAM_SERVER, else Dragonfly when built).
 */
export function useStores(
  opts: { streamServer?: StreamServerKind; etcd?: () => StartEtcdOptions; redis?: () => StartStreamServerOptions } = {},
): () => Stores {
  let stores: Stores | undefined;
  beforeAll(async () => {
    // Options are functions: they may name files a beforeAll made (certificates).
    const [etcd, redis] = await Promise.allSettled([
      startEtcd(opts.etcd?.()),
      startStreamServer({ ...opts.redis?.(), ...(opts.streamServer ? { kind: opts.streamServer } : {}) }),
    ]);
    if (etcd.status === 'rejected' || redis.status === 'rejected') {
      await Promise.allSettled([etcd, redis].map((r) => (r.status === 'fulfilled' ? r.value.stop() : undefined)));
      throw etcd.status === 'rejected' ? etcd.reason : (redis as PromiseRejectedResult).reason;
    }
    stores = { etcd: etcd.value, redis: redis.value };
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

/**
 * The stream servers a parameterized suite runs on, each with the reason when it is skipped:
 * HOTSTANDBY_STREAM_SERVER runs only that one (and fails, not skips, when it is dragonfly and
 * Dragonfly is not built); unset, redis-server always and Dragonfly when its binary is cached.
 */
export function streamServerRuns(): Array<{ kind: StreamServerKind; skip?: string }> {
  const env = process.env[STREAM_SERVER_ENV];
  if (env) {
    const only = parseStreamServerKind(env, STREAM_SERVER_ENV);
    if (only === 'dragonfly' && !builtDragonfly()) throw new DragonflyNotBuiltError(`${STREAM_SERVER_ENV}=dragonfly`);
    return (['redis', 'dragonfly'] as const).map((kind) => (kind === only ? { kind } : { kind, skip: `${STREAM_SERVER_ENV}=${only}` }));
  }
  const dragonflySkip = builtDragonfly() ? undefined : `Dragonfly is not built (no ${dragonflyBinaryPath() ?? 'tools/dragonfly'}); ${DRAGONFLY_BUILD_HINT}`;
  return [{ kind: 'redis' }, dragonflySkip ? { kind: 'dragonfly', skip: dragonflySkip } : { kind: 'dragonfly' }];
}

const reported = new Set<string>();

/** describe(`${name} on <kind>`) once per stream server; a skipped kind prints why, once per file. */
export function describeEachStreamServer(name: string, body: (kind: StreamServerKind) => void): void {
  for (const { kind, skip } of streamServerRuns()) {
    if (skip && !reported.has(kind)) {
      reported.add(kind);
      process.stderr.write(`[stream servers] ${kind} suites skipped: ${skip}\n`);
    }
    describe.skipIf(skip !== undefined)(`${name} on ${kind}`, () => body(kind));
  }
}

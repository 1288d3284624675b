import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Etcd3 } from 'etcd3';
import { EtcdHttpClient } from '../../src/lib/etcd-http/client.ts';
import { useStores } from '../harness/stores.ts';
import { removeWorkDir, startEtcd, type LocalEtcd } from '../../src/lib/localstores.ts';
import { DeleteEvents, retentionBucketSeconds, type DeleteStreamItem, type DeleteEventInputError } from '../../src/agent/deletes.ts';
import { etcdKeys, type EtcdKeys } from '../../src/lib/keys.ts';
import { silentLogger } from '../../src/lib/log.ts';
import { freePort } from '../../src/lib/ports.ts';
import { waitFor, withTimeout } from '../../src/lib/time.ts';

type Delete = Extract<DeleteStreamItem, { type: 'delete' }>;

/** Reads a subscription item by item; every read has a deadline. */
class Reader {
  readonly controller = new AbortController();
  private readonly it: AsyncIterator<DeleteStreamItem>;
  readonly heartbeats: number[] = [];
  constructor(events: DeleteEvents, fromRevision?: number) {
    const iterable = events.subscribe({ signal: this.controller.signal, ...(fromRevision !== undefined ? { fromRevision } : {}) });
    this.it = iterable[Symbol.asyncIterator]();
  }

  async next(timeoutMs = 15_000): Promise<DeleteStreamItem | undefined> {
    const r = await withTimeout(this.it.next(), timeoutMs, 'the next delete-stream item');
    if (r.done) return undefined;
    if (r.value.type === 'heartbeat') this.heartbeats.push(r.value.revision);
    return r.value;
  }

  /** The next `n` delete events, skipping heartbeats; fails on anything else. */
  async deletes(n: number, timeoutMs = 30_000): Promise<Delete[]> {
    const out: Delete[] = [];
    const deadline = Date.now() + timeoutMs;
    while (out.length < n) {
      const item = await this.next(Math.max(1, deadline - Date.now()));
      if (!item) throw new Error(`stream ended after ${out.length} of ${n} events`);
      if (item.type === 'delete') out.push(item);
      else if (item.type !== 'heartbeat') throw new Error(`unexpected ${JSON.stringify(item)}`);
    }
    return out;
  }

  /** Waits for a heartbeat; returns its revision. Fails if a delete event arrives instead. */
  async heartbeat(timeoutMs = 10_000): Promise<number> {
    const item = await this.next(timeoutMs);
    if (item?.type !== 'heartbeat') throw new Error(`expected a heartbeat, got ${JSON.stringify(item)}`);
    return item.revision;
  }

  async close(): Promise<void> {
    this.controller.abort();
    if (this.it.return) await withTimeout(this.it.return(), 10_000, 'the subscription to end');
  }
}

const log = silentLogger();

describe('delete events against a real etcd', () => {
  const stores = useStores();
  let etcd: Etcd3;
  let http: EtcdHttpClient;
  let keys: EtcdKeys;
  let events: DeleteEvents;
  let n = 0;

  beforeAll(() => {
    etcd = new Etcd3({ hosts: stores().etcd.endpoint });
    http = new EtcdHttpClient({ endpoints: [stores().etcd.endpoint] });
  });
  afterAll(() => {
    etcd.close();
    http.close();
  });

  // Each test works in its own cluster so events never leak between tests.
  function fresh(opts: { heartbeatMs?: number; maxQueued?: number; retentionSeconds?: number } = {}): DeleteEvents {
    keys = etcdKeys({ namespace: 'ns', name: `deletes-${++n}` });
    events = new DeleteEvents({ etcd: http, keys, log, heartbeatMs: opts.heartbeatMs ?? 200, ...opts });
    return events;
  }

  it('replays from a revision in order with key, payload and time, then delivers live events', async () => {
    const ev = fresh();
    const published: number[] = [];
    for (let i = 0; i < 5; i++) published.push((await ev.publish(`obj-${i}`, i % 2 ? `p${i}` : undefined)).revision);
    expect([...published].sort((a, b) => a - b)).toEqual(published);
    const reader = new Reader(ev, published[0]);
    try {
      const replayed = await reader.deletes(5);
      expect(replayed.map((e) => e.revision)).toEqual(published);
      expect(replayed.map((e) => e.key)).toEqual(['obj-0', 'obj-1', 'obj-2', 'obj-3', 'obj-4']);
      expect(replayed.map((e) => e.payload)).toEqual(['', 'p1', '', 'p3', '']);
      for (const e of replayed) expect(Math.abs(Date.parse(e.time) - Date.now())).toBeLessThan(60_000);
      const live = await ev.publish('obj-live', 'x');
      const [got] = await reader.deletes(1);
      expect(got).toMatchObject({ type: 'delete', revision: live.revision, key: 'obj-live', payload: 'x' });
    } finally {
      await reader.close();
    }
  });

  it('from a middle revision delivers only the events at and after it', async () => {
    const ev = fresh();
    const revs: number[] = [];
    for (let i = 0; i < 6; i++) revs.push((await ev.publish(`m-${i}`)).revision);
    const reader = new Reader(ev, revs[3]);
    try {
      expect((await reader.deletes(3)).map((e) => e.revision)).toEqual(revs.slice(3));
      // ...and nothing else: the next item is a heartbeat at the last revision.
      expect(await reader.heartbeat()).toBe(revs[5]);
    } finally {
      await reader.close();
    }
  });

  it('each iteration of one subscribe() result is an independent subscription', async () => {
    const ev = fresh();
    const a = await ev.publish('i-1');
    const b = await ev.publish('i-2');
    const controller = new AbortController();
    const iterable = ev.subscribe({ fromRevision: a.revision, signal: controller.signal });
    const firstTwo = async (): Promise<number[]> => {
      const out: number[] = [];
      for await (const item of iterable) {
        if (item.type === 'delete') out.push(item.revision);
        if (out.length === 2) break;
      }
      return out;
    };
    try {
      expect(await withTimeout(Promise.all([firstTwo(), firstTwo()]), 15_000, 'two iterations')).toEqual([
        [a.revision, b.revision],
        [a.revision, b.revision],
      ]);
    } finally {
      controller.abort();
    }
  });

  it('without fromRevision delivers only events published after it started', async () => {
    const ev = fresh();
    await ev.publish('before');
    const reader = new Reader(ev);
    try {
      const start = await reader.heartbeat(); // the subscription knows its start
      const after = await ev.publish('after');
      expect(after.revision).toBeGreaterThan(start);
      const [got] = await reader.deletes(1);
      expect(got?.key).toBe('after');
    } finally {
      await reader.close();
    }
  });

  it('sends heartbeats when idle, carrying the revision everything up to which was delivered', async () => {
    const ev = fresh({ heartbeatMs: 100 });
    const first = await ev.publish('hb-1');
    const reader = new Reader(ev, first.revision);
    try {
      await reader.deletes(1);
      const hb1 = await reader.heartbeat(5000);
      const hb2 = await reader.heartbeat(5000);
      expect(hb1).toBe(first.revision);
      expect(hb2).toBe(first.revision);
    } finally {
      await reader.close();
    }
  });

  it('events from concurrent publishers on two clients arrive once each, in revision order', async () => {
    const ev = fresh();
    const otherClient = new EtcdHttpClient({ endpoints: [stores().etcd.endpoint] });
    const other = new DeleteEvents({ etcd: otherClient, keys, log });
    const reader = new Reader(ev);
    try {
      await reader.heartbeat();
      const results = await Promise.all(
        Array.from({ length: 40 }, (_, i) => (i % 2 ? ev : other).publish(`c-${i}`)),
      );
      const expected = results.map((r) => r.revision).sort((a, b) => a - b);
      expect(new Set(expected).size).toBe(40);
      const got = await reader.deletes(40);
      expect(got.map((e) => e.revision)).toEqual(expected);
      expect(await reader.heartbeat()).toBe(expected[39]);
    } finally {
      await reader.close();
      await other.close();
      otherClient.close();
    }
  });

  it('a slow reader gets every event once and in order while the watch pauses for it (bounded buffer)', async () => {
    const ev = fresh({ maxQueued: 4 });
    const revs: number[] = [];
    for (let i = 0; i < 30; i++) revs.push((await ev.publish(`slow-${i}`)).revision);
    const reader = new Reader(ev, revs[0]);
    try {
      const got: number[] = [];
      for (let i = 0; i < 30; i++) {
        got.push(...(await reader.deletes(1)).map((e) => e.revision));
        if (i % 7 === 0) await new Promise((r) => setTimeout(r, 150));
      }
      expect(got).toEqual(revs);
    } finally {
      await reader.close();
    }
  });

  it('reports compaction past the requested revision, then ends', async () => {
    const ev = fresh();
    const old = await ev.publish('old');
    await ev.publish('newer');
    const compactAt = (await etcd.put('/compaction-marker').value('x')).header.revision;
    await etcd.kv.compact({ revision: compactAt, physical: true });
    const reader = new Reader(ev, old.revision);
    try {
      let item = await reader.next();
      // Heartbeats may come first on a loaded machine; they must not claim anything past the start.
      for (let i = 0; i < 50 && item?.type === 'heartbeat'; i++) item = await reader.next();
      expect(item).toEqual({ type: 'compacted', compactRevision: Number(compactAt) });
      expect(reader.heartbeats.every((r) => r < old.revision)).toBe(true);
      expect(await reader.next()).toBeUndefined();
    } finally {
      await reader.close();
    }
  });

  it('aborting the signal ends the iteration, and close() ends subscriptions still reading', async () => {
    const ev = fresh({ heartbeatMs: 60_000 });
    const a = new Reader(ev);
    const pending = a.next(10_000);
    await new Promise((r) => setTimeout(r, 200));
    a.controller.abort();
    expect(await pending).toBeUndefined();

    const b = new Reader(ev);
    const pendingB = b.next(10_000);
    await new Promise((r) => setTimeout(r, 200));
    await withTimeout(ev.close(), 10_000, 'close()');
    expect(await pendingB).toBeUndefined();
    await expect(ev.publish('after-close')).rejects.toThrow(/closed/);
  });

  it('a subscription on an unreachable etcd waits quietly and ends promptly on abort or close()', async () => {
    const dead = new EtcdHttpClient({ endpoints: [`http://127.0.0.1:${await freePort()}`], callTimeoutMs: 500 });
    const ev = new DeleteEvents({ etcd: dead, keys: etcdKeys({ namespace: 'ns', name: 'unreachable' }), log, heartbeatMs: 100 });
    try {
      const a = new Reader(ev);
      const pending = a.next(10_000);
      await new Promise((r) => setTimeout(r, 1500));
      const started = Date.now();
      a.controller.abort();
      // No start revision is known, so no heartbeat may claim one; the iteration just ends.
      expect(await pending).toBeUndefined();
      expect(a.heartbeats).toEqual([]);
      const b = new Reader(ev, 10);
      expect(await b.heartbeat()).toBe(9); // with a start revision, heartbeats flow while etcd is away
      await withTimeout(ev.close(), 5000, 'close()');
      expect(await b.next()).toBeUndefined();
      expect(Date.now() - started).toBeLessThan(5000);
      const publisher = new DeleteEvents({ etcd: dead, keys: etcdKeys({ namespace: 'ns', name: 'unreachable' }), log, callTimeoutMs: 1000 });
      await expect(withTimeout(publisher.publish('k'), 10_000, 'publish')).rejects.toThrow(/ECONNREFUSED|timed out after 1000 ms/);
    } finally {
      dead.close();
    }
  });

  it('refuses bad input naming the field, and writes nothing', async () => {
    const ev = fresh();
    const errOf = async (fn: () => unknown): Promise<DeleteEventInputError> => {
      try {
        await fn();
      } catch (err) {
        return err as DeleteEventInputError;
      }
      throw new Error('expected an error');
    };
    expect((await errOf(() => ev.publish(''))).field).toBe('key');
    expect((await errOf(() => ev.publish('k'.repeat(1025)))).message).toMatch(/1-1024 characters, got 1025/);
    expect((await errOf(() => ev.publish('k', 'x'.repeat(1024 * 1024 + 1)))).field).toBe('payload');
    expect((await errOf(() => ev.publish('k', 7 as unknown as string))).message).toMatch(/payload must be a string/);
    expect((await errOf(() => ev.subscribe({ fromRevision: 0, signal: AbortSignal.timeout(1000) }))).field).toBe('fromRevision');
    expect((await errOf(() => ev.subscribe({ fromRevision: 1.5, signal: AbortSignal.timeout(1000) }))).message).toMatch(/integer >= 1/);
    expect((await errOf(() => new DeleteEvents({ etcd: http, keys, log, retentionSeconds: 0 }))).field).toBe('retentionSeconds');
    expect((await errOf(() => new DeleteEvents({ etcd: http, keys, log, heartbeatMs: -1 }))).field).toBe('heartbeatMs');
    expect(await etcd.getAll().prefix(keys.deletesPrefix).keys()).toEqual([]);
  });
});

describe('delete event retention', () => {
  const stores = useStores();
  let etcd: Etcd3;
  let http: EtcdHttpClient;
  beforeAll(() => {
    etcd = new Etcd3({ hosts: stores().etcd.endpoint });
    http = new EtcdHttpClient({ endpoints: [stores().etcd.endpoint] });
  });
  afterAll(() => {
    etcd.close();
    http.close();
  });

  it('buckets are 1/24 of the retention, between 1 s and 1 h', () => {
    expect(retentionBucketSeconds(24 * 3600)).toBe(3600);
    expect(retentionBucketSeconds(7 * 24 * 3600)).toBe(3600);
    expect(retentionBucketSeconds(240)).toBe(10);
    expect(retentionBucketSeconds(2)).toBe(1);
  });

  it('events of one bucket share one lease whose TTL is retention + bucket', async () => {
    const keys = etcdKeys({ namespace: 'ns', name: 'retention-lease' });
    const ev = new DeleteEvents({ etcd: http, keys, log, retentionSeconds: 24 * 3600 });
    for (let i = 0; i < 5; i++) await ev.publish(`r-${i}`);
    const res = await etcd.getAll().prefix(keys.deletesPrefix).exec();
    const leases = new Set(res.kvs.map((kv) => kv.lease));
    expect(res.kvs).toHaveLength(5);
    // Five publishes within milliseconds share a bucket, unless they straddle an hour boundary.
    expect(leases.size).toBeLessThanOrEqual(2);
    expect([...leases].every((l) => l !== '0')).toBe(true);
    const info = await ttlOf(etcd, [...leases][0]!);
    expect(info.grantedTTL).toBe(24 * 3600 + 3600);
    await ev.close();
  });

  it('a publish whose bucket lease is gone (revoked, or expired under a paused process) takes a fresh one', async () => {
    const keys = etcdKeys({ namespace: 'ns', name: 'retention-revoked' });
    const ev = new DeleteEvents({ etcd: http, keys, log, retentionSeconds: 24 * 3600 });
    await ev.publish('first');
    const [kv] = (await etcd.getAll().prefix(keys.deletesPrefix).exec()).kvs;
    const { LeaseClient } = await import('etcd3');
    const leases = new LeaseClient((etcd as unknown as { pool: ConstructorParameters<typeof LeaseClient>[0] }).pool);
    await leases.leaseRevoke({ ID: kv!.lease });
    const second = await ev.publish('second');
    const after = await etcd.getAll().prefix(keys.deletesPrefix).exec();
    // The revoke removed the first event with its lease; the second has a new, live lease.
    expect(after.kvs.map((k) => [JSON.parse(k.value.toString()).key, Number(k.mod_revision)])).toEqual([['second', second.revision]]);
    expect(after.kvs[0]!.lease).not.toBe(kv!.lease);
    expect((await ttlOf(etcd, after.kvs[0]!.lease)).ttl).toBeGreaterThan(24 * 3600);
    await ev.close();
  });

  it('etcd removes events after the retention on its own, and subscribers are not told', async () => {
    const keys = etcdKeys({ namespace: 'ns', name: 'retention-expiry' });
    const ev = new DeleteEvents({ etcd: http, keys, log, retentionSeconds: 2, heartbeatMs: 200 });
    const reader = new Reader(ev);
    try {
      await reader.heartbeat();
      const published = await ev.publish('short-lived');
      expect((await reader.deletes(1))[0]?.revision).toBe(published.revision);
      expect(await etcd.getAll().prefix(keys.deletesPrefix).keys()).toHaveLength(1);
      // Kept at least 2 s and at most 3 s (+ etcd's expiry sweep); generous for a loaded machine.
      await waitFor(async () => (await etcd.getAll().prefix(keys.deletesPrefix).keys()).length === 0, {
        timeoutMs: 20_000,
        intervalMs: 200,
        what: 'the retention lease to remove the event',
      });
      // The removal is not a delete event: the subscriber only sees heartbeats.
      for (let i = 0; i < 3; i++) await reader.heartbeat();
      // A publish after expiry takes a fresh lease and works.
      const again = await ev.publish('after-expiry');
      expect((await reader.deletes(1))[0]?.revision).toBe(again.revision);
    } finally {
      await reader.close();
      await ev.close();
    }
  });
});

describe('delete events across outages and restarts', () => {
  let server: LocalEtcd | undefined;
  afterAll(async () => {
    await server?.stop();
    if (server && !process.env.HOTSTANDBY_KEEP_TEST_DIRS) removeWorkDir(server);
  });

  it('a live subscription survives etcd being killed and restarted: no loss, no repeats', async () => {
    server = await startEtcd({ name: 'etcd-outage' });
    const keys = etcdKeys({ namespace: 'ns', name: 'outage' });
    const subClient = new EtcdHttpClient({ endpoints: [server.endpoint] });
    const pubClient = new EtcdHttpClient({ endpoints: [server.endpoint] });
    const subscriber = new DeleteEvents({ etcd: subClient, keys, log, heartbeatMs: 200 });
    const publisher = new DeleteEvents({ etcd: pubClient, keys, log });
    const reader = new Reader(subscriber);
    try {
      await reader.heartbeat();
      const expected: number[] = [];
      for (let i = 0; i < 5; i++) expected.push((await publisher.publish(`before-${i}`)).revision);
      expect((await reader.deletes(5)).map((e) => e.revision)).toEqual(expected);

      server.process.killNow('SIGKILL');
      await withTimeout(server.process.exited, 10_000, 'etcd to die');
      // While etcd is down the subscription stays open and keeps beating.
      await reader.heartbeat(5000);
      server = await startEtcd({
        name: 'etcd-outage',
        workDir: server.workDir,
        reuse: { clientPort: server.clientPort, peerPort: server.peerPort, dataDir: server.dataDir },
      });

      // Published as soon as etcd is back, likely before the subscriber's watch has resumed.
      for (let i = 0; i < 10; i++) {
        const r = await waitFor(() => publisher.publish(`after-${i}`), { timeoutMs: 30_000, intervalMs: 200, what: 'a publish after the restart' });
        expected.push(r.revision);
      }
      const resumed = await reader.deletes(10, 45_000);
      expect(resumed.map((e) => e.key)).toEqual(Array.from({ length: 10 }, (_, i) => `after-${i}`));
      expect(resumed.map((e) => e.revision)).toEqual(expected.slice(5));
      // No repeats trail behind: the next item is a heartbeat at the last revision.
      expect(await reader.heartbeat()).toBe(expected[expected.length - 1]);
    } finally {
      await reader.close();
      await subscriber.close();
      await publisher.close();
      subClient.close();
      pubClient.close();
    }
  });

  it('a long replay cut by an etcd restart continues where it stopped: every event once, in order', async () => {
    server ??= await startEtcd({ name: 'etcd-outage' });
    const keys = etcdKeys({ namespace: 'ns', name: 'replay-outage' });
    const pubClient = new EtcdHttpClient({ endpoints: [server.endpoint] });
    const publisher = new DeleteEvents({ etcd: pubClient, keys, log });
    const published: number[] = [];
    for (let batch = 0; batch < 40; batch++) {
      const res = await Promise.all(Array.from({ length: 50 }, (_, i) => publisher.publish(`r-${batch}-${i}`)));
      published.push(...res.map((r) => r.revision));
    }
    published.sort((a, b) => a - b);
    await publisher.close();
    pubClient.close();

    const subClient = new EtcdHttpClient({ endpoints: [server.endpoint] });
    // A small buffer: the replay proceeds in many short watches, as a slow reader would cause.
    const subscriber = new DeleteEvents({ etcd: subClient, keys, log, heartbeatMs: 200, maxQueued: 100 });
    const reader = new Reader(subscriber, published[0]);
    try {
      const got = (await reader.deletes(700)).map((e) => e.revision);
      server.process.killNow('SIGKILL');
      await withTimeout(server.process.exited, 10_000, 'etcd to die');
      // Drain what was buffered before the kill, then the rest comes after the restart.
      const restarting = startEtcd({
        name: 'etcd-outage',
        workDir: server.workDir,
        reuse: { clientPort: server.clientPort, peerPort: server.peerPort, dataDir: server.dataDir },
      });
      got.push(...(await reader.deletes(50)).map((e) => e.revision));
      server = await restarting;
      got.push(...(await reader.deletes(published.length - got.length, 60_000)).map((e) => e.revision));
      expect(got).toEqual(published);
      expect(await reader.heartbeat()).toBe(published[published.length - 1]);
    } finally {
      await reader.close();
      await subscriber.close();
      subClient.close();
    }
  });

  it('a new subscriber (a restarted agent) resumes from the last revision + 1: no loss, no repeats', async () => {
    server ??= await startEtcd({ name: 'etcd-outage' });
    const keys = etcdKeys({ namespace: 'ns', name: 'agent-restart' });
    const pubClient = new EtcdHttpClient({ endpoints: [server.endpoint] });
    const publisher = new DeleteEvents({ etcd: pubClient, keys, log });
    const published: number[] = [];
    for (let i = 0; i < 4; i++) published.push((await publisher.publish(`a-${i}`)).revision);

    // First life: read from the first event, remember the last revision seen.
    let client = new EtcdHttpClient({ endpoints: [server.endpoint] });
    let sub = new DeleteEvents({ etcd: client, keys, log, heartbeatMs: 200 });
    let reader = new Reader(sub, published[0]);
    const seen: number[] = [];
    try {
      seen.push(...(await reader.deletes(4)).map((e) => e.revision));
    } finally {
      await reader.close();
      await sub.close();
      client.close();
    }
    const stored = seen[seen.length - 1]!;

    // While it is away, more events arrive (and other keys move the revision).
    for (let i = 0; i < 6; i++) {
      published.push((await publisher.publish(`b-${i}`)).revision);
      await pubClient.put({ key: `/unrelated/${i}`, value: 'x' });
    }

    // Second life: a new client and instance, from the stored revision + 1.
    client = new EtcdHttpClient({ endpoints: [server.endpoint] });
    sub = new DeleteEvents({ etcd: client, keys, log, heartbeatMs: 200 });
    reader = new Reader(sub, stored + 1);
    try {
      seen.push(...(await reader.deletes(6)).map((e) => e.revision));
      const live = await publisher.publish('c-live');
      published.push(live.revision);
      seen.push(...(await reader.deletes(1)).map((e) => e.revision));
      expect(seen).toEqual(published);
      expect(await reader.heartbeat()).toBe(live.revision);
    } finally {
      await reader.close();
      await sub.close();
      await publisher.close();
      client.close();
      pubClient.close();
    }
  });
});

/** etcd's view of a lease (granted TTL), read through the client's raw lease API. */
async function ttlOf(etcd: Etcd3, leaseId: string): Promise<{ grantedTTL: number; ttl: number }> {
  const { LeaseClient } = await import('etcd3');
  const client = new LeaseClient((etcd as unknown as { pool: ConstructorParameters<typeof LeaseClient>[0] }).pool);
  const res = await client.leaseTimeToLive({ ID: leaseId });
  return { grantedTTL: Number(res.grantedTTL), ttl: Number(res.TTL) };
}

// The operation log on a real Dragonfly and redis-server: fenced, consecutive, checksummed
// appends; raiseEpoch; and a tailer that refuses every real fault (gap,
// duplicate, crc, trimmed, reset) with a resync instead of handing it on.
import { Redis } from 'ioredis';
import { RespClient } from '../../src/lib/resp/client.ts';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { APPEND_LUA, LUA_ERR_BAD_ARGS, LuaScript, replyErrorCode } from '../../src/agent/oplog-scripts.ts';
import { APPEND_ENTRIES_PER_COMMAND, OpLog, SERVER_MAX_ARGS } from '../../src/agent/oplog.ts';
import { OpLogTailer, type TailEvent } from '../../src/agent/tailer.ts';
import { FencedError, entryChecksumInput } from '../../src/agent/types.ts';
import { crc32c } from '../../src/lib/crc32c.ts';
import { streamKeys, type StreamKeys } from '../../src/lib/keys.ts';
import { silentLogger } from '../../src/lib/log.ts';
import { describeEachStreamServer, useStores } from '../harness/stores.ts';

const log = silentLogger();
const ops = (n: number, tag = 'v'): Array<{ op: string; key: string; payload: string }> =>
  Array.from({ length: n }, (_, i) => ({ op: 'put', key: `k${i}`, payload: `${tag}${i}` }));

describeEachStreamServer('OpLog and OpLogTailer', (streamServer) => {
  const stores = useStores({ streamServer });
  /** For the test's own reads and writes; `conn` is the agent's client, under test. */
  let redis: Redis;
  let conn: RespClient;
  let keys: StreamKeys;
  let oplog: OpLog;
  let clusterNo = 0;
  const tailers: OpLogTailer[] = [];

  beforeAll(() => {
    redis = new Redis(stores().redis.url);
    conn = RespClient.fromUrl(stores().redis.url, { commandTimeoutMs: 30_000 });
  });
  afterAll(() => {
    redis.disconnect();
    conn.disconnect();
  });

  const fresh = async (epoch = 10): Promise<void> => {
    keys = streamKeys({ namespace: 'test', name: `c${++clusterNo}` });
    oplog = new OpLog({ redis: conn, keys, maxLength: 100_000, log });
    await oplog.raiseEpoch(epoch, 0);
  };
  const tailer = (fromSeq: number): OpLogTailer => {
    const t = new OpLogTailer({ redis: conn, keys, fromSeq, log, blockMs: 100 });
    tailers.push(t);
    return t;
  };
  afterEach(async () => {
    await Promise.all(tailers.splice(0).map((t) => t.close()));
  });
  const next = (t: OpLogTailer): Promise<TailEvent> => t.next(AbortSignal.timeout(5000));

  it('assigns consecutive sequence numbers across concurrent batches, each entry with its crc32c', async () => {
    await fresh();
    const results = await Promise.all(Array.from({ length: 50 }, (_, i) => oplog.append(10, ops(1 + (i % 7)), `b${i}`)));
    const seqs = results.flatMap((r) => Array.from({ length: r.lastSeq - r.firstSeq + 1 }, (_, j) => r.firstSeq + j)).sort((a, b) => a - b);
    expect(seqs[0]).toBe(1);
    expect(seqs.every((s, i) => s === i + 1)).toBe(true);
    expect(await oplog.headSeq()).toBe(seqs.length);
    const [id, fields] = ((await redis.xrange(keys.log, '-', '+', 'COUNT', 1)) as Array<[string, string[]]>)[0]!;
    expect(id).toBe('1-0');
    const entry = { op: fields[3]!, key: fields[5]!, payload: fields[7]! };
    expect(Number(fields[9])).toBe(crc32c(entryChecksumInput(entry)));
  });

  it('a stale epoch appends nothing and gets FencedError', async () => {
    await fresh(10);
    await oplog.append(10, ops(3), 'a');
    await oplog.raiseEpoch(20, 3);
    const err = await oplog.append(10, ops(5), 'stale').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FencedError);
    expect((err as FencedError).currentEpoch).toBe(20);
    expect(await oplog.headSeq()).toBe(3);
    expect(await oplog.length()).toBe(3);
    expect(await oplog.findBatch('stale')).toBeUndefined();
    expect(await oplog.findBatch('a')).toEqual({ firstSeq: 1, lastSeq: 3 });
  });

  it('a server that lost its epoch refuses every append until a leader raises one', async () => {
    await fresh(10);
    await redis.del(keys.epoch);
    const err = await oplog.append(10, ops(1), 'x').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FencedError);
    expect((err as Error).message).toMatch(/holds no epoch/);
  });

  it('a server back from an older copy (epoch kept, head behind) refuses the leader until a new epoch is raised above what was applied', async () => {
    await fresh(10);
    await oplog.append(10, ops(5), 'a');
    // What a restart from a snapshot taken after seq 2 leaves: the epoch as it
    // was, the head and the stream back at 2.
    await redis.set(keys.head, '2');
    await redis.xtrim(keys.log, 'MAXLEN', 2);
    const err = await oplog.append(10, ops(1), 'again').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FencedError);
    expect((err as FencedError).currentEpoch).toBe(0);
    expect((err as Error).message).toMatch(/older copy/);
    // Nothing appended: seq 3 is not handed out a second time.
    expect(await oplog.headSeq()).toBe(2);
    expect(await oplog.length()).toBe(2);
    // The next leader had applied 5: its epoch starts above it.
    const next = new OpLog({ redis: conn, keys, maxLength: 100_000, log });
    expect(await next.raiseEpoch(11, 5)).toEqual({ epoch: 11, headSeq: 5 });
    expect(await next.append(11, ops(1), 'b')).toEqual({ firstSeq: 6, lastSeq: 6 });
  });

  it('raiseEpoch never lowers the epoch, is idempotent, and never reuses a sequence', async () => {
    await fresh(10);
    await oplog.append(10, ops(4), 'a');
    await expect(oplog.raiseEpoch(5, 0)).rejects.toBeInstanceOf(FencedError);
    expect(await oplog.currentEpoch()).toBe(10);
    expect(await oplog.raiseEpoch(12, 0)).toEqual({ epoch: 12, headSeq: 4 });
    expect(await oplog.raiseEpoch(12, 0)).toEqual({ epoch: 12, headSeq: 4 });
    // The server loses everything; the new leader had applied 4, so 5 comes next.
    await redis.del(keys.log, keys.head, keys.epoch, keys.epochStarts);
    expect(await oplog.raiseEpoch(13, 4)).toEqual({ epoch: 13, headSeq: 4 });
    expect(await oplog.append(13, ops(1), 'b')).toEqual({ firstSeq: 5, lastSeq: 5 });
  });

  it('trims to MAXLEN and before a sequence', async () => {
    keys = streamKeys({ namespace: 'test', name: `c${++clusterNo}` });
    oplog = new OpLog({ redis: conn, keys, maxLength: 1000, log });
    await oplog.raiseEpoch(1, 0);
    for (let i = 0; i < 10; i++) await oplog.append(1, ops(500), `t${i}`);
    expect(await oplog.length()).toBeLessThan(2000);
    expect(await oplog.headSeq()).toBe(5000);
    await oplog.trimBefore(4900);
    expect(await oplog.firstSeq()).toBe(4900);
  });

  describe('a batch larger than one command may carry (Dragonfly: 65,536 arguments)', () => {
    // 20,000 entries would be 80,009 arguments in one call.
    const big = 20_000;
    const argCounts: number[] = [];
    let monitor: Redis | undefined;
    beforeAll(async () => {
      monitor = await redis.monitor();
      monitor.on('monitor', (_time: string, args: string[]) => argCounts.push(args.length));
    });
    afterAll(() => monitor?.disconnect());

    it('is split into commands well under the limit, yet lands consecutive and whole beside concurrent appends', async () => {
      await fresh(10);
      argCounts.length = 0;
      const [small1, large, small2] = await Promise.all([oplog.append(10, ops(3, 's'), 's1'), oplog.append(10, ops(big, 'L'), 'L'), oplog.append(10, ops(5, 't'), 's2')]);
      expect(large.lastSeq - large.firstSeq + 1).toBe(big);
      // Nothing else landed inside the large batch's range.
      for (const r of [small1, small2]) expect(r.lastSeq < large.firstSeq || r.firstSeq > large.lastSeq).toBe(true);
      expect(await oplog.headSeq()).toBe(big + 8);
      expect(await oplog.findBatch('L')).toEqual(large);
      const inside = (await redis.xrange(keys.log, `${large.firstSeq}-0`, `${large.lastSeq}-0`)) as Array<[string, string[]]>;
      expect(inside.map(([id]) => id)).toEqual(Array.from({ length: big }, (_, i) => `${large.firstSeq + i}-0`));
      expect(inside.every(([, f], i) => f[5] === `k${i}` && f[7] === `L${i}` && Number(f[9]) === crc32c(entryChecksumInput({ op: 'put', key: `k${i}`, payload: `L${i}` })))).toBe(true);
      // MONITOR saw the commands: several, none near the limit, none for the whole batch.
      await new Promise((r) => setTimeout(r, 200));
      expect(argCounts.length).toBeGreaterThan(big / APPEND_ENTRIES_PER_COMMAND);
      expect(Math.max(...argCounts)).toBeLessThan(SERVER_MAX_ARGS / 4);
      expect(await redis.keys(`hs:${keys.tag}:stage:*`)).toEqual([]);
    });

    it('is fenced as a whole: a stale epoch appends none of it and leaves no stage behind', async () => {
      await fresh(10);
      await oplog.append(10, ops(2), 'a');
      await oplog.raiseEpoch(11, 2);
      const err = await oplog.append(10, ops(big), 'stale').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(FencedError);
      expect((err as FencedError).currentEpoch).toBe(11);
      expect(await oplog.headSeq()).toBe(2);
      expect(await oplog.length()).toBe(2);
      expect(await oplog.findBatch('stale')).toBeUndefined();
      expect(await redis.keys(`hs:${keys.tag}:stage:*`)).toEqual([]);
      expect(await oplog.append(11, ops(big), 'b')).toEqual({ firstSeq: 3, lastSeq: big + 2 });
    });
  });

  it('a script given the wrong shape answers with an explicit error code and writes nothing', async () => {
    await fresh(10);
    const script = new LuaScript(APPEND_LUA);
    // Says 2 entries, carries 1.
    const err = await script.run(conn, [keys.epoch, keys.head, keys.log, keys.batch('x')], [10, 1000, 1000, 2, 0, 'put', 'k', 'p', 1]).catch((e: unknown) => e);
    expect(replyErrorCode(err)).toBe(LUA_ERR_BAD_ARGS);
    expect(await oplog.headSeq()).toBe(0);
    expect(await oplog.length()).toBe(0);
  });

  it('the tailer hands on entries in order from a sequence, then reports idle with the head', async () => {
    await fresh(10);
    await oplog.append(10, ops(10), 'a');
    const t = tailer(4);
    const ev = await next(t);
    expect(ev.type).toBe('entries');
    expect(ev.type === 'entries' && ev.entries.map((e) => e.seq)).toEqual([4, 5, 6, 7, 8, 9, 10]);
    expect(await next(t)).toEqual({ type: 'idle', headSeq: 10, exact: true });
    const pending = next(t);
    await oplog.append(10, ops(2), 'b');
    const later = await pending;
    expect(later.type === 'entries' && later.entries.map((e) => e.seq)).toEqual([11, 12]);
  });

  it('abort ends a blocked read at once', async () => {
    await fresh(10);
    const t = new OpLogTailer({ redis: conn, keys, fromSeq: 1, log, blockMs: 10_000 });
    tailers.push(t);
    const abort = new AbortController();
    const started = Date.now();
    const read = t.next(abort.signal).catch((e: unknown) => e);
    setTimeout(() => abort.abort(), 100);
    expect(await read).toBeDefined();
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('follows a normal failover (old epoch, raise at the real head, new epoch) without a resync', async () => {
    await fresh(10);
    await oplog.append(10, ops(3), 'a');
    const t = tailer(1);
    expect((await next(t)).type).toBe('entries');
    await oplog.raiseEpoch(11, 3);
    await oplog.append(11, ops(2), 'b');
    const ev = await next(t);
    expect(ev.type === 'entries' && ev.entries.map((e) => [e.seq, e.epoch])).toEqual([
      [4, 11],
      [5, 11],
    ]);
  });

  describe('refuses real faults with a resync (the good entries before a fault go first)', () => {
    it('crc: a tampered payload', async () => {
      await fresh(10);
      await oplog.append(10, ops(3), 'a');
      // A stream keeps its top ID after XDEL, so rebuild it with entry 2's payload changed.
      const all = (await redis.xrange(keys.log, '-', '+')) as Array<[string, string[]]>;
      await redis.del(keys.log);
      for (const [id, f] of all) {
        const fields = [...f];
        if (id === '2-0') fields[7] = 'tampered';
        await redis.xadd(keys.log, id, ...fields);
      }
      const t = tailer(1);
      const good = await next(t);
      expect(good.type === 'entries' && good.entries.map((e) => e.seq)).toEqual([1]);
      expect(await next(t)).toMatchObject({ type: 'resync', reason: 'crc' });
    });

    it('gap: an entry deleted from the middle', async () => {
      await fresh(10);
      await oplog.append(10, ops(5), 'a');
      await redis.xdel(keys.log, '3-0');
      const t = tailer(1);
      const good = await next(t);
      expect(good.type === 'entries' && good.entries.map((e) => e.seq)).toEqual([1, 2]);
      expect(await next(t)).toMatchObject({ type: 'resync', reason: 'gap' });
    });

    it('trimmed: the entries after the reader were trimmed away', async () => {
      await fresh(10);
      await oplog.append(10, ops(20), 'a');
      await oplog.trimBefore(11);
      expect(await next(tailer(5))).toMatchObject({ type: 'resync', reason: 'trimmed' });
    });

    it('duplicate: an entry not written by the append script', async () => {
      await fresh(10);
      await oplog.append(10, ops(2), 'a');
      await redis.xadd(keys.log, '2-1', 'e', '10', 'o', 'put', 'k', 'x', 'p', 'y', 'c', String(crc32c('put\nx\ny')));
      const t = tailer(1);
      const good = await next(t);
      expect(good.type === 'entries' && good.entries.map((e) => e.seq)).toEqual([1, 2]);
      expect(await next(t)).toMatchObject({ type: 'resync', reason: 'duplicate' });
    });

    it('reset: the server lost its data and a new leader rebuilt a different history', async () => {
      await fresh(10);
      await oplog.append(10, ops(10), 'a');
      const t = tailer(1);
      expect((await next(t)).type).toBe('entries'); // read 1..10
      await redis.del(keys.log, keys.head, keys.epoch, keys.epochStarts);
      await oplog.raiseEpoch(20, 6); // the new leader had applied only 6
      await oplog.append(20, ops(8, 'new'), 'b'); // 7..14, a different history from 7 on
      const ev = await next(t);
      expect(ev).toMatchObject({ type: 'resync', reason: 'reset' });
    });

    it('a server back empty (no epoch at all) is waited out, not a reset: a new leader at our position is followed on', async () => {
      await fresh(10);
      await oplog.append(10, ops(10), 'a');
      const t = tailer(1);
      expect((await next(t)).type).toBe('entries'); // read 1..10
      await redis.flushall();
      // not a resync: our state may be the only copy; and not a head reading (the agent keeps reading it itself)
      expect(await next(t)).toMatchObject({ type: 'idle', exact: false });
      expect(await next(t)).toMatchObject({ type: 'idle', exact: false });
      await oplog.raiseEpoch(20, 10); // the new leader held 1..10 too
      await oplog.append(20, ops(2, 'new'), 'b'); // 11..12
      const ev = await next(t);
      expect(ev.type === 'entries' && ev.entries.map((e) => [e.seq, e.epoch])).toEqual([
        [11, 20],
        [12, 20],
      ]);
    });

    it('...and a new leader behind our position is a reset once it raised its epoch', async () => {
      await fresh(10);
      await oplog.append(10, ops(10), 'a');
      const t = tailer(1);
      expect((await next(t)).type).toBe('entries');
      await redis.flushall();
      expect(await next(t)).toMatchObject({ type: 'idle' });
      await oplog.raiseEpoch(20, 6);
      expect(await next(t)).toMatchObject({ type: 'resync', reason: 'reset' });
    });

    it('reset: the head fell below what the reader already handed on', async () => {
      await fresh(10);
      await oplog.append(10, ops(10), 'a');
      const t = tailer(1);
      expect((await next(t)).type).toBe('entries');
      await redis.del(keys.log, keys.head);
      expect(await next(t)).toMatchObject({ type: 'resync', reason: 'reset' });
    });
  });
});

// What the operation log needs from its stream server, proved on Dragonfly (the
// production server, when built) and on redis-server: the append script is atomic
// and fenced under concurrent writers on many connections; XREAD BLOCK wakes on
// entries a script added; MINID and MAXLEN ~ trimming; a restart from --dir and
// --dbfilename keeps the stream and its IDs; a replica holds the same IDs.
import { RespClient } from '../../src/lib/resp/client.ts';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { OpLog, seqOfId } from '../../src/agent/oplog.ts';
import { OpLogTailer } from '../../src/agent/tailer.ts';
import { FencedError } from '../../src/agent/types.ts';
import { streamKeys, type StreamKeys } from '../../src/lib/keys.ts';
import { removeWorkDir, startStreamServer, type LocalStreamServer } from '../../src/lib/localstores.ts';
import { silentLogger } from '../../src/lib/log.ts';
import { waitFor } from '../../src/lib/time.ts';
import { describeEachStreamServer } from '../harness/stores.ts';

type Entry = [string, string[]];
const log = silentLogger();
let n = 0;
const freshKeys = (): StreamKeys => streamKeys({ namespace: 'proof', name: `c${++n}` });
const ops = (count: number, tag: string): Array<{ op: string; key: string; payload: string }> =>
  Array.from({ length: count }, (_, i) => ({ op: 'put', key: `k${i}`, payload: `${tag}:${i}` }));
const field = (e: Entry, name: string): string => e[1][e[1].indexOf(name) + 1]!;

describeEachStreamServer('what the oplog relies on', (kind) => {
  let server: LocalStreamServer;
  let redis: RespClient;
  const extra: Array<{ server: LocalStreamServer; client?: RespClient }> = [];

  beforeAll(async () => {
    server = await startStreamServer({ kind });
    redis = RespClient.fromUrl(server.url);
  });
  afterEach(async () => {
    for (const x of extra.splice(0)) {
      x.client?.disconnect();
      await x.server.stop();
      removeWorkDir(x.server);
    }
  });
  afterAll(async () => {
    redis?.disconnect();
    await server?.stop();
    if (server && !process.env.HOTSTANDBY_KEEP_TEST_DIRS) removeWorkDir(server);
  });

  it('the append script is fenced: a stale epoch appends nothing, the new epoch continues the sequence', async () => {
    const keys = freshKeys();
    const old = new OpLog({ redis, keys, maxLength: 10_000, log });
    await old.raiseEpoch(1, 0);
    expect(await old.append(1, ops(5, 'e1'), 'b1')).toEqual({ firstSeq: 1, lastSeq: 5 });
    const other = RespClient.fromUrl(server.url);
    try {
      await new OpLog({ redis: other, keys, maxLength: 10_000, log }).raiseEpoch(2, 5);
      await expect(old.append(1, ops(3, 'stale'), 'b2')).rejects.toBeInstanceOf(FencedError);
      expect(await redis.xlen(keys.log)).toBe(5);
      expect(await redis.get(keys.head)).toBe('5');
      expect(await new OpLog({ redis: other, keys, maxLength: 10_000, log }).append(2, ops(2, 'e2'), 'b3')).toEqual({ firstSeq: 6, lastSeq: 7 });
    } finally {
      other.disconnect();
    }
  });

  it('the append script is atomic: 40 concurrent batches on 8 connections land whole, in consecutive sequences', async () => {
    const keys = freshKeys();
    const clients = Array.from({ length: 8 }, () => RespClient.fromUrl(server.url));
    try {
      await new OpLog({ redis, keys, maxLength: 100_000, log }).raiseEpoch(1, 0);
      const results = await Promise.all(
        Array.from({ length: 40 }, (_, b) =>
          new OpLog({ redis: clients[b % clients.length]!, keys, maxLength: 100_000, log }).append(1, ops(25, `batch${b}`), `a${b}`),
        ),
      );
      const entries = (await redis.xrange(keys.log, '-', '+')) as Entry[];
      expect(entries.map((e) => e[0])).toEqual(Array.from({ length: 1000 }, (_, i) => `${i + 1}-0`));
      for (const [b, r] of results.entries()) {
        expect(r.lastSeq - r.firstSeq).toBe(24);
        // The batch's entries are exactly the run of IDs it was given, in order: nothing interleaved.
        const run = entries.slice(r.firstSeq - 1, r.lastSeq);
        expect(run.map((e) => field(e, 'p'))).toEqual(ops(25, `batch${b}`).map((o) => o.payload));
      }
    } finally {
      for (const c of clients) c.disconnect();
    }
  });

  it('XREAD BLOCK wakes when a script adds entries: the tailer, blocked, gets them at once', async () => {
    const keys = freshKeys();
    const oplog = new OpLog({ redis, keys, maxLength: 10_000, log });
    await oplog.raiseEpoch(1, 0);
    await oplog.append(1, ops(1, 'first'), 'x1');
    // Read as the standbys read: the tailer's own connection, blocked far longer than the test waits.
    const tailer = new OpLogTailer({ redis, keys, fromSeq: 2, log, blockMs: 20_000 });
    try {
      const blocked = tailer.next(new AbortController().signal);
      // Append only once the reader is parked, so the wake-up is what is tested.
      await waitFor(async () => /blocked_clients:[1-9]/.test(String(await redis.call('INFO', 'clients'))), { timeoutMs: 5000, what: 'the XREAD to block' });
      await oplog.append(1, ops(3, 'woken'), 'x2');
      // A read that timed out, or missed what woke it, would be an idle event instead.
      const got = await blocked;
      expect(got.type === 'entries' ? got.entries.map((e) => e.seq) : got).toEqual([2, 3, 4]);
    } finally {
      await tailer.close();
    }
  });

  it('MINID trims exactly below a sequence; MAXLEN ~ keeps at least the bound and always the newest entries', async () => {
    const keys = freshKeys();
    const oplog = new OpLog({ redis, keys, maxLength: 100_000, log });
    await oplog.raiseEpoch(1, 0);
    for (let b = 0; b < 10; b++) await oplog.append(1, ops(100, `m${b}`), `m${b}`);
    expect(await oplog.trimBefore(401)).toBe(400);
    expect(await oplog.firstSeq()).toBe(401);
    expect(await oplog.length()).toBe(600);

    const bounded = freshKeys();
    const small = new OpLog({ redis, keys: bounded, maxLength: 100, log });
    await small.raiseEpoch(1, 0);
    for (let b = 0; b < 50; b++) await small.append(1, ops(20, `s${b}`), `s${b}`);
    const left = (await redis.xrange(bounded.log, '-', '+')) as Entry[];
    expect(left.length).toBeGreaterThanOrEqual(100);
    expect(left.length).toBeLessThan(1000);
    // What is left is the newest run, with no gap: trimming only ever takes the oldest.
    expect(left.map((e) => seqOfId(e[0]))).toEqual(Array.from({ length: left.length }, (_, i) => 1000 - left.length + 1 + i));
    expect(await small.headSeq()).toBe(1000);
  });

  it.runIf(kind === 'dragonfly')('a restart from the same --dir and --dbfilename keeps the stream, its IDs and the fencing keys', async () => {
    const own = await startStreamServer({ kind });
    extra.push({ server: own });
    const keys = freshKeys();
    let client = RespClient.fromUrl(own.url);
    const oplog = new OpLog({ redis: client, keys, maxLength: 10_000, log });
    await oplog.raiseEpoch(3, 0);
    for (let b = 0; b < 5; b++) await oplog.append(3, ops(40, `r${b}`), `r${b}`);
    await oplog.trimBefore(21);
    const before = (await client.xrange(keys.log, '-', '+')) as Entry[];
    client.disconnect();

    await own.stop(); // SIGTERM: Dragonfly writes its snapshot to --dir/--dbfilename on shutdown
    const again = await startStreamServer({ kind, workDir: own.workDir, reuse: { port: own.port, dir: own.dir } });
    extra.push({ server: again });
    client = RespClient.fromUrl(again.url);
    extra.at(-1)!.client = client;
    expect((await client.xrange(keys.log, '-', '+')) as Entry[]).toEqual(before);
    const reopened = new OpLog({ redis: client, keys, maxLength: 10_000, log });
    expect(await reopened.currentEpoch()).toBe(3);
    expect(await reopened.headSeq()).toBe(200);
    expect(await reopened.append(3, ops(1, 'after'), 'r-after')).toEqual({ firstSeq: 201, lastSeq: 201 });
  });

  it('a replica holds the same entries under the same IDs', async () => {
    const keys = freshKeys();
    const oplog = new OpLog({ redis, keys, maxLength: 10_000, log });
    await oplog.raiseEpoch(1, 0);
    await oplog.append(1, ops(50, 'before-sync'), 'p1'); // in the replica's full sync
    const replica = await startStreamServer({ kind, name: `${kind}-replica`, replicaOf: `127.0.0.1:${server.port}` });
    const client = RespClient.fromUrl(replica.url);
    extra.push({ server: replica, client });
    for (let b = 0; b < 5; b++) await oplog.append(1, ops(30, `streamed${b}`), `p${b + 2}`); // streamed after it
    await waitFor(async () => (await client.xlen(keys.log)) === 200, { timeoutMs: 20_000, what: 'the replica to hold 200 entries' });
    expect(await client.xrange(keys.log, '-', '+')).toEqual(await redis.xrange(keys.log, '-', '+'));
    expect(await client.get(keys.head)).toBe('200');
    expect(await client.get(keys.epoch)).toBe('1');
  });
});

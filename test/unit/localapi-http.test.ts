// The HTTP layer through a real server on a real socket, with a recording
// backend: proves refused requests reach nothing, errors map to the table in
// docs/local-api.md, streams stop their backend iterator when the client goes,
// and close() ends long-polls and streams within a bound.
import http from 'node:http';
import { mkdtempSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/lib/log.ts';
import { startLocalApi, type LocalApiServer } from '../../src/agent/localapi/server.ts';
import { StoreUnavailableError, type LocalApiBackend, type StreamLine } from '../../src/agent/localapi/backend.ts';
import { FencedError, NotLeaderError, type RoleStatus } from '../../src/agent/types.ts';
import { SyncTimeoutError } from '../../src/agent/sync-replication.ts';
import { SupersededError } from '../../src/agent/master-session.ts';

interface Recorder {
  calls: string[];
  /** masterRequest calls: "begin <instance|->", then "end" or "dropped" (a role long-poll closed unanswered). */
  master: string[];
  /** Entries the stream iterator has produced so far. */
  produced: () => number;
  backend: LocalApiBackend;
  streamAborted: Promise<void>;
}

function status(version = 1): RoleStatus {
  return {
    version,
    member: 'm0',
    role: 'standby',
    writable: false,
    epoch: 3,
    leader: { member: 'm1', address: '10.0.0.1:9000', epoch: 3 },
    headSeq: 10,
    receivedSeq: 10,
    appliedSeq: 9,
    snapshotWanted: null,
  };
}

function recorder(over: Partial<LocalApiBackend> = {}): Recorder {
  const calls: string[] = [];
  const master: string[] = [];
  let onStreamAbort: () => void = () => undefined;
  const streamAborted = new Promise<void>((r) => (onStreamAbort = r));
  let produced = 0;
  const backend: LocalApiBackend = {
    member: 'm0',
    masterRequest: (instance) => {
      master.push(`begin ${instance ?? '-'}`);
      return (droppedPoll) => void master.push(droppedPoll ? 'dropped' : 'end');
    },
    status: () => status(),
    waitForStatusChange: (after, timeoutMs, signal) => {
      calls.push(`wait ${after} ${timeoutMs}`);
      return new Promise((resolve) => {
        const t = setTimeout(() => resolve(status()), timeoutMs);
        signal.addEventListener('abort', () => {
          clearTimeout(t);
          resolve(status());
        });
      });
    },
    append: async (entries) => {
      calls.push(`append ${entries.length}`);
      return { epoch: 3, firstSeq: 11, lastSeq: 10 + entries.length };
    },
    streamEntries: async function* (from, signal): AsyncIterable<StreamLine> {
      calls.push(`stream ${from}`);
      try {
        // A large payload fills the socket buffer quickly, so backpressure is exercised.
        for (let seq = from; seq < from + 100_000 && !signal.aborted; seq++) {
          produced++;
          yield { type: 'entry', seq, epoch: 3, op: 'put', key: `k${seq}`, payload: 'x'.repeat(1024) };
        }
      } finally {
        onStreamAbort();
      }
    },
    ackApplied: (seq) => void calls.push(`applied ${seq}`),
    putSnapshot: async (seq, data) => {
      calls.push(`putSnapshot ${seq} ${data.length}`);
      return { id: 's1', seq, epoch: 3, chunks: 1, sizeBytes: data.length, crc: 7, createdAt: new Date(0).toISOString() };
    },
    getSnapshot: async () => undefined,
    publishDelete: async (key) => {
      calls.push(`delete ${key}`);
      return { revision: 5 };
    },
    subscribeDeletes: async function* () {
      calls.push('subscribeDeletes');
      yield { type: 'heartbeat', revision: 4 };
    },
    metaGet: async (key) => {
      calls.push(`metaGet ${key}`);
      return undefined;
    },
    metaPut: async (key) => {
      calls.push(`metaPut ${key}`);
      return { ok: false, currentModRevision: 17 };
    },
    metaDelete: async (key) => {
      calls.push(`metaDelete ${key}`);
      return { conflict: 18 };
    },
    health: async () => ({ etcd: 'ok', stream: 'down' }),
    ...over,
  };
  return { calls, master, backend, streamAborted, produced: () => produced };
}

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

function request(address: string, method: string, path: string, body?: string | Buffer, headers: http.OutgoingHttpHeaders = {}): Promise<Answer> {
  const target = address.startsWith('unix:') ? { socketPath: address.slice(5) } : { host: address.split(':')[0], port: Number(address.split(':')[1]) };
  return new Promise((resolve, reject) => {
    const req = http.request({ ...target, method, path, headers, timeout: 10_000, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('request timed out')));
    req.on('error', reject);
    req.end(body);
  });
}

let servers: LocalApiServer[] = [];
async function start(rec: Recorder, listen = '127.0.0.1:0'): Promise<LocalApiServer> {
  const s = await startLocalApi({ listen, backend: rec.backend, log: silentLogger() });
  servers.push(s);
  return s;
}
afterEach(async () => {
  await Promise.all(servers.map((s) => s.close()));
  servers = [];
});

function errorOf(a: Answer): { code: string; field?: string; leader?: unknown; currentModRevision?: number } {
  return (JSON.parse(a.body) as { error: { code: string } }).error;
}

describe('local API HTTP layer', () => {
  it.each([
    ['POST', '/v1/log/append', '{"entries":[]}', 'entries'],
    ['POST', '/v1/log/append', '{"entries":[{"op":"put","key":"k","payload":"p"},{"op":"","key":"k","payload":"p"}]}', 'entries[1].op'],
    ['POST', '/v1/log/append', '{not json', 'body'],
    ['POST', '/v1/log/append', '', 'body'],
    ['POST', '/v1/log/append?x=1', '{"entries":[{"op":"put","key":"k","payload":"p"}]}', 'x'],
    ['POST', '/v1/applied', '{"seq":-1}', 'seq'],
    ['GET', '/v1/log/stream?from=0', undefined, 'from'],
    ['GET', '/v1/role?after=1&timeoutMs=60001', undefined, 'timeoutMs'],
    ['PUT', '/v1/snapshot?seq=x', 'data', 'seq'],
    ['POST', '/v1/deletes', '{"payload":"p"}', 'key'],
    ['GET', '/v1/deletes?fromRevision=0', undefined, 'fromRevision'],
    ['PUT', '/v1/meta/a%20b', '{"value":"v"}', 'key'],
    ['PUT', '/v1/meta/a', '{"value":"v","expectedModRevision":-1}', 'expectedModRevision'],
    ['DELETE', '/v1/meta/a?expectedModRevision=z', undefined, 'expectedModRevision'],
  ])('%s %s with bad input: 400 naming %s, backend untouched', async (method, path, body, field) => {
    const rec = recorder();
    const s = await start(rec);
    const a = await request(s.address, method, path, body);
    expect(a.status).toBe(400);
    expect(errorOf(a)).toMatchObject({ code: 'bad_request', field });
    expect(rec.calls).toEqual([]);
  });

  it('404 for an unknown path, 405 with Allow for a wrong method', async () => {
    const rec = recorder();
    const s = await start(rec);
    const a = await request(s.address, 'GET', '/v1/nope');
    expect(a.status).toBe(404);
    expect(errorOf(a).code).toBe('not_found');
    const b = await request(s.address, 'DELETE', '/v1/log/append');
    expect(b.status).toBe(405);
    expect(errorOf(b).code).toBe('method_not_allowed');
    expect(b.headers.allow).toBe('POST');
    expect(rec.calls).toEqual([]);
  });

  it('413 for an append body over 8 MiB, whether declared or streamed', async () => {
    const rec = recorder();
    const s = await start(rec);
    const big = JSON.stringify({ entries: [{ op: 'put', key: 'k', payload: 'x'.repeat(8 * 1024 * 1024) }] });
    const a = await request(s.address, 'POST', '/v1/log/append', big);
    expect(a.status).toBe(413);
    expect(errorOf(a).code).toBe('too_large');
    const b = await request(s.address, 'POST', '/v1/log/append', big, { 'transfer-encoding': 'chunked' });
    expect(b.status).toBe(413);
    expect(rec.calls).toEqual([]);
  });

  it('maps backend errors: not_leader with the leader, fenced, unavailable, conflict', async () => {
    const leader = { member: 'm1', address: '10.0.0.1:9000', epoch: 3, since: 'x' };
    let thrown: Error = new NotLeaderError(leader);
    const rec = recorder({
      append: async () => {
        throw thrown;
      },
    });
    const s = await start(rec);
    const body = '{"entries":[{"op":"put","key":"k","payload":"p"}]}';
    let a = await request(s.address, 'POST', '/v1/log/append', body);
    expect(a.status).toBe(409);
    expect(errorOf(a)).toMatchObject({ code: 'not_leader', leader: { member: 'm1', address: '10.0.0.1:9000', epoch: 3 } });
    thrown = new NotLeaderError(undefined);
    a = await request(s.address, 'POST', '/v1/log/append', body);
    expect(errorOf(a)).toMatchObject({ code: 'not_leader', leader: null });
    thrown = new FencedError(3, 5);
    a = await request(s.address, 'POST', '/v1/log/append', body);
    expect(a.status).toBe(409);
    expect(errorOf(a).code).toBe('fenced');
    thrown = new StoreUnavailableError('redis down');
    a = await request(s.address, 'POST', '/v1/log/append', body);
    expect(a.status).toBe(503);
    expect(errorOf(a).code).toBe('unavailable');
    thrown = new SyncTimeoutError('fewer than 1 sync standby(s) acknowledged it within 2000 ms');
    a = await request(s.address, 'POST', '/v1/log/append', body);
    expect(a.status).toBe(503);
    expect(errorOf(a)).toMatchObject({ code: 'sync_timeout', message: 'fewer than 1 sync standby(s) acknowledged it within 2000 ms' });

    const put = await request(s.address, 'PUT', '/v1/meta/a/b', '{"value":"v","expectedModRevision":3}');
    expect(put.status).toBe(409);
    expect(errorOf(put)).toMatchObject({ code: 'conflict', currentModRevision: 17 });
    const del = await request(s.address, 'DELETE', '/v1/meta/a?expectedModRevision=3');
    expect(errorOf(del)).toMatchObject({ code: 'conflict', currentModRevision: 18 });
    const get = await request(s.address, 'GET', '/v1/meta/a');
    expect(get.status).toBe(404);
    const snap = await request(s.address, 'GET', '/v1/snapshot');
    expect(snap.status).toBe(404);
    const health = await request(s.address, 'GET', '/v1/health');
    expect(health.status).toBe(503);
    expect(JSON.parse(health.body)).toEqual({ status: 'degraded', member: 'm0', role: 'standby', etcd: 'ok', stream: 'down' });
    expect(rec.calls).toContain('metaPut a/b');
  });

  it('long-poll: answers at once when the version differs, after timeoutMs otherwise', async () => {
    const rec = recorder();
    const s = await start(rec);
    const now = await request(s.address, 'GET', '/v1/role?after=0&timeoutMs=5000');
    expect(JSON.parse(now.body)).toMatchObject({ version: 1 });
    expect(rec.calls).toEqual([]);
    const t0 = Date.now();
    const waited = await request(s.address, 'GET', '/v1/role?after=1&timeoutMs=300');
    expect(waited.status).toBe(200);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(290);
    expect(rec.calls).toEqual(['wait 1 300']);
  });

  it('close() ends an open long-poll and a stream within its bound', async () => {
    const rec = recorder();
    const s = await start(rec);
    const poll = request(s.address, 'GET', '/v1/role?after=1&timeoutMs=60000');
    const stream = request(s.address, 'GET', '/v1/log/stream?from=1').catch((err: Error) => err);
    await new Promise((r) => setTimeout(r, 200));
    const t0 = Date.now();
    await s.close();
    expect(Date.now() - t0).toBeLessThan(3000);
    expect((await poll).status).toBe(200);
    await stream;
    await rec.streamAborted;
  });

  it('a client that stops reading holds the stream by backpressure; disconnecting ends the backend iterator', async () => {
    const rec = recorder();
    const s = await start(rec);
    const [host, port] = s.address.split(':');
    let received = 0;
    const req = http.get({ host, port: Number(port), path: '/v1/log/stream?from=5', agent: false }, (res) => {
      expect(res.headers['content-type']).toBe('application/x-ndjson');
      res.once('data', (c: Buffer) => {
        received += c.length;
        const first = JSON.parse(c.toString('utf8').split('\n')[0]!) as { seq: number };
        expect(first.seq).toBe(5);
        res.pause();
      });
    });
    await new Promise((r) => setTimeout(r, 500));
    expect(received).toBeGreaterThan(0);
    // Paused: the server must stop pulling from the backend once the socket buffers are full.
    const held = rec.produced();
    await new Promise((r) => setTimeout(r, 300));
    expect(rec.produced()).toBe(held);
    // 100k entries of 1 KiB would be ~100 MiB; socket buffers hold a few MiB at most.
    expect(held).toBeLessThan(20_000);
    req.destroy();
    await Promise.race([rec.streamAborted, new Promise((_, rej) => setTimeout(() => rej(new Error('iterator not ended')), 3000))]);
  });

  it('serves on a Unix socket with mode 0600, replacing a stale socket file and refusing a regular file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'localapi-'));
    const path = join(dir, 'api.sock');
    // A stale socket, as a killed agent leaves it: a process binds it and dies without unlinking.
    const child = spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, 'SIGKILL'))`], {
      timeout: 10_000,
    });
    expect(child.signal).toBe('SIGKILL');
    expect(statSync(path).isSocket()).toBe(true);
    const rec = recorder();
    const s = await start(rec, `unix:${path}`);
    expect(s.address).toBe(`unix:${path}`);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    const a = await request(s.address, 'POST', '/v1/applied', '{"seq":3}');
    expect(a.status).toBe(204);
    expect(rec.calls).toEqual(['applied 3']);
    await s.close();
    expect(existsSync(path)).toBe(false);
    const file = join(dir, 'not-a-socket');
    writeFileSync(file, 'keep me');
    await expect(startLocalApi({ listen: `unix:${file}`, backend: rec.backend, log: silentLogger() })).rejects.toThrow(/not a socket/);
    expect(existsSync(file)).toBe(true);
  });

  it('append, applied, snapshot put and deletes reach the backend with the parsed values', async () => {
    const rec = recorder();
    const s = await start(rec);
    const a = await request(s.address, 'POST', '/v1/log/append', '{"entries":[{"op":"put","key":"k","payload":"p"},{"op":"del","key":"k","payload":""}]}');
    expect(a.status).toBe(200);
    expect(JSON.parse(a.body)).toEqual({ epoch: 3, firstSeq: 11, lastSeq: 12 });
    const p = await request(s.address, 'PUT', '/v1/snapshot?seq=9', Buffer.alloc(3000, 1), { 'content-type': 'application/octet-stream' });
    expect(p.status).toBe(201);
    const d = await request(s.address, 'POST', '/v1/deletes', '{"key":"obj-1"}');
    expect(d.status).toBe(201);
    expect(JSON.parse(d.body)).toEqual({ revision: 5 });
    const sub = await request(s.address, 'GET', '/v1/deletes');
    expect(sub.body).toBe('{"type":"heartbeat","revision":4}\n');
    expect(rec.calls).toEqual(['append 2', 'putSnapshot 9 3000', 'delete obj-1', 'subscribeDeletes']);
  });

  it('every request but /v1/health counts as the master\'s: begun with its X-Master-Instance, ended once answered', async () => {
    const rec = recorder();
    const s = await start(rec);
    await request(s.address, 'GET', '/v1/health');
    expect(rec.master).toEqual([]);
    expect((await request(s.address, 'GET', '/v1/role', undefined, { 'X-Master-Instance': 'a1b2-c3' })).status).toBe(200);
    expect((await request(s.address, 'POST', '/v1/applied', '{"seq":3}')).status).toBe(204);
    expect(rec.master).toEqual(['begin a1b2-c3', 'end', 'begin -', 'end']);
  });

  it('an open long-poll is master contact until the master goes away: its socket closing unanswered is a dropped poll', async () => {
    const rec = recorder();
    const s = await start(rec);
    const [host, port] = s.address.split(':');
    const req = http.get({ host, port: Number(port), path: '/v1/role?after=1&timeoutMs=60000', headers: { 'x-master-instance': 'i1' }, agent: false });
    req.on('error', () => undefined);
    await new Promise((r) => setTimeout(r, 200));
    expect(rec.master).toEqual(['begin i1']);
    req.destroy();
    await new Promise((r) => setTimeout(r, 200));
    expect(rec.master).toEqual(['begin i1', 'dropped']);
    // Answered (the wait timed out): an ordinary end.
    await request(s.address, 'GET', '/v1/role?after=1&timeoutMs=100', undefined, { 'x-master-instance': 'i1' });
    expect(rec.master).toEqual(['begin i1', 'dropped', 'begin i1', 'end']);
  });

  it('a malformed X-Master-Instance is refused with 400 naming it; a superseded instance with 409 superseded', async () => {
    const rec = recorder({
      masterRequest: (instance) => {
        if (instance === 'old') throw new SupersededError('old', 'new');
        return () => undefined;
      },
    });
    const s = await start(rec);
    const bad = await request(s.address, 'POST', '/v1/applied', '{"seq":3}', { 'X-Master-Instance': 'has space' });
    expect(bad.status).toBe(400);
    expect(errorOf(bad)).toMatchObject({ code: 'bad_request', field: 'X-Master-Instance' });
    const old = await request(s.address, 'POST', '/v1/applied', '{"seq":3}', { 'X-Master-Instance': 'old' });
    expect(old.status).toBe(409);
    expect(errorOf(old).code).toBe('superseded');
    expect(rec.calls).toEqual([]);
  });
});

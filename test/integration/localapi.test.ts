// The local API end to end: two real Agents (src/agent/agent.ts) on a real
// etcd and a real Redis-protocol server, spoken to over their Unix sockets the
// way a master does. The test plays both masters: it long-polls the role and
// acknowledges applied entries so the agents can promote.
import http from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useStores } from '../harness/stores.ts';
import { Agent } from '../../src/agent/agent.ts';
import { resolveAgentConfig } from '../../src/agent/config.ts';
import { silentLogger } from '../../src/lib/log.ts';
import { removeWorkDir, startEtcd } from '../../src/lib/localstores.ts';
import type { RoleStatus } from '../../src/agent/types.ts';

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  json: () => unknown;
}

function call(socketPath: string, method: string, path: string, body?: string | Buffer, timeoutMs = 15_000): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, method, path, timeout: timeoutMs, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const buf = Buffer.concat(chunks);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: buf, json: () => JSON.parse(buf.toString('utf8')) as unknown });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${path} timed out after ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(body);
  });
}

/**
 * Opens an NDJSON stream and collects lines until `enough(lines)` holds or
 * `timeoutMs` passes; always closes the connection.
 */
function collect(socketPath: string, path: string, enough: (lines: Record<string, unknown>[]) => boolean, timeoutMs: number): Promise<{ contentType: string | undefined; lines: Record<string, unknown>[] }> {
  return new Promise((resolve, reject) => {
    const lines: Record<string, unknown>[] = [];
    let contentType: string | undefined;
    let rest = '';
    const finish = (err?: Error): void => {
      clearTimeout(timer);
      req.destroy();
      if (err) reject(err);
      else resolve({ contentType, lines });
    };
    const timer = setTimeout(() => finish(new Error(`stream ${path}: condition not met within ${timeoutMs} ms; got ${JSON.stringify(lines.slice(-5))}`)), timeoutMs);
    const req = http.get({ socketPath, path, agent: false }, (res) => {
      contentType = res.headers['content-type'];
      if (res.statusCode !== 200) return finish(new Error(`stream ${path}: status ${res.statusCode}`));
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        rest += chunk;
        let nl;
        while ((nl = rest.indexOf('\n')) >= 0) {
          lines.push(JSON.parse(rest.slice(0, nl)) as Record<string, unknown>);
          rest = rest.slice(nl + 1);
        }
        if (enough(lines)) finish();
      });
      res.on('end', () => (enough(lines) ? finish() : finish(new Error(`stream ${path} ended early: ${JSON.stringify(lines.slice(-5))}`))));
    });
    req.on('error', (err) => finish(err));
  });
}

async function role(sock: string, after?: number, timeoutMs?: number): Promise<RoleStatus> {
  const q = after === undefined ? '' : `?after=${after}&timeoutMs=${timeoutMs ?? 1000}`;
  const a = await call(sock, 'GET', `/v1/role${q}`);
  expect(a.status).toBe(200);
  return a.json() as RoleStatus;
}

/** Acts as the master until the agent reports `want`: acks the head while promoting. Bounded. */
async function untilRole(sock: string, want: RoleStatus['role'], timeoutMs: number): Promise<RoleStatus> {
  const deadline = Date.now() + timeoutMs;
  let s = await role(sock);
  while (s.role !== want) {
    if (Date.now() > deadline) throw new Error(`role stayed ${s.role}, wanted ${want}, within ${timeoutMs} ms`);
    if (s.role === 'promoting' && s.appliedSeq < s.headSeq) {
      await call(sock, 'POST', '/v1/applied', JSON.stringify({ seq: s.headSeq }));
    }
    s = await role(sock, s.version, 500);
  }
  return s;
}

/**
 * Plays a live master's liveness: one role long-poll open at all times, re-issued
 * as soon as it answers (docs/local-api.md, "Master liveness"). Without it an
 * agent takes its master for gone and a leader resigns. Returns the stop function.
 */
function holdRolePoll(socketPath: string): () => void {
  let stopped = false;
  let current: http.ClientRequest | undefined;
  const once = (after: number): Promise<number> =>
    new Promise((resolve) => {
      const req = http.get({ socketPath, path: `/v1/role?after=${after}&timeoutMs=30000`, agent: false }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          try {
            resolve((JSON.parse(Buffer.concat(chunks).toString('utf8')) as RoleStatus).version);
          } catch {
            resolve(0);
          }
        });
        res.on('error', () => resolve(0));
      });
      req.on('error', () => setTimeout(() => resolve(0), 50));
      current = req;
    });
  void (async () => {
    let version = 0;
    while (!stopped) version = await once(version);
  })();
  return () => {
    stopped = true;
    current?.destroy();
  };
}

const ENTRY = (i: number): { op: string; key: string; payload: string } => ({ op: 'put', key: `k${i}`, payload: JSON.stringify({ v: i }) });

describe('local API against real Agents', () => {
  const stores = useStores();
  const dir = mkdtempSync(join(tmpdir(), 'localapi-it-'));
  const sockA = join(dir, 'a.sock');
  const sockB = join(dir, 'b.sock');
  let a: Agent | undefined;
  let b: Agent | undefined;
  const pollers: Array<() => void> = [];

  function config(member: string, sock: string, port: number): Parameters<typeof Agent.start>[0] {
    return resolveAgentConfig(
      {
        cluster: 'ns/localapi',
        member,
        address: `127.0.0.1:${port}`,
        etcdEndpoints: stores().etcd.endpoint,
        redisUrl: stores().redis.url,
        apiListen: `unix:${sock}`,
        leaseTtlSeconds: '3',
      },
      {},
    );
  }

  beforeAll(async () => {
    a = await Agent.start(config('m0', sockA, 9100), { log: silentLogger() });
    pollers.push(holdRolePoll(sockA));
    await untilRole(sockA, 'leader', 20_000);
    b = await Agent.start(config('m1', sockB, 9101), { log: silentLogger() });
    pollers.push(holdRolePoll(sockB));
    await untilRole(sockB, 'standby', 10_000);
  });
  afterAll(async () => {
    for (const stop of pollers) stop();
    await Promise.all([b?.close(), a?.close()]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('health is ok with both stores up', async () => {
    const h = await call(sockA, 'GET', '/v1/health');
    expect(h.status).toBe(200);
    expect(h.json()).toEqual({ status: 'ok', member: 'm0', role: 'leader', etcd: 'ok', stream: 'ok' });
  });

  it('append on the leader returns consecutive sequence numbers across batches', async () => {
    const first = await call(sockA, 'POST', '/v1/log/append', JSON.stringify({ entries: [ENTRY(1), ENTRY(2), ENTRY(3)] }));
    expect(first.status).toBe(200);
    const r1 = first.json() as { epoch: number; firstSeq: number; lastSeq: number };
    expect(r1.lastSeq - r1.firstSeq).toBe(2);
    expect(r1.epoch).toBe((await role(sockA)).epoch);
    const second = await call(sockA, 'POST', '/v1/log/append', JSON.stringify({ entries: [ENTRY(4), ENTRY(5)] }));
    const r2 = second.json() as { firstSeq: number; lastSeq: number };
    expect(r2).toMatchObject({ firstSeq: r1.lastSeq + 1, lastSeq: r1.lastSeq + 2 });
  });

  it('append on a standby is 409 not_leader naming the leader, and appends nothing', async () => {
    const before = await call(sockA, 'POST', '/v1/log/append', JSON.stringify({ entries: [ENTRY(6)] }));
    const seqBefore = (before.json() as { lastSeq: number }).lastSeq;
    const refused = await call(sockB, 'POST', '/v1/log/append', JSON.stringify({ entries: [ENTRY(99)] }));
    expect(refused.status).toBe(409);
    expect((refused.json() as { error: unknown }).error).toMatchObject({
      code: 'not_leader',
      leader: { member: 'm0', address: '127.0.0.1:9100', epoch: (await role(sockA)).epoch },
    });
    const after = await call(sockA, 'POST', '/v1/log/append', JSON.stringify({ entries: [ENTRY(7)] }));
    expect((after.json() as { firstSeq: number }).firstSeq).toBe(seqBefore + 1);
  });

  it('the stream delivers entries in order from a sequence as NDJSON, then heartbeats', async () => {
    const head = (await call(sockA, 'POST', '/v1/log/append', JSON.stringify({ entries: [ENTRY(8)] }))).json() as { lastSeq: number };
    const { contentType, lines } = await collect(
      sockB,
      '/v1/log/stream?from=2',
      (ls) => ls.some((l) => l.type === 'heartbeat') && ls.filter((l) => l.type === 'entry').length >= head.lastSeq - 1,
      10_000,
    );
    expect(contentType).toBe('application/x-ndjson');
    const entries = lines.filter((l) => l.type === 'entry');
    expect(entries.map((e) => e.seq)).toEqual(Array.from({ length: head.lastSeq - 1 }, (_, i) => i + 2));
    expect(entries[0]).toMatchObject({ op: 'put', key: 'k2', payload: JSON.stringify({ v: 2 }) });
    const hb = lines.find((l) => l.type === 'heartbeat');
    expect(hb?.headSeq).toBe(head.lastSeq);
  });

  it('applied: an ack at the head is 204, above the head is 400 on seq', async () => {
    const s = await role(sockB);
    expect((await call(sockB, 'POST', '/v1/applied', JSON.stringify({ seq: s.receivedSeq }))).status).toBe(204);
    const tooHigh = await call(sockB, 'POST', '/v1/applied', JSON.stringify({ seq: s.headSeq + 1000 }));
    expect(tooHigh.status).toBe(400);
    expect((tooHigh.json() as { error: unknown }).error).toMatchObject({ code: 'bad_request', field: 'seq' });
    expect((await role(sockB)).appliedSeq).toBe(s.receivedSeq);
  });

  it('snapshot: put on the leader, get the same bytes on a standby; put on a standby is not_leader', async () => {
    const head = (await role(sockA)).headSeq;
    const data = Buffer.from(Array.from({ length: 300_000 }, (_, i) => i % 251));
    const put = await call(sockA, 'PUT', `/v1/snapshot?seq=${head}`, data);
    expect(put.status).toBe(201);
    const d = put.json() as { id: string; seq: number; sizeBytes: number; crc: number };
    expect(d).toMatchObject({ seq: head, sizeBytes: data.length });
    const got = await call(sockB, 'GET', '/v1/snapshot');
    expect(got.status).toBe(200);
    expect(got.body.equals(data)).toBe(true);
    expect(got.headers['x-snapshot-id']).toBe(d.id);
    expect(got.headers['x-snapshot-seq']).toBe(String(head));
    expect(got.headers['x-snapshot-crc32c']).toBe(String(d.crc));
    const refused = await call(sockB, 'PUT', `/v1/snapshot?seq=${head}`, data);
    expect(refused.status).toBe(409);
    expect((refused.json() as { error: { code: string } }).error.code).toBe('not_leader');
  });

  it('metadata: put, get, CAS conflict with the current revision, CAS delete', async () => {
    const first = await call(sockA, 'PUT', '/v1/meta/cfg/shard-1', JSON.stringify({ value: 'v1', expectedModRevision: 0 }));
    expect(first.status).toBe(200);
    const rev = (first.json() as { modRevision: number }).modRevision;
    const got = await call(sockB, 'GET', '/v1/meta/cfg%2Fshard-1');
    expect(got.json()).toEqual({ key: 'cfg/shard-1', value: 'v1', modRevision: rev, version: 1 });
    const lost = await call(sockB, 'PUT', '/v1/meta/cfg/shard-1', JSON.stringify({ value: 'v2', expectedModRevision: rev - 1 }));
    expect(lost.status).toBe(409);
    expect((lost.json() as { error: unknown }).error).toMatchObject({ code: 'conflict', currentModRevision: rev });
    expect(((await call(sockA, 'GET', '/v1/meta/cfg/shard-1')).json() as { value: string }).value).toBe('v1');
    const delLost = await call(sockA, 'DELETE', `/v1/meta/cfg/shard-1?expectedModRevision=${rev + 1000}`);
    expect(delLost.status).toBe(409);
    expect((await call(sockA, 'DELETE', `/v1/meta/cfg/shard-1?expectedModRevision=${rev}`)).status).toBe(204);
    expect((await call(sockA, 'GET', '/v1/meta/cfg/shard-1')).status).toBe(404);
  });

  it('deletes: a published event reaches a live subscriber and a replay from its revision', async () => {
    const live = collect(sockB, '/v1/deletes', (ls) => ls.some((l) => l.type === 'delete' && l.key === 'obj-live'), 10_000);
    // The subscription must exist before the publish: wait for its first heartbeat.
    await collect(sockB, '/v1/deletes', (ls) => ls.length > 0, 5000);
    await new Promise((r) => setTimeout(r, 300));
    const pub = await call(sockA, 'POST', '/v1/deletes', JSON.stringify({ key: 'obj-live', payload: 'p1' }));
    expect(pub.status).toBe(201);
    const revision = (pub.json() as { revision: number }).revision;
    const liveLines = (await live).lines.filter((l) => l.type === 'delete');
    expect(liveLines).toEqual([expect.objectContaining({ type: 'delete', revision, key: 'obj-live', payload: 'p1' })]);
    const replay = await collect(sockA, `/v1/deletes?fromRevision=${revision}`, (ls) => ls.some((l) => l.type === 'delete'), 10_000);
    expect(replay.lines.find((l) => l.type === 'delete')).toMatchObject({ revision, key: 'obj-live' });
  });

  it('role long-poll: returns after timeoutMs when nothing changes', async () => {
    const s = await role(sockB);
    const t0 = Date.now();
    const same = await role(sockB, s.version, 700);
    const took = Date.now() - t0;
    expect(same.version).toBe(s.version);
    expect(took).toBeGreaterThanOrEqual(650);
    expect(took).toBeLessThan(5000);
  });

  it('role long-poll: returns promptly when the role changes (the leader resigns)', async () => {
    const s = await role(sockB);
    expect(s.leader?.member).toBe('m0');
    const poll = role(sockB, s.version, 60_000);
    const t0 = Date.now();
    await a?.close();
    a = undefined;
    const changed = await poll;
    expect(changed.version).toBeGreaterThan(s.version);
    expect(Date.now() - t0).toBeLessThan(10_000);
  });
});

describe('local API while etcd is down', () => {
  const stores = useStores();

  it('a metadata call answers 503 unavailable (safe to retry), not an internal error', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'localapi-etcd-down-'));
    const sock = join(dir, 'a.sock');
    const etcd = await startEtcd({ name: 'etcd-localapi-down' });
    let agent: Agent | undefined;
    try {
      agent = await Agent.start(
        resolveAgentConfig(
          { cluster: 'ns/etcd-down', member: 'm0', address: '127.0.0.1:9102', etcdEndpoints: etcd.endpoint, redisUrl: stores().redis.url, apiListen: `unix:${sock}` },
          {},
        ),
        { log: silentLogger() },
      );
      expect((await call(sock, 'PUT', '/v1/meta/k', JSON.stringify({ value: 'v' }))).status).toBe(200);
      await etcd.stop();
      const down = await call(sock, 'GET', '/v1/meta/k');
      expect(down.status).toBe(503);
      expect((down.json() as { error: { code: string; message: string } }).error).toMatchObject({ code: 'unavailable', message: expect.stringContaining(etcd.endpoint) });
    } finally {
      await agent?.close();
      await etcd.stop();
      removeWorkDir(etcd);
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});

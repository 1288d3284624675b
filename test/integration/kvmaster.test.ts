// The reference master with real agents, etcd and a stream server (Dragonfly and redis-server), all as
// separate processes (src/demo/localcluster.ts): writes, redirects, failover
// without losing an acknowledged write, snapshots, and a fenced old leader.
import http from 'node:http';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { LocalCluster, type Member } from '../../src/demo/localcluster.ts';
import { sleep, waitFor } from '../../src/lib/time.ts';
import { describeEachStreamServer } from '../harness/stores.ts';

async function put(m: Member, key: string, value: string): Promise<Response> {
  return fetch(`http://${m.kvAddress}/kv/${encodeURIComponent(key)}`, { method: 'PUT', body: value, signal: AbortSignal.timeout(10_000) });
}

async function get(m: Member, key: string, stale = false): Promise<Response> {
  return fetch(`http://${m.kvAddress}/kv/${encodeURIComponent(key)}${stale ? '?stale=1' : ''}`, { signal: AbortSignal.timeout(5000) });
}

describeEachStreamServer('kvmaster with real agents', (streamServer) => {
  let cluster: LocalCluster;

  beforeAll(async () => {
    cluster = await LocalCluster.start({ members: 3, leaseTtlSeconds: 2, streamServer, agentArgs: ['--snapshot-every-entries', '300'] });
  }, 90_000);

  afterAll(async () => {
    await cluster?.stop();
  });

  it('the leader acknowledges writes with consecutive sequence numbers; standbys apply them', async () => {
    const leader = await cluster.waitForLeader();
    const seqs: number[] = [];
    for (let i = 0; i < 50; i++) {
      const res = await put(leader, `k${i}`, `v${i}`);
      expect(res.status).toBe(200);
      seqs.push(((await res.json()) as { seq: number }).seq);
    }
    expect(seqs.slice(1).every((s, i) => s === seqs[i]! + 1)).toBe(true);
    for (const m of cluster.members.filter((x) => x !== leader)) {
      await waitFor(async () => (await cluster.masterStatus(m))!.appliedSeq >= seqs.at(-1)!, { timeoutMs: 10_000, what: `${m.name} to apply` });
      const res = await get(m, 'k49', true);
      expect(await res.json()).toMatchObject({ key: 'k49', value: 'v49' });
    }
  });

  it('a standby refuses a write with 409 and the leader address', async () => {
    const leader = await cluster.waitForLeader();
    const standby = cluster.members.find((m) => m !== leader)!;
    const res = await put(standby, 'x', 'y');
    expect(res.status).toBe(409);
    expect(res.headers.get('x-leader')).toBe(leader.kvAddress);
    expect((await get(standby, 'x', true)).status).toBe(404);
  });

  it('a refusal by a member that does not lead closes the connection, so a client behind a Service is routed anew; the leader keeps it', async () => {
    const leader = await cluster.waitForLeader();
    const standby = cluster.members.find((m) => m !== leader)!;
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    // One request on a kept-alive connection: its status, its Connection header, and whether the socket closed after it.
    const once = (m: Member): Promise<{ status: number; connection: string | undefined; socketClosed: boolean }> =>
      new Promise((resolve, reject) => {
        const [host, port] = m.kvAddress.split(':') as [string, string];
        const req = http.request({ host, port: Number(port), method: 'PUT', path: '/kv/conn', agent, timeout: 5000 }, (res) => {
          res.resume();
          res.on('end', () => {
            const socket = req.socket;
            setTimeout(() => resolve({ status: res.statusCode ?? 0, connection: res.headers.connection, socketClosed: socket?.destroyed ?? true }), 100);
          });
        });
        req.on('error', reject);
        req.on('timeout', () => req.destroy(new Error('timed out')));
        req.end('v');
      });
    try {
      expect(await once(leader)).toEqual({ status: 200, connection: 'keep-alive', socketClosed: false });
      expect(await once(standby)).toEqual({ status: 409, connection: 'close', socketClosed: true });
    } finally {
      agent.destroy();
    }
  });

  it('group commit: concurrent writes all get distinct sequence numbers', async () => {
    const leader = await cluster.waitForLeader();
    const results = await Promise.all(Array.from({ length: 200 }, (_, i) => put(leader, `c${i}`, String(i)).then((r) => r.json() as Promise<{ seq: number }>)));
    const seqs = results.map((r) => r.seq).sort((a, b) => a - b);
    expect(new Set(seqs).size).toBe(200);
    expect(seqs.at(-1)! - seqs[0]!).toBe(199);
  });

  it('after kill -9 of the leader a standby leads with every acknowledged write', async () => {
    const old = await cluster.waitForLeader();
    const acked = new Map<string, string>();
    for (let i = 0; i < 100; i++) {
      const res = await put(old, `f${i}`, `w${i}`);
      if (res.status === 200) acked.set(`f${i}`, `w${i}`);
    }
    expect(acked.size).toBe(100);
    cluster.kill(old);
    const next = await cluster.waitForLeader({ not: old, timeoutMs: 20_000 });
    for (const [k, v] of acked) {
      const res = await get(next, k);
      expect(res.status, k).toBe(200);
      expect(((await res.json()) as { value: string }).value).toBe(v);
    }
    await cluster.restart(old);
    // The restarted member catches up as a standby.
    const head = ((await (await put(next, 'after', '1')).json()) as { seq: number }).seq;
    await waitFor(async () => ((await cluster.masterStatus(old))?.appliedSeq ?? 0) >= head, { timeoutMs: 20_000, what: 'the restarted member to catch up' });
    expect(((await (await get(old, 'f99', true)).json()) as { value: string }).value).toBe('w99');
  });

  it('a fresh member restores from a snapshot and catches up', async () => {
    const leader = await cluster.waitForLeader();
    for (let i = 0; i < 400; i++) expect((await put(leader, `s${i % 50}`, `round-${i}`)).status).toBe(200);
    // The agent asks for a snapshot every 300 entries; wait until one is stored.
    const etcdSnapshots = async (): Promise<number> => {
      const { Etcd3 } = await import('etcd3');
      const etcd = new Etcd3({ hosts: cluster.etcd.endpoint });
      try {
        const raw = await etcd.get(`/hotstandby/${cluster.ref.namespace}/${cluster.ref.name}/snapshot`).string();
        return raw ? (JSON.parse(raw) as { snapshots: Array<{ seq: number }> }).snapshots.at(-1)!.seq : 0;
      } finally {
        etcd.close();
      }
    };
    const snapSeq = await waitFor(async () => (await etcdSnapshots()) || undefined, { timeoutMs: 20_000, what: 'a snapshot' });
    expect(snapSeq).toBeGreaterThan(0);
    const standby = cluster.members.find((m) => m !== leader)!;
    cluster.kill(standby);
    await cluster.restart(standby);
    const head = ((await (await put(leader, 'last', 'z')).json()) as { seq: number }).seq;
    await waitFor(async () => ((await cluster.masterStatus(standby))?.appliedSeq ?? 0) >= head, { timeoutMs: 20_000, what: 'the fresh member to catch up' });
    expect(((await (await get(standby, 's49', true)).json()) as { value: string }).value).toBe('round-399');
    expect(((await (await get(standby, 'last', true)).json()) as { value: string }).value).toBe('z');
  });

  it('a leader whose agent was stopped past the TTL is fenced and never acknowledges again', async () => {
    const old = await cluster.waitForLeader();
    cluster.pauseAgent(old);
    const next = await cluster.waitForLeader({ not: old, timeoutMs: 20_000 });
    // A write sent to the old master while its agent is frozen: it waits on
    // the frozen agent and must not be acknowledged once the agent wakes.
    const during = fetch(`http://${old.kvAddress}/kv/frozen`, { method: 'PUT', body: 'old', signal: AbortSignal.timeout(30_000) });
    await sleep(300);
    cluster.resumeAgent(old);
    expect((await during).status).not.toBe(200);
    await sleep(500);
    const after = await put(old, 'frozen', 'old-after');
    expect(after.status).toBe(409);
    expect(after.headers.get('x-leader')).toBe(next.kvAddress);
    const res = await get(next, 'frozen');
    expect(res.status).toBe(404);
  }, 60_000);

  it('a whole leader (agent and master) stopped past the TTL acknowledges nothing once resumed', async () => {
    const old = await cluster.waitForLeader();
    old.agent.killNow('SIGSTOP');
    old.master.killNow('SIGSTOP');
    try {
      const next = await cluster.waitForLeader({ not: old, timeoutMs: 20_000 });
      expect((await put(next, 'whole', 'new')).status).toBe(200);
      // Sent while the old master is frozen; it reads it only once resumed.
      const during = fetch(`http://${old.kvAddress}/kv/whole`, { method: 'PUT', body: 'old', signal: AbortSignal.timeout(30_000) });
      await sleep(300);
      old.master.killNow('SIGCONT');
      old.agent.killNow('SIGCONT');
      expect((await during).status).not.toBe(200);
      expect((await put(old, 'whole', 'old-again')).status).toBe(409);
      expect(((await (await get(next, 'whole')).json()) as { value: string }).value).toBe('new');
    } finally {
      old.master.killNow('SIGCONT');
      old.agent.killNow('SIGCONT');
    }
  }, 60_000);
});

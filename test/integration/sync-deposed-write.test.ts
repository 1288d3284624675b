// Sync mode: a write whose entry is already in the log, still waiting for the
// sync standbys when the leader loses leadership, has an unknown outcome: the
// next leader may serve it (its sync standby or the log holds it). It must be
// answered as such (503), never as a definite refusal (409 not_leader), or a
// client that takes the 409 at its word sees a write it was told did not
// happen. `hotstandby chaos --replication sync` found it: a put refused with
// 409 was read back later, and the history was not linearizable.
import { Etcd3 } from 'etcd3';
import { afterEach, expect, it } from 'vitest';
import { LocalCluster, type Member } from '../../src/demo/localcluster.ts';
import { etcdKeys } from '../../src/lib/keys.ts';
import { sleep } from '../../src/lib/time.ts';

let cluster: LocalCluster | undefined;
afterEach(async () => {
  await cluster?.stop();
  cluster = undefined;
});

async function put(m: Member, key: string, value: string, timeoutMs = 15_000): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://${m.kvAddress}/kv/${encodeURIComponent(key)}`, { method: 'PUT', body: value, signal: AbortSignal.timeout(timeoutMs) });
  return { status: res.status, body: await res.text() };
}

it('a write in the log, waiting for the sync standbys when leadership ends, is answered 503 (outcome unknown), not 409', async () => {
  cluster = await LocalCluster.start({
    members: 3,
    leaseTtlSeconds: 2,
    logLevel: 'warn',
    agentArgs: ['--replication', 'sync', '--sync-timeout-ms', '8000', '--on-sync-timeout', 'fail', '--min-sync-standbys', '1'],
  });
  const c = cluster;
  const leader = await c.waitForLeader();
  expect((await put(leader, 'warm', '1')).status).toBe(200);
  const standbys = c.members.filter((m) => m !== leader);
  // Frozen standbys acknowledge nothing: the next write waits for them (up to 8 s).
  standbys.forEach((m) => c.pauseAgent(m));
  const etcd = new Etcd3({ hosts: c.etcd.endpoint });
  try {
    const pending = put(leader, 'in-the-log', '1');
    await sleep(500);
    // Leadership ends under the waiting write: the leader key goes (as when its lease is lost).
    await etcd.delete().key(etcdKeys(c.ref).leader);
    const answer = await pending;
    expect(answer.status, answer.body).toBe(503);
  } finally {
    standbys.forEach((m) => c.resumeAgent(m));
    etcd.close();
  }
}, 60_000);

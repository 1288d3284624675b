// The status the operator derives from a cluster view: pure logic.
import { describe, expect, it } from 'vitest';
import type { ClusterView, MemberView } from '../../src/lib/clusterview.ts';
import { mergeConditions, statusFromView, statusWithProblem, syncReplicationEvent, type StatusInput } from '../../src/operator/status.ts';

function member(name: string, appliedSeq: number, lag: number, over: Partial<MemberView> = {}): MemberView {
  return { member: name, role: 'standby', address: '', receivedSeq: appliedSeq, appliedSeq, lag, state: 'ok', lastHeartbeat: '2026-11-25T00:00:09.000Z', heartbeatAgeMs: 500, version: '0.1.0', isLeader: false, ...over };
}

function view(leader: { member: string; epoch: number; since: string } | null, members: MemberView[]): ClusterView {
  return {
    cluster: 'ns/kv',
    readAt: '2026-11-25T00:00:10.000Z',
    etcdRevision: 100,
    leader: leader ? { ...leader, address: '', ageMs: 1000 } : null,
    members,
    log: { headSeq: 500, source: 'stream', fencingEpoch: leader?.epoch ?? null },
    snapshot: null,
    switchover: null,
    problems: [],
  };
}

const input = (previous?: StatusInput['previous']): StatusInput => ({
  name: 'kv',
  generation: 3,
  spec: { replicas: 3, master: { image: 'x' } },
  previous,
  now: new Date('2026-11-25T00:00:10.000Z'),
});

describe('statusFromView', () => {
  const members = [member('kv-0', 500, 0, { role: 'leader', isLeader: true }), member('kv-1', 480, 20), member('kv-2', 499, 1)];

  it('a leader whose pod is not labelled role=leader yet is not Available: the leader Service has no endpoint', () => {
    const leader = { member: 'kv-0', epoch: 7, since: '2026-11-25T00:00:00.000Z' };
    const unlabelled = statusFromView({ ...input(), podRoles: new Map([['kv-0', 'standby'], ['kv-1', 'standby'], ['kv-2', undefined]]) }, view(leader, members));
    expect(unlabelled.phase).toBe('Degraded');
    expect(unlabelled.conditions?.find((c) => c.type === 'Available')).toMatchObject({ status: 'False', reason: 'LeaderNotRouted' });
    expect(unlabelled.conditions?.find((c) => c.type === 'Available')?.message).toContain('kv-0');
    const labelled = statusFromView({ ...input(unlabelled), podRoles: new Map([['kv-0', 'leader'], ['kv-1', 'standby'], ['kv-2', 'standby']]) }, view(leader, members));
    expect(labelled.phase).toBe('Running');
    expect(labelled.conditions?.find((c) => c.type === 'Available')).toMatchObject({ status: 'True', reason: 'LeaderElected' });
    expect(statusFromView({ ...input(labelled), podRoles: new Map([['kv-0', undefined]]) }, view(leader, members)).phase).toBe('Degraded');
    // Members that are not pods of this cluster (agents outside Kubernetes) are not checked.
    expect(statusFromView({ ...input(), podRoles: new Map() }, view(leader, members)).phase).toBe('Running');
  });

  it('a healthy cluster is Running with its leader, readiness and largest standby lag', () => {
    const s = statusFromView(input(), view({ member: 'kv-0', epoch: 7, since: '2026-11-25T00:00:00.000Z' }, members));
    expect(s).toMatchObject({ phase: 'Running', ready: '3/3', readyReplicas: 3, maxLag: 20, leader: { pod: 'kv-0', epoch: 7 }, oplog: { headSeq: 500 }, failoverCount: 0, snapshot: { state: 'None' } });
    expect(s.conditions?.find((c) => c.type === 'Available')?.status).toBe('True');
  });

  it('a member with a stale heartbeat is not ready: Degraded', () => {
    const stale = [...members.slice(0, 2), member('kv-2', 499, 1, { heartbeatAgeMs: 9000 })];
    const s = statusFromView(input(), view({ member: 'kv-0', epoch: 7, since: '' }, stale));
    expect(s.phase).toBe('Degraded');
    expect(s.ready).toBe('2/3');
  });

  it('a new epoch counts one failover, with who and how long since the old leader was last seen', () => {
    const before = statusFromView(input(), view({ member: 'kv-0', epoch: 7, since: '2026-11-25T00:00:00.000Z' }, members));
    const after = statusFromView(input(before), view({ member: 'kv-2', epoch: 9, since: '2026-11-25T00:00:14.500Z' }, members.slice(1)), {
      pod: 'kv-0',
      epoch: 7,
      lastHeartbeat: '2026-11-25T00:00:09.000Z',
    });
    expect(after.failoverCount).toBe(1);
    expect(after.lastFailover).toEqual({ time: '2026-11-25T00:00:14.500Z', from: 'kv-0', to: 'kv-2', durationMs: 5500 });
    // Seen again at the same epoch: not counted twice.
    expect(statusFromView(input(after), view({ member: 'kv-2', epoch: 9, since: '2026-11-25T00:00:14.500Z' }, members)).failoverCount).toBe(1);
  });

  it('no leader: the last leader is kept (so the failover is counted once) and Available turns False', () => {
    const before = statusFromView(input(), view({ member: 'kv-0', epoch: 7, since: '' }, members));
    const during = statusFromView(input(before), view(null, members.slice(1)));
    expect(during.leader).toEqual(before.leader);
    expect(during.phase).toBe('Degraded');
    expect(during.conditions?.find((c) => c.type === 'Available')).toMatchObject({ status: 'False', reason: 'NoLeader' });
  });

  it('a problem keeps the rest of the status and sets phase and condition', () => {
    const before = statusFromView(input(), view({ member: 'kv-0', epoch: 7, since: '' }, members));
    const s = statusWithProblem(input(before), { phase: 'Degraded', type: 'Available', reason: 'StoresUnreachable', message: 'etcd down' });
    expect(s.leader).toEqual(before.leader);
    expect(s.conditions?.find((c) => c.type === 'Available')).toMatchObject({ status: 'False', reason: 'StoresUnreachable', message: 'etcd down' });
  });
});

describe('mergeConditions', () => {
  it('moves lastTransitionTime only when the status changes', () => {
    const t1 = new Date('2026-11-25T00:00:00Z');
    const t2 = new Date('2026-11-25T00:01:00Z');
    const a = mergeConditions(undefined, t1, 1, [{ type: 'Ready', status: 'True', reason: 'R', message: 'm' }]);
    const b = mergeConditions(a, t2, 2, [{ type: 'Ready', status: 'True', reason: 'R', message: 'm2' }]);
    expect(b[0]!.lastTransitionTime).toBe(t1.toISOString());
    expect(b[0]!.observedGeneration).toBe(2);
    const c = mergeConditions(b, t2, 2, [{ type: 'Ready', status: 'False', reason: 'R', message: 'm' }]);
    expect(c[0]!.lastTransitionTime).toBe(t2.toISOString());
  });
});

describe('the SyncReplication condition and its Events (sync mode)', () => {
  const members = [member('kv-0', 500, 0, { role: 'leader', isLeader: true }), member('kv-1', 500, 0), member('kv-2', 490, 10)];
  const syncInput = (previous?: StatusInput['previous']): StatusInput => ({ ...input(previous), spec: { replicas: 3, master: { image: 'x' }, oplog: { replication: 'sync' } } });
  const withSync = (sync: ClusterView['sync']): ClusterView => ({ ...view({ member: 'kv-0', epoch: 7, since: '2026-11-25T00:00:00.000Z' }, members), sync });
  const cond = (s: ReturnType<typeof statusFromView>) => s.conditions!.find((c) => c.type === 'SyncReplication');

  it('is absent in async mode', () => {
    expect(cond(statusFromView(input(), withSync(null)))).toBeUndefined();
  });

  it("True while the leader's set stands, False FellBackToAsync when it fell back, Unknown before a new leader published one", () => {
    const inSync = statusFromView(syncInput(), withSync({ epoch: 7, leader: 'kv-0', mode: 'sync', members: ['kv-1'], since: 't' }));
    expect(cond(inSync)).toMatchObject({ status: 'True', reason: 'InSync', message: 'kv-1 hold every acknowledged write; only they may take over' });
    const fell = statusFromView(syncInput(inSync), withSync({ epoch: 7, leader: 'kv-0', mode: 'degraded', members: [], since: 't2', reason: 'a write waited 2000 ms' }));
    expect(cond(fell)).toMatchObject({ status: 'False', reason: 'FellBackToAsync' });
    expect(cond(fell)!.message).toMatch(/a write waited 2000 ms/);
    const old = statusFromView(syncInput(), withSync({ epoch: 5, leader: 'kv-2', mode: 'sync', members: ['kv-0', 'kv-1'], since: 't' }));
    expect(cond(old)).toMatchObject({ status: 'Unknown', reason: 'WaitingForStandbys' });

    expect(syncReplicationEvent(inSync.conditions, fell.conditions)).toMatchObject({ type: 'Warning', reason: 'FellBackToAsync' });
    expect(syncReplicationEvent(fell.conditions, fell.conditions)).toBeUndefined();
    expect(syncReplicationEvent(fell.conditions, inSync.conditions)).toMatchObject({ type: 'Normal', reason: 'SyncRestored' });
    expect(syncReplicationEvent(old.conditions, inSync.conditions)).toBeUndefined();
  });
});

// Switchover by annotation: the operator's decisions, pure logic.
import { describe, expect, it } from 'vitest';
import type { ClusterView, MemberView } from '../../src/lib/clusterview.ts';
import { decideSwitchover, pickSwitchoverTarget, type SwitchoverInput } from '../../src/operator/switchover.ts';

const member = (name: string, over: Partial<MemberView> = {}): MemberView => ({
  member: name, role: 'standby', address: '', receivedSeq: 100, appliedSeq: 100, lag: 0, state: 'ok', lastHeartbeat: '', heartbeatAgeMs: 300, version: '0.1.0', isLeader: false, ...over,
});
const view = (over: Partial<ClusterView> = {}): ClusterView => ({
  cluster: 'ns/kv', readAt: '', etcdRevision: 1,
  leader: { member: 'kv-0', epoch: 7, address: '', since: '', ageMs: 0 },
  members: [member('kv-0', { role: 'leader', isLeader: true }), member('kv-1', { lag: 5 }), member('kv-2', { lag: 2 })],
  log: null, snapshot: null, switchover: null, problems: [], ...over,
});
const now = new Date('2026-11-27T10:00:00.000Z');
const input = (over: Partial<SwitchoverInput>): SwitchoverInput => ({ annotation: undefined, current: undefined, view: view(), now, timeoutMs: 30_000, maxLag: 1000, ...over });

describe('decideSwitchover', () => {
  it('a named healthy standby is requested against the current leader epoch', () => {
    const d = decideSwitchover(input({ annotation: 'kv-1' }));
    expect(d).toMatchObject({ kind: 'request', target: 'kv-1', leaderEpoch: 7, status: { target: 'kv-1', result: 'Pending', requestedAt: now.toISOString() } });
    expect(d.kind === 'request' && d.event).toEqual({ type: 'Normal', reason: 'SwitchoverRequested', note: 'switchover requested: kv-0 -> kv-1' });
  });

  it('any picks the least-lagging healthy standby', () => {
    expect(decideSwitchover(input({ annotation: 'any' }))).toMatchObject({ kind: 'request', target: 'kv-2' });
    const stale = view({ members: [member('kv-0', { isLeader: true, role: 'leader' }), member('kv-1', { lag: 5 }), member('kv-2', { lag: 2, heartbeatAgeMs: 9000 })] });
    expect(pickSwitchoverTarget(stale, 1000)?.member).toBe('kv-1');
  });

  it('refuses with a message naming what to do, and writes nothing', () => {
    const cases: Array<[Partial<SwitchoverInput>, RegExp]> = [
      [{ annotation: 'kv-9' }, /kv-9 is not a member of this cluster; standbys: kv-1, kv-2, or any/],
      [{ annotation: 'kv-1', view: view({ members: [member('kv-0', { isLeader: true }), member('kv-1', { lag: 5000 })] }) }, /kv-1 cannot take over now \(role standby, state ok, lag 5000\)/],
      [{ annotation: 'kv-1', view: view({ leader: null }) }, /no member leads right now/],
      [{ annotation: '  ' }, /annotation is empty/],
      [{ annotation: 'any', view: view({ members: [member('kv-0', { isLeader: true }), member('kv-1', { state: 'resyncing' })] }) }, /no standby is healthy/],
      [{ annotation: 'kv-2', current: { target: 'kv-1', requestedAt: now.toISOString(), result: 'Pending' } }, /a switchover to kv-1 is still in progress/],
    ];
    for (const [over, message] of cases) {
      const d = decideSwitchover(input(over));
      expect(d.kind).toBe('record');
      if (d.kind !== 'record') continue;
      expect(d.status.result).toBe('Failed');
      expect(d.status.message).toMatch(message);
      expect(d.event.type).toBe('Warning');
      expect(d.withdraw).toBe(false);
    }
  });

  it('naming the leader is done at once', () => {
    expect(decideSwitchover(input({ annotation: 'kv-0' }))).toMatchObject({ kind: 'record', status: { result: 'Succeeded', message: 'kv-0 already leads' } });
  });

  it('a pending request succeeds when the target leads, and reports how long it took', () => {
    const current = { target: 'kv-1', requestedAt: '2026-11-27T09:59:59.250Z', result: 'Pending' as const };
    const leads = view({ leader: { member: 'kv-1', epoch: 9, address: '', since: '', ageMs: 0 } });
    const d = decideSwitchover(input({ current, view: leads }));
    expect(d).toMatchObject({ kind: 'record', status: { result: 'Succeeded', message: 'kv-1 leads (epoch 9) after 750 ms', completedAt: now.toISOString() }, withdraw: false });
  });

  it('a pending request waits while the request is open or nobody leads', () => {
    const current = { target: 'kv-1', requestedAt: '2026-11-27T09:59:59.000Z', result: 'Pending' as const };
    expect(decideSwitchover(input({ current, view: view({ switchover: { target: 'kv-1', requestedAt: '', ageMs: 1 } }) })).kind).toBe('none');
    expect(decideSwitchover(input({ current, view: view({ leader: null }) })).kind).toBe('none');
  });

  it('fails when the leader declined, and withdraws after the timeout', () => {
    const current = { target: 'kv-1', requestedAt: '2026-11-27T09:59:59.000Z', result: 'Pending' as const };
    expect(decideSwitchover(input({ current }))).toMatchObject({ kind: 'record', status: { result: 'Failed' }, withdraw: false });
    const old = { ...current, requestedAt: '2026-11-27T09:59:00.000Z' };
    const d = decideSwitchover(input({ current: old, view: view({ switchover: { target: 'kv-1', requestedAt: '', ageMs: 1 } }) }));
    expect(d).toMatchObject({ kind: 'record', status: { result: 'Failed', message: 'kv-1 did not take over within 30000 ms; the request was withdrawn' }, withdraw: true });
  });

  it('does nothing without an annotation or a pending request', () => {
    expect(decideSwitchover(input({}))).toEqual({ kind: 'none' });
    expect(decideSwitchover(input({ current: { target: 'kv-1', requestedAt: '', result: 'Succeeded' } }))).toEqual({ kind: 'none' });
  });
});

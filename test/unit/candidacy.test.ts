import { describe, expect, it } from 'vitest';
import { decideCandidacy, DEFAULT_CANDIDACY_STEP_MS, DEFAULT_SWITCHOVER_HOLD_OFF_MS, MASTER_DOWN_STATE, type CandidacyInput, type CandidacyMember } from '../../src/agent/candidacy.ts';

function standby(member: string, appliedSeq: number): CandidacyMember {
  return { member, appliedSeq, role: 'standby' };
}

function input(overrides: Partial<CandidacyInput>): CandidacyInput {
  return {
    self: 'b',
    selfAppliedSeq: 100,
    headSeq: 100,
    maxLagOnFailover: 10,
    members: [],
    stepMs: 250,
    ...overrides,
  };
}

describe('decideCandidacy: the lag limit', () => {
  it('refuses a member whose lag exceeds maxLagOnFailover and says why', () => {
    const d = decideCandidacy(input({ selfAppliedSeq: 89, headSeq: 100, maxLagOnFailover: 10 }));
    expect(d.eligible).toBe(false);
    expect(d.delayMs).toBe(0);
    expect(d.reason).toContain('lag 11');
    expect(d.reason).toContain('maxLagOnFailover 10');
  });

  it('accepts a lag exactly at the limit', () => {
    expect(decideCandidacy(input({ selfAppliedSeq: 90, headSeq: 100, maxLagOnFailover: 10 })).eligible).toBe(true);
  });

  it('with maxLagOnFailover 0 only a fully caught-up member campaigns', () => {
    expect(decideCandidacy(input({ selfAppliedSeq: 99, headSeq: 100, maxLagOnFailover: 0 })).eligible).toBe(false);
    expect(decideCandidacy(input({ selfAppliedSeq: 100, headSeq: 100, maxLagOnFailover: 0 })).eligible).toBe(true);
  });

  it('a member ahead of a stale head reading has no lag', () => {
    const d = decideCandidacy(input({ selfAppliedSeq: 120, headSeq: 100, maxLagOnFailover: 0 }));
    expect(d).toMatchObject({ eligible: true, delayMs: 0 });
  });

  it('the lag limit wins over a switchover naming this member', () => {
    const d = decideCandidacy(input({ selfAppliedSeq: 50, headSeq: 100, switchoverTarget: 'b' }));
    expect(d.eligible).toBe(false);
  });
});

describe('decideCandidacy: ranking by applied sequence', () => {
  it('a lone member campaigns at once', () => {
    expect(decideCandidacy(input({ members: [] }))).toMatchObject({ eligible: true, delayMs: 0 });
  });

  it('ignores its own registry entry (its local appliedSeq is fresher)', () => {
    const d = decideCandidacy(input({ self: 'b', selfAppliedSeq: 100, members: [standby('b', 5), standby('a', 99)] }));
    expect(d.delayMs).toBe(0);
  });

  it('the most caught-up campaigns first, the others one step apart', () => {
    const members = [standby('a', 97), standby('b', 99), standby('c', 100), standby('d', 98)];
    const delayOf = (self: string): number =>
      decideCandidacy(input({ self, selfAppliedSeq: members.find((m) => m.member === self)!.appliedSeq, members })).delayMs;
    expect(delayOf('c')).toBe(0);
    expect(delayOf('b')).toBe(250);
    expect(delayOf('d')).toBe(500);
    expect(delayOf('a')).toBe(750);
  });

  it('breaks ties by member name so two members never share a rank', () => {
    const members = [standby('pod-2', 100), standby('pod-1', 100), standby('pod-0', 100)];
    const delays = members.map((m) => decideCandidacy(input({ self: m.member, selfAppliedSeq: 100, members })).delayMs);
    expect(delays).toEqual([500, 250, 0]);
  });

  it('uses the default step when none is given', () => {
    const d = decideCandidacy({ ...input({ members: [standby('a', 100)] }), stepMs: undefined });
    expect(d.delayMs).toBe(DEFAULT_CANDIDACY_STEP_MS);
  });

  it('members that will not campaign take no rank: leader, promoting, starting, stopping', () => {
    const members: CandidacyMember[] = [
      { member: 'a', appliedSeq: 200, role: 'leader' },
      { member: 'c', appliedSeq: 200, role: 'promoting' },
      { member: 'd', appliedSeq: 200, role: 'starting' },
      { member: 'e', appliedSeq: 200, role: 'stopping' },
    ];
    expect(decideCandidacy(input({ selfAppliedSeq: 100, members })).delayMs).toBe(0);
  });

  it('a candidate (already campaigning) takes a rank like a standby', () => {
    const members: CandidacyMember[] = [{ member: 'a', appliedSeq: 101, role: 'candidate' }];
    expect(decideCandidacy(input({ selfAppliedSeq: 100, headSeq: 101, members })).delayMs).toBe(250);
  });

  it('a member whose master is gone takes no rank, however caught up (it will not campaign)', () => {
    const d = decideCandidacy(input({ self: 'b', selfAppliedSeq: 100, members: [{ ...standby('a', 200), state: MASTER_DOWN_STATE }, standby('c', 50)] }));
    expect(d).toMatchObject({ eligible: true, delayMs: 0 });
    expect(decideCandidacy(input({ self: 'b', members: [{ ...standby('a', 100), state: 'ok' }] })).delayMs).toBe(250);
  });

  it('a switchover target whose master is gone does not delay the failover', () => {
    const d = decideCandidacy(input({ self: 'b', members: [{ ...standby('a', 100), state: MASTER_DOWN_STATE }], switchoverTarget: 'a' }));
    expect(d.delayMs).toBe(0);
  });

  it('members beyond the lag limit take no rank', () => {
    // 'a' is ahead by name but far behind the head: it will not campaign.
    const members = [standby('a', 10), standby('c', 100)];
    const d = decideCandidacy(input({ self: 'b', selfAppliedSeq: 95, headSeq: 100, maxLagOnFailover: 10, members }));
    expect(d.delayMs).toBe(250); // only 'c' is ahead
  });

  it('the reason names the rank', () => {
    const d = decideCandidacy(input({ selfAppliedSeq: 90, headSeq: 95, members: [standby('a', 100), standby('c', 85)] }));
    expect(d.reason).toContain('rank 1 of 3');
  });
});

describe('decideCandidacy: planned switchover', () => {
  const members = [standby('a', 100), standby('b', 100), standby('c', 90)];

  it('the target campaigns at once even when others are more caught up', () => {
    const d = decideCandidacy(input({ self: 'c', selfAppliedSeq: 90, members, switchoverTarget: 'c' }));
    expect(d).toMatchObject({ eligible: true, delayMs: 0 });
    expect(d.reason).toContain('switchover');
  });

  it('everyone else holds off past the target: the hold-off plus their rank', () => {
    const a = decideCandidacy(input({ self: 'a', selfAppliedSeq: 100, members, switchoverTarget: 'c', switchoverHoldOffMs: 3000 }));
    const b = decideCandidacy(input({ self: 'b', selfAppliedSeq: 100, members, switchoverTarget: 'c', switchoverHoldOffMs: 3000 }));
    expect(a).toMatchObject({ eligible: true, delayMs: 3000 });
    expect(b).toMatchObject({ eligible: true, delayMs: 3250 });
    expect(a.reason).toContain('switchover to c');
  });

  it('the default hold-off is one default lease TTL', () => {
    const d = decideCandidacy(input({ self: 'a', selfAppliedSeq: 100, members, switchoverTarget: 'c' }));
    expect(d.delayMs).toBe(DEFAULT_SWITCHOVER_HOLD_OFF_MS);
  });

  it('a target that is not a live member does not delay the failover', () => {
    const d = decideCandidacy(input({ self: 'a', selfAppliedSeq: 100, members, switchoverTarget: 'gone' }));
    expect(d).toMatchObject({ eligible: true, delayMs: 0 });
  });

  it('a target too far behind to campaign does not delay the failover', () => {
    const lagging = [standby('a', 100), standby('z', 1)];
    const d = decideCandidacy(input({ self: 'a', selfAppliedSeq: 100, members: lagging, switchoverTarget: 'z' }));
    expect(d).toMatchObject({ eligible: true, delayMs: 0 });
  });

  it('a target that already leads does not delay anyone', () => {
    const d = decideCandidacy(
      input({ self: 'a', selfAppliedSeq: 100, members: [{ member: 'c', appliedSeq: 100, role: 'leader' }], switchoverTarget: 'c' }),
    );
    expect(d.delayMs).toBe(0);
  });
});

describe('decideCandidacy: input checks', () => {
  it.each([
    ['stepMs', { stepMs: -1 }],
    ['stepMs', { stepMs: Number.NaN }],
    ['maxLagOnFailover', { maxLagOnFailover: -5 }],
    ['switchoverHoldOffMs', { switchoverHoldOffMs: Number.POSITIVE_INFINITY }],
  ] as const)('rejects a bad %s', (name, overrides) => {
    expect(() => decideCandidacy(input(overrides))).toThrow(new RegExp(name));
  });
});

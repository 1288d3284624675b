// The rollout order of the masters' pods: pure logic.
import { describe, expect, it } from 'vitest';
import { nextRolloutStep, podOrdinal, type RolloutInput, type RolloutPod } from '../../src/operator/rollout.ts';

const pod = (ordinal: number, revision = 'new', over: Partial<RolloutPod> = {}): RolloutPod => ({
  name: `kv-${ordinal}`,
  ordinal,
  revision,
  ready: true,
  terminating: false,
  ...over,
});

const input = (over: Partial<RolloutInput> = {}): RolloutInput => ({
  desiredReplicas: 3,
  currentReplicas: 3,
  updateRevision: 'new',
  pods: [pod(0), pod(1), pod(2)],
  leader: 'kv-0',
  members: [
    { pod: 'kv-0', lag: 0 },
    { pod: 'kv-1', lag: 0 },
    { pod: 'kv-2', lag: 0 },
  ],
  maxCatchUpLag: 10,
  switchoverPending: false,
  ...over,
});

describe('nextRolloutStep', () => {
  it('is done when every pod runs the update revision', () => {
    expect(nextRolloutStep(input())).toEqual({ step: { kind: 'done' }, statefulSetReplicas: 3, updatedReplicas: 3 });
  });

  it('replaces outdated standbys first, highest ordinal first, never the leader', () => {
    const plan = nextRolloutStep(input({ pods: [pod(0, 'old'), pod(1, 'old'), pod(2, 'old')] }));
    expect(plan.step).toEqual({ kind: 'delete-pod', pod: 'kv-2', reason: 'standby runs an outdated template' });
    expect(plan.updatedReplicas).toBe(0);
    const next = nextRolloutStep(input({ pods: [pod(0, 'old'), pod(1, 'old'), pod(2)] }));
    expect(next.step).toMatchObject({ kind: 'delete-pod', pod: 'kv-1' });
  });

  it('waits while a replaced pod is not ready, terminating, or behind the log: one member down at a time', () => {
    expect(nextRolloutStep(input({ pods: [pod(0, 'old'), pod(1, 'old'), pod(2, 'new', { ready: false })] })).step).toEqual({
      kind: 'wait',
      reason: 'kv-2 is not ready',
    });
    expect(nextRolloutStep(input({ pods: [pod(0, 'old'), pod(1, 'old'), pod(2, 'old', { terminating: true })] })).step).toEqual({
      kind: 'wait',
      reason: 'kv-2 is terminating',
    });
    const behind = input({ pods: [pod(0, 'old'), pod(1, 'old'), pod(2)], members: [{ pod: 'kv-0', lag: 0 }, { pod: 'kv-1', lag: 0 }, { pod: 'kv-2', lag: 500 }] });
    expect(nextRolloutStep(behind).step).toEqual({ kind: 'wait', reason: 'kv-2 is behind the log' });
    const unregistered = input({ pods: [pod(0, 'old'), pod(1, 'old'), pod(2)], members: [{ pod: 'kv-0', lag: 0 }, { pod: 'kv-1', lag: 0 }] });
    expect(nextRolloutStep(unregistered).step).toEqual({ kind: 'wait', reason: 'kv-2 is behind the log' });
    expect(nextRolloutStep(input({ pods: [pod(0, 'old'), pod(1, 'old')] })).step).toEqual({ kind: 'wait', reason: '1 pod(s) not created yet' });
  });

  it('switches over from an outdated leader to an updated caught-up standby, then replaces the old leader', () => {
    const plan = nextRolloutStep(input({ pods: [pod(0, 'old'), pod(1), pod(2)] }));
    expect(plan.step).toEqual({ kind: 'switchover', to: 'kv-1', reason: 'the leader kv-0 runs an outdated template' });
    expect(nextRolloutStep(input({ pods: [pod(0, 'old'), pod(1), pod(2)], switchoverPending: true })).step.kind).toBe('wait');
    const after = nextRolloutStep(input({ pods: [pod(0, 'old'), pod(1), pod(2)], leader: 'kv-1' }));
    expect(after.step).toEqual({ kind: 'delete-pod', pod: 'kv-0', reason: 'standby runs an outdated template' });
  });

  it('does not replace anything while there is no leader', () => {
    expect(nextRolloutStep(input({ pods: [pod(0, 'old'), pod(1), pod(2)], leader: undefined })).step.kind).toBe('wait');
  });

  it('a single-replica cluster never gets a switchover target and waits instead of deleting its only leader', () => {
    const plan = nextRolloutStep(input({ desiredReplicas: 1, currentReplicas: 1, pods: [pod(0, 'old')], members: [{ pod: 'kv-0', lag: 0 }] }));
    expect(plan.step).toEqual({ kind: 'wait', reason: 'no updated standby is ready and caught up to take over' });
  });

  it('scale-down holds the StatefulSet size and moves leadership off a removed ordinal first', () => {
    const plan = nextRolloutStep(input({ desiredReplicas: 2, leader: 'kv-2' }));
    expect(plan).toEqual({
      step: { kind: 'switchover', to: 'kv-0', reason: "scale-down removes the leader's pod kv-2" },
      statefulSetReplicas: 3,
      updatedReplicas: 2,
    });
    // Once the leader moved, the StatefulSet may shrink.
    expect(nextRolloutStep(input({ desiredReplicas: 2, leader: 'kv-1' }))).toEqual({ step: { kind: 'done' }, statefulSetReplicas: 2, updatedReplicas: 2 });
  });

  it('scale-down waits when no surviving member is caught up', () => {
    const plan = nextRolloutStep(
      input({ desiredReplicas: 1, leader: 'kv-2', members: [{ pod: 'kv-0', lag: 99 }, { pod: 'kv-1', lag: 0 }, { pod: 'kv-2', lag: 0 }] }),
    );
    expect(plan.step.kind).toBe('wait');
    expect(plan.statefulSetReplicas).toBe(3);
  });

  it('scale-up is the StatefulSet controller\'s job: plan is done with the new size', () => {
    expect(nextRolloutStep(input({ desiredReplicas: 5 }))).toMatchObject({ statefulSetReplicas: 5 });
  });
});

describe('podOrdinal', () => {
  it('reads the trailing ordinal', () => {
    expect(podOrdinal('kv-12')).toBe(12);
    expect(podOrdinal('my-cluster-0')).toBe(0);
    expect(podOrdinal('nope')).toBe(-1);
  });
});

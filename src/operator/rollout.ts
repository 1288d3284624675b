// The order in which the masters' pods change: pure logic, one step at a time.
//
// The masters' StatefulSet uses OnDelete updates, so nothing is replaced until
// the operator deletes a pod. Each reconcile asks `nextRolloutStep` what to do
// next and does at most that one thing, so at most one member is down at once:
//   1. wait while any member is terminating, not ready, or behind the log;
//   2. scale-down: when the leader sits on an ordinal about to be removed, hand
//      leadership to a surviving member first (and keep the StatefulSet at its
//      current size until then);
//   3. replace outdated standbys, highest ordinal first;
//   4. switch over from an outdated leader to an updated, caught-up standby;
//   5. the old leader is then a standby and is replaced by step 3.
// Failover never waits for this: it only orders planned disruption.

export interface RolloutPod {
  name: string;
  ordinal: number;
  /** The pod's controller-revision-hash label: which template it runs. */
  revision: string | undefined;
  /** The pod's Ready condition (both containers, the agent's /readyz included). */
  ready: boolean;
  /** Set when the pod has a deletionTimestamp. */
  terminating: boolean;
}

export interface RolloutMember {
  pod: string;
  /** Entries behind the log head; undefined when the member is not registered. */
  lag: number | undefined;
}

export interface RolloutInput {
  /** spec.replicas. */
  desiredReplicas: number;
  /** Replicas the StatefulSet has now (spec.replicas of the live object). */
  currentReplicas: number;
  /** status.updateRevision of the StatefulSet: the template pods should run. */
  updateRevision: string | undefined;
  pods: RolloutPod[];
  /** The pod that holds the leader key; undefined during a failover. */
  leader: string | undefined;
  members: RolloutMember[];
  /** A standby counts as caught up when it is at most this many entries behind. */
  maxCatchUpLag: number;
  /** A switchover asked for and not finished yet. */
  switchoverPending: boolean;
}

export type RolloutStep =
  | { kind: 'done' }
  | { kind: 'wait'; reason: string }
  | { kind: 'delete-pod'; pod: string; reason: string }
  | { kind: 'switchover'; to: string; reason: string };

export interface RolloutPlan {
  step: RolloutStep;
  /** The replicas to give the StatefulSet now: held above spec while the leader must move off a removed ordinal. */
  statefulSetReplicas: number;
  /** Pods running the current template (for status.updatedReplicas). */
  updatedReplicas: number;
}

/** Ordinal of a StatefulSet pod name `<set>-<n>`; -1 when the name has no ordinal. */
export function podOrdinal(name: string): number {
  const m = /-(\d+)$/.exec(name);
  return m ? Number(m[1]) : -1;
}

export function nextRolloutStep(input: RolloutInput): RolloutPlan {
  const { desiredReplicas, updateRevision, leader } = input;
  const lagOf = new Map(input.members.map((m) => [m.pod, m.lag]));
  const caughtUp = (pod: string): boolean => {
    const lag = lagOf.get(pod);
    return lag !== undefined && lag <= input.maxCatchUpLag;
  };
  const isUpdated = (p: RolloutPod): boolean => updateRevision === undefined || p.revision === updateRevision;
  const kept = input.pods.filter((p) => p.ordinal < desiredReplicas);
  const updatedReplicas = kept.filter(isUpdated).length;
  const leaderPod = input.pods.find((p) => p.name === leader);
  const leaderRemoved = leaderPod !== undefined && leaderPod.ordinal >= desiredReplicas;
  // Never shrink under the leader: the StatefulSet would delete its pod and force a failover.
  const statefulSetReplicas = leaderRemoved ? Math.max(desiredReplicas, input.currentReplicas) : desiredReplicas;
  const plan = (step: RolloutStep): RolloutPlan => ({ step, statefulSetReplicas, updatedReplicas });

  if (input.switchoverPending) return plan({ kind: 'wait', reason: 'a switchover is in progress' });
  const terminating = input.pods.find((p) => p.terminating);
  if (terminating) return plan({ kind: 'wait', reason: `${terminating.name} is terminating` });

  if (leaderRemoved) {
    const target = bestTarget(kept, leader, caughtUp, isUpdated);
    if (!target) return plan({ kind: 'wait', reason: `the leader ${leader} is on a removed ordinal and no remaining member is ready and caught up` });
    return plan({ kind: 'switchover', to: target.name, reason: `scale-down removes the leader's pod ${leader}` });
  }

  const outdated = kept.filter((p) => !isUpdated(p));
  if (outdated.length === 0) return plan({ kind: 'done' });
  if (leader === undefined) return plan({ kind: 'wait', reason: 'no leader: waiting for the election before replacing pods' });

  // Only one member may be down at once: every kept pod must be ready and caught up first.
  const missing = desiredReplicas - kept.length;
  if (missing > 0) return plan({ kind: 'wait', reason: `${missing} pod(s) not created yet` });
  const unready = kept.find((p) => !p.ready || (p.name !== leader && !caughtUp(p.name)));
  if (unready) return plan({ kind: 'wait', reason: `${unready.name} is ${unready.ready ? 'behind the log' : 'not ready'}` });

  const outdatedStandbys = outdated.filter((p) => p.name !== leader).sort((a, b) => b.ordinal - a.ordinal);
  if (outdatedStandbys.length > 0) {
    const pod = outdatedStandbys[0]!;
    return plan({ kind: 'delete-pod', pod: pod.name, reason: 'standby runs an outdated template' });
  }
  // Only the leader is outdated now.
  const target = bestTarget(kept, leader, caughtUp, isUpdated);
  if (!target) return plan({ kind: 'wait', reason: 'no updated standby is ready and caught up to take over' });
  return plan({ kind: 'switchover', to: target.name, reason: `the leader ${leader} runs an outdated template` });
}

/** The standby to hand leadership to: ready, caught up, updated when possible, least lag, lowest ordinal. */
function bestTarget(
  pods: RolloutPod[],
  leader: string | undefined,
  caughtUp: (pod: string) => boolean,
  isUpdated: (p: RolloutPod) => boolean,
): RolloutPod | undefined {
  const candidates = pods.filter((p) => p.name !== leader && p.ready && !p.terminating && caughtUp(p.name));
  candidates.sort((a, b) => Number(isUpdated(b)) - Number(isUpdated(a)) || a.ordinal - b.ordinal);
  return candidates[0];
}

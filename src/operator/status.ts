// The HotStandbyCluster status from what the agents publish (a ClusterView
// read from etcd and the stream server). Pure: the previous status and the
// clock come in, the next status goes out.
import type { ClusterView } from '../lib/clusterview.ts';
import { ROLE_LEADER } from '../lib/labels.ts';
import type { EventInput } from './kube/events.ts';
import type { HotStandbyClusterSpec, HotStandbyClusterStatus } from '../api/v1alpha1.ts';

type Condition = NonNullable<HotStandbyClusterStatus['conditions']>[number];

/** Marks "the leader's pod is not known here", as opposed to "known, without a role label". */
const ROLE_LABEL_NOT_CHECKED = Symbol('not checked');

/** A member counts as ready when its heartbeat is this fresh and its state is ok. */
export const MEMBER_READY_HEARTBEAT_MS = 5000;

export interface StatusInput {
  name: string;
  generation: number;
  spec: HotStandbyClusterSpec;
  previous: HotStandbyClusterStatus | undefined;
  now: Date;
  /**
   * The hotstandby.dev/role label of each of the cluster's pods that exists
   * (undefined value: no label). The leader Service routes only to a pod
   * labelled leader, so a leader whose pod is not labelled yet is not
   * available to clients. Absent (agents outside Kubernetes): not checked.
   */
  podRoles?: ReadonlyMap<string, string | undefined>;
}

export interface LastSeenLeader {
  pod: string;
  epoch: number;
  /** When the operator last saw that leader's heartbeat (ISO). */
  lastHeartbeat: string;
}

/** The status for a cluster whose stores were read. `lastSeen` is the leader as the operator saw it last (for failover durations). */
export function statusFromView(input: StatusInput, view: ClusterView, lastSeen?: LastSeenLeader): HotStandbyClusterStatus {
  const { spec, previous, now } = input;
  const replicas = spec.replicas ?? 3;
  const members = view.members.map((m) => ({
    pod: m.member,
    role: m.role,
    appliedSeq: m.appliedSeq,
    lag: Math.max(0, m.lag ?? 0),
    ready: m.state === 'ok' && m.heartbeatAgeMs !== null && m.heartbeatAgeMs < MEMBER_READY_HEARTBEAT_MS,
  }));
  const readyReplicas = members.filter((m) => m.ready).length;
  const maxLag = members.filter((m) => m.pod !== view.leader?.member).reduce((a, m) => Math.max(a, m.lag), 0);
  const status: HotStandbyClusterStatus = {
    observedGeneration: input.generation,
    replicas,
    readyReplicas,
    ready: `${readyReplicas}/${replicas}`,
    selector: `hotstandby.dev/cluster=${input.name}`,
    members,
    maxLag,
    failoverCount: previous?.failoverCount ?? 0,
    ...(previous?.lastFailover ? { lastFailover: previous.lastFailover } : {}),
    ...(view.log ? { oplog: { headSeq: view.log.headSeq, ...(view.log.length !== undefined ? { length: view.log.length } : {}) } } : {}),
    snapshot: view.snapshot
      ? { lastSeq: view.snapshot.seq, lastTime: view.snapshot.createdAt, sizeBytes: view.snapshot.sizeBytes, state: 'Stored' }
      : { state: 'None' },
  };
  if (view.leader) {
    status.leader = { pod: view.leader.member, epoch: view.leader.epoch, ...(view.leader.since ? { since: view.leader.since } : {}) };
    const before = previous?.leader;
    if (before?.pod && before.epoch !== undefined && before.epoch !== view.leader.epoch) {
      const durationMs =
        lastSeen && lastSeen.epoch === before.epoch && view.leader.since ? Date.parse(view.leader.since) - Date.parse(lastSeen.lastHeartbeat) : undefined;
      status.lastFailover = {
        time: view.leader.since || now.toISOString(),
        from: before.pod,
        to: view.leader.member,
        ...(durationMs !== undefined && durationMs >= 0 ? { durationMs } : {}),
      };
      status.failoverCount = (previous?.failoverCount ?? 0) + 1;
    }
  } else if (previous?.leader) {
    status.leader = previous.leader; // kept until a new leader is known, so the failover is counted once
  }
  const leading = Boolean(view.leader);
  const leaderPodRole = view.leader && input.podRoles?.has(view.leader.member) ? input.podRoles.get(view.leader.member) : ROLE_LABEL_NOT_CHECKED;
  // The agent labels its pod before its master may write, so this is brief; the operator's backstop labels it too.
  const routed = leaderPodRole === ROLE_LABEL_NOT_CHECKED || leaderPodRole === ROLE_LEADER;
  const available = leading && routed;
  status.phase = available && readyReplicas >= replicas ? 'Running' : leading || previous?.phase === 'Running' || previous?.phase === 'Degraded' ? 'Degraded' : 'Provisioning';
  status.conditions = mergeConditions(previous?.conditions, now, input.generation, [
    !leading
      ? { type: 'Available', status: 'False', reason: 'NoLeader', message: 'no member holds the leader lease' }
      : !routed
        ? {
            type: 'Available',
            status: 'False',
            reason: 'LeaderNotRouted',
            message: `${view.leader!.member} leads at epoch ${view.leader!.epoch} but its pod is not labelled hotstandby.dev/role=leader yet, so the leader Service has no endpoint`,
          }
        : { type: 'Available', status: 'True', reason: 'LeaderElected', message: `${view.leader!.member} leads at epoch ${view.leader!.epoch}` },
    readyReplicas >= replicas
      ? { type: 'Ready', status: 'True', reason: 'AllMembersReady', message: `${readyReplicas}/${replicas} members ready` }
      : { type: 'Ready', status: 'False', reason: 'MembersNotReady', message: `${readyReplicas}/${replicas} members ready${view.problems.length ? `; ${view.problems.join('; ')}` : ''}` },
    ...(spec.oplog?.replication === 'sync' ? [syncReplicationCondition(view)] : []),
  ]);
  return status;
}

/** Reasons of the SyncReplication condition (sync mode only). */
export const SYNC_REASONS = { inSync: 'InSync', fellBack: 'FellBackToAsync', waiting: 'WaitingForStandbys' } as const;

/**
 * sync mode: True while the leader's published sync set stands; False
 * FellBackToAsync once it acknowledged writes without standbys
 * (onSyncTimeout async); Unknown while a new leader has not published a set.
 */
export function syncReplicationCondition(view: ClusterView): Omit<Condition, 'lastTransitionTime' | 'observedGeneration'> {
  const rec = view.sync;
  const current = rec && view.leader && rec.epoch === view.leader.epoch;
  if (current && rec.mode === 'degraded') {
    return { type: 'SyncReplication', status: 'False', reason: SYNC_REASONS.fellBack, message: `writes are acknowledged without standbys since ${rec.since}: ${rec.reason ?? 'too few standbys in sync'}` };
  }
  if (current && rec.mode === 'sync') {
    return { type: 'SyncReplication', status: 'True', reason: SYNC_REASONS.inSync, message: `${rec.members.join(', ')} hold every acknowledged write; only they may take over` };
  }
  const inherited = rec?.mode === 'sync' ? `; members of the last set (${rec.members.join(', ')}) may take over` : '';
  return { type: 'SyncReplication', status: 'Unknown', reason: SYNC_REASONS.waiting, message: `the leader has not published a sync set yet${inherited}` };
}

/** The status when the stores could not be read, or the cluster cannot be handled: only phase and conditions move. */
export function statusWithProblem(
  input: StatusInput,
  problem: { phase: NonNullable<HotStandbyClusterStatus['phase']>; type: string; reason: string; message: string },
): HotStandbyClusterStatus {
  return {
    ...(input.previous ?? {}),
    observedGeneration: input.generation,
    phase: problem.phase,
    conditions: mergeConditions(input.previous?.conditions, input.now, input.generation, [
      { type: problem.type, status: 'False', reason: problem.reason, message: problem.message },
    ]),
  };
}

/** Conditions keyed by type; lastTransitionTime moves only when a status changes. */
export function mergeConditions(
  previous: Condition[] | undefined,
  now: Date,
  generation: number,
  next: Array<Omit<Condition, 'lastTransitionTime' | 'observedGeneration'>>,
): Condition[] {
  const out = new Map((previous ?? []).map((c) => [c.type, c]));
  for (const c of next) {
    const before = out.get(c.type);
    out.set(c.type, {
      ...c,
      observedGeneration: generation,
      lastTransitionTime: before && before.status === c.status ? before.lastTransitionTime : now.toISOString(),
    });
  }
  return [...out.values()];
}

/**
 * The Event for a change of the SyncReplication condition worth telling:
 * falling back to async (Warning), and returning to sync from it (Normal).
 */
export function syncReplicationEvent(before: Condition[] | undefined, after: Condition[] | undefined): EventInput | undefined {
  const was = before?.find((c) => c.type === 'SyncReplication');
  const now = after?.find((c) => c.type === 'SyncReplication');
  if (!now || was?.reason === now.reason) return undefined;
  if (now.reason === SYNC_REASONS.fellBack) return { type: 'Warning', reason: SYNC_REASONS.fellBack, action: 'Replicate', note: now.message ?? '' };
  if (now.reason === SYNC_REASONS.inSync && was?.reason === SYNC_REASONS.fellBack) return { type: 'Normal', reason: 'SyncRestored', action: 'Replicate', note: now.message ?? '' };
  return undefined;
}

// Planned switchover asked for with the `hotstandby.dev/switchover-to`
// annotation (a pod name, or `any`): pure decisions, one per reconcile.
//
// The operator only asks (it writes the cluster's `switchover` key, exactly as
// `hotstandby switchover` does); the leader's agent drains and resigns and the
// target takes over. The annotation is removed once the request is written or
// refused, and the outcome is kept in status.switchover with an Event.
import type { ClusterView, MemberView } from '../lib/clusterview.ts';

export interface SwitchoverStatus {
  target: string;
  requestedAt: string;
  result: 'Pending' | 'Succeeded' | 'Failed';
  message?: string;
  completedAt?: string;
}

export interface SwitchoverInput {
  /** The annotation's value, when present. */
  annotation: string | undefined;
  /** status.switchover as last written. */
  current: SwitchoverStatus | undefined;
  view: ClusterView;
  now: Date;
  /** A pending request older than this is withdrawn and reported as failed. */
  timeoutMs: number;
  /** Standbys further behind than this are not chosen for `any`, nor accepted by name. */
  maxLag: number;
  /** Who asked: 'annotation' or a rollout step; only for messages. */
  cause?: string;
}

export type SwitchoverDecision =
  | { kind: 'none' }
  /** Write the request for `target` against the leader at `leaderEpoch`, then record `status`. */
  | { kind: 'request'; target: string; leaderEpoch: number; status: SwitchoverStatus; event: SwitchoverEvent }
  /** Record `status` (a refusal, a success, a failure); withdraw the pending request when `withdraw`. */
  | { kind: 'record'; status: SwitchoverStatus; event: SwitchoverEvent; withdraw: boolean };

export interface SwitchoverEvent {
  type: 'Normal' | 'Warning';
  reason: 'SwitchoverRequested' | 'SwitchoverDone' | 'SwitchoverFailed' | 'SwitchoverRefused';
  note: string;
}

const HEARTBEAT_FRESH_MS = 5000;

function eligible(m: MemberView, maxLag: number): boolean {
  return !m.isLeader && m.role === 'standby' && m.state === 'ok' && m.lag !== null && m.lag <= maxLag && m.heartbeatAgeMs !== null && m.heartbeatAgeMs < HEARTBEAT_FRESH_MS;
}

/** The standby `any` picks: eligible, least lag, then name order. */
export function pickSwitchoverTarget(view: ClusterView, maxLag: number): MemberView | undefined {
  return view.members.filter((m) => eligible(m, maxLag)).sort((a, b) => (a.lag ?? 0) - (b.lag ?? 0) || a.member.localeCompare(b.member))[0];
}

export function decideSwitchover(input: SwitchoverInput): SwitchoverDecision {
  const { view, now, annotation } = input;
  const at = now.toISOString();
  const leader = view.leader;

  if (annotation !== undefined) {
    const wanted = annotation.trim();
    const refuse = (message: string): SwitchoverDecision => ({
      kind: 'record',
      status: { target: wanted || '(empty)', requestedAt: at, result: 'Failed', message, completedAt: at },
      event: { type: 'Warning', reason: 'SwitchoverRefused', note: message },
      withdraw: false,
    });
    if (input.current?.result === 'Pending') return refuse(`a switchover to ${input.current.target} is still in progress; annotate again once it is done`);
    if (!wanted) return refuse('the hotstandby.dev/switchover-to annotation is empty; set it to a pod name or any');
    if (!leader) return refuse('no member leads right now (a failover may be under way), so there is nothing to hand over; try again when a leader is elected');
    if (wanted === leader.member) {
      return {
        kind: 'record',
        status: { target: wanted, requestedAt: at, result: 'Succeeded', message: `${wanted} already leads`, completedAt: at },
        event: { type: 'Normal', reason: 'SwitchoverDone', note: `${wanted} already leads; nothing to do` },
        withdraw: false,
      };
    }
    let target: MemberView | undefined;
    if (wanted === 'any') {
      target = pickSwitchoverTarget(view, input.maxLag);
      if (!target) return refuse(`no standby is healthy and within ${input.maxLag} entries of the leader; nothing to switch over to`);
    } else {
      target = view.members.find((m) => m.member === wanted);
      const names = view.members.filter((m) => !m.isLeader).map((m) => m.member).join(', ') || 'none';
      if (!target) return refuse(`${wanted} is not a member of this cluster; standbys: ${names}, or any`);
      if (!eligible(target, input.maxLag)) {
        return refuse(`${wanted} cannot take over now (role ${target.role}, state ${target.state}, lag ${target.lag ?? '?'}); pick a healthy standby (${names}) or any`);
      }
    }
    return {
      kind: 'request',
      target: target.member,
      leaderEpoch: leader.epoch,
      status: { target: target.member, requestedAt: at, result: 'Pending', message: `${leader.member} hands over to ${target.member}${input.cause ? ` (${input.cause})` : ''}` },
      event: { type: 'Normal', reason: 'SwitchoverRequested', note: `switchover requested: ${leader.member} -> ${target.member}${input.cause ? ` (${input.cause})` : ''}` },
    };
  }

  const current = input.current;
  if (current?.result !== 'Pending') return { kind: 'none' };
  const tookMs = Math.max(0, now.getTime() - Date.parse(current.requestedAt));
  const finish = (result: 'Succeeded' | 'Failed', message: string, withdraw = false): SwitchoverDecision => ({
    kind: 'record',
    status: { ...current, result, message, completedAt: at },
    event: result === 'Succeeded' ? { type: 'Normal', reason: 'SwitchoverDone', note: message } : { type: 'Warning', reason: 'SwitchoverFailed', note: message },
    withdraw,
  });
  if (leader?.member === current.target) return finish('Succeeded', `${current.target} leads (epoch ${leader.epoch}) after ${tookMs} ms`);
  if (leader && view.switchover === null && leader.member !== current.target) {
    // The request is gone but the target does not lead: the old leader declined
    // (the target did not catch up in time) or a failover chose someone else.
    return finish('Failed', `${leader.member} leads, not ${current.target}: the leader declined or another member took over (see the agents' logs)`);
  }
  if (tookMs > input.timeoutMs) return finish('Failed', `${current.target} did not take over within ${input.timeoutMs} ms; the request was withdrawn`, true);
  return { kind: 'none' };
}

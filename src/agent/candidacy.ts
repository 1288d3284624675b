// The candidacy rule: when the leader key is found absent, may this member
// campaign, and after what delay? Pure logic, no I/O, so every branch is unit
// tested and the rule is documented in one place (docs/election.md).
//
// Why a delay instead of a vote: the etcd transaction already guarantees that
// exactly one campaigner wins. The delay only decides *who* is likely to win,
// so the most caught-up standby (the one with the least log to apply before it
// can accept writes) normally does, and a planned switchover lands on its target.
import type { AgentRole } from './types.ts';

export const DEFAULT_CANDIDACY_STEP_MS = 250;
/**
 * The registry state of a member whose master is gone: it will not campaign
 * (its agent refuses), so it must take no rank, or the best real candidate
 * would wait a step for nothing.
 */
export const MASTER_DOWN_STATE = 'master-down';
/**
 * While a planned switchover names another member, everyone else waits this
 * long (plus their rank delay) before campaigning: one default lease TTL, so
 * the target wins unless it is really gone, and then the others still take over.
 */
export const DEFAULT_SWITCHOVER_HOLD_OFF_MS = 5000;

/** What the rule needs to know about another member (a subset of MemberStatus). */
export interface CandidacyMember {
  member: string;
  appliedSeq: number;
  role: AgentRole;
  /** Registry state ("ok", "lagging", "master-down", ...); absent = "ok". */
  state?: string;
}

export interface CandidacyInput {
  /** This member's name. */
  self: string;
  /** What this member's master has applied (fresher than its registry entry). */
  selfAppliedSeq: number;
  /** The last known head of the log (highest sequence the old leader appended). */
  headSeq: number;
  /** A member further behind the head than this does not campaign. */
  maxLagOnFailover: number;
  /** Live members from the registry; may include self (its entry is ignored). */
  members: readonly CandidacyMember[];
  /** Delay between successive ranks. */
  stepMs?: number;
  /** The member a pending planned switchover names, if any. */
  switchoverTarget?: string;
  /** Extra wait for non-targets while a switchover is pending. */
  switchoverHoldOffMs?: number;
}

export interface CandidacyDecision {
  eligible: boolean;
  /** Wait this long before campaigning (0 when not eligible). */
  delayMs: number;
  /** Short human text, logged by the election. */
  reason: string;
}

/**
 * Roles whose members may campaign and so compete for a rank. A leader or a
 * promoting member still holds (or just won) the key; a starting or stopping
 * member will not campaign.
 */
const CAMPAIGNING_ROLES: ReadonlySet<AgentRole> = new Set<AgentRole>(['standby', 'candidate']);

export function decideCandidacy(input: CandidacyInput): CandidacyDecision {
  const stepMs = input.stepMs ?? DEFAULT_CANDIDACY_STEP_MS;
  const holdOffMs = input.switchoverHoldOffMs ?? DEFAULT_SWITCHOVER_HOLD_OFF_MS;
  requireNonNegative('stepMs', stepMs);
  requireNonNegative('switchoverHoldOffMs', holdOffMs);
  requireNonNegative('maxLagOnFailover', input.maxLagOnFailover);

  const lag = lagOf(input.headSeq, input.selfAppliedSeq);
  if (lag > input.maxLagOnFailover) {
    return {
      eligible: false,
      delayMs: 0,
      reason: `lag ${lag} (head ${input.headSeq}, applied ${input.selfAppliedSeq}) exceeds maxLagOnFailover ${input.maxLagOnFailover}`,
    };
  }

  // Rivals: other live members that would campaign too, i.e. in a campaigning
  // role, with a live master, and within the lag limit. Someone who will not campaign must not
  // take a rank, or the best real candidate would wait for nothing.
  const rivals = input.members.filter(
    (m) =>
      m.member !== input.self &&
      CAMPAIGNING_ROLES.has(m.role) &&
      m.state !== MASTER_DOWN_STATE &&
      lagOf(input.headSeq, m.appliedSeq) <= input.maxLagOnFailover,
  );

  const target = input.switchoverTarget;
  if (target !== undefined && target === input.self) {
    return { eligible: true, delayMs: 0, reason: 'planned switchover target: campaigning at once' };
  }

  const ahead = rivals.filter((m) => isAhead(m, input.self, input.selfAppliedSeq));
  const rank = ahead.length;
  const rankDelay = rank * stepMs;
  const rankText = `rank ${rank} of ${rivals.length + 1} by applied sequence (applied ${input.selfAppliedSeq}, lag ${lag})`;

  // A switchover target counts only while it is alive and could win; a
  // request naming a dead or lagging member must not delay the failover.
  if (target !== undefined && rivals.some((m) => m.member === target)) {
    return {
      eligible: true,
      delayMs: holdOffMs + rankDelay,
      reason: `planned switchover to ${target} pending: holding off ${holdOffMs} ms, then ${rankText}`,
    };
  }
  return { eligible: true, delayMs: rankDelay, reason: rankText };
}

/** Lag never goes below 0: a member can be ahead of a stale head reading. */
function lagOf(headSeq: number, appliedSeq: number): number {
  return Math.max(0, headSeq - appliedSeq);
}

/** `m` ranks before self: applied more, or the same and sorts first by name. */
function isAhead(m: CandidacyMember, self: string, selfAppliedSeq: number): boolean {
  if (m.appliedSeq !== selfAppliedSeq) return m.appliedSeq > selfAppliedSeq;
  return m.member < self;
}

function requireNonNegative(name: string, value: number): void {
  if (!Number.isFinite(value) || value < 0) {
    throw new RangeError(`${name} must be a finite number >= 0, got ${value}`);
  }
}

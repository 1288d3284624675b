// The faults a chaos run injects, one entry per kind. A kind picks its victim,
// injects the fault, and undoes it (restart, SIGCONT) after the run has seen
// writes resume. Add a kind by adding one entry to FAULT_KINDS (network faults
// from src/chaos/netns.ts go here when that lands).
//
// Not a kind: restarting the stream server empty. The log lives only there;
// in async mode such a restart loses it and the epoch fence, and the cluster
// does not claim to survive it (docs/chaos.md, "Fault kinds").
import type { LocalCluster, Member } from '../demo/localcluster.ts';
import { sleep } from '../lib/time.ts';

export interface FaultContext {
  cluster: LocalCluster;
  leader: Member;
  leaseTtlSeconds: number;
  random: () => number;
  signal: AbortSignal;
  /** An event line for the run's table / progress. */
  note: (line: string) => void;
}

export interface InjectedFault {
  victim: Member;
  /** What happened, for the event lines. */
  what: string;
  /**
   * Whether leadership must move off the victim: then the recovery clock stops
   * at the first write acknowledged by another member, else at the next
   * acknowledged write by anyone.
   */
  failover: boolean;
  /** Undoes the fault (restart, SIGCONT); called once writes resumed. */
  heal(): Promise<void>;
}

export interface FaultKind {
  name: string;
  /** One line for docs/chaos.md and the --help text in src/cli/commands/chaos.ts (test/unit/chaos-cli.test.ts checks it names every kind). */
  summary: string;
  /** In the default set of `hotstandby chaos` (a kind that needs set-up, say network namespaces, may not be). */
  byDefault: boolean;
  inject(ctx: FaultContext): Promise<InjectedFault>;
}

/**
 * Restarts a killed member as a kubelet would: when a process exits during
 * start-up (an agent whose first registration failed, say, with etcd slow under
 * load), it is started again, up to 3 times; each retry is noted.
 */
async function restartAsKubelet(ctx: FaultContext, m: Member): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await ctx.cluster.restart(m);
      return;
    } catch (err) {
      if (attempt >= 3 || ctx.signal.aborted) throw err;
      ctx.note(`restart of ${m.name} failed (${(err as Error).message.split('\n')[0]}); starting it again`);
    }
  }
}

function pick<T>(items: readonly T[], random: () => number): T {
  return items[Math.floor(random() * items.length)]!;
}

export const FAULT_KINDS: readonly FaultKind[] = [
  {
    name: 'kill-leader',
    summary: "kill -9 the leader's agent and master, restart them as a standby",
    byDefault: true,
    async inject(ctx) {
      const { cluster, leader } = ctx;
      cluster.kill(leader);
      return { victim: leader, what: `kill -9 ${leader.name} (leader: agent + master)`, failover: true, heal: () => restartAsKubelet(ctx, leader) };
    },
  },
  {
    name: 'kill-leader-master',
    summary: "kill -9 the leader's master only (its agent resigns), start a new master beside the agent",
    byDefault: true,
    async inject({ cluster, leader }) {
      cluster.killMaster(leader);
      return { victim: leader, what: `kill -9 ${leader.name}'s master (leader; agent runs on)`, failover: true, heal: () => cluster.restartMaster(leader) };
    },
  },
  {
    name: 'kill-standby',
    summary: 'kill -9 a standby (agent + master), restart it',
    byDefault: true,
    async inject(ctx) {
      const { cluster, leader, random } = ctx;
      const victim = pick(
        cluster.members.filter((m) => m !== leader),
        random,
      );
      cluster.kill(victim);
      return { victim, what: `kill -9 ${victim.name} (standby)`, failover: false, heal: () => restartAsKubelet(ctx, victim) };
    },
  },
  {
    name: 'pause-leader',
    summary: "SIGSTOP the leader's agent for the lease TTL + 1.5 s, then SIGCONT (its master keeps running)",
    byDefault: true,
    async inject({ cluster, leader, leaseTtlSeconds, signal }) {
      cluster.pauseAgent(leader);
      // Paused past the TTL whatever happens next, so the lease expires on the server.
      const resumeAt = sleep(leaseTtlSeconds * 1000 + 1500, signal).catch(() => undefined);
      return {
        victim: leader,
        what: `SIGSTOP ${leader.name}'s agent (leader) for ${leaseTtlSeconds + 1.5} s`,
        failover: true,
        heal: async () => {
          await resumeAt;
          cluster.resumeAgent(leader);
        },
      };
    },
  },
];


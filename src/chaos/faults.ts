// The faults a chaos run injects, one entry per kind. A kind picks its victim,
// injects the fault, and undoes it (restart, SIGCONT) after the run has seen
// writes resume. Add a kind by adding one entry to FAULT_KINDS. Network kinds
// (`network: true`) cut links between the members' network namespaces
// (src/chaos/netns.ts): the run puts every member in a NetLab when one is
// selected, which needs root.
//
// Not a kind: restarting the stream server empty. The log lives only there;
// in async mode such a restart loses it and the epoch fence, and the cluster
// does not claim to survive it (docs/chaos.md, "Fault kinds").
import type { LocalCluster, Member } from '../demo/localcluster.ts';
import { sleep } from '../lib/time.ts';
import type { NetLab } from './netns.ts';

/** The lab's names for the stores (NetLab targets), as the run registers them. */
export const ETCD_TARGET = 'etcd';
export const STREAM_TARGET = 'stream';
/** How long a flap-leader fault flaps, and the half-period (cut for one, up for the next). */
export const FLAP_MS = 4000;
export const FLAP_PERIOD_MS = 500;

export interface FaultContext {
  cluster: LocalCluster;
  leader: Member;
  leaseTtlSeconds: number;
  random: () => number;
  signal: AbortSignal;
  /** The members' network lab; present when a network kind is selected. */
  lab?: NetLab;
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
  /** In the default set of `hotstandby chaos` wherever it runs (network kinds are not: they join the default set only when network namespaces are usable, see selectKinds in src/cli/commands/chaos.ts). */
  byDefault: boolean;
  /** Needs the members in network namespaces (root, iproute2, iptables). */
  network?: boolean;
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

function needLab(ctx: FaultContext, kind: string): NetLab {
  if (!ctx.lab) throw new Error(`fault kind ${kind} needs the members in network namespaces, but the run has no network lab`);
  return ctx.lab;
}

/** Resolves after `ms` (or at once when the run is stopped), so a heal never hangs on Ctrl-C. */
function holdFor(ms: number, signal: AbortSignal): Promise<void> {
  return sleep(ms, signal).catch(() => undefined);
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
  {
    name: 'partition-leader',
    summary: 'cut the leader off from etcd and the stream server (packets dropped both ways); heal once another member acknowledges writes',
    byDefault: false,
    network: true,
    async inject(ctx) {
      const lab = needLab(ctx, 'partition-leader');
      await lab.cut(ctx.leader.name, [ETCD_TARGET, STREAM_TARGET]);
      return { victim: ctx.leader, what: `cut ${ctx.leader.name} (leader) off from etcd and the stream server`, failover: true, heal: () => lab.heal(ctx.leader.name) };
    },
  },
  {
    name: 'partition-leader-stream',
    summary: 'cut the leader off from the stream server only (it still holds its lease); heal once another member acknowledges writes',
    byDefault: false,
    network: true,
    async inject(ctx) {
      const lab = needLab(ctx, 'partition-leader-stream');
      await lab.cut(ctx.leader.name, [STREAM_TARGET]);
      return { victim: ctx.leader, what: `cut ${ctx.leader.name} (leader) off from the stream server`, failover: true, heal: () => lab.heal(ctx.leader.name) };
    },
  },
  {
    name: 'partition-standby',
    summary: 'cut a standby off from etcd and the stream server for the lease TTL + 1.5 s (no failover expected), then heal',
    byDefault: false,
    network: true,
    async inject(ctx) {
      const lab = needLab(ctx, 'partition-standby');
      const victim = pick(
        ctx.cluster.members.filter((m) => m !== ctx.leader),
        ctx.random,
      );
      await lab.cut(victim.name, [ETCD_TARGET, STREAM_TARGET]);
      // Held past the TTL, so the standby's own member lease expires on the server.
      const healAt = holdFor(ctx.leaseTtlSeconds * 1000 + 1500, ctx.signal);
      return {
        victim,
        what: `cut ${victim.name} (standby) off from etcd and the stream server for ${ctx.leaseTtlSeconds + 1.5} s`,
        failover: false,
        heal: async () => {
          await healAt;
          await lab.heal(victim.name);
        },
      };
    },
  },
  {
    name: 'flap-leader',
    summary: `flap the leader's links to etcd and the stream server (${FLAP_PERIOD_MS} ms down / ${FLAP_PERIOD_MS} ms up) for ${FLAP_MS / 1000} s`,
    byDefault: false,
    network: true,
    async inject(ctx) {
      const lab = needLab(ctx, 'flap-leader');
      const stop = lab.flap(ctx.leader.name, [ETCD_TARGET, STREAM_TARGET], FLAP_PERIOD_MS);
      const stopAt = holdFor(FLAP_MS, ctx.signal);
      return {
        victim: ctx.leader,
        what: `flap ${ctx.leader.name}'s (leader) links to etcd and the stream server for ${FLAP_MS / 1000} s`,
        // Leadership may or may not move while the link flaps: the clock stops at the next acknowledged write.
        failover: false,
        heal: async () => {
          await stopAt;
          await stop();
        },
      };
    },
  },
];

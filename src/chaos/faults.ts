// The faults a chaos run injects, one entry per kind. A kind picks its victim,
// injects the fault, and undoes it (restart, SIGCONT) after the run has seen
// writes resume. Add a kind by adding one entry to FAULT_KINDS. Network kinds
// (`network: true`) cut or delay links between the members' network
// namespaces (src/chaos/netns.ts): the run puts every member in a NetLab when
// one is selected, which needs root. `etcdCluster` kinds make the run use a
// 3-member etcd (src/chaos/etcdcluster.ts); `syncOnly` kinds run only with
// --replication sync.
//
// Every kind checks that its fault took effect (a process that was not
// running, a delay the link does not show) and throws otherwise: a kind that
// silently did nothing must stop the run, not count as a pass.
//
// Restarting the stream server empty is a kind in sync mode only. The log
// lives only there; in async mode such a restart loses entries the standbys
// had not read yet, and the cluster does not claim to survive it
// (docs/replication.md); in sync mode every acknowledged entry is also held by
// the sync set, which appends it again (docs/chaos.md, "Fault kinds").
import type { LocalCluster, Member } from '../demo/localcluster.ts';
import { isPortOpen } from '../lib/ports.ts';
import { sleep, waitFor, withTimeout } from '../lib/time.ts';
import type { WriteLoad } from '../demo/load.ts';
import type { LocalEtcdCluster } from './etcdcluster.ts';
import type { NetLab } from './netns.ts';

/** The lab's names for the stores (NetLab targets), as the run registers them. */
export const ETCD_TARGET = 'etcd';
export const STREAM_TARGET = 'stream';
/** How long a flap-leader fault flaps, and the half-period (cut for one, up for the next). */
export const FLAP_MS = 4000;
export const FLAP_PERIOD_MS = 500;
/** The delay-etcd fault's added latency, each way (a round trip takes twice as long more), as issue 9 names it. */
export const ETCD_DELAY_MS = 200;
/**
 * etcd's --election-timeout (its default; src/chaos/etcdcluster.ts sets none).
 * An etcd leader that lost its quorum keeps renewing leases until check-quorum
 * makes it step down, up to two election timeouts later (etcd-io/etcd#4778:
 * a new leader extends every lease by that much for this reason). So a lease
 * holder can be renewed that long after the quorum is gone, and "writes stop
 * within the TTL" of a quorum loss holds within TTL + 2 election timeouts.
 */
export const ETCD_ELECTION_TIMEOUT_MS = 1000;
/** How long a killed stream server stays down before the empty one starts. */
export const STREAM_DOWN_MS = 1000;

export interface FaultContext {
  cluster: LocalCluster;
  leader: Member;
  leaseTtlSeconds: number;
  random: () => number;
  signal: AbortSignal;
  /** The members' network lab; present when a network kind is selected. */
  lab?: NetLab;
  /** The lab's target names of every etcd endpoint the agents dial (one, or one per member of a 3-member etcd). */
  etcdTargets: readonly string[];
  /** The 3-member etcd the agents use; present when an etcdCluster kind is selected. */
  etcd?: LocalEtcdCluster;
  /** The run's write load: a kind that must see writes stop listens to its acknowledgements. */
  load: Pick<WriteLoad, 'onAck'>;
  /** An event line for the run's table / progress. */
  note: (line: string) => void;
  /** A guarantee the fault showed broken (say, writes acknowledged without an etcd quorum): the run fails, but goes on. */
  violation: (line: string) => void;
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
  /**
   * 'after-heal': writes cannot resume before the heal (etcd without a
   * quorum): the run heals first and the clock runs from the heal to the next
   * acknowledged write. Default: from the fault, healed after.
   */
  clock?: 'after-heal';
  /** Undoes the fault (restart, SIGCONT); called once writes resumed (first, with clock 'after-heal'). */
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
  /** The run's etcd must be delayable (a DelayProxy per member, spliced in before the agents connect). */
  delaysEtcd?: boolean;
  /** The run uses a 3-member etcd cluster when a kind with this is selected. */
  etcdCluster?: boolean;
  /** Only with --replication sync (refused in async mode, left out of its default set). */
  syncOnly?: boolean;
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

/** One etcd request (GET /health) to `at`: how long its round trip took, in ms. */
async function etcdRoundTripMs(at: { host: string; port: number }): Promise<number> {
  const t0 = performance.now();
  const res = await fetch(`http://${at.host}:${at.port}/health`, { signal: AbortSignal.timeout(10_000) });
  await res.arrayBuffer();
  return performance.now() - t0;
}

function needEtcdCluster(ctx: FaultContext, kind: string): LocalEtcdCluster {
  if (!ctx.etcd) throw new Error(`fault kind ${kind} needs the run's 3-member etcd, but the run has a single etcd`);
  return ctx.etcd;
}

/** kill -9 of etcd member i; throws when it was not running (the fault would be a no-op). */
async function killEtcdMember(etcd: LocalEtcdCluster, i: number, kind: string): Promise<void> {
  const m = etcd.members[i]!;
  if (!m.process?.killNow('SIGKILL')) throw new Error(`${kind}: etcd member ${m.name} was not running, so killing it did nothing`);
  await withTimeout(m.process.exited, 5000, `etcd member ${m.name} to exit after kill -9`);
}

/** Restarts the given etcd members on their data and waits until all members are healthy. */
async function repairEtcd(etcd: LocalEtcdCluster, indexes: readonly number[]): Promise<void> {
  for (const i of indexes) await etcd.restart(i);
  await etcd.waitHealthy(etcd.members.map((_, i) => i), 60_000);
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
      await lab.cut(ctx.leader.name, [...ctx.etcdTargets, STREAM_TARGET]);
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
      await lab.cut(victim.name, [...ctx.etcdTargets, STREAM_TARGET]);
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
      const stop = lab.flap(ctx.leader.name, [...ctx.etcdTargets, STREAM_TARGET], FLAP_PERIOD_MS);
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
  {
    name: 'delay-etcd',
    summary: `delay the links to etcd by ${ETCD_DELAY_MS} ms each way, for the leader or for every member, for the lease TTL + 1.5 s; leadership may or may not move`,
    byDefault: false,
    network: true,
    delaysEtcd: true,
    async inject(ctx) {
      const lab = needLab(ctx, 'delay-etcd');
      const everyone = ctx.random() < 0.5;
      const delayed = everyone ? ctx.cluster.members : [ctx.leader];
      for (const m of delayed) for (const target of ctx.etcdTargets) lab.delay(m.name, target, ETCD_DELAY_MS);
      // The delay must show on the link: a round trip to etcd through the first delayed
      // member's proxy, side by side with the run's clock (awaiting it here would count it).
      const probe = etcdRoundTripMs(lab.proxyAddress(delayed[0]!.name, ctx.etcdTargets[0]!)).catch((err: Error) => err);
      const healAt = holdFor(ctx.leaseTtlSeconds * 1000 + 1500, ctx.signal);
      return {
        victim: ctx.leader,
        what: `delay ${everyone ? 'every member' : `${ctx.leader.name} (leader)`} to etcd by ${ETCD_DELAY_MS} ms each way for ${ctx.leaseTtlSeconds + 1.5} s`,
        // Leadership may or may not move: the clock stops at the next acknowledged write.
        failover: false,
        heal: async () => {
          await healAt;
          for (const m of delayed) await lab.heal(m.name);
          const probeMs = await probe;
          if (probeMs instanceof Error) throw new Error(`delay-etcd: the probe of the delayed link to etcd failed: ${probeMs.message}`);
          if (probeMs < 2 * ETCD_DELAY_MS) {
            throw new Error(
              `delay-etcd: a round trip to etcd through ${delayed[0]!.name}'s link took ${Math.round(probeMs)} ms, less than the ${2 * ETCD_DELAY_MS} ms the delay adds; the delay did not take effect`,
            );
          }
          ctx.note(`delay-etcd: a round trip to etcd through ${delayed[0]!.name}'s delayed link took ${Math.round(probeMs)} ms`);
        },
      };
    },
  },
  {
    name: 'kill-etcd-member',
    summary: 'kill -9 one member of a 3-member etcd (quorum kept: no failover expected), restart it',
    byDefault: true,
    etcdCluster: true,
    async inject(ctx) {
      const etcd = needEtcdCluster(ctx, 'kill-etcd-member');
      const i = Math.floor(ctx.random() * etcd.members.length);
      await killEtcdMember(etcd, i, 'kill-etcd-member');
      return {
        victim: ctx.leader,
        what: `kill -9 etcd member ${etcd.members[i]!.name} (2 of 3 left: quorum kept)`,
        failover: false,
        heal: () => repairEtcd(etcd, [i]),
      };
    },
  },
  {
    name: 'kill-etcd-quorum',
    summary: `kill -9 two members of a 3-member etcd for the lease TTL + ${(2 * ETCD_ELECTION_TIMEOUT_MS + 1500) / 1000} s: writes must stop within the TTL + 2 etcd election timeouts; restart both, writes resume`,
    byDefault: true,
    etcdCluster: true,
    async inject(ctx) {
      const etcd = needEtcdCluster(ctx, 'kill-etcd-quorum');
      const spared = Math.floor(ctx.random() * etcd.members.length);
      const killed = etcd.members.map((_, i) => i).filter((i) => i !== spared);
      const ttlMs = ctx.leaseTtlSeconds * 1000;
      // Every write acknowledged while etcd has no quorum: "writes stop within the TTL" means none
      // sent later than that after the loss is acknowledged (one accepted before the leader's
      // local deadline may still be answered after it, once its append returns). The surviving
      // etcd member, when it was the raft leader, renews leases until it steps down: see
      // ETCD_ELECTION_TIMEOUT_MS.
      const boundMs = ttlMs + 2 * ETCD_ELECTION_TIMEOUT_MS;
      const acks: Array<{ at: number; sentAt: number }> = [];
      const off = ctx.load.onAck((e) => acks.push(e));
      let lostAt = performance.now();
      try {
        for (const i of killed) await killEtcdMember(etcd, i, 'kill-etcd-quorum');
        lostAt = performance.now();
        // Without a quorum no lease is renewed: the leader demotes at its local deadline, within the TTL.
        await holdFor(boundMs + 1500, ctx.signal);
      } finally {
        off();
      }
      const after = acks.filter((a) => a.at > lostAt);
      const lastAckMs = Math.round(Math.max(0, ...after.map((a) => a.at - lostAt)));
      const lastSentMs = Math.round(Math.max(0, ...after.map((a) => a.sentAt - lostAt)));
      if (!ctx.signal.aborted && lastSentMs > boundMs) {
        ctx.violation(
          `kill-etcd-quorum: a write sent ${lastSentMs} ms after etcd lost its quorum was acknowledged: writes did not stop within the lease TTL (${ctx.leaseTtlSeconds} s) + 2 etcd election timeouts`,
        );
      }
      return {
        victim: ctx.leader,
        what:
          `kill -9 etcd members ${killed.map((i) => etcd.members[i]!.name).join(' and ')} (quorum lost) for ${(boundMs + 1500) / 1000} s; ` +
          `the last write acknowledged was sent ${lastSentMs} ms and answered ${lastAckMs} ms after the loss`,
        failover: false,
        clock: 'after-heal',
        heal: () => repairEtcd(etcd, killed),
      };
    },
  },
  {
    name: 'restart-stream-server',
    summary: `kill -9 the stream server under load and start an empty one on its port ${STREAM_DOWN_MS / 1000} s later (--replication sync only)`,
    byDefault: true,
    syncOnly: true,
    async inject(ctx) {
      const { cluster } = ctx;
      const { port } = cluster.redis;
      const host = new URL(cluster.redis.url).hostname;
      if (!cluster.redis.process.killNow('SIGKILL')) throw new Error('restart-stream-server: the stream server was not running, so killing it did nothing');
      await withTimeout(cluster.redis.process.exited, 5000, 'the stream server to exit after kill -9');
      // Dragonfly's sockets can outlive its process by some ms (io_uring releases them in the
      // kernel's own time): wait, bounded, until nothing accepts on the port.
      const closed = await waitFor(async () => !(await isPortOpen(port, host)), { timeoutMs: 5000, intervalMs: 20, what: 'the port to close' }).catch(() => false);
      if (!closed) throw new Error(`restart-stream-server: ${host}:${port} still accepts connections 5 s after the kill; the fault did not take effect`);
      const restarted = (async () => {
        await holdFor(STREAM_DOWN_MS, ctx.signal);
        await cluster.restartRedisEmpty();
      })();
      restarted.catch(() => undefined); // awaited by heal
      return {
        victim: ctx.leader,
        what: `kill -9 the stream server (${cluster.redis.kind}); an empty one starts on port ${port} in ${STREAM_DOWN_MS / 1000} s`,
        // Leadership may or may not move: the clock stops at the next acknowledged write.
        failover: false,
        heal: () => restarted,
      };
    },
  },
];

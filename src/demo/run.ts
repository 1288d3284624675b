// `hotstandby demo`: a local cluster under a steady write load whose leader
// is killed every few seconds, with a live view in the terminal (or, with
// --json, N failovers and one JSON summary). The count of acknowledged writes
// lost is checked against the leader after every failover.
import { LocalCluster, type Member, type MasterStatus } from './localcluster.ts';
import { WriteLoad, findLostWrites } from './load.ts';
import { chooseStreamServer, type StreamServerKind } from '../lib/localstores.ts';
import { percentile, sleep, waitFor } from '../lib/time.ts';

export interface DemoOptions {
  members: number;
  leaseTtlSeconds: number;
  /** Seconds of steady load between one recovery and the next kill. */
  intervalSeconds: number;
  /** Stop after this many failovers; undefined = until the signal aborts. */
  failovers?: number;
  switchovers: number;
  /** Then this many kill -9 of the leader's master alone (its agent runs on); default 0. */
  masterCrashes?: number;
  rate: number;
  /** Default: chooseStreamServer() (Dragonfly when built, else redis-server; HOTSTANDBY_STREAM_SERVER forces one). */
  streamServer?: StreamServerKind;
  /** sync: the agents run with --replication sync (docs/replication.md); default async. */
  replication?: 'async' | 'sync';
  /** Live terminal view when given; otherwise progress lines go to `progress`. */
  screen?: NodeJS.WriteStream;
  progress: (line: string) => void;
  signal: AbortSignal;
}

export interface DemoSummary {
  failovers: number;
  switchovers: number;
  ackedWrites: number;
  failedWrites: number;
  lostWrites: number;
  failoverMs: Stats | null;
  switchoverMs: Stats | null;
  masterCrashMs: Stats | null;
  leaseTtlSeconds: number;
  members: number;
  streamServer: StreamServerKind;
  /** Every run's duration, in order, for plots. */
  runs: { failoverMs: number[]; switchoverMs: number[]; masterCrashMs: number[] };
}

interface Stats {
  p50: number;
  p99: number;
  max: number;
}

const STEP_TIMEOUT_MS = 60_000;

function stats(values: number[]): Stats | null {
  if (values.length === 0) return null;
  return { p50: Math.round(percentile(values, 50)), p99: Math.round(percentile(values, 99)), max: Math.round(Math.max(...values)) };
}

export async function runDemo(opts: DemoOptions): Promise<DemoSummary> {
  const events: string[] = [];
  const note = (line: string): void => {
    events.push(`${new Date().toISOString().slice(11, 19)}  ${line}`);
    if (events.length > 8) events.shift();
    if (!opts.screen) opts.progress(line);
  };
  const streamServer = chooseStreamServer(opts.streamServer);
  note(`starting etcd, ${streamServer === 'dragonfly' ? 'Dragonfly' : 'redis-server'} and ${opts.members} agent+kvmaster pairs (lease TTL ${opts.leaseTtlSeconds} s${opts.replication === 'sync' ? ', sync replication' : ''})`);
  const cluster = await LocalCluster.start({
    members: opts.members,
    leaseTtlSeconds: opts.leaseTtlSeconds,
    logLevel: 'warn',
    streamServer,
    ...(opts.replication === 'sync' ? { agentArgs: ['--replication', 'sync'] } : {}),
  });
  const load = new WriteLoad({ members: () => cluster.members, rate: opts.rate });
  const failoverMs: number[] = [];
  const switchoverMs: number[] = [];
  const masterCrashMs: number[] = [];
  let lostWrites = 0;
  const statuses = new Map<Member, MasterStatus | undefined>();
  let view: NodeJS.Timeout | undefined;
  try {
    const first = await cluster.waitForLeader({ timeoutMs: STEP_TIMEOUT_MS });
    note(`${first.name} leads; write load ${opts.rate}/s starts`);
    load.start();
    if (opts.screen) {
      const screen = opts.screen;
      view = setInterval(() => {
        void Promise.all(cluster.members.map(async (m) => statuses.set(m, await cluster.masterStatus(m, 200)))).then(() =>
          screen.write(render(cluster, statuses, load, failoverMs, lostWrites, events)),
        );
      }, 250);
    }
    await waitFor(() => load.stats.acked > 0, { timeoutMs: STEP_TIMEOUT_MS, what: 'the first acknowledged write', signal: opts.signal });

    /** Time from `t0` to the first write acknowledged by a member `match` accepts. */
    const firstAckAfter = (t0: number, match: (m: Member) => boolean): Promise<number> => load.firstAckAfter(t0, match, STEP_TIMEOUT_MS, opts.signal);

    const verify = async (): Promise<void> => {
      const leader = await cluster.waitForLeader({ timeoutMs: STEP_TIMEOUT_MS });
      const lost = await waitFor(() => findLostWrites(leader, load.ledger), { timeoutMs: STEP_TIMEOUT_MS, what: 'reading the ledger back' });
      lostWrites = Math.max(lostWrites, lost.length);
      if (lost.length > 0) note(`LOST ${lost.length} acknowledged writes, e.g. ${lost.slice(0, 3).join(', ')}`);
    };

    for (let i = 0; opts.failovers === undefined || i < opts.failovers; i++) {
      await sleep(opts.intervalSeconds * 1000, opts.signal);
      const victim = await cluster.waitForLeader({ timeoutMs: STEP_TIMEOUT_MS });
      const t0 = performance.now();
      cluster.kill(victim);
      note(`kill -9 ${victim.name} (leader)`);
      const ms = await firstAckAfter(t0, (m) => m !== victim);
      failoverMs.push(ms);
      const next = await cluster.waitForLeader({ timeoutMs: STEP_TIMEOUT_MS });
      note(`failover ${i + 1}: ${next.name} leads, first write acknowledged ${Math.round(ms)} ms after the kill`);
      await cluster.restart(victim);
      await verify();
      opts.signal.throwIfAborted();
    }
    for (let i = 0; i < opts.switchovers; i++) {
      await sleep(opts.intervalSeconds * 1000, opts.signal);
      const leader = await cluster.waitForLeader({ timeoutMs: STEP_TIMEOUT_MS });
      const target = cluster.members.find((m) => m !== leader && m.agent.running)!;
      const t0 = performance.now();
      await cluster.requestSwitchover(target);
      const ms = await firstAckAfter(t0, (m) => m === target);
      switchoverMs.push(ms);
      note(`switchover ${i + 1}: ${leader.name} → ${target.name}, first write acknowledged ${Math.round(ms)} ms after the request`);
      await verify();
    }
    for (let i = 0; i < (opts.masterCrashes ?? 0); i++) {
      await sleep(opts.intervalSeconds * 1000, opts.signal);
      const victim = await cluster.waitForLeader({ timeoutMs: STEP_TIMEOUT_MS });
      const t0 = performance.now();
      cluster.killMaster(victim);
      note(`kill -9 ${victim.name}'s master (leader; its agent runs on)`);
      const ms = await firstAckAfter(t0, (m) => m !== victim);
      masterCrashMs.push(ms);
      const next = await cluster.waitForLeader({ timeoutMs: STEP_TIMEOUT_MS });
      note(`master crash ${i + 1}: ${next.name} leads, first write acknowledged ${Math.round(ms)} ms after the kill`);
      await cluster.restartMaster(victim);
      await verify();
      // Caught up again before the next run, so every run starts from three live members.
      const head = (await cluster.masterStatus(next))?.appliedSeq ?? 0;
      await waitFor(async () => ((await cluster.masterStatus(victim))?.appliedSeq ?? 0) >= head, {
        timeoutMs: STEP_TIMEOUT_MS,
        what: `${victim.name}'s new master to catch up`,
      });
    }
  } catch (err) {
    if (!opts.signal.aborted) throw err;
  } finally {
    if (view) clearInterval(view);
    await load.stop();
    try {
      if (!opts.signal.aborted || load.ledger.size > 0) {
        const leader = await cluster.waitForLeader({ timeoutMs: 15_000 });
        lostWrites = Math.max(lostWrites, (await findLostWrites(leader, load.ledger)).length);
      }
    } catch (err) {
      opts.progress(`final check skipped: ${(err as Error).message}`);
    }
    await cluster.stop();
  }
  return {
    failovers: failoverMs.length,
    switchovers: switchoverMs.length,
    ackedWrites: load.stats.acked,
    failedWrites: load.stats.failed,
    lostWrites,
    failoverMs: stats(failoverMs),
    switchoverMs: stats(switchoverMs),
    masterCrashMs: stats(masterCrashMs),
    leaseTtlSeconds: opts.leaseTtlSeconds,
    members: opts.members,
    streamServer,
    runs: { failoverMs: failoverMs.map(Math.round), switchoverMs: switchoverMs.map(Math.round), masterCrashMs: masterCrashMs.map(Math.round) },
  };
}

/** One frame of the live view. */
function render(
  cluster: LocalCluster,
  statuses: Map<Member, MasterStatus | undefined>,
  load: WriteLoad,
  failoverMs: number[],
  lostWrites: number,
  events: string[],
): string {
  const rows = cluster.members.map((m) => ({ m, s: statuses.get(m) }));
  const leaderRow = rows.filter((r) => r.s?.writable).sort((a, b) => b.s!.epoch - a.s!.epoch)[0];
  const head = leaderRow?.s?.appliedSeq ?? Math.max(0, ...rows.map((r) => r.s?.appliedSeq ?? 0));
  const bold = (s: string): string => `\x1b[1m${s}\x1b[0m`;
  const lostText = lostWrites === 0 ? `\x1b[32m${lostWrites}\x1b[0m` : `\x1b[41;97m ${lostWrites} \x1b[0m`;
  const lines = [
    bold(`hotstandby demo — cluster ${cluster.ref.namespace}/${cluster.ref.name}`) + `   stream server: ${cluster.redis.kind}   (Ctrl-C to stop)`,
    '',
    `leader: ${leaderRow ? `${bold(leaderRow.m.name)}  epoch ${leaderRow.s!.epoch}` : '\x1b[33m(electing)\x1b[0m'}`,
    '',
    `  ${'MEMBER'.padEnd(8)} ${'ROLE'.padEnd(10)} ${'EPOCH'.padStart(6)} ${'APPLIED'.padStart(9)} ${'LAG'.padStart(6)}  PROCESS`,
    ...rows.map(({ m, s }) => {
      const proc = m.agent.running && m.master.running ? 'running' : 'killed';
      const role = s ? (s.writable ? 'leader' : s.role) : '-';
      const lag = s ? String(Math.max(0, head - s.appliedSeq)) : '-';
      return `  ${m.name.padEnd(8)} ${role.padEnd(10)} ${String(s?.epoch ?? '-').padStart(6)} ${String(s?.appliedSeq ?? '-').padStart(9)} ${lag.padStart(6)}  ${proc}`;
    }),
    '',
    `writes acknowledged: ${bold(String(load.stats.acked))}   failed (not acknowledged): ${load.stats.failed}   acknowledged writes lost: ${lostText}`,
    `failovers: ${failoverMs.length}   last: ${failoverMs.length ? `${Math.round(failoverMs.at(-1)!)} ms` : '-'}   p50: ${failoverMs.length ? `${Math.round(percentile(failoverMs, 50))} ms` : '-'}   max: ${failoverMs.length ? `${Math.round(Math.max(...failoverMs))} ms` : '-'}`,
    '',
    ...events,
  ];
  return `\x1b[H\x1b[2J${lines.join('\n')}\n`;
}

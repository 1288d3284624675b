// `hotstandby chaos`: a local cluster (src/demo/localcluster.ts) under a
// steady write + read load whose every client operation is recorded, with
// seeded random faults (./faults.ts) until the time is up. At the end the
// acknowledged writes are read back (none may be lost) and the history is
// checked for linearizability with Porcupine (./linearizability.ts).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { LocalCluster, type Member } from '../demo/localcluster.ts';
import { WriteLoad, findLostWrites } from '../demo/load.ts';
import { startEtcd, type LocalEtcd } from '../lib/localstores.ts';
import { percentile, sleep, waitFor } from '../lib/time.ts';
import { LocalEtcdCluster } from './etcdcluster.ts';
import { ETCD_TARGET, STREAM_TARGET, type FaultKind } from './faults.ts';
import { HistoryRecorder } from './history.ts';
import { checkHistory, type LinearizabilityResult } from './linearizability.ts';
import { NetLab } from './netns.ts';
import { ReadLoad } from './readers.ts';

export interface ChaosOptions {
  minutes: number;
  seed: number;
  members: number;
  leaseTtlSeconds: number;
  /** The agents' replication mode (--replication); sync-only kinds need 'sync'. */
  replication: 'async' | 'sync';
  kinds: readonly FaultKind[];
  /** Kinds left out of the default set, with why (e.g. network kinds without root); reported in the summary. */
  skippedKinds?: Record<string, string>;
  /** Mean seconds of steady load between a recovery and the next fault (jittered 0.5-1.5x). */
  intervalSeconds: number;
  /** Writes and reads per second. */
  rate: number;
  readRate: number;
  /** Where the history (and on failure Porcupine's visualization) goes. */
  outDir: string;
  /** Keep the history, and the processes' logs, even when everything passed. */
  keepHistory: boolean;
  /** Live table when given; otherwise progress lines go to `progress`. */
  screen?: NodeJS.WriteStream;
  progress: (line: string) => void;
  signal: AbortSignal;
}

export interface Stats {
  p50: number;
  p99: number;
  max: number;
}

export interface ChaosSummary {
  faults: number;
  /** Per kind: faults, the clock's figures, and after how many of them another member led than before. */
  byKind: Record<string, { faults: number; failoverMs: Stats | null; leaderChanges: number }>;
  ackedWrites: number;
  lostWrites: number;
  /** null when the check could not run (the reason is in `error`). */
  linearizable: boolean | 'unknown' | null;
  /** Over the kinds that move leadership (fault to the first write acknowledged by a new leader). */
  failoverMs: Stats | null;
  failedWrites: number;
  reads: number;
  historyOps: number;
  seed: number;
  members: number;
  leaseTtlSeconds: number;
  replication: 'async' | 'sync';
  /** Members of the etcd the agents used (3 when an etcdCluster kind was selected). */
  etcdMembers: number;
  /** Guarantees a fault showed broken (e.g. writes acknowledged without an etcd quorum); the run fails when any. */
  violations: string[];
  seconds: number;
  /** The slowest faults (at most SLOWEST_KEPT), with their wall-clock time, to find them in the logs. */
  slowestFaults: Array<{ kind: string; ms: number; at: string; what: string }>;
  /** Where the agents', masters' and stores' logs were copied (with --keep-history, or when the run stopped, lost a write or recorded a violation), else null. */
  logs: string | null;
  /** The history file when kept (on failure, or with --keep-history); the visualization on a linearizability failure. */
  history: string | null;
  visualization: string | null;
  failingKeys: string[];
  /** Why the run stopped early, when it did (other than Ctrl-C). */
  error: string | null;
  /** Kinds of the default set not run, with why (network kinds without root). */
  skippedKinds: Record<string, string>;
  /** The network lab's bridge when the members ran in network namespaces (removed at the end), else null. */
  netlab: string | null;
}

const STEP_TIMEOUT_MS = 60_000;
const SLOWEST_KEPT = 5;

/** A small seeded generator (mulberry32): the same seed gives the same fault sequence. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function stats(values: readonly number[]): Stats | null {
  if (values.length === 0) return null;
  return { p50: Math.round(percentile(values, 50)), p99: Math.round(percentile(values, 99)), max: Math.round(Math.max(...values)) };
}

export async function runChaos(opts: ChaosOptions): Promise<ChaosSummary> {
  const started = performance.now();
  /** The fault clock starts with the load (cluster start-up does not count toward --minutes). */
  let loadStarted = started;
  const random = seededRandom(opts.seed);
  const events: string[] = [];
  const note = (line: string): void => {
    events.push(`${new Date().toISOString().slice(11, 19)}  ${line}`);
    if (events.length > 8) events.shift();
    if (!opts.screen) opts.progress(line);
  };
  const kindMs = new Map<string, number[]>(opts.kinds.map((k) => [k.name, []]));
  const kindCount = new Map<string, number>(opts.kinds.map((k) => [k.name, 0]));
  const kindLeaderChanges = new Map<string, number>(opts.kinds.map((k) => [k.name, 0]));
  const violations: string[] = [];
  const slowest: ChaosSummary['slowestFaults'] = [];
  let logs: string | null = null;
  const violation = (line: string): void => {
    violations.push(line);
    note(`VIOLATION: ${line}`);
  };
  const failoverMs: number[] = [];
  const history = new HistoryRecorder();
  let lostWrites = 0;
  let error: string | null = null;
  let check: LinearizabilityResult | undefined;


  for (const [kind, why] of Object.entries(opts.skippedKinds ?? {})) note(`skipping ${kind}: ${why}`);
  note(
    `seed ${opts.seed}: starting etcd, redis-server and ${opts.members} agent+kvmaster pairs (lease TTL ${opts.leaseTtlSeconds} s, ${opts.replication} replication)`,
  );
  const { cluster, lab, etcd, etcdTargets, stopStores, logDirs } = await startCluster(opts, note);
  const writers = 4;
  const load = new WriteLoad({ members: () => cluster.members, rate: opts.rate, clients: writers, keysPerClient: 20, history });
  const readers = new ReadLoad({
    members: () => cluster.members,
    history,
    rate: opts.readRate,
    readers: 2,
    firstClientId: writers,
    keys: () => [...load.ledger.keys()],
    random: seededRandom(opts.seed ^ 0x5eed),
  });
  let view: NodeJS.Timeout | undefined;
  let leaderName = '';
  const render = (): string =>
    renderTable({ opts, kindCount, kindMs, load, readers, lostWrites, events, leaderName, elapsedS: (performance.now() - loadStarted) / 1000, linearizable: check?.linearizable });
  try {
    const first = await cluster.waitForLeader({ timeoutMs: STEP_TIMEOUT_MS });
    leaderName = first.name;
    note(`${first.name} leads; load starts: ${opts.rate} writes/s, ${opts.readRate} reads/s`);
    load.start();
    readers.start();
    loadStarted = performance.now();
    if (opts.screen) {
      const screen = opts.screen;
      view = setInterval(() => screen.write(render()), 500);
    }
    await waitFor(() => load.stats.acked > 0, { timeoutMs: STEP_TIMEOUT_MS, what: 'the first acknowledged write', signal: opts.signal });
    const deadline = loadStarted + opts.minutes * 60_000;
    while (!opts.signal.aborted) {
      await sleep(opts.intervalSeconds * 1000 * (0.5 + random()), opts.signal);
      if (performance.now() >= deadline) break;
      const leader = await cluster.waitForLeader({ timeoutMs: STEP_TIMEOUT_MS });
      leaderName = leader.name;
      const kind = opts.kinds[Math.floor(random() * opts.kinds.length)]!;
      const t0 = performance.now();
      const at = new Date().toISOString();
      const fault = await kind.inject({
        cluster,
        leader,
        leaseTtlSeconds: opts.leaseTtlSeconds,
        random,
        signal: opts.signal,
        note,
        violation,
        load,
        etcdTargets,
        ...(lab ? { lab } : {}),
        ...(etcd ? { etcd } : {}),
      });
      kindCount.set(kind.name, kindCount.get(kind.name)! + 1);
      note(fault.what);
      let ms: number;
      if (fault.clock === 'after-heal') {
        // Writes cannot resume before the repair: the clock runs from it (listening already, so an ack during the heal counts).
        const healAt = performance.now();
        const resumed = load.firstAckAfter(healAt, () => true, STEP_TIMEOUT_MS, opts.signal);
        resumed.catch(() => undefined); // awaited below unless the heal throws
        await fault.heal();
        ms = await resumed;
      } else {
        try {
          ms = await load.firstAckAfter(t0, fault.failover ? (m) => m !== fault.victim : () => true, STEP_TIMEOUT_MS, opts.signal);
        } finally {
          await fault.heal();
        }
      }
      kindMs.get(kind.name)!.push(ms);
      if (fault.failover) failoverMs.push(ms);
      slowest.push({ kind: kind.name, ms: Math.round(ms), at, what: fault.what });
      slowest.sort((a, b) => b.ms - a.ms).splice(SLOWEST_KEPT);
      const next = await cluster.waitForLeader({ timeoutMs: STEP_TIMEOUT_MS });
      leaderName = next.name;
      if (next !== leader) kindLeaderChanges.set(kind.name, kindLeaderChanges.get(kind.name)! + 1);
      note(`${kind.name}: ${next.name} leads; writes resumed ${Math.round(ms)} ms after the ${fault.clock === 'after-heal' ? 'repair' : 'fault'}`);
      await waitCaughtUp(cluster, next, opts.signal);
    }
  } catch (err) {
    if (!opts.signal.aborted) {
      // The summary keeps the first line; the whole message (say, a process's log tail) goes to progress.
      error = (err as Error).message.split('\n')[0]!;
      note(`stopped: ${error}`);
      if (opts.screen || (err as Error).message !== error) opts.progress((err as Error).message);
    }
  } finally {
    if (view) clearInterval(view);
    // A fault cut short by Ctrl-C may have left an agent stopped.
    for (const m of cluster.members) if (m.agent.running) cluster.resumeAgent(m);
    // ...or a link cut (every fault heals in a finally; this is the backstop).
    await lab?.heal().catch((err: unknown) => opts.progress(`healing the network lab failed: ${(err as Error).message}`));
    await Promise.all([load.stop(), readers.stop()]);
    try {
      const leader = await cluster.waitForLeader({ timeoutMs: 30_000 });
      lostWrites = (await waitFor(() => findLostWrites(leader, load.ledger), { timeoutMs: 30_000, what: 'reading the ledger back' })).length;
      if (lostWrites > 0) note(`LOST ${lostWrites} acknowledged writes`);
    } catch (err) {
      error ??= `final lost-write check failed: ${(err as Error).message}`;
      opts.progress(error);
    }
    if (opts.keepHistory || error !== null || lostWrites > 0 || violations.length > 0) logs = copyLogs(logDirs, path.join(opts.outDir, 'logs'), opts.progress);
    await cluster.stop();
    await stopStores();
    // Every namespace, veth, the bridge and the delay proxies (rules live in the namespaces).
    await lab?.destroy();
  }
  // The history is checked after the cluster is gone (the check takes CPU).
  fs.mkdirSync(opts.outDir, { recursive: true });
  let historyFile: string | null = path.join(opts.outDir, 'history.jsonl');
  history.write(historyFile);
  try {
    note(`checking ${history.ops.length} operations for linearizability`);
    check = await checkHistory(historyFile, { timeoutMs: Math.min(600_000, 60_000 + history.ops.length) });
    if (check.linearizable === false) note(`NOT linearizable: keys ${check.failingKeys.slice(0, 5).join(', ')}; see ${check.visualization}`);
  } catch (err) {
    error ??= `linearizability check failed: ${(err as Error).message}`;
    opts.progress(error);
  }
  const passed = lostWrites === 0 && check?.linearizable === true && error === null && violations.length === 0;
  if (passed && !opts.keepHistory) {
    fs.rmSync(opts.outDir, { recursive: true, force: true });
    historyFile = null;
    logs = null;
  }
  if (opts.screen) opts.screen.write(render());
  return {
    faults: [...kindCount.values()].reduce((a, b) => a + b, 0),
    byKind: Object.fromEntries(
      opts.kinds.map((k) => [k.name, { faults: kindCount.get(k.name)!, failoverMs: stats(kindMs.get(k.name)!), leaderChanges: kindLeaderChanges.get(k.name)! }]),
    ),
    ackedWrites: load.stats.acked,
    lostWrites,
    linearizable: check?.linearizable ?? null,
    failoverMs: stats(failoverMs),
    failedWrites: load.stats.failed,
    reads: readers.reads,
    historyOps: history.ops.length,
    seed: opts.seed,
    members: opts.members,
    leaseTtlSeconds: opts.leaseTtlSeconds,
    replication: opts.replication,
    etcdMembers: etcd ? etcd.members.length : 1,
    violations,
    slowestFaults: slowest,
    logs,
    seconds: Math.round((performance.now() - started) / 1000),
    history: historyFile,
    visualization: check?.visualization ?? null,
    failingKeys: check?.failingKeys ?? [],
    error,
    skippedKinds: opts.skippedKinds ?? {},
    netlab: lab?.bridge ?? null,
  };
}

interface StartedCluster {
  cluster: LocalCluster;
  lab: NetLab | undefined;
  /** The 3-member etcd the agents use, when an etcdCluster kind is selected. */
  etcd: LocalEtcdCluster | undefined;
  /** The lab's target name of each etcd endpoint the agents dial. */
  etcdTargets: string[];
  /** Stops the etcd started apart from the cluster (if any) and removes its files; after cluster.stop(). */
  stopStores: () => Promise<void>;
  /** Where the processes write their logs (the cluster's work directory, the separate etcd's). */
  logDirs: string[];
}

/**
 * The cluster; with a network kind selected, its members each in a network
 * namespace of a new NetLab and the stores on the lab's host address (as
 * test/integration/netfault.test.ts builds it). The agents dial an etcd
 * started apart from the cluster when a kind needs one: a 3-member etcd
 * (etcdCluster kinds), or one reached through a DelayProxy per member,
 * spliced in before the agents connect (delaysEtcd kinds). With sync
 * replication the agents run with --replication sync. The lab (and that
 * etcd) is removed when the start fails, and by its exit hook if the process dies.
 */
async function startCluster(opts: ChaosOptions, note: (line: string) => void): Promise<StartedCluster> {
  const base = {
    members: opts.members,
    leaseTtlSeconds: opts.leaseTtlSeconds,
    logLevel: 'warn',
    ...(opts.replication === 'sync' ? { agentArgs: ['--replication', 'sync'] } : {}),
  };
  const network = opts.kinds.some((k) => k.network);
  const delayable = opts.kinds.some((k) => k.delaysEtcd);
  const etcdCluster = opts.kinds.some((k) => k.etcdCluster);
  const lab = network ? await NetLab.create(Array.from({ length: opts.members }, (_, i) => `kv-${i}`)) : undefined;
  if (lab) note(`network lab: bridge ${lab.bridge} (${lab.hostAddress}/24), one network namespace per member`);
  const host = lab?.hostAddress ?? '127.0.0.1';
  const cleanups: Array<() => Promise<void>> = [];
  const stopStores = async (): Promise<void> => {
    for (const stop of cleanups.splice(0).reverse()) await stop().catch(() => undefined);
  };
  try {
    // An etcd apart from the cluster, started first so its links can be delayed from the agents' first connection.
    let endpoints: Array<{ name: string; port: number }> = [];
    let etcd: LocalEtcdCluster | undefined;
    const logDirs: string[] = [];
    if (etcdCluster || delayable) {
      const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hs-chaos-etcd-'));
      logDirs.push(workDir);
      cleanups.push(async () => fs.rmSync(workDir, { recursive: true, force: true }));
      if (etcdCluster) {
        etcd = await LocalEtcdCluster.start({ host, workDir });
        const started = etcd;
        cleanups.push(() => started.stop());
        endpoints = etcd.members.map((m, i) => ({ name: i === 0 ? ETCD_TARGET : `${ETCD_TARGET}-${i}`, port: m.clientPort }));
        note(`etcd: 3 members (${etcd.endpoints})`);
      } else {
        const single: LocalEtcd = await startEtcd({ host, workDir });
        cleanups.push(() => single.stop());
        endpoints = [{ name: ETCD_TARGET, port: single.clientPort }];
      }
      if (lab) for (const e of endpoints) await lab.addTarget(e.name, e.port, { delayable });
    }
    const cluster = await LocalCluster.start({
      ...base,
      ...(lab
        ? {
            memberNames: Array.from({ length: opts.members }, (_, i) => `kv-${i}`),
            placement: (m: string) => lab.placement(m),
            stores: { etcd: { host: lab.hostAddress }, redis: { host: lab.hostAddress } },
          }
        : {}),
      ...(endpoints.length > 0 ? { etcdEndpoints: endpoints.map((e) => `http://${host}:${e.port}`).join(',') } : {}),
    });
    try {
      if (lab) {
        if (endpoints.length === 0) {
          endpoints = [{ name: ETCD_TARGET, port: cluster.etcd.clientPort }];
          await lab.addTarget(ETCD_TARGET, cluster.etcd.clientPort);
        }
        await lab.addTarget(STREAM_TARGET, cluster.redis.port);
      }
    } catch (err) {
      await cluster.stop();
      throw err;
    }
    return { cluster, lab, etcd, etcdTargets: endpoints.length > 0 ? endpoints.map((e) => e.name) : [ETCD_TARGET], stopStores, logDirs: [cluster.workDir, ...logDirs] };
  } catch (err) {
    await stopStores();
    await lab?.destroy();
    throw err;
  }
}

/** Copies the *.log files of `dirs` into `to` (before the cluster's work directory is removed); returns `to`, or null when nothing could be copied. */
function copyLogs(dirs: readonly string[], to: string, progress: (line: string) => void): string | null {
  try {
    fs.mkdirSync(to, { recursive: true });
    for (const dir of dirs) for (const f of fs.readdirSync(dir)) if (f.endsWith('.log')) fs.copyFileSync(path.join(dir, f), path.join(to, f));
    return to;
  } catch (err) {
    progress(`could not keep the logs: ${(err as Error).message}`);
    return null;
  }
}

/** Waits until every member's master answers and has applied what the leader had applied. */
async function waitCaughtUp(cluster: LocalCluster, leader: Member, signal: AbortSignal): Promise<void> {
  const head = (await cluster.masterStatus(leader))?.appliedSeq ?? 0;
  await waitFor(
    async () => {
      const all = await Promise.all(cluster.members.map((m) => cluster.masterStatus(m)));
      return all.every((s) => s !== undefined && s.appliedSeq >= head);
    },
    { timeoutMs: STEP_TIMEOUT_MS, intervalMs: 50, what: 'every member to catch up with the leader', signal },
  );
}

/** The default place for a run's history. */
export function defaultOutDir(seed: number): string {
  return path.join(os.tmpdir(), `hotstandby-chaos-${seed}-${new Date().toISOString().replace(/[:.]/g, '-')}`);
}

interface TableInput {
  opts: ChaosOptions;
  kindCount: Map<string, number>;
  kindMs: Map<string, number[]>;
  load: WriteLoad;
  readers: ReadLoad;
  lostWrites: number;
  events: string[];
  leaderName: string;
  elapsedS: number;
  linearizable: boolean | 'unknown' | undefined;
}

/** One frame of the live table. */
function renderTable(t: TableInput): string {
  const bold = (s: string): string => `\x1b[1m${s}\x1b[0m`;
  const ms = (v: number | undefined): string => (v === undefined ? '-' : String(Math.round(v)));
  const mmss = (s: number): string => `${Math.floor(s / 60)}:${String(Math.floor(s % 60)).padStart(2, '0')}`;
  const lin = t.linearizable === undefined ? '(checked at the end)' : t.linearizable === true ? '\x1b[32myes\x1b[0m' : `\x1b[41;97m ${String(t.linearizable)} \x1b[0m`;
  const lost = t.lostWrites === 0 ? `\x1b[32m0\x1b[0m` : `\x1b[41;97m ${t.lostWrites} \x1b[0m`;
  let total = 0;
  const rows = [...t.kindCount].map(([name, count]) => {
    total += count;
    const s = stats(t.kindMs.get(name)!);
    return `  ${name.padEnd(22)} ${String(count).padStart(6)} ${ms(s?.p50).padStart(8)} ${ms(s?.p99).padStart(8)} ${ms(s?.max).padStart(8)}`;
  });
  const lines = [
    bold(`hotstandby chaos — seed ${t.opts.seed}, ${t.opts.members} members, lease TTL ${t.opts.leaseTtlSeconds} s`) +
      `   ${mmss(t.elapsedS)} of ${mmss(t.opts.minutes * 60)}   (Ctrl-C to stop)`,
    `leader: ${t.leaderName || '(electing)'}`,
    '',
    `  ${'FAULT KIND'.padEnd(22)} ${'FAULTS'.padStart(6)} ${'p50 ms'.padStart(8)} ${'p99 ms'.padStart(8)} ${'max ms'.padStart(8)}   (fault → first write acknowledged by a new leader)`,
    ...rows,
    `  ${'total'.padEnd(22)} ${String(total).padStart(6)}`,
    '',
    `acknowledged: ${bold(String(t.load.stats.acked))}   failed (not acknowledged): ${t.load.stats.failed}   reads: ${t.readers.reads}   lost: ${lost}   linearizable: ${lin}`,
    '',
    ...t.events,
  ];
  return `\x1b[H\x1b[2J${lines.join('\n')}\n`;
}

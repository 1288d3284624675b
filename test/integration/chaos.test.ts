// `hotstandby chaos` as a user runs it: short seeded runs against real
// agents, kvmasters, etcd and redis-server (the process kinds everywhere;
// network partitions, a delayed etcd, a 3-member etcd losing one member and
// its quorum, and the stream server restarted empty in sync mode as root with
// the members in network namespaces), whose summary must show no lost write,
// a linearizable history and no broken guarantee; Ctrl-C ends a run with a
// summary and leaves no child process, namespace or bridge behind.
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { isProcessAlive as alive } from '../../src/lib/childproc.ts';
import { waitFor } from '../../src/lib/time.ts';
import { ETCD_ELECTION_TIMEOUT_MS, FAULT_KINDS } from '../../src/chaos/faults.ts';
import { netnsUnavailable } from '../../src/chaos/netns.ts';
import { descendants } from '../harness/processes.ts';

const unavailable = await netnsUnavailable();
const strict = process.env.HOTSTANDBY_E2E === '1';
/** The kinds that need neither root, a 3-member etcd, nor sync replication. */
const PROCESS_KINDS = FAULT_KINDS.filter((k) => !k.network && !k.etcdCluster && !k.syncOnly).map((k) => k.name);
/** The partition kinds (and the process kinds): the members in network namespaces, one etcd. */
const PARTITION_KINDS = FAULT_KINDS.filter((k) => !k.delaysEtcd && !k.etcdCluster && !k.syncOnly).map((k) => k.name);
/** The kinds that change the run's stores: a delayable etcd, a 3-member etcd, the stream server restarted (sync mode). */
const STORE_KINDS = ['delay-etcd', 'kill-etcd-member', 'kill-etcd-quorum', 'restart-stream-server'];

const BIN = path.resolve(import.meta.dirname, '../../bin/hotstandby.js');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hs-chaos-test-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

interface Summary {
  faults: number;
  byKind: Record<string, { faults: number; failoverMs: { p50: number; p99: number; max: number } | null; leaderChanges: number }>;
  ackedWrites: number;
  lostWrites: number;
  linearizable: boolean | 'unknown' | null;
  failoverMs: { p50: number; p99: number; max: number } | null;
  historyOps: number;
  history: string | null;
  error: string | null;
  skippedKinds: Record<string, string>;
  netlab: string | null;
  violations: string[];
  slowestFaults: Array<{ kind: string; ms: number; at: string; what: string }>;
  logs: string | null;
  replication: 'async' | 'sync';
  etcdMembers: number;
}

/** Whether a network link (the lab's bridge) still exists on this machine. */
function linkExists(name: string): boolean {
  return execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' }).split('\n').some((l) => l.split(':')[1]?.trim().split('@')[0] === name);
}

/** The checks every passing run's summary must meet: each selected kind ran and was clocked, nothing lost, linearizable, no guarantee broken. */
function expectPassingRun(summary: Summary, code: number | null, stderr: string, kinds: string[], opts: { failovers?: boolean } = {}): void {
  expect(summary, stderr).toMatchObject({ lostWrites: 0, linearizable: true, error: null, violations: [] });
  expect(code).toBe(0);
  expect(Object.keys(summary.byKind).sort()).toEqual([...kinds].sort());
  expect(summary.faults).toBe(Object.values(summary.byKind).reduce((a, k) => a + k.faults, 0));
  expect(summary.faults).toBeGreaterThanOrEqual(kinds.length);
  for (const [kind, k] of Object.entries(summary.byKind)) {
    expect(k.faults, kind).toBeGreaterThanOrEqual(1);
    // Every fault of every kind was clocked until writes were acknowledged again.
    expect(k.failoverMs, kind).not.toBeNull();
    expect(k.leaderChanges, kind).toBeLessThanOrEqual(k.faults);
  }
  expect(summary.ackedWrites).toBeGreaterThan(1000);
  if (opts.failovers === false) return;
  expect(summary.failoverMs!.p50).toBeGreaterThan(0);
  expect(summary.failoverMs!.p99).toBeGreaterThanOrEqual(summary.failoverMs!.p50);
  expect(summary.failoverMs!.max).toBeGreaterThanOrEqual(summary.failoverMs!.p99);
}

function start(args: string[]) {
  const child = spawn(process.execPath, [BIN, 'chaos', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const out = { stdout: '', stderr: '' };
  child.stdout.on('data', (d: Buffer) => (out.stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out.stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, out, exited };
}

describe('hotstandby chaos', () => {
  it('a one-minute seeded run of every process fault kind loses no acknowledged write and its history is linearizable', async () => {
    const out = path.join(dir, 'short');
    // Seed 1's first four faults are one of each of these kinds (the kind sequence depends on the seed and the list only).
    const run = start(['--minutes', '1', '--seed', '1', '--interval', '1', '--faults', PROCESS_KINDS.join(','), '--json', '--out', out, '--keep-history']);
    try {
      const code = await run.exited;
      const summary = JSON.parse(run.out.stdout) as Summary;
      expectPassingRun(summary, code, run.out.stderr, PROCESS_KINDS);
      expect(summary.netlab).toBeNull();
      // The checked history is the one recorded: reads and writes on several members.
      const ops = fs.readFileSync(summary.history!, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { op: string; member: string; ok: boolean | null });
      expect(ops).toHaveLength(summary.historyOps);
      expect(new Set(ops.filter((o) => o.op === 'put' && o.ok).map((o) => o.member)).size).toBeGreaterThanOrEqual(2);
      expect(ops.filter((o) => o.op === 'get' && o.ok).length).toBeGreaterThan(100);
      // --keep-history keeps the processes' logs too, and names the slowest faults to look up in them.
      expect(fs.readdirSync(summary.logs!)).toEqual(expect.arrayContaining(['kv-0-agent.log', 'kv-0-kvmaster.log', 'etcd.log']));
      expect(summary.slowestFaults.length).toBe(Math.min(5, summary.faults));
      expect(summary.slowestFaults[0]!.ms).toBe(Math.max(...Object.values(summary.byKind).map((k) => k.failoverMs?.max ?? 0)));
    } finally {
      run.child.kill('SIGKILL');
    }
  }, 240_000);

  it.runIf(strict)('network namespaces are available (HOTSTANDBY_E2E=1 needs them)', () => {
    expect(unavailable).toBeUndefined();
  });

  it.skipIf(unavailable !== undefined)(
    `as root, the process and partition kinds, a flapping link included, lose no acknowledged write and are linearizable; the lab is removed${unavailable ? ` (skipped: ${unavailable})` : ''}`,
    async () => {
      // Seed 4's first eight faults are one of each of these eight kinds (scripted from seededRandom and the kind order).
      const run = start(['--minutes', '1', '--seed', '4', '--interval', '1', '--faults', PARTITION_KINDS.join(','), '--json', '--out', path.join(dir, 'network')]);
      try {
        const code = await run.exited;
        const summary = JSON.parse(run.out.stdout) as Summary;
        expectPassingRun(summary, code, run.out.stderr, PARTITION_KINDS);
        expect(summary.skippedKinds).toEqual({});
        for (const k of FAULT_KINDS.filter((x) => x.network && x.name.startsWith('partition-leader'))) expect(summary.byKind[k.name]!.failoverMs!.p50, k.name).toBeGreaterThan(0);
        expect(summary.netlab).toMatch(/^hsbr/);
        expect(linkExists(summary.netlab!), 'the lab bridge is removed').toBe(false);
      } finally {
        run.child.kill('SIGKILL');
      }
    },
    300_000,
  );

  it.skipIf(unavailable !== undefined)(
    `as root in sync mode, etcd delayed, a 3-member etcd losing one member and then its quorum, and the stream server restarted empty under load: nothing lost, linearizable, writes stop without a quorum${unavailable ? ` (skipped: ${unavailable})` : ''}`,
    async () => {
      // Seed 3's first four faults are one of each of these kinds, in the order
      // delay-etcd, restart-stream-server, kill-etcd-member, kill-etcd-quorum
      // (scripted from seededRandom, the list and each kind's draws).
      const run = start(['--minutes', '1', '--seed', '3', '--interval', '1', '--replication', 'sync', '--faults', STORE_KINDS.join(','), '--json', '--out', path.join(dir, 'stores')]);
      try {
        const code = await run.exited;
        const summary = JSON.parse(run.out.stdout) as Summary;
        // None of these kinds must move leadership, so failoverMs over them is null; each kind is clocked.
        expectPassingRun(summary, code, run.out.stderr, STORE_KINDS, { failovers: false });
        expect(summary).toMatchObject({ replication: 'sync', etcdMembers: 3, skippedKinds: {} });
        // Each kind took effect (a kind also throws, stopping the run, when its fault did nothing):
        const err = run.out.stderr;
        const probes = [...err.matchAll(/delay-etcd: a round trip to etcd through \S+ delayed link took (\d+) ms/g)].map((m) => Number(m[1]));
        expect(probes, err).toHaveLength(summary.byKind['delay-etcd']!.faults);
        for (const ms of probes) expect(ms).toBeGreaterThanOrEqual(400);
        expect(err.match(/kill -9 the stream server \(\w+\); an empty one starts/g), err).toHaveLength(summary.byKind['restart-stream-server']!.faults);
        expect(err.match(/kill -9 etcd member etcd\d \(2 of 3 left/g), err).toHaveLength(summary.byKind['kill-etcd-member']!.faults);
        const quorum = [...err.matchAll(/\(quorum lost\) for [\d.]+ s; the last write acknowledged was sent (\d+) ms/g)].map((m) => Number(m[1]));
        expect(quorum, err).toHaveLength(summary.byKind['kill-etcd-quorum']!.faults);
        // Within the lease TTL (2 s) + 2 etcd election timeouts: an etcd leader without a quorum renews leases until it steps down (ETCD_ELECTION_TIMEOUT_MS).
        for (const sentMs of quorum) expect(sentMs, 'the last acknowledged write was sent within the bound of the quorum loss').toBeLessThanOrEqual(2000 + 2 * ETCD_ELECTION_TIMEOUT_MS);
        expect(linkExists(summary.netlab!), 'the lab bridge is removed').toBe(false);
      } finally {
        run.child.kill('SIGKILL');
      }
    },
    240_000,
  );

  it('Ctrl-C ends a run with a checked summary and leaves no child process behind', async () => {
    const run = start(['--minutes', '30', '--seed', '7', '--interval', '1', '--json', '--out', path.join(dir, 'ctrl-c')]);
    try {
      await waitFor(() => (run.out.stderr.match(/writes resumed/g) ?? []).length >= 2, {
        timeoutMs: 90_000,
        what: `two faults recovered; stderr so far:\n${run.out.stderr}`,
      });
      const spawned = descendants(run.child.pid!);
      expect(spawned.length).toBeGreaterThanOrEqual(8); // etcd, redis, 3 agents, 3 masters
      run.child.kill('SIGINT');
      const code = await Promise.race([run.exited, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 90_000))]);
      const summary = JSON.parse(run.out.stdout) as Summary;
      expect(summary, run.out.stderr).toMatchObject({ lostWrites: 0, linearizable: true, error: null });
      expect(summary.faults).toBeGreaterThanOrEqual(2);
      expect(code).toBe(0);
      await waitFor(() => spawned.every((p) => !alive(p)), { timeoutMs: 10_000, what: 'every child of the chaos run to be gone' });
      // As root the default run put the members in a network lab: it is gone too (its namespaces go with the bridge's veths).
      if (unavailable === undefined) expect(summary.netlab).toMatch(/^hsbr/);
      if (summary.netlab) {
        expect(linkExists(summary.netlab)).toBe(false);
        const tag = summary.netlab.slice('hsbr'.length);
        expect(execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })).not.toContain(`hs${tag}-`);
      }
    } finally {
      run.child.kill('SIGKILL');
    }
  }, 240_000);
});

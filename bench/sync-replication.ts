// Benchmark: what sync replication costs. Two clusters of real processes
// (LocalCluster: etcd, redis-server, 3 agents + 3 kvmasters each), one in
// async mode (the baseline) and one in sync mode (minSyncStandbys 1), both up
// in the same run. Each offered load runs against async, then sync, then
// async and sync again (alternating halves, so drift in the machine's load
// hits both alike). Open-loop load: writes are sent on schedule whatever the
// answers, over keep-alive HTTP to the leader's kvmaster, which group-commits
// them into appends; latency is client-side, send to 200.
//
// Then the ack path alone, in one process on one redis-server, with the
// agent's own parts: the leader's OpLog.append with a kvmaster-like group
// commit (one append in flight; what queues meanwhile goes next), a standby's
// OpLogTailer + SyncStandby (buffer, PUBLISH), and the leader's subscription.
// async resolves a write when its append returns; sync when the standby's ack
// covers it. This is the protocol's own cost, without six processes and an HTTP
// client competing for the cores.
// Usage: node bench/sync-replication.ts [--seconds 6] [--rates 1000,10000] [--only clusters,ack-path] [--json]
import http from 'node:http';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { RespClient } from '../src/lib/resp/client.ts';
import { LocalCluster, type Member } from '../src/demo/localcluster.ts';
import { OpLog } from '../src/agent/oplog.ts';
import { OpLogTailer } from '../src/agent/tailer.ts';
import { SyncStandby } from '../src/agent/sync-standby.ts';
import { parseAck } from '../src/agent/sync-record.ts';
import { streamKeys } from '../src/lib/keys.ts';
import { removeWorkDir, startStreamServer } from '../src/lib/localstores.ts';
import { silentLogger } from '../src/lib/log.ts';
import { percentile, sleep } from '../src/lib/time.ts';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '6' },
    rates: { type: 'string', default: '1000,10000' },
    only: { type: 'string', default: 'clusters,ack-path' },
    json: { type: 'boolean', default: false },
  },
});
const SECONDS = Number(values.seconds);
const RATES = values.rates.split(',').map(Number);
const PAYLOAD = 'x'.repeat(100);
const KEYS = 1000;
const MAX_IN_FLIGHT = 2048;
const say = (line: string): void => {
  if (!values.json) process.stdout.write(`${line}\n`);
};

interface Run {
  latencies: number[];
  ok: number;
  failed: number;
  elapsedS: number;
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });

function put(m: Member, key: string): Promise<number> {
  const [host, port] = [m.kvAddress.slice(0, m.kvAddress.lastIndexOf(':')), Number(m.kvAddress.slice(m.kvAddress.lastIndexOf(':') + 1))];
  return new Promise((resolve) => {
    const req = http.request({ host, port, method: 'PUT', path: `/kv/${key}`, agent, headers: { 'content-length': PAYLOAD.length }, timeout: 10_000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', () => resolve(0));
    req.on('timeout', () => req.destroy());
    req.end(PAYLOAD);
  });
}

/** Offers `rate` writes/s for `seconds` on schedule; waits (bounded) for the answers. */
async function offer(leader: Member, rate: number, seconds: number): Promise<Run> {
  const latencies: number[] = [];
  let ok = 0;
  let failed = 0;
  let sent = 0;
  let inflight = 0;
  const pending = new Set<Promise<void>>();
  const started = performance.now();
  while (performance.now() - started < seconds * 1000) {
    const due = Math.floor(((performance.now() - started) / 1000) * rate);
    while (sent < due && inflight < MAX_IN_FLIGHT) {
      const t0 = performance.now();
      const key = `k${sent % KEYS}`;
      sent++;
      inflight++;
      const p = put(leader, key).then((status) => {
        inflight--;
        if (status === 200) {
          ok++;
          latencies.push(performance.now() - t0);
        } else failed++;
      });
      pending.add(p);
      void p.finally(() => pending.delete(p));
    }
    await sleep(1);
  }
  const elapsedS = (performance.now() - started) / 1000;
  await Promise.race([Promise.all(pending), sleep(15_000)]);
  return { latencies, ok, failed, elapsedS };
}

function merge(a: Run, b: Run): Run {
  return { latencies: [...a.latencies, ...b.latencies], ok: a.ok + b.ok, failed: a.failed + b.failed, elapsedS: a.elapsedS + b.elapsedS };
}

/** The ack path alone (see the header). Returns per-write latency from enqueue to resolution. */
async function isolated(url: string, mode: 'async' | 'sync', rate: number, seconds: number, round: number): Promise<Run> {
  const log = silentLogger();
  const keys = streamKeys({ namespace: 'iso', name: `${mode}-${rate}-${round}` });
  // The agent's own client, as the agents use it.
  const leaderConn = RespClient.fromUrl(url);
  const standbyConn = RespClient.fromUrl(url);
  const sub = RespClient.fromUrl(url);
  const oplog = new OpLog({ redis: leaderConn, keys, maxLength: 10_000_000, log });
  const epoch = 1;
  await oplog.raiseEpoch(epoch, 0);
  const stop = new AbortController();
  let ackedSeq = 0;
  const ackWaiters: Array<{ seq: number; resolve: () => void }> = [];
  if (mode === 'sync') {
    await sub.subscribe(keys.acks);
    sub.on('message', (_c: string, m: string) => {
      const a = parseAck(m);
      if (!a || a.epoch !== epoch) return;
      ackedSeq = Math.max(ackedSeq, a.seq);
      while (ackWaiters.length > 0 && ackWaiters[0]!.seq <= ackedSeq) ackWaiters.shift()!.resolve();
    });
  }
  const standby = new SyncStandby({ redis: standbyConn, channel: keys.acks, member: 's-1', log });
  const tailer = new OpLogTailer({ redis: standbyConn, keys, fromSeq: 1, log, blockMs: 200 });
  const follower = (async () => {
    while (!stop.signal.aborted) {
      const ev = await tailer.next(stop.signal).catch(() => undefined);
      if (!ev) break;
      if (ev.type === 'entries') {
        if (mode === 'sync') standby.received(ev.entries);
        standby.applied(ev.entries.at(-1)!.seq); // the master applies at once: the buffer stays small
      }
    }
  })();
  const queue: Array<{ t0: number; done: () => void }> = [];
  let inFlight = false;
  let batchNo = 0;
  const pump = (): void => {
    if (inFlight || queue.length === 0) return;
    const batch = queue.splice(0, 1000);
    inFlight = true;
    void (async () => {
      const r = await oplog.append(epoch, batch.map((_, i) => ({ op: 'put', key: `k${i}`, payload: PAYLOAD })), `b${batchNo++}`);
      if (mode === 'sync' && ackedSeq < r.lastSeq) await new Promise<void>((resolve) => ackWaiters.push({ seq: r.lastSeq, resolve }));
      for (const w of batch) w.done();
      inFlight = false;
      pump();
    })();
  };
  const latencies: number[] = [];
  let sent = 0;
  const started = performance.now();
  while (performance.now() - started < seconds * 1000) {
    const due = Math.floor(((performance.now() - started) / 1000) * rate);
    while (sent < due) {
      const t0 = performance.now();
      sent++;
      queue.push({ t0, done: () => latencies.push(performance.now() - t0) });
    }
    pump();
    await sleep(1);
  }
  const elapsedS = (performance.now() - started) / 1000;
  const deadline = performance.now() + 10_000;
  while (latencies.length < sent && performance.now() < deadline) await sleep(5);
  stop.abort();
  await follower;
  await tailer.close();
  await leaderConn.del(keys.log, keys.head, keys.epoch, keys.epochStarts);
  leaderConn.disconnect();
  standbyConn.disconnect();
  sub.disconnect();
  return { latencies, ok: latencies.length, failed: sent - latencies.length, elapsedS };
}

/**
 * The aim's verdict, only where the run can show it: a saturated run, or one
 * whose async baseline already has a p99 far above the aim (the machine is
 * busy with other work and its scheduling stalls dominate), measures the
 * machine, not the protocol.
 */
function verdictFor(a: { achieved: number; p99: number }, s: { achieved: number; p99: number }, rate: number): string {
  if (a.achieved < 0.9 * rate || s.achieved < 0.9 * rate) return `not measurable here: the offered load saturates this machine (${Math.round(a.achieved)}/s async)`;
  if (a.p99 > 20) return `not measurable here: the async baseline's own p99 is ${a.p99.toFixed(1)} ms (load average ${os.loadavg()[0]!.toFixed(1)} on ${os.cpus().length} cores)`;
  return s.p99 - a.p99 < 2 ? 'met' : 'NOT met';
}

type Row = { rate: number; mode: string; achieved: number; failed: number; p50: number; p99: number; max: number };
const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');
const ms = (n: number): string => `${n.toFixed(2)} ms`;
const sign = (n: number): string => `${n >= 0 ? '+' : '−'}${ms(Math.abs(n))}`;
const only = new Set(values.only.split(','));

const clusters: LocalCluster[] = [];
const results: Record<string, unknown> = {};
try {
  say(`machine: ${os.cpus().length} cores (${os.cpus()[0]?.model ?? '?'}), load ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}, Node ${process.version}`);
  if (only.has('clusters')) {
  const asyncCluster = await LocalCluster.start({ members: 3, logLevel: 'warn', cluster: { namespace: 'bench', name: 'async' } });
  clusters.push(asyncCluster);
  const syncCluster = await LocalCluster.start({
    members: 3,
    logLevel: 'warn',
    cluster: { namespace: 'bench', name: 'sync' },
    agentArgs: ['--replication', 'sync', '--min-sync-standbys', '1', '--sync-timeout-ms', '2000'],
  });
  clusters.push(syncCluster);
  const leaders = { async: await asyncCluster.waitForLeader(), sync: await syncCluster.waitForLeader() };
  // Warm up both (JIT, connections, the sync set published).
  for (const l of Object.values(leaders)) await offer(l, 500, 1);

  const rows: Row[] = [];
  for (const rate of RATES) {
    const halves = { async: [] as Run[], sync: [] as Run[] };
    for (let half = 0; half < 2; half++) {
      for (const mode of ['async', 'sync'] as const) {
        halves[mode].push(await offer(leaders[mode], rate, SECONDS / 2));
        await sleep(500);
      }
    }
    for (const mode of ['async', 'sync'] as const) {
      const r = merge(halves[mode][0]!, halves[mode][1]!);
      rows.push({ rate, mode, achieved: r.ok / r.elapsedS, failed: r.failed, p50: percentile(r.latencies, 50), p99: percentile(r.latencies, 99), max: Math.max(0, ...r.latencies) });
    }
  }

  say('');
  say('Client write latency (send → 200) through the leader kvmaster, 3 members each, open-loop load');
  say(`  ${'offered/s'.padStart(10)} ${'mode'.padEnd(6)} ${'achieved/s'.padStart(11)} ${'failed'.padStart(7)} ${'p50'.padStart(10)} ${'p99'.padStart(10)} ${'max'.padStart(10)}`);
  for (const r of rows) {
    say(`  ${fmt(r.rate).padStart(10)} ${r.mode.padEnd(6)} ${fmt(r.achieved).padStart(11)} ${String(r.failed).padStart(7)} ${ms(r.p50).padStart(10)} ${ms(r.p99).padStart(10)} ${ms(r.max).padStart(10)}`);
  }
  say('');
  say('Sync overhead (sync minus async, same offered load)');
  for (const rate of RATES) {
    const a = rows.find((r) => r.rate === rate && r.mode === 'async')!;
    const s = rows.find((r) => r.rate === rate && r.mode === 'sync')!;
    const p99 = s.p99 - a.p99;
    say(`  ${fmt(rate).padStart(10)}/s: p50 ${sign(s.p50 - a.p50)}, p99 ${sign(p99)}, throughput ${((s.achieved / a.achieved) * 100).toFixed(0)}% of async${rate === 10_000 ? `   aim p99 overhead < 2 ms: ${verdictFor(a, s, rate)}` : ''}`);
  }
  results.rows = rows;
  }

  // The ack path alone.
  if (only.has('ack-path')) {
  const redisServer = await startStreamServer();
  try {
    const iso: Row[] = [];
    for (const rate of RATES) {
      const halves = { async: [] as Run[], sync: [] as Run[] };
      for (let half = 0; half < 2; half++) {
        for (const mode of ['async', 'sync'] as const) halves[mode].push(await isolated(redisServer.url, mode, rate, SECONDS / 2, half));
      }
      for (const mode of ['async', 'sync'] as const) {
        const r = merge(halves[mode][0]!, halves[mode][1]!);
        iso.push({ rate, mode, achieved: r.ok / r.elapsedS, failed: r.failed, p50: percentile(r.latencies, 50), p99: percentile(r.latencies, 99), max: Math.max(0, ...r.latencies) });
      }
    }
    say('');
    say('The ack path alone (one process, one redis-server; group commit like kvmaster; append → standby XREAD → PUBLISH → leader)');
    say(`  ${'offered/s'.padStart(10)} ${'mode'.padEnd(6)} ${'achieved/s'.padStart(11)} ${'failed'.padStart(7)} ${'p50'.padStart(10)} ${'p99'.padStart(10)} ${'max'.padStart(10)}`);
    for (const r of iso) {
      say(`  ${fmt(r.rate).padStart(10)} ${r.mode.padEnd(6)} ${fmt(r.achieved).padStart(11)} ${String(r.failed).padStart(7)} ${ms(r.p50).padStart(10)} ${ms(r.p99).padStart(10)} ${ms(r.max).padStart(10)}`);
    }
    for (const rate of RATES) {
      const a = iso.find((r) => r.rate === rate && r.mode === 'async')!;
      const s = iso.find((r) => r.rate === rate && r.mode === 'sync')!;
      const p99 = s.p99 - a.p99;
      say(`  ${fmt(rate).padStart(10)}/s: p50 ${sign(s.p50 - a.p50)}, p99 ${sign(p99)}, throughput ${((s.achieved / a.achieved) * 100).toFixed(0)}% of async${rate === 10_000 ? `   aim p99 overhead < 2 ms: ${verdictFor(a, s, rate)}` : ''}`);
    }
    results.isolated = iso;
  } finally {
    await redisServer.stop();
    removeWorkDir(redisServer);
  }
  }
  if (values.json) process.stdout.write(`${JSON.stringify(results)}\n`);
} finally {
  agent.destroy();
  await Promise.allSettled(clusters.map((c) => c.stop()));
}

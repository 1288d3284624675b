// Benchmark: the operation log's append path and standby apply lag on each
// stream server, side by side in one run: redis-server, and Dragonfly (when
// scripts/build-dragonfly.sh has built it) with --lock_on_hashtags on and off.
// Each server gets the same baselines:
//   - redis-benchmark's pipelined XADD (-P 16), the server's own ceiling;
//   - a plain ioredis pipelined XADD loop, the Node client's ceiling;
// and, once, an oplog of one etcd put per entry (the design this one replaces).
// Usage: node bench/oplog-append.ts [--seconds 3] [--rates 1000,10000,50000]
//                                   [--servers redis,dragonfly,dragonfly-nolock] [--json]
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { Etcd3 } from 'etcd3';
import { Redis } from 'ioredis';
import { RespClient } from '../src/lib/resp/client.ts';
import { OpLog } from '../src/agent/oplog.ts';
import { OpLogTailer } from '../src/agent/tailer.ts';
import { DRAGONFLY_BUILD_HINT, builtDragonfly } from '../src/lib/dragonfly.ts';
import { streamKeys } from '../src/lib/keys.ts';
import { startEtcd, startStreamServer, removeWorkDir, type StartStreamServerOptions } from '../src/lib/localstores.ts';
import { silentLogger } from '../src/lib/log.ts';
import { percentile, sleep } from '../src/lib/time.ts';

const SERVERS: Record<string, { label: string; start: StartStreamServerOptions }> = {
  redis: { label: 'redis-server', start: { kind: 'redis' } },
  dragonfly: { label: 'Dragonfly, lock_on_hashtags', start: { kind: 'dragonfly', lockOnHashtags: true } },
  'dragonfly-nolock': { label: 'Dragonfly, per-key locks', start: { kind: 'dragonfly', lockOnHashtags: false } },
};

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '3' },
    rates: { type: 'string', default: '1000,10000,50000' },
    servers: { type: 'string' },
    json: { type: 'boolean', default: false },
  },
});
const SECONDS = Number(values.seconds);
const RATES = values.rates.split(',').map(Number);
const PAYLOAD = 'x'.repeat(100);
const log = silentLogger();
const say = (line: string): void => {
  if (!values.json) process.stdout.write(`${line}\n`);
};
const servers = (values.servers ?? (builtDragonfly() ? 'redis,dragonfly,dragonfly-nolock' : 'redis')).split(',');
for (const s of servers) {
  if (!SERVERS[s]) throw new Error(`--servers: unknown server "${s}"; use ${Object.keys(SERVERS).join(', ')}`);
  if (s.startsWith('dragonfly') && !builtDragonfly()) throw new Error(`--servers ${s}: Dragonfly is not built; ${DRAGONFLY_BUILD_HINT}`);
}
if (!values.servers && !builtDragonfly()) say(`(Dragonfly is not built, so only redis-server is measured; ${DRAGONFLY_BUILD_HINT})`);

function fmt(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

async function forSeconds(seconds: number, worker: () => Promise<number>, concurrency: number): Promise<{ entries: number; latencies: number[] }> {
  const deadline = performance.now() + seconds * 1000;
  let entries = 0;
  const latencies: number[] = [];
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < deadline) {
        const t0 = performance.now();
        const done = await worker(); // not `entries += await …`: that reads entries before the await and loses concurrent counts
        entries += done;
        latencies.push(performance.now() - t0);
      }
    }),
  );
  return { entries, latencies };
}

interface ServerResult {
  server: string;
  label: string;
  version: string;
  redisBenchmarkXadd: number;
  ioredisXadd: number;
  oplogAppend: Array<{ batch: number; rate: number; p50: number; p99: number }>;
  applyLag: Array<{ offered: number; achieved: number; p50: number; p99: number; max: number }>;
}

async function measure(name: string): Promise<ServerResult> {
  const { label, start } = SERVERS[name]!;
  const server = await startStreamServer(start);
  const redis = new Redis(server.url);
  const agentConn = RespClient.fromUrl(server.url); // the agent's client, for the OpLog rows
  try {
    const version = /(redis_version|dragonfly_version):(\S+)/.exec(await redis.info('server'))?.[2] ?? '?';
    // 1. redis-benchmark, pipelined XADD on the same server.
    const csv = execFileSync('redis-benchmark', ['-p', String(server.port), '-n', '300000', '-P', '16', '-q', '--csv', 'XADD', 'bench:rb', '*', 'p', PAYLOAD], {
      encoding: 'utf8',
    });
    const redisBenchmarkXadd = Number(/"XADD[^"]*","([0-9.]+)"/.exec(csv)?.[1] ?? NaN);
    await redis.del('bench:rb');

    // 2. ioredis pipelined XADD, 256 in flight.
    const ioredisRun = await forSeconds(
      SECONDS,
      async () => {
        const p = redis.pipeline();
        for (let i = 0; i < 64; i++) p.xadd('bench:io', '*', 'p', PAYLOAD);
        await p.exec();
        return 64;
      },
      4,
    );
    await redis.del('bench:io');

    // 3. OpLog.append: 16 writers, batches of 1, 16 and 64 entries.
    const oplogAppend: ServerResult['oplogAppend'] = [];
    let epoch = 1;
    for (const batch of [1, 16, 64]) {
      const keys = streamKeys({ namespace: 'bench', name: `append-${batch}` });
      const oplog = new OpLog({ redis: agentConn, keys, maxLength: 1_000_000, log });
      await oplog.raiseEpoch(++epoch, 0);
      const ops = Array.from({ length: batch }, (_, i) => ({ op: 'put', key: `k${i}`, payload: PAYLOAD }));
      let n = 0;
      const r = await forSeconds(
        SECONDS,
        async () => {
          await oplog.append(epoch, ops, `b${n++}`);
          return batch;
        },
        16,
      );
      oplogAppend.push({ batch, rate: r.entries / SECONDS, p50: percentile(r.latencies, 50), p99: percentile(r.latencies, 99) });
      await redis.del(keys.log, keys.head, keys.epoch, keys.epochStarts);
    }

    // 4. Apply lag: a paced writer and a tailer (same process, own connection).
    const applyLag: ServerResult['applyLag'] = [];
    for (const rate of RATES) {
      const keys = streamKeys({ namespace: 'bench', name: `lag-${rate}` });
      const oplog = new OpLog({ redis: agentConn, keys, maxLength: 1_000_000, log });
      await oplog.raiseEpoch(++epoch, 0);
      const tailer = new OpLogTailer({ redis: agentConn, keys, fromSeq: 1, log, blockMs: 200 }); // reads on its own duplicate connection
      const stop = new AbortController();
      const lags: number[] = [];
      let received = 0;
      const reader = (async () => {
        while (!stop.signal.aborted) {
          const ev = await tailer.next(stop.signal).catch(() => undefined);
          if (!ev) break;
          if (ev.type === 'resync') throw new Error(`tailer resync during the benchmark: ${ev.detail}`);
          if (ev.type !== 'entries') continue;
          const now = performance.now();
          for (const e of ev.entries) lags.push(now - Number(e.payload.slice(0, e.payload.indexOf('|'))));
          received += ev.entries.length;
        }
      })();
      const tickMs = 2;
      const perTick = Math.max(1, Math.round((rate * tickMs) / 1000));
      const started = performance.now();
      let sent = 0;
      let inflight = 0;
      let batchNo = 0;
      while (performance.now() - started < SECONDS * 1000) {
        const due = Math.floor(((performance.now() - started) / 1000) * rate);
        if (sent < due && inflight < 8) {
          const n = Math.min(due - sent, perTick * 4, 1000);
          const ts = performance.now();
          const ops = Array.from({ length: n }, (_, i) => ({ op: 'put', key: `k${i}`, payload: `${ts}|${PAYLOAD}` }));
          sent += n;
          inflight++;
          void oplog.append(epoch, ops, `l${batchNo++}`).finally(() => inflight--);
        } else {
          await sleep(1);
        }
      }
      const elapsed = (performance.now() - started) / 1000;
      const deadline = performance.now() + 10_000;
      while (received < sent && performance.now() < deadline) await sleep(10);
      stop.abort();
      await reader;
      await tailer.close();
      applyLag.push({ offered: rate, achieved: sent / elapsed, p50: percentile(lags, 50), p99: percentile(lags, 99), max: lags.reduce((a, b) => Math.max(a, b), 0) });
      await redis.del(keys.log, keys.head, keys.epoch, keys.epochStarts);
    }
    return { server: name, label, version, redisBenchmarkXadd, ioredisXadd: ioredisRun.entries / SECONDS, oplogAppend, applyLag };
  } finally {
    redis.disconnect();
    agentConn.disconnect();
    await server.stop();
    removeWorkDir(server);
  }
}

async function etcdPutPerEntry(): Promise<number> {
  const etcd = await startEtcd();
  const client = new Etcd3({ hosts: etcd.endpoint });
  try {
    let seq = 0;
    const run = await forSeconds(
      SECONDS,
      async () => {
        await client.put(`/bench/log/${String(++seq).padStart(12, '0')}`).value(PAYLOAD);
        return 1;
      },
      64,
    );
    return run.entries / SECONDS;
  } finally {
    client.close();
    await etcd.stop();
    removeWorkDir(etcd);
  }
}

say(`machine: ${os.cpus().length} cores (${os.cpus()[0]?.model ?? '?'}), load ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}, Node ${process.version}`);
const results: ServerResult[] = [];
for (const s of servers) results.push(await measure(s));
const etcdRate = await etcdPutPerEntry();

const col = 16;
const cells = (f: (r: ServerResult) => string): string => results.map((r) => f(r).padStart(col)).join(' ');
const row = (name: string, f: (r: ServerResult) => string): void => say(`  ${name.padEnd(44)} ${cells(f)}`);
say('');
say('Append throughput (entries/s, 100-byte payloads; batch p50/p99 latency in ms)');
row('', (r) => r.label.slice(0, col));
row('server version', (r) => r.version);
row('redis-benchmark XADD -P 16 (baseline)', (r) => fmt(r.redisBenchmarkXadd));
row('ioredis pipelined XADD, 4x64 in flight', (r) => fmt(r.ioredisXadd));
for (const [i, batch] of [1, 16, 64].entries()) {
  row(`OpLog.append, 16 writers, batch ${batch}`, (r) => fmt(r.oplogAppend[i]!.rate));
  row(`  batch p50 / p99`, (r) => `${r.oplogAppend[i]!.p50.toFixed(2)} / ${r.oplogAppend[i]!.p99.toFixed(2)}`);
}
say(`  ${'etcd put per entry, 64 in flight (old design)'.padEnd(44)} ${fmt(etcdRate).padStart(col)}`);
say('');
say('Standby apply lag, ms (append call start → the tailer hands the entry on; one process, two connections)');
row('', (r) => r.label.slice(0, col));
for (const [i, rate] of RATES.entries()) {
  row(`${fmt(rate)}/s offered: achieved/s`, (r) => fmt(r.applyLag[i]!.achieved));
  row(`  lag p50 / p99 / max`, (r) => `${r.applyLag[i]!.p50.toFixed(1)} / ${r.applyLag[i]!.p99.toFixed(1)} / ${r.applyLag[i]!.max.toFixed(0)}`);
}
say('');
say('Against the aims');
for (const r of results) {
  const ratio = Math.max(...r.oplogAppend.map((a) => a.rate)) / r.redisBenchmarkXadd;
  const lag10k = r.applyLag.find((l) => l.offered === 10_000);
  say(`  ${r.label}: append ${(ratio * 100).toFixed(0)}% of its redis-benchmark XADD -P16 (aim ≥ 50%: ${ratio >= 0.5 ? 'met' : 'NOT met'})` +
    (lag10k ? `; lag p99 at 10k/s ${lag10k.p99.toFixed(1)} ms (aim < 20 ms: ${lag10k.p99 < 20 ? 'met' : 'NOT met'})` : '') +
    `; ${(Math.max(...r.oplogAppend.map((a) => a.rate)) / etcdRate).toFixed(0)}x one etcd put per entry`);
}
if (values.json) process.stdout.write(`${JSON.stringify({ servers: results, etcdPutPerEntry: etcdRate })}\n`);

// Benchmark: the operation log's append path and standby apply lag, side by
// side in one run with its baselines on the same servers:
//   - redis-benchmark's pipelined XADD (-P 16), the server's own ceiling;
//   - a plain ioredis pipelined XADD loop, the Node client's ceiling;
//   - an oplog that does one etcd put per entry (the design this one replaces).
// Usage: node bench/oplog-append.ts [--seconds 3] [--rates 1000,10000,50000] [--json]
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { Etcd3 } from 'etcd3';
import { Redis } from 'ioredis';
import { OpLog } from '../src/agent/oplog.ts';
import { OpLogTailer } from '../src/agent/tailer.ts';
import { streamKeys } from '../src/lib/keys.ts';
import { startEtcd, startRedis, removeWorkDir } from '../src/lib/localstores.ts';
import { silentLogger } from '../src/lib/log.ts';
import { percentile, sleep } from '../src/lib/time.ts';

const { values } = parseArgs({
  options: { seconds: { type: 'string', default: '3' }, rates: { type: 'string', default: '1000,10000,50000' }, json: { type: 'boolean', default: false } },
});
const SECONDS = Number(values.seconds);
const RATES = values.rates.split(',').map(Number);
const PAYLOAD = 'x'.repeat(100);
const log = silentLogger();
const say = (line: string): void => {
  if (!values.json) process.stdout.write(`${line}\n`);
};

const etcd = await startEtcd();
const redisServer = await startRedis();
const redis = new Redis(redisServer.url);
const results: Record<string, unknown> = {};

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

try {
  say(`machine: ${os.cpus().length} cores (${os.cpus()[0]?.model ?? '?'}), load ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}, Node ${process.version}, ${execFileSync('redis-server', ['--version'], { encoding: 'utf8' }).split(' ').slice(0, 3).join(' ')}`);
  say('');

  // 1. redis-benchmark, pipelined XADD on the same server.
  const port = redisServer.url.split(':').pop()!;
  const csv = execFileSync('redis-benchmark', ['-p', port, '-n', '300000', '-P', '16', '-q', '--csv', 'XADD', 'bench:rb', '*', 'p', PAYLOAD], { encoding: 'utf8' });
  const rbRate = Number(/"XADD[^"]*","([0-9.]+)"/.exec(csv)?.[1] ?? NaN);
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
  const ioRate = ioredisRun.entries / SECONDS;

  // 3. OpLog.append: 16 writers, batches of 1, 16 and 64 entries.
  const appendRows: Array<{ batch: number; rate: number; p50: number; p99: number }> = [];
  let epoch = 1;
  for (const batch of [1, 16, 64]) {
    const keys = streamKeys({ namespace: 'bench', name: `append-${batch}` });
    const oplog = new OpLog({ redis, keys, maxLength: 1_000_000, log });
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
    appendRows.push({ batch, rate: r.entries / SECONDS, p50: percentile(r.latencies, 50), p99: percentile(r.latencies, 99) });
    await redis.del(keys.log, keys.head, keys.epoch, keys.epochStarts);
  }
  const bestAppend = Math.max(...appendRows.map((r) => r.rate));

  // 4. One etcd put per entry, 64 in flight.
  const etcdClient = new Etcd3({ hosts: etcd.endpoint });
  let seq = 0;
  const etcdRun = await forSeconds(
    SECONDS,
    async () => {
      await etcdClient.put(`/bench/log/${String(++seq).padStart(12, '0')}`).value(PAYLOAD);
      return 1;
    },
    64,
  );
  etcdClient.close();
  const etcdRate = etcdRun.entries / SECONDS;

  say('Append throughput (entries/s, 100-byte payloads)');
  say(`  ${'path'.padEnd(48)} ${'entries/s'.padStart(12)} ${'batch p50'.padStart(10)} ${'batch p99'.padStart(10)}`);
  say(`  ${'redis-benchmark XADD -P 16 (baseline)'.padEnd(48)} ${fmt(rbRate).padStart(12)}`);
  say(`  ${'ioredis pipelined XADD, 4x64 in flight'.padEnd(48)} ${fmt(ioRate).padStart(12)}`);
  for (const r of appendRows) {
    say(`  ${`OpLog.append, 16 writers, batch ${r.batch}`.padEnd(48)} ${fmt(r.rate).padStart(12)} ${`${r.p50.toFixed(2)} ms`.padStart(10)} ${`${r.p99.toFixed(2)} ms`.padStart(10)}`);
  }
  say(`  ${'etcd put per entry, 64 in flight (old design)'.padEnd(48)} ${fmt(etcdRate).padStart(12)}`);
  say('');
  Object.assign(results, { redisBenchmarkXadd: rbRate, ioredisXadd: ioRate, oplogAppend: appendRows, etcdPutPerEntry: etcdRate });

  // 5. Apply lag: a paced writer and a tailer (same process, own connection).
  const lagRows: Array<{ offered: number; achieved: number; p50: number; p99: number; max: number }> = [];
  for (const rate of RATES) {
    const keys = streamKeys({ namespace: 'bench', name: `lag-${rate}` });
    const oplog = new OpLog({ redis, keys, maxLength: 1_000_000, log });
    await oplog.raiseEpoch(++epoch, 0);
    const tailer = new OpLogTailer({ redis, keys, fromSeq: 1, log, blockMs: 200 });
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
    lagRows.push({ offered: rate, achieved: sent / elapsed, p50: percentile(lags, 50), p99: percentile(lags, 99), max: lags.reduce((a, b) => Math.max(a, b), 0) });
    await redis.del(keys.log, keys.head, keys.epoch, keys.epochStarts);
  }
  say('Standby apply lag (append call start → the tailer hands the entry on; one process, two connections)');
  say(`  ${'offered/s'.padStart(10)} ${'achieved/s'.padStart(11)} ${'lag p50'.padStart(9)} ${'lag p99'.padStart(9)} ${'lag max'.padStart(9)}`);
  for (const r of lagRows) {
    say(`  ${fmt(r.offered).padStart(10)} ${fmt(r.achieved).padStart(11)} ${`${r.p50.toFixed(1)} ms`.padStart(9)} ${`${r.p99.toFixed(1)} ms`.padStart(9)} ${`${r.max.toFixed(1)} ms`.padStart(9)}`);
  }
  results.applyLag = lagRows;

  const ratio = bestAppend / rbRate;
  const lag10k = lagRows.find((r) => r.offered === 10_000);
  say('');
  say('Against the aims');
  say(`  append ≥ 50% of redis-benchmark XADD -P16: ${(ratio * 100).toFixed(0)}%  ${ratio >= 0.5 ? 'met' : 'NOT met'}`);
  if (lag10k) say(`  apply lag p99 < 20 ms at 10k entries/s:   ${lag10k.p99.toFixed(1)} ms  ${lag10k.p99 < 20 ? 'met' : 'NOT met'}`);
  say(`  OpLog.append vs one etcd put per entry:    ${(bestAppend / etcdRate).toFixed(0)}x`);
  results.appendVsRedisBenchmark = ratio;
  if (values.json) process.stdout.write(`${JSON.stringify(results)}\n`);
} finally {
  redis.disconnect();
  await Promise.allSettled([etcd.stop(), redisServer.stop()]);
  removeWorkDir(etcd);
  removeWorkDir(redisServer);
}

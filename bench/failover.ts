// Benchmark: failover (kill -9 of the leader → the first write acknowledged by
// the new leader), planned switchover (request → the first write acknowledged
// by the target) and master crash (kill -9 of the leader's master alone, its
// agent alive → the first write acknowledged by another member), over real
// processes under a steady write load, with the lease TTL as the baseline a
// whole-leader failover cannot beat (measured in the same run).
// Usage: node bench/failover.ts [--runs 20] [--lease-ttl 5] [--rate 200] [--only failover,switchover,master-crash] [--json]
import os from 'node:os';
import { parseArgs } from 'node:util';
import { runDemo } from '../src/demo/run.ts';
import { percentile } from '../src/lib/time.ts';
import { AGENT_DEFAULTS } from '../src/agent/config.ts';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '20' },
    'lease-ttl': { type: 'string', default: '5' },
    rate: { type: 'string', default: '200' },
    only: { type: 'string', default: 'failover,switchover,master-crash' },
    json: { type: 'boolean', default: false },
  },
});
const kinds = new Set(values.only.split(','));
const runs = Number(values.runs);
const ttl = Number(values['lease-ttl']);
const stop = new AbortController();
process.once('SIGINT', () => stop.abort());

const summary = await runDemo({
  members: 3,
  leaseTtlSeconds: ttl,
  intervalSeconds: 1,
  failovers: kinds.has('failover') ? runs : 0,
  switchovers: kinds.has('switchover') ? runs : 0,
  masterCrashes: kinds.has('master-crash') ? runs : 0,
  rate: Number(values.rate),
  progress: (line) => process.stderr.write(`${line}\n`),
  signal: stop.signal,
});

if (values.json) {
  process.stdout.write(`${JSON.stringify(summary)}\n`);
} else {
  const out = (l = ''): boolean => process.stdout.write(`${l}\n`);
  const row = (name: string, xs: number[], aim: string, met: boolean): void => {
    out(
      `  ${name.padEnd(12)} ${String(xs.length).padStart(4)} ${`${Math.round(percentile(xs, 50))}`.padStart(7)} ${`${Math.round(percentile(xs, 99))}`.padStart(7)} ${`${Math.max(...xs)}`.padStart(7)}   ${aim.padEnd(22)} ${met ? 'met' : 'NOT met'}`,
    );
  };
  const bars = (name: string, xs: number[], scale: number): void => {
    out(`  ${name} (each █ = ${scale} ms)`);
    xs.forEach((ms, i) => out(`  ${String(i + 1).padStart(3)} ${'█'.repeat(Math.max(1, Math.round(ms / scale)))} ${ms} ms`));
  };
  out(`machine: ${os.cpus().length} cores, Node ${process.version}; 3 members, lease TTL ${ttl} s, ${values.rate} writes/s`);
  out();
  out(`  ${'kind'.padEnd(12)} ${'runs'.padStart(4)} ${'p50 ms'.padStart(7)} ${'p99 ms'.padStart(7)} ${'max ms'.padStart(7)}   aim`);
  const f = summary.runs.failoverMs;
  const s = summary.runs.switchoverMs;
  const m = summary.runs.masterCrashMs;
  if (f.length) row('failover', f, `<= TTL + 1 s = ${ttl * 1000 + 1000} ms`, Math.max(...f) <= ttl * 1000 + 1000);
  if (s.length) row('switchover', s, '< 500 ms', Math.max(...s) < 500);
  if (m.length) row('master crash', m, 'p99 < 1000 ms', percentile(m, 99) < 1000);
  out(`  baseline: the lease TTL, ${ttl * 1000} ms: a crashed leader's lease must expire before anyone else may lead`);
  if (m.length) {
    const timeout = AGENT_DEFAULTS.masterLivenessTimeoutMs;
    out(`  master crash: the agent resigns ${timeout / 5} ms after its master's role long-poll dropped (${timeout} ms, --master-liveness-timeout-ms,`);
    out('                for a master without a poll open); before, the agent kept renewing the lease for a master that was gone: no failover at all');
  }
  out();
  if (f.length) bars('failover', f, 250);
  if (s.length) bars('switchover', s, 25);
  if (m.length) bars('master crash (agent alive)', m, 25);
  out();
  out(`acknowledged writes: ${summary.ackedWrites}, failed (never acknowledged): ${summary.failedWrites}, lost: ${summary.lostWrites}`);
}
process.exitCode = summary.lostWrites === 0 ? 0 : 1;

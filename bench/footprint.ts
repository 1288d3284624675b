// Benchmark: what each process kind costs per pod. Starts, in one run, bare
// Node (the floor), two members (agent + reference master each, a leader and a
// standby) on real etcd and redis-server, and the operator on the test control
// plane when it is built; measures each idle and with the log under a write
// load, and prints RSS, V8 heap and CPU side by side with the aims of issue 10,
// then each idle process's RSS split by mapping (node binary code, its
// read-only data, anonymous memory, ...) beside bare Node's.
// It runs what the image runs: the compiled dist/ behind bin/hotstandby.js.
//
// Usage: node bench/footprint.ts [--settle-seconds 180] [--idle-seconds 30] [--load-seconds 20]
//                                [--rate 10000] [--starts 5] [--root DIR] [--source] [--json]
//   --settle-seconds N  idle time before the idle window. An idle agent's V8 compiles its
//                periodic work with Maglev and then Turbofan over its first ~2 minutes; their
//                machine code pages (~5 MB of the node binary) only count once that happened,
//                so a shorter settle measures a start-up state, not what a pod holds for days
//   --root DIR   measure another checkout (e.g. a worktree of an older commit) the same way
//   --source     run the TypeScript sources (Node strips types, ~17 MB more) instead of a build
//   --node-flags "..."  Node/V8 flags to try instead of those in the Dockerfile's ENTRYPOINT
//   --load-via agent|kvmaster  agent (default): batches of 100 entries straight to the
//                leader agent's local API, as a master sends them, so the log grows at exactly
//                --rate; kvmaster: single-key PUTs through the leader's reference master
//                (its pipeline, not the agent, then sets the rate reached)
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Etcd3 } from 'etcd3';
import { ManagedProcess, stopAllChildren } from '../src/lib/childproc.ts';
import { imageRuntime } from './lib/image-runtime.ts';
import { readRssByMapping, type RssByMapping } from './lib/rss-by-mapping.ts';
import { etcdKeys } from '../src/lib/keys.ts';
import { removeWorkDir, startEtcd, startStreamServer, type LocalEtcd, type LocalStreamServer } from '../src/lib/localstores.ts';
import { freePort, isPortOpen } from '../src/lib/ports.ts';
import { percentile, sleep, waitFor } from '../src/lib/time.ts';

const here = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const { values } = parseArgs({
  options: {
    'settle-seconds': { type: 'string', default: '180' },
    'idle-seconds': { type: 'string', default: '30' },
    'load-seconds': { type: 'string', default: '20' },
    rate: { type: 'string', default: '10000' },
    starts: { type: 'string', default: '5' },
    root: { type: 'string', default: here },
    source: { type: 'boolean', default: false },
    'node-flags': { type: 'string' },
    'load-via': { type: 'string', default: 'agent' },
    json: { type: 'boolean', default: false },
  },
});
const settleSeconds = Number(values['settle-seconds']);
const idleSeconds = Number(values['idle-seconds']);
const loadSeconds = Number(values['load-seconds']);
const rate = Number(values.rate);
const loadVia = values['load-via'];
if (loadVia !== 'agent' && loadVia !== 'kvmaster') throw new Error(`--load-via must be agent or kvmaster, got ${loadVia}`);
const starts = Number(values.starts);
const root = path.resolve(values.root);
const progress = (line: string): boolean => process.stderr.write(`${line}\n`);

/** The aims of issue 10, per process kind. */
const AIMS = { agentRssMb: 64, masterRssMb: 55, idleCpuPct: 0.5, agentReadyMs: 300 };
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'hs-footprint-'));

// A tiny probe preloaded into every measured Node process: on SIGUSR2 it writes
// the V8 heap figures where the bench reads them. It sets no timer, so it
// costs nothing while idle.
const probeDir = path.join(work, 'probe');
fs.mkdirSync(probeDir);
const probe = path.join(work, 'probe.mjs');
fs.writeFileSync(
  probe,
  `import { renameSync, writeFileSync } from 'node:fs';
process.on('SIGUSR2', () => {
  const m = process.memoryUsage();
  const file = ${JSON.stringify(probeDir)} + '/' + process.pid + '.json';
  writeFileSync(file + '.tmp', JSON.stringify({ heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external }));
  renameSync(file + '.tmp', file);
});
`,
);

/** The app as the image lays it out: bin/, dist/ (compiled here), node_modules. */
function prepareApp(): string {
  if (values.source) return path.join(root, 'bin', 'hotstandby.js');
  const app = path.join(work, 'app');
  fs.mkdirSync(path.join(app, 'bin'), { recursive: true });
  fs.copyFileSync(path.join(root, 'bin', 'hotstandby.js'), path.join(app, 'bin', 'hotstandby.js'));
  fs.copyFileSync(path.join(root, 'package.json'), path.join(app, 'package.json'));
  fs.symlinkSync(path.join(root, 'node_modules'), path.join(app, 'node_modules'));
  progress(`compiling ${root}/src into ${app}/dist`);
  execFileSync(process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', path.join(root, 'tsconfig.build.json'), '--outDir', path.join(app, 'dist'), '--sourceMap', 'false'], {
    stdio: 'inherit',
  });
  return path.join(app, 'bin', 'hotstandby.js');
}

interface Sample {
  rssMb: number;
  /** Anonymous (private) resident memory: RSS less the pages of files such as the node binary, which every Node container on a host shares. */
  anonMb: number;
  heapUsedMb?: number;
  heapTotalMb?: number;
  cpuTicks: number;
}

function procTicks(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]); // utime + stime
}

function procStatusMb(pid: number, field: 'VmRSS' | 'RssAnon'): number {
  const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

async function sample(pid: number): Promise<Sample> {
  const file = path.join(probeDir, `${pid}.json`);
  fs.rmSync(file, { force: true });
  process.kill(pid, 'SIGUSR2');
  let heap: { heapUsed: number; heapTotal: number } | undefined;
  for (let i = 0; i < 100 && !heap; i++) {
    await sleep(10);
    if (fs.existsSync(file)) heap = JSON.parse(fs.readFileSync(file, 'utf8')) as typeof heap;
  }
  return { rssMb: procStatusMb(pid, 'VmRSS'), anonMb: procStatusMb(pid, 'RssAnon'), cpuTicks: procTicks(pid), ...(heap ? { heapUsedMb: heap.heapUsed / 2 ** 20, heapTotalMb: heap.heapTotal / 2 ** 20 } : {}) };
}

interface Row {
  process: string;
  phase: string;
  rssMb: number;
  anonMb: number;
  heapUsedMb?: number;
  heapTotalMb?: number;
  cpuPct: number;
  aim: string;
  met?: boolean;
  /** What the RSS is made of at the end of the window (idle only). */
  mappings?: RssByMapping;
}

/** How often RSS is read during a window: a limit has to hold the peak, not a lucky moment between garbage collections. */
const RSS_SAMPLE_MS = 2000;

/**
 * Samples every process over `seconds`: CPU is the share of one core used in that window, RSS and private memory
 * the highest read every RSS_SAMPLE_MS (the last read at its end), the V8 heap is read at its end.
 */
async function measure(procs: Array<{ label: string; pid: number; aimRssMb?: number }>, phase: string, seconds: number, idle: boolean): Promise<Row[]> {
  const before = new Map(procs.map((p) => [p.pid, procTicks(p.pid)]));
  const peak = new Map(procs.map((p) => [p.pid, { rssMb: 0, anonMb: 0 }]));
  const readPeaks = (): void => {
    for (const p of procs) {
      const seen = peak.get(p.pid)!;
      seen.rssMb = Math.max(seen.rssMb, procStatusMb(p.pid, 'VmRSS'));
      seen.anonMb = Math.max(seen.anonMb, procStatusMb(p.pid, 'RssAnon'));
    }
  };
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  for (let now = t0; now < end; now = performance.now()) {
    readPeaks();
    await sleep(Math.min(RSS_SAMPLE_MS, end - now));
  }
  readPeaks();
  const elapsed = (performance.now() - t0) / 1000;
  const rows: Row[] = [];
  for (const p of procs) {
    const s = { ...(await sample(p.pid)), ...peak.get(p.pid)! };
    const cpuPct = ((s.cpuTicks - before.get(p.pid)!) / CLK_TCK / elapsed) * 100;
    const aims: string[] = [];
    let met: boolean | undefined;
    if (p.aimRssMb !== undefined) {
      aims.push(`RSS <= ${p.aimRssMb} MB`);
      met = s.rssMb <= p.aimRssMb;
      if (idle) {
        aims.push(`CPU < ${AIMS.idleCpuPct}%`);
        met = met && cpuPct < AIMS.idleCpuPct;
      }
    }
    if (!idle) {
      aims.length = 0;
      met = undefined;
    }
    const mappings = idle ? readRssByMapping(p.pid) : undefined;
    rows.push({ process: p.label, phase, rssMb: s.rssMb, anonMb: s.anonMb, heapUsedMb: s.heapUsedMb, heapTotalMb: s.heapTotalMb, cpuPct, aim: aims.join(', ') || (p.label === 'bare node' ? 'the floor' : ''), met, ...(mappings ? { mappings } : {}) });
  }
  return rows;
}

let etcd: LocalEtcd | undefined;
let redis: LocalStreamServer | undefined;
let etcdClient: Etcd3 | undefined;
let stopDevCluster: (() => Promise<void>) | undefined;
const cluster = { namespace: 'bench', name: 'footprint' };

async function main(): Promise<void> {
  const bin = prepareApp();
  const image = imageRuntime(root);
  const nodeFlags = values['node-flags'] !== undefined ? values['node-flags'].split(/\s+/).filter(Boolean) : image.nodeFlags;
  const nodeArgs = [...nodeFlags, '--import', probe];
  progress(`node flags: ${nodeFlags.join(' ') || '(none)'}; environment from the Dockerfile: ${JSON.stringify(image.env)}`);
  // Images up to 3da9f9d primed Node's compile cache at build, with the ENTRYPOINT's flags (Node keeps one cache per
  // set of V8 flags); for such a checkout (--root) the bench primes it too, with the flags it runs.
  const prime = path.join(path.dirname(path.dirname(bin)), 'dist', 'lib', 'prime-compile-cache.js');
  if (!values.source && fs.existsSync(prime)) {
    fs.mkdirSync(path.join(path.dirname(path.dirname(bin)), '.compile-cache'));
    execFileSync(process.execPath, [...nodeFlags, prime], { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, NODE_OPTIONS: '' } });
  }
  const env: NodeJS.ProcessEnv = { ...process.env, HOTSTANDBY_LOG_LEVEL: 'warn', NODE_ENV: 'production', ...image.env };
  delete env.NODE_OPTIONS;
  const logDir = path.join(work, 'logs');
  fs.mkdirSync(logDir);
  const start = (name: string, args: string[], extraEnv: NodeJS.ProcessEnv = {}): ManagedProcess =>
    new ManagedProcess({ name, command: process.execPath, args: [...nodeArgs, ...args], logFile: path.join(logDir, `${name}.log`), env: { ...env, ...extraEnv } });

  // Bare Node: the floor, and its start-to-first-output time.
  const bareStarts: number[] = [];
  for (let i = 0; i < starts; i++) {
    const t0 = performance.now();
    await new Promise<void>((resolve, reject) => {
      const child = spawn(process.execPath, [...nodeFlags, '-e', 'process.stdout.write("up\\n")'], { stdio: ['ignore', 'pipe', 'inherit'], env });
      child.stdout.once('data', () => bareStarts.push(performance.now() - t0));
      child.once('exit', () => resolve());
      child.once('error', reject);
    });
  }
  const bare = start('bare-node', ['-e', 'setInterval(() => {}, 2 ** 30)']);

  progress('starting etcd and redis-server');
  [etcd, redis] = await Promise.all([startEtcd({ workDir: path.join(work, 'etcd') }), startStreamServer({ kind: 'redis', workDir: path.join(work, 'redis') })]);
  etcdClient = new Etcd3({ hosts: etcd.endpoint });
  const keys = etcdKeys(cluster);

  const memberProcs = async (name: string): Promise<{ agent: ManagedProcess; master: ManagedProcess; readyMs: number; kv: string; api: string }> => {
    const kvPort = await freePort();
    const apiPort = await freePort();
    const kv = `127.0.0.1:${kvPort}`;
    const api = `127.0.0.1:${apiPort}`;
    const t0 = performance.now();
    const agent = start(`${name}-agent`, [bin, 'agent', '--cluster', `${cluster.namespace}/${cluster.name}`, '--member', name, '--address', kv, '--etcd', etcd!.endpoint, '--redis', redis!.url, '--api-listen', api, '--log-level', 'warn']);
    // Ready: the local API listens and the member is registered in etcd.
    await waitFor(async () => (await isPortOpen(apiPort, '127.0.0.1', 200)) && (await etcdClient!.get(keys.member(name)).exists()), {
      timeoutMs: 30_000,
      intervalMs: 5,
      what: `${name}'s agent to listen and register`,
    });
    const readyMs = performance.now() - t0;
    const master = start(`${name}-kvmaster`, [bin, 'kvmaster', '--listen', kv, '--agent-api', api, '--log-level', 'warn']);
    await waitFor(() => isPortOpen(kvPort, '127.0.0.1', 200), { timeoutMs: 30_000, what: `${name}'s master to listen` });
    return { agent, master, readyMs, kv, api };
  };

  // Start-to-ready of an agent, several times (the first member becomes leader; the rest restart a standby).
  progress('starting two members');
  const m0 = await memberProcs('m-0');
  await waitFor(async () => (await masterStatus(m0.kv))?.writable === true, { timeoutMs: 30_000, what: 'm-0 to lead' });
  const m1 = await memberProcs('m-1');
  const readyTimes = [m0.readyMs, m1.readyMs];
  for (let i = 2; i < starts; i++) {
    const extra = await memberProcs(`m-x${i}`);
    readyTimes.push(extra.readyMs);
    await Promise.all([extra.master.stop(5000), extra.agent.stop(5000)]);
  }

  // The operator, on the test control plane when it is built.
  let operator: ManagedProcess | undefined;
  let operatorSkipped: string | undefined;
  try {
    const { requireBinaries } = await import('../src/devcluster/binaries.ts');
    requireBinaries();
    const { startDevCluster } = await import('../src/devcluster/cluster.ts');
    progress('starting the test control plane for the operator');
    const dev = await startDevCluster({ workDir: path.join(work, 'kube'), progress: (l) => progress(`  control plane: ${l}`) });
    stopDevCluster = () => dev.stop();
    await dev.kubectl(['apply', '-f', path.join(root, 'crds')]);
    operator = start('operator', [bin, 'operator', '--leader-elect=true', '--metrics-port', '0', '--agent-image', 'hotstandby-operator:bench', '--log-level', 'warn'], { KUBECONFIG: dev.kubeconfig, POD_NAMESPACE: 'default' });
    await sleep(3000);
    if (!operator.running) throw new Error(`the operator exited: ${operator.tail(10)}`);
  } catch (err) {
    operatorSkipped = (err as Error).message.split('\n')[0];
    operator = undefined;
  }

  const measured = [
    { label: 'bare node', pid: bare.pid! },
    { label: 'agent (leader)', pid: m0.agent.pid!, aimRssMb: AIMS.agentRssMb },
    { label: 'agent (standby)', pid: m1.agent.pid!, aimRssMb: AIMS.agentRssMb },
    { label: 'kvmaster (leader)', pid: m0.master.pid!, aimRssMb: AIMS.masterRssMb },
    { label: 'kvmaster (standby)', pid: m1.master.pid!, aimRssMb: AIMS.masterRssMb },
    ...(operator ? [{ label: 'operator', pid: operator.pid! }] : []),
  ];

  progress(`settling ${settleSeconds} s (until V8 has compiled the periodic work), then idle for ${idleSeconds} s`);
  await sleep(settleSeconds * 1000);
  const idle = await measure(measured, 'idle', idleSeconds, true);

  progress(`writing ${rate} entries/s ${loadVia === 'agent' ? "to the leader agent's local API" : "through the leader's master"} for ${loadSeconds} s`);
  const load = loadVia === 'agent' ? new AppendLoad(m0.api, rate) : new PutLoad(m0.kv, rate);
  const headBefore = await logHead();
  const loadRun = load.run(loadSeconds * 1000 + 3000);
  await sleep(3000); // ramp up
  const loadT0 = performance.now();
  const headT0 = await logHead();
  const underLoad = await measure(measured, 'load', loadSeconds, false);
  const achieved = ((await logHead()) - headT0) / ((performance.now() - loadT0) / 1000);
  await loadRun;
  const appended = (await logHead()) - headBefore;

  const result = {
    machine: `${os.cpus().length} cores, ${Math.round(os.totalmem() / 2 ** 30)} GB, Node ${process.version}`,
    measured: values.source ? `${root} (TypeScript sources)` : `${root} (compiled dist/, as in the image)`,
    nodeFlags,
    env: image.env,
    rows: [...idle, ...underLoad],
    loadVia,
    loadEntriesPerSecond: Math.round(achieved),
    loadFailedWrites: load.failed,
    appended,
    agentReadyMs: { p50: percentile(readyTimes, 50), max: Math.max(...readyTimes), runs: readyTimes.length },
    bareNodeFirstOutputMs: { p50: percentile(bareStarts, 50), max: Math.max(...bareStarts) },
    operatorSkipped,
  };
  if (values.json) {
    process.stdout.write(`${JSON.stringify(result)}\n`);
    return;
  }
  const out = (l = ''): boolean => process.stdout.write(`${l}\n`);
  const f1 = (x: number | undefined): string => (x === undefined ? '-' : x.toFixed(1));
  out(`machine: ${result.machine}; measured: ${result.measured}; node flags: ${nodeFlags.join(' ') || '(none)'}; env: ${JSON.stringify(image.env)}`);
  out();
  out(`  ${'process'.padEnd(19)} ${'phase'.padEnd(6)} ${'RSS MB'.padStart(7)} ${'private'.padStart(7)} ${'heap used/total MB'.padStart(19)} ${'CPU % core'.padStart(10)}   aim`);
  for (const r of result.rows) {
    out(
      `  ${r.process.padEnd(19)} ${r.phase.padEnd(6)} ${f1(r.rssMb).padStart(7)} ${f1(r.anonMb).padStart(7)} ${`${f1(r.heapUsedMb)}/${f1(r.heapTotalMb)}`.padStart(19)} ${r.cpuPct.toFixed(2).padStart(10)}   ${r.aim}${r.met === undefined ? '' : r.met ? '  met' : '  NOT met'}`,
    );
  }
  out(`  load: ${result.loadEntriesPerSecond} entries/s reached (asked ${rate}, ${loadVia === 'agent' ? "batches of 100 to the leader agent's local API" : "PUTs through the leader's master"}), ${appended} appended, ${load.failed} failed`);
  if (operatorSkipped) out(`  operator row skipped: ${operatorSkipped}`);
  out(`  RSS and private are the highest read every ${RSS_SAMPLE_MS / 1000} s in each window, the idle one after ${settleSeconds} s of settling.`);
  out('  RSS includes pages of the node binary and libraries, shared by every Node container on a host; private is RssAnon, what this process alone adds.');
  out();
  printRssByMapping(result.rows, out);
  const ready = result.agentReadyMs;
  out(`  agent start to ready (API listening, registered): p50 ${Math.round(ready.p50)} ms, max ${Math.round(ready.max)} ms over ${ready.runs} starts; aim < ${AIMS.agentReadyMs} ms ${ready.max < AIMS.agentReadyMs ? 'met' : 'NOT met'}`);
  out(`  baseline: bare node start to first output p50 ${Math.round(result.bareNodeFirstOutputMs.p50)} ms, max ${Math.round(result.bareNodeFirstOutputMs.max)} ms`);
}

/** The idle rows' RSS split by mapping, beside bare Node's, so the gap to the floor shows where it is. */
function printRssByMapping(rows: Row[], out: (line?: string) => boolean): void {
  const idleRows = rows.filter((r) => r.phase === 'idle' && r.mappings);
  if (idleRows.length === 0) return;
  const floor = idleRows.find((r) => r.process === 'bare node')?.mappings;
  const cols: Array<[string, keyof RssByMapping]> = [
    ['node code', 'nodeCodeMb'],
    ['node read-only', 'nodeReadOnlyMb'],
    ['node writable', 'nodeWritableMb'],
    ['other files', 'otherFilesMb'],
    ['anonymous', 'anonymousMb'],
  ];
  out('  idle RSS by mapping at the end of the window, MB (in brackets: more than bare node)');
  out(`  ${'process'.padEnd(19)} ${cols.map(([name]) => name.padStart(16)).join('')}`);
  for (const r of idleRows) {
    const cell = (key: keyof RssByMapping): string => {
      const mb = r.mappings![key];
      const more = floor && r.process !== 'bare node' ? ` (${mb - floor[key] >= 0 ? '+' : ''}${(mb - floor[key]).toFixed(1)})` : '';
      return `${mb.toFixed(1)}${more}`.padStart(16);
    };
    out(`  ${r.process.padEnd(19)} ${cols.map(([, key]) => cell(key)).join('')}`);
  }
  out("  node code and read-only are the node binary's clean pages (V8's compilers, the built-in modules' source and code cache):");
  out('  one copy in the page cache for every Node process on a host, and the kernel can drop them under memory pressure.');
  out();
}

async function masterStatus(kv: string): Promise<{ writable: boolean } | undefined> {
  try {
    const res = await fetch(`http://${kv}/status`, { signal: AbortSignal.timeout(1000) });
    return res.ok ? ((await res.json()) as { writable: boolean }) : undefined;
  } catch {
    return undefined;
  }
}

async function logHead(): Promise<number> {
  const { Redis } = await import('ioredis');
  const { streamKeys } = await import('../src/lib/keys.ts');
  const r = new Redis(redis!.url, { lazyConnect: true });
  try {
    await r.connect();
    return Number((await r.get(streamKeys(cluster).head)) ?? 0);
  } finally {
    r.disconnect();
  }
}

/**
 * Appends at a fixed rate straight to the leader agent's local API, in batches
 * of 100 as a busy master sends them, so the log grows at exactly the asked
 * rate whatever the reference master's own pipeline manages. The standbys
 * tail and apply it as usual.
 */
class AppendLoad {
  failed = 0;
  private readonly agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
  private readonly host: string;
  private readonly port: number;
  private readonly rate: number;
  constructor(api: string, rate: number) {
    [this.host, this.port] = [api.slice(0, api.lastIndexOf(':')), Number(api.slice(api.lastIndexOf(':') + 1))];
    this.rate = rate;
  }
  async run(ms: number): Promise<void> {
    const batch = 100;
    const t0 = performance.now();
    let sent = 0;
    let inflight = 0;
    while (performance.now() - t0 < ms) {
      const due = Math.floor((((performance.now() - t0) / 1000) * this.rate) / batch);
      while (sent < due && inflight < 8) {
        sent++;
        inflight++;
        const entries = Array.from({ length: batch }, (_, i) => ({ op: 'put', key: `k${(sent * batch + i) % 10_000}`, payload: `v${sent * batch + i}` }));
        void this.post(JSON.stringify({ entries })).finally(() => inflight--);
      }
      await sleep(5);
    }
    await waitFor(() => inflight === 0, { timeoutMs: 30_000, what: 'the last appends to finish' }).catch(() => undefined);
    this.agent.destroy();
  }
  private post(body: string): Promise<void> {
    return new Promise((resolve) => {
      const req = http.request(
        { host: this.host, port: this.port, method: 'POST', path: '/v1/log/append', agent: this.agent, timeout: 10_000, headers: { 'content-type': 'application/json' } },
        (res) => {
          if (res.statusCode !== 200) this.failed++;
          res.resume();
          res.once('end', resolve);
        },
      );
      req.once('error', () => {
        this.failed++;
        resolve();
      });
      req.end(body);
    });
  }
}

/** Open-loop PUTs at a fixed rate over keep-alive connections; the master batches them into appends. */
class PutLoad {
  failed = 0;
  private readonly agent = new http.Agent({ keepAlive: true, maxSockets: 128 });
  private readonly host: string;
  private readonly port: number;
  private readonly rate: number;
  constructor(kv: string, rate: number) {
    [this.host, this.port] = [kv.slice(0, kv.lastIndexOf(':')), Number(kv.slice(kv.lastIndexOf(':') + 1))];
    this.rate = rate;
  }
  async run(ms: number): Promise<void> {
    const t0 = performance.now();
    let sent = 0;
    let inflight = 0;
    const maxInflight = 512;
    while (performance.now() - t0 < ms) {
      const due = Math.floor(((performance.now() - t0) / 1000) * this.rate);
      while (sent < due && inflight < maxInflight) {
        sent++;
        inflight++;
        void this.put(`k${sent % 10_000}`, `v${sent}`).finally(() => inflight--);
      }
      await sleep(5);
    }
    await waitFor(() => inflight === 0, { timeoutMs: 30_000, what: 'the last writes to finish' }).catch(() => undefined);
    this.agent.destroy();
  }
  private put(key: string, value: string): Promise<void> {
    return new Promise((resolve) => {
      const req = http.request({ host: this.host, port: this.port, method: 'PUT', path: `/kv/${key}`, agent: this.agent, timeout: 10_000 }, (res) => {
        if (res.statusCode !== 200) this.failed++;
        res.resume();
        res.once('end', resolve);
      });
      req.once('error', () => {
        this.failed++;
        resolve();
      });
      req.end(value);
    });
  }
}

try {
  await main();
} finally {
  etcdClient?.close();
  await stopAllChildren(5000);
  await stopDevCluster?.().catch(() => undefined);
  await Promise.all([etcd?.stop(), redis?.stop()]);
  if (etcd) removeWorkDir(etcd);
  if (redis) removeWorkDir(redis);
  if (!process.env.HOTSTANDBY_KEEP_TEST_DIRS) fs.rmSync(work, { recursive: true, force: true });
}

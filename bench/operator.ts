// Benchmark: the operator with many clusters. N HotStandbyClusters with
// external stores (one local etcd and redis-server for all) on the test
// control plane (kwok nodes): how long until every cluster is reconciled and
// reports its leader, the operator's requests to the API per cluster (while
// creating, then in steady state), its RSS and the watch events it receives.
// The agents are stood in for by a publisher that keeps each cluster's leader
// and member keys in etcd alive, as agents would: the operator reads only
// those. Baseline: the same operator process idle with no cluster. The
// operator runs with the node flags and environment of the project image
// (Dockerfile), as it does in its pod.
// Usage: node bench/operator.ts [--clusters 100] [--steady-seconds 30] [--json]
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';
import { CoreV1Api, KubeConfig, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { Etcd3, type Lease } from 'etcd3';
import { startDevCluster } from '../src/devcluster/cluster.ts';
import { ManagedProcess } from '../src/lib/childproc.ts';
import { etcdKeys } from '../src/lib/keys.ts';
import { startEtcd, startStreamServer } from '../src/lib/localstores.ts';
import { freePort } from '../src/lib/ports.ts';
import { sleep } from '../src/lib/time.ts';
import { imageRuntime } from './lib/image-runtime.ts';

const { values } = parseArgs({
  options: {
    clusters: { type: 'string', default: '100' },
    'steady-seconds': { type: 'string', default: '30' },
    json: { type: 'boolean', default: false },
  },
});
const N = Number(values.clusters);
const STEADY_S = Number(values['steady-seconds']);
const ROOT = path.resolve(import.meta.dirname, '..');
const BIN = path.join(ROOT, 'bin/hotstandby.js');
const NS = 'bench';
const err = (line: string): boolean => process.stderr.write(`${line}\n`);

type Metrics = Map<string, number>;
async function scrape(port: number): Promise<Metrics> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const out: Metrics = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}
const sum = (m: Metrics, prefix: string, filter: (k: string) => boolean = () => true): number =>
  [...m].filter(([k]) => k.startsWith(prefix) && filter(k)).reduce((a, [, v]) => a + v, 0);
const writes = (m: Metrics): number => sum(m, 'hotstandby_kube_requests_total', (k) => /verb="(POST|PATCH|PUT|DELETE)"/.test(k));
const requests = (m: Metrics): number => sum(m, 'hotstandby_kube_requests_total');

err(`starting the test control plane, etcd and redis-server for ${N} clusters`);
const kube = await startDevCluster({ nodes: Math.ceil((N * 3) / 100) + 1 });
const [etcd, redis] = await Promise.all([startEtcd(), startStreamServer()]);
const publisher = new Etcd3({ hosts: etcd.endpoint });
let operator: ManagedProcess | undefined;
let heartbeat: NodeJS.Timeout | undefined;
try {
  await kube.kubectl(['apply', '--server-side', '-f', path.join(ROOT, 'crds')]);
  await kube.kubectl(['wait', '--for=condition=Established', 'crd/hotstandbyclusters.hotstandby.dev', '--timeout=60s']);
  await kube.kubectl(['create', 'namespace', NS]);
  const port = await freePort();
  const image = imageRuntime(ROOT);
  err(`the operator runs as in its image: node ${image.nodeFlags.join(' ')}, ${Object.entries(image.env).map(([k, v]) => `${k}=${v}`).join(' ')}`);
  operator = new ManagedProcess({
    name: 'operator',
    command: process.execPath,
    args: [...image.nodeFlags, BIN, 'operator', '--leader-elect=false', `--metrics-port=${port}`, '--agent-image=hotstandby/operator:bench', '--resync-seconds=60'],
    logFile: path.join(kube.workDir, 'operator.log'),
    env: { ...process.env, ...image.env, KUBECONFIG: kube.kubeconfig, HOTSTANDBY_LOG_LEVEL: process.env.BENCH_OPERATOR_LOG_LEVEL ?? 'warn' },
  });
  for (let i = 0; i < 300; i++) {
    if ((await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined))?.status === 200) break;
    await sleep(100);
  }
  await sleep(5000);
  const idle = await scrape(port);
  const idleRss = idle.get('process_resident_memory_bytes') ?? 0;
  const idleHeap = idle.get('nodejs_heap_size_used_bytes') ?? 0;

  // What the agents would publish: a leader and three members per cluster, kept alive.
  const leases: Lease[] = [];
  const names = Array.from({ length: N }, (_, i) => `c${String(i).padStart(3, '0')}`);
  const memberRecord = (c: string, i: number) =>
    JSON.stringify({ member: `${c}-${i}`, role: i === 0 ? 'leader' : 'standby', address: `127.0.0.1:${8000 + i}`, receivedSeq: 0, appliedSeq: 0, state: 'ok', lastHeartbeat: new Date().toISOString(), version: 'bench' });
  for (const c of names) {
    const lease = publisher.lease(30, { autoKeepAlive: true });
    leases.push(lease);
    const keys = etcdKeys({ namespace: NS, name: c });
    await lease.put(keys.leader).value(JSON.stringify({ member: `${c}-0`, epoch: 0, address: '127.0.0.1:8000', since: new Date().toISOString() }));
    for (let i = 0; i < 3; i++) await lease.put(keys.member(`${c}-${i}`)).value(memberRecord(c, i));
  }
  // Agents also label their own pods (leader, standby); do the same as pods appear.
  const kc = new KubeConfig();
  kc.loadFromFile(kube.kubeconfig);
  const core = kc.makeApiClient(CoreV1Api);
  const labelled = new Set<string>();
  const labelPods = async (): Promise<void> => {
    const pods = await core.listNamespacedPod({ namespace: NS, labelSelector: 'hotstandby.dev/cluster' });
    for (const pod of pods.items) {
      const name = pod.metadata!.name!;
      if (labelled.has(name) || pod.status?.phase !== 'Running') continue;
      const role = name.endsWith('-0') ? 'leader' : 'standby';
      await core.patchNamespacedPod({ name, namespace: NS, body: { metadata: { labels: { 'hotstandby.dev/role': role } } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch));
      labelled.add(name);
    }
  };
  heartbeat = setInterval(() => {
    void labelPods().catch(() => undefined);
    for (const [n, c] of names.entries()) {
      const keys = etcdKeys({ namespace: NS, name: c });
      for (let i = 0; i < 3; i++) void leases[n]!.put(keys.member(`${c}-${i}`)).value(memberRecord(c, i)).catch(() => undefined);
    }
  }, 1000);

  err(`creating ${N} HotStandbyClusters`);
  const before = await scrape(port);
  const created = Date.now();
  const docs = names.map((c) =>
    stringify({
      apiVersion: 'hotstandby.dev/v1alpha1',
      kind: 'HotStandbyCluster',
      metadata: { name: c, namespace: NS },
      spec: { replicas: 3, master: { image: 'hotstandby/kvmaster:1' }, etcd: { external: { endpoints: [etcd.endpoint] } }, dragonfly: { external: { url: redis.url } } },
    }),
  );
  await kube.kubectl(['apply', '-f', '-'], { input: docs.join('---\n'), timeoutMs: 120_000 });
  let convergedMs = -1;
  for (let tick = 0; tick < 600; tick++) {
    const list = JSON.parse(await kube.kubectl(['get', 'hsc', '-n', NS, '-o', 'json'], { timeoutMs: 60_000 })) as {
      items: Array<{ status?: { leader?: { pod?: string }; conditions?: Array<{ type: string; status: string }> } }>;
    };
    // Settled: a leader, children reconciled, every pod running the current template and labelled (as its agent would).
    const done = list.items.filter(
      (h) => h.status?.leader?.pod && ['Reconciled', 'Updated'].every((t) => h.status!.conditions?.some((c) => c.type === t && c.status === 'True')),
    ).length;
    if (tick % 5 === 0) err(`  ${((Date.now() - created) / 1000).toFixed(0)} s: ${done}/${N} reconciled with a leader`);
    if (done === N && labelled.size >= 3 * N) {
      convergedMs = Date.now() - created;
      await sleep(5000); // let the last status writes of the settling land before steady state is measured
      break;
    }
    await sleep(1000);
  }
  const converged = await scrape(port);
  err(`steady state for ${STEADY_S} s`);
  await sleep(STEADY_S * 1000);
  const steady = await scrape(port);
  const rss = steady.get('process_resident_memory_bytes') ?? 0;
  const result = {
    clusters: N,
    convergeSeconds: convergedMs < 0 ? null : convergedMs / 1000,
    requestsPerClusterCreate: (requests(converged) - requests(before)) / N,
    writesPerClusterCreate: (writes(converged) - writes(before)) / N,
    steadyWrites: writes(steady) - writes(converged),
    steadyRequestsPerClusterPerMinute: ((requests(steady) - requests(converged)) / N) * (60 / STEADY_S),
    watchEventsPerSecondCreate: convergedMs > 0 ? (sum(converged, 'hotstandby_watch_events_total') - sum(before, 'hotstandby_watch_events_total')) / (convergedMs / 1000) : null,
    watchEventsPerSecondSteady: (sum(steady, 'hotstandby_watch_events_total') - sum(converged, 'hotstandby_watch_events_total')) / STEADY_S,
    rssMB: rss / 2 ** 20,
    idleRssMB: idleRss / 2 ** 20,
    heapUsedMB: (steady.get('nodejs_heap_size_used_bytes') ?? 0) / 2 ** 20,
    idleHeapUsedMB: idleHeap / 2 ** 20,
    reconcileErrors: sum(steady, 'hotstandby_reconcile_errors_total'),
  };
  const byVerb = (m: Metrics): Record<string, number> =>
    Object.fromEntries([...m].filter(([k]) => k.startsWith('hotstandby_kube_requests_total')).map(([k, v]) => [/verb="([^"]+)"/.exec(k)?.[1] ?? k, v]));
  const steadyByVerb = Object.fromEntries(Object.entries(byVerb(steady)).map(([verb, n]) => [verb, n - (byVerb(converged)[verb] ?? 0)]));
  err(`steady-state requests by verb: ${JSON.stringify(steadyByVerb)}; applies that wrote: ${sum(steady, 'hotstandby_apply_writes_total') - sum(converged, 'hotstandby_apply_writes_total')}`);
  if (values.json) process.stdout.write(`${JSON.stringify(result)}\n`);
  else {
    const rows: Array<[string, string, string, string]> = [
      ['converge: all reconciled with a leader', result.convergeSeconds === null ? 'did not converge' : `${result.convergeSeconds.toFixed(1)} s`, '< 30 s', result.convergeSeconds !== null && result.convergeSeconds < 30 ? 'met' : 'MISSED'],
      ['API requests per cluster while creating', result.requestsPerClusterCreate.toFixed(1), '', ''],
      ['  of which writes', result.writesPerClusterCreate.toFixed(1), '', ''],
      [`writes in ${STEADY_S} s of steady state`, String(result.steadyWrites), '0', result.steadyWrites === 0 ? 'met' : 'MISSED'],
      ['requests per cluster per minute, steady', result.steadyRequestsPerClusterPerMinute.toFixed(2), '', ''],
      ['watch events/s while creating / steady', `${result.watchEventsPerSecondCreate?.toFixed(1) ?? '?'} / ${result.watchEventsPerSecondSteady.toFixed(2)}`, '', ''],
      [`operator RSS with ${N} clusters (idle, no cluster: baseline)`, `${result.rssMB.toFixed(0)} MB (${result.idleRssMB.toFixed(0)} MB)`, '< 150 MB', result.rssMB < 150 ? 'met' : 'MISSED'],
      ['  V8 heap in use (idle, no cluster)', `${result.heapUsedMB.toFixed(0)} MB (${result.idleHeapUsedMB.toFixed(0)} MB)`, '', ''],
      ['reconcile errors', String(result.reconcileErrors), '0', result.reconcileErrors === 0 ? 'met' : 'MISSED'],
    ];
    const w = [0, 1, 2].map((i) => Math.max(...rows.map((r) => r[i]!.length)));
    for (const r of rows) process.stdout.write(`${r[0].padEnd(w[0]!)}  ${r[1].padStart(w[1]!)}  ${r[2].padEnd(w[2]!)}  ${r[3]}\n`);
  }
} finally {
  if (heartbeat) clearInterval(heartbeat);
  if (process.env.BENCH_KEEP_OPERATOR_LOG && operator) fs.copyFileSync(operator.logFile, process.env.BENCH_KEEP_OPERATOR_LOG);
  await operator?.stop(5000);
  publisher.close();
  await Promise.allSettled([etcd.stop(), redis.stop()]);
  await kube.stop();
}

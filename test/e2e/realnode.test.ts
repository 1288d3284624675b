// The dev cluster with a real node: pods of the images built without Docker
// really run (containerd, runc), kubectl logs and exec reach the kubelet,
// ClusterIP Services route through kube-proxy from the host and from pods,
// CoreDNS resolves <svc>.<ns>.svc, and stopping leaves nothing behind.
// Needs root (it is skipped elsewhere, saying why) and one real node per machine.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { binaryPaths } from '../../src/devcluster/binaries.ts';
import { cgroupDirs, listChains, machineDirEntries, mountsUnder } from '../../src/devcluster/cleanup.ts';
import { startDevCluster, type DevCluster } from '../../src/devcluster/cluster.ts';
import { imageRefs, refString } from '../../src/devcluster/images.ts';
import { CGROUP_ROOT, LOCK_FILE, NODE_NAME, NODE_NETWORK } from '../../src/devcluster/realnode.ts';
import { isProcessAlive } from '../../src/lib/childproc.ts';
import { waitFor } from '../../src/lib/time.ts';
import { realNodeAvailability } from '../harness/realnode.ts';

const run = promisify(execFile);
const BIN = path.resolve(import.meta.dirname, '../../bin/hotstandby.js');

const { unavailable, skip } = realNodeAvailability('real-node e2e tests');

const NS = 'smoke';

describe.skipIf(skip)('dev cluster with a real node', () => {
  let cluster: DevCluster | undefined;
  let chainsBefore: Awaited<ReturnType<typeof listChains>> | undefined;
  let dirsBefore: ReturnType<typeof machineDirEntries> | undefined;
  const c = (): DevCluster => {
    if (!cluster) throw new Error('the dev cluster did not start');
    return cluster;
  };
  const refs = imageRefs();

  beforeAll(async () => {
    if (unavailable) throw new Error(`the real node cannot run here: ${unavailable}`);
    chainsBefore = await listChains('iptables');
    dirsBefore = machineDirEntries();
    const started = Date.now();
    cluster = await startDevCluster({ realNode: true, progress: (l) => process.stderr.write(`[real node +${Math.round((Date.now() - started) / 1000)}s] ${l}\n`) });
    await c().kubectl(['create', 'namespace', NS]);
  }, 40 * 60_000);

  afterAll(async () => {
    await cluster?.stop();
  }, 180_000);

  it('registers a Ready node that lists the imported images under the chart\'s and the CRD\'s default names', async () => {
    const images = await c().kubectl(['get', 'node', NODE_NAME, '-o', 'jsonpath={.status.images[*].names}']);
    for (const name of ['operator', 'etcd', 'dragonfly'] as const) expect(images).toContain(refString(refs[name]));
  });

  it('runs `hotstandby --help` from the project image; kubectl logs shows it', async () => {
    await c().kubectl(['-n', NS, 'run', 'help', `--image=${refString(refs.operator)}`, '--image-pull-policy=Never', '--restart=Never', '--', '--help']);
    await waitFor(async () => (await c().kubectl(['-n', NS, 'get', 'pod', 'help', '-o', 'jsonpath={.status.phase}'])) === 'Succeeded', {
      timeoutMs: 120_000,
      intervalMs: 1000,
      what: 'pod help Succeeded',
    });
    const logs = await c().kubectl(['-n', NS, 'logs', 'help']);
    expect(logs).toContain('Usage: hotstandby');
    expect(logs).toContain('agent');
  }, 180_000);

  it('runs a reference master behind a ClusterIP Service reachable from the host, and from a pod by its DNS name; kubectl exec works', async () => {
    const manifest = `apiVersion: v1
kind: Pod
metadata: {name: kvmaster, labels: {app: kvmaster}}
spec:
  containers:
  - name: kvmaster
    image: ${refString(refs.operator)}
    imagePullPolicy: Never
    args: [kvmaster, --listen, "0.0.0.0:8080", --agent-api, "127.0.0.1:7070", --log-level, error]
    ports: [{containerPort: 8080}]
    readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: kvmaster}
spec:
  selector: {app: kvmaster}
  ports: [{port: 80, targetPort: 8080}]
`;
    await c().kubectl(['-n', NS, 'apply', '-f', '-'], { input: manifest });
    await c().kubectl(['-n', NS, 'wait', '--for=condition=Ready', 'pod/kvmaster', '--timeout=120s'], { timeoutMs: 130_000 });
    const clusterIp = (await c().kubectl(['-n', NS, 'get', 'service', 'kvmaster', '-o', 'jsonpath={.spec.clusterIP}'])).trim();
    expect(clusterIp).toMatch(/^10\.96\./);
    // From the host, through kube-proxy's rules.
    const status = await waitFor(
      async () => {
        const res = await fetch(`http://${clusterIp}/status`, { signal: AbortSignal.timeout(2000) }).catch(() => undefined);
        return res?.ok ? ((await res.json()) as { role?: string }) : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 500, what: `http://${clusterIp}/status from the host` },
    );
    expect(status).toHaveProperty('role');
    // kubectl exec, and from inside a pod by the Service's DNS name (CoreDNS, kube-proxy).
    const fromPod = await c().kubectl([
      '-n', NS, 'exec', 'kvmaster', '--', 'node', '-e',
      `fetch('http://kvmaster.${NS}.svc/status').then((r) => r.json()).then((s) => console.log('role=' + s.role + ' node=' + process.versions.node))`,
    ]);
    expect(fromPod).toMatch(/^role=\S+ node=24\./m);
  }, 240_000);

  it("runs the etcd image and the Dragonfly stand-in (Debian's redis-server), which says what it is", async () => {
    const manifest = `apiVersion: v1
kind: Pod
metadata: {name: stores}
spec:
  containers:
  - name: etcd
    image: ${refString(refs.etcd)}
    imagePullPolicy: Never
    args: [--listen-client-urls=http://0.0.0.0:2379, --advertise-client-urls=http://127.0.0.1:2379]
  - name: dragonfly
    image: ${refString(refs.dragonfly)}
    imagePullPolicy: Never
    args: [--port=6379, --logtostderr, --proactor_threads=1]
`;
    await c().kubectl(['-n', NS, 'apply', '-f', '-'], { input: manifest });
    await c().kubectl(['-n', NS, 'wait', '--for=condition=Ready', 'pod/stores', '--timeout=120s'], { timeoutMs: 130_000 });
    const ping = await waitFor(
      async () => (await c().kubectl(['-n', NS, 'exec', 'stores', '-c', 'dragonfly', '--', 'redis-cli', '-p', '6379', 'ping']).catch(() => '')).trim() || undefined,
      { timeoutMs: 30_000, intervalMs: 500, what: 'redis-cli ping in the Dragonfly stand-in' },
    );
    expect(ping).toBe('PONG');
    const logs = await c().kubectl(['-n', NS, 'logs', 'stores', '-c', 'dragonfly']);
    expect(logs).toContain("redis-server is standing in for Dragonfly");
    const health = await waitFor(
      async () => (await c().kubectl(['-n', NS, 'exec', 'stores', '-c', 'etcd', '--', 'etcd', '--version']).catch(() => '')) || undefined,
      { timeoutMs: 30_000, intervalMs: 500, what: 'etcd --version in the etcd image' },
    );
    expect(health).toContain(`etcd Version: ${refs.etcd.tag.replace(/^v/, '')}`);
  }, 180_000);

  it('helm install of the chart, with no image override, runs the operator in real pods that reach the API server through its Service', async () => {
    const chart = path.resolve(import.meta.dirname, '../../charts/hotstandby-operator');
    await run(binaryPaths().helm, ['install', 'hs', chart, '--kubeconfig', c().kubeconfig, '--namespace', 'hs-system', '--create-namespace', '--wait', '--timeout', '150s'], { timeout: 170_000 });
    const pods = await c().kubectl(['-n', 'hs-system', 'get', 'pods', '-o', 'jsonpath={range .items[*]}{.spec.containers[0].image} {.status.phase} {.spec.nodeName}{"\\n"}{end}']);
    const lines = pods.trim().split('\n');
    expect(lines.length).toBeGreaterThan(0);
    for (const l of lines) expect(l).toBe(`${refString(refs.operator)} Running ${NODE_NAME}`);
    // The operators elect a leader through a Lease: they talk to the API server from inside their pods.
    const holder = await waitFor(
      async () => (await c().kubectl(['-n', 'hs-system', 'get', 'lease', 'hotstandby-operator', '-o', 'jsonpath={.spec.holderIdentity}']).catch(() => '')).trim() || undefined,
      { timeoutMs: 60_000, intervalMs: 1000, what: 'the operator Lease to have a holder' },
    );
    expect(holder).toMatch(/^hs-hotstandby-operator-/);
  }, 240_000);

  it('stop() removes every container, mount, network namespace, iptables chain, cgroup and the bridge it made', async () => {
    const workDir = c().workDir;
    const pids = c().processes.map((p) => p.pid!);
    await c().stop();
    cluster = undefined;
    expect(pids.filter((pid) => fs.existsSync(`/proc/${pid}`))).toEqual([]);
    expect(mountsUnder([workDir])).toEqual([]);
    expect(fs.existsSync(workDir)).toBe(false);
    expect(fs.existsSync(`/sys/class/net/${NODE_NETWORK.bridge}`)).toBe(false);
    expect(cgroupDirs(CGROUP_ROOT)).toEqual([]);
    expect(fs.existsSync(LOCK_FILE)).toBe(false);
    const netns = fs.existsSync('/run/netns') ? fs.readdirSync('/run/netns').filter((n) => n.startsWith('cni-')) : [];
    expect(netns).toEqual([]);
    const after = await listChains('iptables');
    for (const table of Object.keys(after)) expect(after[table]?.sort()).toEqual(chainsBefore?.[table]?.sort());
    // Nor files where the kubelet, containerd and the CNI plugins write regardless of their configuration.
    const dirsAfter = machineDirEntries();
    for (const [dir, entries] of Object.entries(dirsAfter)) expect(entries?.sort() ?? null, dir).toEqual(dirsBefore?.[dir]?.sort() ?? null);
  }, 180_000);
});

describe.skipIf(skip)('hotstandby dev-cluster up --real-node / status / down', () => {
  it('prints progress and the node; status shows the node and images; down after a killed supervisor removes everything', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hs-realnode-cli-'));
    const refs = imageRefs();
    const chainsBefore = await listChains('iptables');
    try {
      const up = await run(process.execPath, [BIN, 'dev-cluster', 'up', '--real-node', '--state-dir', dir], { timeout: 30 * 60_000 });
      expect(up.stderr).toContain(`waiting for node ${NODE_NAME} Ready`);
      expect(up.stdout).toMatch(new RegExp(`^node: ${NODE_NAME}$`, 'm'));
      const kubeconfig = /^kubeconfig: (.+)$/m.exec(up.stdout)?.[1];
      expect(kubeconfig).toBeDefined();
      const status = await run(process.execPath, [BIN, 'dev-cluster', 'status', '--state-dir', dir]);
      expect(status.stdout).toMatch(/^ready/);
      expect(status.stdout).toContain(`real node: ${NODE_NAME}`);
      for (const name of ['operator', 'etcd', 'dragonfly', 'pause'] as const) expect(status.stdout).toContain(refString(refs[name]));
      expect(status.stdout).toContain('standing in for Dragonfly');
      // A running pod, so there are containers, mounts and a network namespace to remove.
      const kubectl = (args: string[]): Promise<string> => run(binaryPaths().kubectl, ['--kubeconfig', kubeconfig!, ...args], { timeout: 150_000 }).then((r) => r.stdout);
      await kubectl(['run', 'sleeper', `--image=${refString(refs.operator)}`, '--image-pull-policy=Never', '--', 'kvmaster', '--listen', '0.0.0.0:8080', '--agent-api', '127.0.0.1:7070', '--log-level', 'error']);
      await kubectl(['wait', '--for=condition=Ready', 'pod/sleeper', '--timeout=120s']);
      const record = JSON.parse(fs.readFileSync(path.join(dir, 'cluster', 'realnode-made.json'), 'utf8')) as { processes: Record<string, { pid: number }> };
      const state = JSON.parse(fs.readFileSync(path.join(dir, 'state.json'), 'utf8')) as { pid: number };
      // The supervisor dies without cleaning up: down must do it from the record.
      process.kill(state.pid, 'SIGKILL');
      await waitFor(() => !isProcessAlive(state.pid), { timeoutMs: 10_000, what: 'the supervisor to die' });
      await run(process.execPath, [BIN, 'dev-cluster', 'down', '--state-dir', dir], { timeout: 180_000 });
      expect(Object.values(record.processes).map((p) => p.pid).filter(isProcessAlive)).toEqual([]);
      expect(fs.existsSync(dir)).toBe(false);
      expect(fs.existsSync(`/sys/class/net/${NODE_NETWORK.bridge}`)).toBe(false);
      expect(cgroupDirs(CGROUP_ROOT)).toEqual([]);
      expect(fs.existsSync(LOCK_FILE)).toBe(false);
      expect(mountsUnder([dir])).toEqual([]);
      const after = await listChains('iptables');
      for (const table of Object.keys(after)) expect(after[table]?.sort()).toEqual(chainsBefore[table]?.sort());
    } finally {
      await run(process.execPath, [BIN, 'dev-cluster', 'down', '--state-dir', dir], { timeout: 180_000 }).catch(() => undefined);
    }
  }, 40 * 60_000);
});

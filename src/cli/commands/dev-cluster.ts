// `hotstandby dev-cluster up|down|status`: a local Kubernetes control plane
// (src/devcluster) in the background, for trying the operator without Docker.
// `up` starts a detached supervisor process (`dev-cluster serve`) that owns the
// control plane's processes and records itself in a state file; `down` stops it.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from '../command.ts';
import { UsageError } from '../command.ts';
import { untilStopSignal } from '../signals.ts';
import { sleep } from '../../lib/time.ts';
import { hotstandbyCacheRoot } from '../../devcluster/binaries.ts';
import { isProcessAlive as alive } from '../../lib/childproc.ts';

const BIN = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bin', 'hotstandby.js');

const help = `Usage: hotstandby dev-cluster up|down|status [--real-node] [--state-dir DIR]

A real Kubernetes control plane on this machine without Docker: etcd,
kube-apiserver (RBAC, service-account tokens), kube-controller-manager,
kube-scheduler and kwok (two fake nodes; pods become Running without running
anything), all local processes on free loopback ports. Build the binaries first:
bash scripts/build-control-plane.sh

With --real-node (root; one per machine) pods really run: instead of kwok, a
kubelet with containerd and runc from Debian, pod networking on the bridge
hsdev0 (10.244.0.0/24, nothing forwarded off this machine), kube-proxy
(iptables) and CoreDNS (<svc>.<ns>.svc). The images are built without Docker
(mmdebstrap, umoci) and imported under the chart's and the CRD's default names:
the project's image, etcd, and Debian's redis-server STANDING IN for Dragonfly.
Install the Debian packages first: bash scripts/install-node-packages.sh

  up       start it in the background; prints the kubeconfig path
  down     stop it and remove its state (with --real-node: every container,
           mount, network namespace, iptables rule and cgroup it made)
  status   show whether it runs, its API server, kubeconfig, node and images

Options:
  --real-node       run a real node (see above)
  --state-dir DIR   where its state lives (default ~/.cache/hotstandby/dev-cluster)

Example:
  hotstandby dev-cluster up && export KUBECONFIG=~/.cache/hotstandby/dev-cluster/cluster/kubeconfig
  kubectl get nodes
  hotstandby dev-cluster down`;

interface State {
  pid: number;
  status: 'starting' | 'ready' | 'failed';
  kubeconfig?: string;
  server?: string;
  error?: string;
  startedAt: string;
  realNode?: boolean;
  node?: string;
  images?: string[];
}

function defaultStateDir(): string {
  return path.join(hotstandbyCacheRoot(), 'dev-cluster');
}

function readState(dir: string): State | undefined {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, 'state.json'), 'utf8')) as State;
  } catch {
    return undefined;
  }
}

function writeState(dir: string, state: State): void {
  const file = path.join(dir, 'state.json');
  fs.writeFileSync(`${file}.tmp`, JSON.stringify(state, null, 2));
  fs.renameSync(`${file}.tmp`, file);
}

async function up(dir: string, realNode: boolean): Promise<number> {
  const existing = readState(dir);
  if (existing && alive(existing.pid)) {
    process.stdout.write(`already running (pid ${existing.pid}): ${existing.server ?? '(starting)'}\nexport KUBECONFIG=${existing.kubeconfig ?? path.join(dir, 'cluster', 'kubeconfig')}\n`);
    return 0;
  }
  const { requireBinaries, ControlPlaneNotBuiltError } = await import('../../devcluster/binaries.ts');
  try {
    requireBinaries();
  } catch (err) {
    if (err instanceof ControlPlaneNotBuiltError) throw new UsageError(err.message);
    throw err;
  }
  if (realNode) {
    const { requireNodeBinaries } = await import('../../devcluster/binaries.ts');
    const { realNodeUnavailable } = await import('../../devcluster/realnode.ts');
    const why = realNodeUnavailable();
    if (why) throw new UsageError(`--real-node: ${why}`);
    try {
      requireNodeBinaries();
    } catch (err) {
      if (err instanceof ControlPlaneNotBuiltError) throw new UsageError(err.message);
      throw err;
    }
  }
  // What a failed or killed earlier run left behind goes first.
  await cleanupLeftovers(dir);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const log = fs.openSync(path.join(dir, 'supervisor.log'), 'a');
  const child = spawn(process.execPath, [BIN, 'dev-cluster', 'serve', '--state-dir', dir, ...(realNode ? ['--real-node'] : [])], { detached: true, stdio: ['ignore', log, log] });
  fs.closeSync(log);
  child.unref();
  process.stderr.write(`starting the dev cluster${realNode ? ' with a real node' : ''}\n`);
  // A real node may first build its images (minutes on a fresh machine).
  const limitMs = realNode ? 30 * 60_000 : 180_000;
  const deadline = Date.now() + limitMs;
  let shown = 0;
  // Progress: the supervisor's log lines, as they come.
  const showProgress = (): void => {
    const lines = fs.readFileSync(path.join(dir, 'supervisor.log'), 'utf8').split('\n');
    for (const l of lines.slice(shown, -1)) process.stderr.write(`  ${l}\n`);
    shown = Math.max(shown, lines.length - 1);
  };
  while (Date.now() < deadline) {
    showProgress();
    const state = readState(dir);
    if (state) showProgress(); // the lines written before this state
    if (state?.status === 'ready') {
      process.stdout.write(`API server: ${state.server}\nkubeconfig: ${state.kubeconfig}\n${state.node ? `node: ${state.node}\n` : ''}export KUBECONFIG=${state.kubeconfig}\n`);
      return 0;
    }
    if (state?.status === 'failed' || (child.pid !== undefined && !alive(child.pid))) {
      throw new UsageError(`the dev cluster did not start: ${state?.error ?? 'the supervisor exited'}. Log: ${path.join(dir, 'supervisor.log')}`);
    }
    await sleep(500);
  }
  throw new UsageError(`the dev cluster was not ready within ${limitMs / 1000} s. Log: ${path.join(dir, 'supervisor.log')}; stop it with: hotstandby dev-cluster down`);
}

async function down(dir: string): Promise<number> {
  const state = readState(dir);
  if (!state) {
    await cleanupLeftovers(dir);
    process.stdout.write('no dev cluster is running\n');
    fs.rmSync(dir, { recursive: true, force: true });
    return 0;
  }
  if (alive(state.pid)) {
    process.kill(state.pid, 'SIGTERM');
    const deadline = Date.now() + 60_000;
    while (alive(state.pid) && Date.now() < deadline) await sleep(200);
    if (alive(state.pid)) process.kill(state.pid, 'SIGKILL');
  }
  // The supervisor undoes the real node on SIGTERM; after a crash or SIGKILL its record is still here.
  await cleanupLeftovers(dir);
  // A supervisor that died leaves its children (etcd, kube-apiserver, ...) in its process group.
  killGroup(state.pid);
  fs.rmSync(dir, { recursive: true, force: true });
  process.stdout.write('dev cluster stopped and its state removed\n');
  return 0;
}

function killGroup(pgid: number): void {
  try {
    process.kill(-pgid, 'SIGKILL');
  } catch {
    // no such group: nothing left
  }
}

/** Undoes what a real node recorded in this state directory and did not undo itself. */
async function cleanupLeftovers(dir: string): Promise<void> {
  const { REAL_NODE_RECORD } = await import('../../devcluster/cluster.ts');
  const record = path.join(dir, 'cluster', REAL_NODE_RECORD);
  if (!fs.existsSync(record)) return;
  const { cleanupRealNode } = await import('../../devcluster/cleanup.ts');
  const { mountsUnder } = await import('../../devcluster/cleanup.ts');
  process.stderr.write('removing what the real node left (containers, mounts, network, iptables, cgroups)\n');
  const errors = await cleanupRealNode(record, (l) => process.stderr.write(`  ${l}\n`));
  const mounted = mountsUnder([dir]);
  if (errors.length > 0 || mounted.length > 0) {
    throw new UsageError(`could not remove everything the real node made:\n  ${[...errors, ...mounted.map((m) => `still mounted: ${m}`)].join('\n  ')}\nIts record stays in ${record}; run hotstandby dev-cluster down again.`);
  }
}

function status(dir: string): number {
  const state = readState(dir);
  if (!state || !alive(state.pid)) {
    process.stdout.write('not running\n');
    return 1;
  }
  process.stdout.write(`${state.status} (supervisor pid ${state.pid}, since ${state.startedAt})\nAPI server: ${state.server ?? '-'}\nkubeconfig: ${state.kubeconfig ?? '-'}\n`);
  if (state.realNode) {
    process.stdout.write(`real node: ${state.node ?? '(starting)'}\nimages:\n${(state.images ?? []).map((i) => `  ${i}\n`).join('')}`);
  }
  return state.status === 'ready' ? 0 : 1;
}

/** The detached supervisor: owns the control plane until SIGTERM. */
async function serve(dir: string, realNode: boolean): Promise<number> {
  const { startDevCluster } = await import('../../devcluster/cluster.ts');
  const startedAt = new Date().toISOString();
  writeState(dir, { pid: process.pid, status: 'starting', startedAt, realNode });
  let cluster;
  try {
    cluster = await startDevCluster({ workDir: path.join(dir, 'cluster'), realNode, progress: (l) => process.stdout.write(`${l}\n`) });
  } catch (err) {
    // startDevCluster undid what it made; what it could not undo stays recorded for `down`.
    writeState(dir, { pid: process.pid, status: 'failed', error: (err as Error).message, startedAt, realNode });
    return 1;
  }
  const images = cluster.node?.images.map((i) => `${i.ref.repository}:${i.ref.tag}  (${path.basename(i.archive)}${i.name === 'dragonfly' ? "; Debian's redis-server standing in for Dragonfly" : ''})`);
  writeState(dir, { pid: process.pid, status: 'ready', kubeconfig: cluster.kubeconfig, server: cluster.server, startedAt, realNode, ...(cluster.node ? { node: cluster.node.name, images } : {}) });
  await untilStopSignal();
  process.stdout.write('stopping\n');
  try {
    await cluster.stop();
  } catch (err) {
    process.stdout.write(`stopping left things behind: ${(err as Error).message}\n`);
    return 1;
  }
  return 0;
}

export const devClusterCommand: Command = {
  name: 'dev-cluster',
  help,
  async run(argv) {
    const [action, ...rest] = argv;
    let dir = defaultStateDir();
    let realNode = false;
    for (let i = 0; i < rest.length; i++) {
      if (rest[i] === '--state-dir' && rest[i + 1]) dir = path.resolve(rest[++i]!);
      else if (rest[i] === '--real-node' && (action === 'up' || action === 'serve')) realNode = true;
      else throw new UsageError(`unknown argument ${JSON.stringify(rest[i])}; see hotstandby dev-cluster --help`);
    }
    switch (action) {
      case 'up':
        return up(dir, realNode);
      case 'down':
        return down(dir);
      case 'status':
        return status(dir);
      case 'serve':
        return serve(dir, realNode);
      default:
        throw new UsageError(`expected up, down or status, got ${JSON.stringify(action ?? '')}; see hotstandby dev-cluster --help`);
    }
  },
};

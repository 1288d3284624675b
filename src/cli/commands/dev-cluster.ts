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

const help = `Usage: hotstandby dev-cluster up|down|status [--state-dir DIR]

A real Kubernetes control plane on this machine without Docker: etcd,
kube-apiserver (RBAC, service-account tokens), kube-controller-manager,
kube-scheduler and kwok (two fake nodes; pods become Running without running
anything), all local processes on free loopback ports. Build the binaries first:
bash scripts/build-control-plane.sh

  up       start it in the background; prints the kubeconfig path
  down     stop it and remove its state
  status   show whether it runs, its API server and kubeconfig

Options:
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

async function up(dir: string): Promise<number> {
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
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const log = fs.openSync(path.join(dir, 'supervisor.log'), 'a');
  const child = spawn(process.execPath, [BIN, 'dev-cluster', 'serve', '--state-dir', dir], { detached: true, stdio: ['ignore', log, log] });
  fs.closeSync(log);
  child.unref();
  process.stderr.write('starting the dev cluster');
  const deadline = Date.now() + 180_000;
  while (Date.now() < deadline) {
    const state = readState(dir);
    if (state?.status === 'ready') {
      process.stderr.write(' ready\n');
      process.stdout.write(`API server: ${state.server}\nkubeconfig: ${state.kubeconfig}\nexport KUBECONFIG=${state.kubeconfig}\n`);
      return 0;
    }
    if (state?.status === 'failed' || (child.pid !== undefined && !alive(child.pid))) {
      process.stderr.write(' failed\n');
      throw new UsageError(`the dev cluster did not start: ${state?.error ?? 'the supervisor exited'}. Log: ${path.join(dir, 'supervisor.log')}`);
    }
    process.stderr.write('.');
    await sleep(500);
  }
  throw new UsageError(`the dev cluster was not ready within 180 s. Log: ${path.join(dir, 'supervisor.log')}; stop it with: hotstandby dev-cluster down`);
}

async function down(dir: string): Promise<number> {
  const state = readState(dir);
  if (!state) {
    process.stdout.write('no dev cluster is running\n');
    fs.rmSync(dir, { recursive: true, force: true });
    return 0;
  }
  if (alive(state.pid)) {
    process.kill(state.pid, 'SIGTERM');
    const deadline = Date.now() + 30_000;
    while (alive(state.pid) && Date.now() < deadline) await sleep(200);
    if (alive(state.pid)) process.kill(state.pid, 'SIGKILL');
  }
  fs.rmSync(dir, { recursive: true, force: true });
  process.stdout.write('dev cluster stopped and its state removed\n');
  return 0;
}

function status(dir: string): number {
  const state = readState(dir);
  if (!state || !alive(state.pid)) {
    process.stdout.write('not running\n');
    return 1;
  }
  process.stdout.write(`${state.status} (supervisor pid ${state.pid}, since ${state.startedAt})\nAPI server: ${state.server ?? '-'}\nkubeconfig: ${state.kubeconfig ?? '-'}\n`);
  return state.status === 'ready' ? 0 : 1;
}

/** The detached supervisor: owns the control plane until SIGTERM. */
async function serve(dir: string): Promise<number> {
  const { startDevCluster } = await import('../../devcluster/cluster.ts');
  const startedAt = new Date().toISOString();
  writeState(dir, { pid: process.pid, status: 'starting', startedAt });
  let cluster;
  try {
    cluster = await startDevCluster({ workDir: path.join(dir, 'cluster'), progress: (l) => process.stdout.write(`${l}\n`) });
  } catch (err) {
    writeState(dir, { pid: process.pid, status: 'failed', error: (err as Error).message, startedAt });
    return 1;
  }
  writeState(dir, { pid: process.pid, status: 'ready', kubeconfig: cluster.kubeconfig, server: cluster.server, startedAt });
  await untilStopSignal();
  await cluster.stop();
  return 0;
}

export const devClusterCommand: Command = {
  name: 'dev-cluster',
  help,
  async run(argv) {
    const [action, ...rest] = argv;
    let dir = defaultStateDir();
    for (let i = 0; i < rest.length; i++) {
      if (rest[i] === '--state-dir' && rest[i + 1]) dir = path.resolve(rest[++i]!);
      else throw new UsageError(`unknown argument ${JSON.stringify(rest[i])}; see hotstandby dev-cluster --help`);
    }
    switch (action) {
      case 'up':
        return up(dir);
      case 'down':
        return down(dir);
      case 'status':
        return status(dir);
      case 'serve':
        return serve(dir);
      default:
        throw new UsageError(`expected up, down or status, got ${JSON.stringify(action ?? '')}; see hotstandby dev-cluster --help`);
    }
  },
};

// Starts a real etcd and a real Redis-protocol server as child processes on
// free loopback ports. Tests, benchmarks and `hotstandby demo` use this; it is
// not used in a Kubernetes deployment, where the operator provisions the stores.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ManagedProcess, findOnPath } from './childproc.ts';
import { freePort, waitForPort } from './ports.ts';

export interface LocalEtcd {
  endpoint: string;
  /** Holds the data and log; the caller removes it when done (see removeWorkDir). */
  workDir: string;
  process: ManagedProcess;
  dataDir: string;
  clientPort: number;
  peerPort: number;
  stop(): Promise<void>;
}

export interface LocalRedis {
  url: string;
  workDir: string;
  port: number;
  process: ManagedProcess;
  stop(): Promise<void>;
}

export class MissingBinaryError extends Error {
  constructor(binary: string, debianPackage: string) {
    super(
      `${binary} was not found on PATH. Install it (Debian/Ubuntu: apt-get install ${debianPackage}) ` +
        `or put it on PATH, then run again.`,
    );
    this.name = 'MissingBinaryError';
  }
}

function requireBinary(names: readonly string[], debianPackage: string): string {
  for (const name of names) {
    const found = findOnPath(name);
    if (found) return found;
  }
  throw new MissingBinaryError(names[0]!, debianPackage);
}

const START_ATTEMPTS = 3; // a freshly freed port can be taken by someone else; retry on new ports
const READY_TIMEOUT_MS = 20_000;

export interface StartEtcdOptions {
  workDir?: string;
  name?: string;
  /**
   * Restart on the same ports and data directory as a stopped etcd (pass its
   * clientPort, peerPort and dataDir): clients reconnect to the same endpoint
   * and find the same keys and revisions. Tests use it for real outages.
   */
  reuse?: { clientPort: number; peerPort: number; dataDir: string };
  /** An etcd binary to run instead of the one on PATH (the dev cluster builds a newer one). */
  binary?: string;
}

export async function startEtcd(opts: StartEtcdOptions = {}): Promise<LocalEtcd> {
  const binary = opts.binary ?? requireBinary(['etcd'], 'etcd-server');
  const workDir = opts.workDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'hs-etcd-'));
  const name = opts.name ?? 'etcd';
  let lastError = '';
  for (let attempt = 1; attempt <= START_ATTEMPTS; attempt++) {
    const clientPort = opts.reuse?.clientPort ?? (await freePort());
    const peerPort = opts.reuse?.peerPort ?? (await freePort());
    const dataDir = opts.reuse?.dataDir ?? path.join(workDir, `${name}-data-${attempt}`);
    const child = new ManagedProcess({
      name,
      command: binary,
      args: [
        '--name', name,
        '--data-dir', dataDir,
        '--listen-client-urls', `http://127.0.0.1:${clientPort}`,
        '--advertise-client-urls', `http://127.0.0.1:${clientPort}`,
        '--listen-peer-urls', `http://127.0.0.1:${peerPort}`,
        '--initial-advertise-peer-urls', `http://127.0.0.1:${peerPort}`,
        '--initial-cluster', `${name}=http://127.0.0.1:${peerPort}`,
        '--logger', 'zap',
        '--log-level', 'warn',
      ],
      logFile: path.join(workDir, `${name}.log`),
      env: { ...process.env, ETCD_UNSUPPORTED_ARCH: process.env.ETCD_UNSUPPORTED_ARCH ?? '' },
    });
    const ready = await waitForPort(clientPort, READY_TIMEOUT_MS);
    if (ready && child.running && (await etcdHealthy(clientPort))) {
      return {
        endpoint: `http://127.0.0.1:${clientPort}`,
        workDir,
        process: child,
        dataDir,
        clientPort,
        peerPort,
        stop: async () => {
          await child.stop();
        },
      };
    }
    lastError = child.tail();
    await child.stop(1000);
  }
  throw new Error(`etcd did not become ready after ${START_ATTEMPTS} attempts; last log lines:\n${lastError}`);
}

async function etcdHealthy(port: number): Promise<boolean> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    try {
      const res = await fetch(`http://127.0.0.1:${port}/health`, { signal: AbortSignal.timeout(1000) });
      const body = (await res.json()) as { health?: string };
      if (body.health === 'true') return true;
    } catch {
      // not yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

export async function startRedis(opts: { workDir?: string; name?: string } = {}): Promise<LocalRedis> {
  // Dragonfly speaks the same protocol; prefer it when present, else redis-server.
  const binary = requireBinary(['redis-server'], 'redis-server');
  const workDir = opts.workDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'hs-redis-'));
  const name = opts.name ?? 'redis';
  let lastError = '';
  for (let attempt = 1; attempt <= START_ATTEMPTS; attempt++) {
    const port = await freePort();
    const child = new ManagedProcess({
      name,
      command: binary,
      args: [
        '--port', String(port),
        '--bind', '127.0.0.1',
        '--save', '',
        '--appendonly', 'no',
        '--protected-mode', 'no',
        '--dir', workDir,
        '--loglevel', 'warning',
      ],
      logFile: path.join(workDir, `${name}.log`),
    });
    if ((await waitForPort(port, READY_TIMEOUT_MS)) && child.running) {
      return {
        url: `redis://127.0.0.1:${port}`,
        workDir,
        port,
        process: child,
        stop: async () => {
          await child.stop();
        },
      };
    }
    lastError = child.tail();
    await child.stop(1000);
  }
  throw new Error(`redis-server did not become ready after ${START_ATTEMPTS} attempts; last log lines:\n${lastError}`);
}

/** Removes a store's work directory (data and logs) after it has stopped. */
export function removeWorkDir(store: { workDir: string }): void {
  fs.rmSync(store.workDir, { recursive: true, force: true });
}

// Starts a real etcd and a real Redis-protocol server as child processes on
// free loopback ports. Tests, benchmarks and `hotstandby demo` use this; it is
// not used in a Kubernetes deployment, where the operator provisions the stores.
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { ManagedProcess, findOnPath } from './childproc.ts';
import { freePort, waitForPort } from './ports.ts';

/** Files for a store that serves TLS: its CA, and its own certificate and key. */
export interface ServerTlsFiles {
  caFile: string;
  certFile: string;
  keyFile: string;
}

export interface LocalEtcd {
  /** http://127.0.0.1:PORT, or https:// when started with tls. */
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
  /** redis://127.0.0.1:PORT, or rediss:// when started with tls (the password is not in it). */
  url: string;
  /** Set when started with one (requirepass). */
  password?: string;
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
  /**
   * Serve clients over TLS with this certificate; with clientCertAuth, only
   * clients presenting a certificate signed by caFile get in. Health is then
   * checked with clientCert (required with clientCertAuth).
   */
  tls?: ServerTlsFiles & { clientCertAuth?: boolean; clientCert?: { certFile: string; keyFile: string } };
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
    const scheme = opts.tls ? 'https' : 'http';
    const tlsArgs = opts.tls
      ? [
          '--cert-file', opts.tls.certFile,
          '--key-file', opts.tls.keyFile,
          '--trusted-ca-file', opts.tls.caFile,
          ...(opts.tls.clientCertAuth ? ['--client-cert-auth'] : []),
        ]
      : [];
    const child = new ManagedProcess({
      name,
      command: binary,
      args: [
        '--name', name,
        '--data-dir', dataDir,
        '--listen-client-urls', `${scheme}://127.0.0.1:${clientPort}`,
        '--advertise-client-urls', `${scheme}://127.0.0.1:${clientPort}`,
        '--listen-peer-urls', `http://127.0.0.1:${peerPort}`,
        '--initial-advertise-peer-urls', `http://127.0.0.1:${peerPort}`,
        '--initial-cluster', `${name}=http://127.0.0.1:${peerPort}`,
        '--logger', 'zap',
        '--log-level', 'warn',
        ...tlsArgs,
      ],
      logFile: path.join(workDir, `${name}.log`),
      env: { ...process.env, ETCD_UNSUPPORTED_ARCH: process.env.ETCD_UNSUPPORTED_ARCH ?? '' },
    });
    const ready = await waitForPort(clientPort, READY_TIMEOUT_MS);
    if (ready && child.running && (await etcdHealthy(clientPort, opts.tls))) {
      return {
        endpoint: `${scheme}://127.0.0.1:${clientPort}`,
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

async function etcdHealthy(port: number, tls?: StartEtcdOptions['tls']): Promise<boolean> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    try {
      const body = tls ? await httpsJson(port, tls) : ((await (await fetch(`http://127.0.0.1:${port}/health`, { signal: AbortSignal.timeout(1000) })).json()) as { health?: string });
      if (body.health === 'true') return true;
    } catch {
      // not yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

/** GET /health over TLS (fetch cannot take a CA or a client certificate). */
function httpsJson(port: number, tls: NonNullable<StartEtcdOptions['tls']>): Promise<{ health?: string }> {
  return new Promise((resolve, reject) => {
    const req = https.get(
      {
        host: '127.0.0.1',
        port,
        path: '/health',
        ca: fs.readFileSync(tls.caFile),
        ...(tls.clientCert ? { cert: fs.readFileSync(tls.clientCert.certFile), key: fs.readFileSync(tls.clientCert.keyFile) } : {}),
        timeout: 1000,
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => {
          try {
            resolve(JSON.parse(text) as { health?: string });
          } catch (err) {
            reject(err as Error);
          }
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

export interface StartRedisOptions {
  workDir?: string;
  name?: string;
  /** Require this password (requirepass). */
  password?: string;
  /** Serve TLS only (no plain port), with this certificate; clients need not present one. */
  tls?: ServerTlsFiles;
  /** Listen on this port (a server restarted where its clients look for it); default a free one. */
  port?: number;
}

export async function startRedis(opts: StartRedisOptions = {}): Promise<LocalRedis> {
  // Dragonfly speaks the same protocol; prefer it when present, else redis-server.
  const binary = requireBinary(['redis-server'], 'redis-server');
  const workDir = opts.workDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'hs-redis-'));
  const name = opts.name ?? 'redis';
  let lastError = '';
  for (let attempt = 1; attempt <= START_ATTEMPTS; attempt++) {
    const port = opts.port ?? (await freePort());
    const child = new ManagedProcess({
      name,
      command: binary,
      args: [
        ...(opts.tls
          ? [
              '--port', '0',
              '--tls-port', String(port),
              '--tls-cert-file', opts.tls.certFile,
              '--tls-key-file', opts.tls.keyFile,
              '--tls-ca-cert-file', opts.tls.caFile,
              '--tls-auth-clients', 'no',
            ]
          : ['--port', String(port)]),
        ...(opts.password !== undefined ? ['--requirepass', opts.password] : []),
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
        url: `${opts.tls ? 'rediss' : 'redis'}://127.0.0.1:${port}`,
        ...(opts.password !== undefined ? { password: opts.password } : {}),
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

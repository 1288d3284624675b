// Starts a real etcd and a real Redis-protocol server (Dragonfly when built,
// else redis-server) as child processes on free loopback ports. Tests,
// benchmarks and `hotstandby demo` use this; it is not used in a Kubernetes deployment, where the operator provisions the stores.
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { ManagedProcess, findOnPath } from './childproc.ts';
import { DRAGONFLY_BUILD_HINT, builtDragonfly, localDragonflyArgs } from './dragonfly.ts';
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
  /** The address to listen on (default 127.0.0.1); the fault tests use a bridge address that namespaces can reach. */
  host?: string;
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
  const host = opts.host ?? '127.0.0.1';
  let lastError = '';
  for (let attempt = 1; attempt <= START_ATTEMPTS; attempt++) {
    const clientPort = opts.reuse?.clientPort ?? (await freePort());
    const peerPort = opts.reuse?.peerPort ?? (await freePort());
    const dataDir = opts.reuse?.dataDir ?? path.join(workDir, `${name}-data-${attempt}`);
    const scheme = opts.tls ? 'https' : 'http';
    // --trusted-ca-file only with client-certificate auth: etcd (3.4 and 3.7 alike) takes it
    // alone to mean that too, and refuses clients without a certificate.
    const tlsArgs = opts.tls
      ? [
          '--cert-file', opts.tls.certFile,
          '--key-file', opts.tls.keyFile,
          ...(opts.tls.clientCertAuth ? ['--trusted-ca-file', opts.tls.caFile, '--client-cert-auth'] : []),
        ]
      : [];
    const child = new ManagedProcess({
      name,
      command: binary,
      args: [
        '--name', name,
        '--data-dir', dataDir,
        '--listen-client-urls', `${scheme}://${host}:${clientPort}`,
        '--advertise-client-urls', `${scheme}://${host}:${clientPort}`,
        '--listen-peer-urls', `http://${host}:${peerPort}`,
        '--initial-advertise-peer-urls', `http://${host}:${peerPort}`,
        '--initial-cluster', `${name}=http://${host}:${peerPort}`,
        '--logger', 'zap',
        '--log-level', 'warn',
        ...tlsArgs,
      ],
      logFile: path.join(workDir, `${name}.log`),
      env: { ...process.env, ETCD_UNSUPPORTED_ARCH: process.env.ETCD_UNSUPPORTED_ARCH ?? '' },
    });
    const ready = await waitForPort(clientPort, READY_TIMEOUT_MS, host);
    if (ready && child.running && (await etcdHealthy(clientPort, opts.tls, host))) {
      return {
        endpoint: `${scheme}://${host}:${clientPort}`,
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

async function etcdHealthy(port: number, tls?: StartEtcdOptions['tls'], host = '127.0.0.1'): Promise<boolean> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    try {
      const body = tls ? await httpsJson(port, tls) : ((await (await fetch(`http://${host}:${port}/health`, { signal: AbortSignal.timeout(1000) })).json()) as { health?: string });
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

/** Which Redis-protocol server carries the operation log: Dragonfly (production) or redis-server. */
export type StreamServerKind = 'dragonfly' | 'redis';
export const STREAM_SERVER_KINDS: readonly StreamServerKind[] = ['dragonfly', 'redis'];
/** Forces one kind for tests, benchmarks and the demo; unset, Dragonfly runs when it is built. */
export const STREAM_SERVER_ENV = 'HOTSTANDBY_STREAM_SERVER';

export class DragonflyNotBuiltError extends Error {
  constructor(why: string) {
    super(`${why}, but Dragonfly is not built: ${DRAGONFLY_BUILD_HINT}, or choose redis.`);
    this.name = 'DragonflyNotBuiltError';
  }
}

export class InvalidStreamServerError extends Error {
  constructor(value: string, from: string) {
    super(`${from}: "${value}" is not a stream server; use dragonfly or redis`);
    this.name = 'InvalidStreamServerError';
  }
}

/** Parses a stream-server name from a flag or the environment; the error names where it came from. */
export function parseStreamServerKind(value: string, from: string): StreamServerKind {
  if ((STREAM_SERVER_KINDS as readonly string[]).includes(value)) return value as StreamServerKind;
  throw new InvalidStreamServerError(value, from);
}

/**
 * The kind to start: the one asked for, else $HOTSTANDBY_STREAM_SERVER, else Dragonfly when
 * its binary is built and redis-server when not.
 */
export function chooseStreamServer(requested?: StreamServerKind): StreamServerKind {
  const env = process.env[STREAM_SERVER_ENV];
  const kind = requested ?? (env ? parseStreamServerKind(env, STREAM_SERVER_ENV) : undefined);
  if (kind) return kind;
  return builtDragonfly() ? 'dragonfly' : 'redis';
}

export interface StartStreamServerOptions {
  /** Default: chooseStreamServer(). */
  kind?: StreamServerKind;
  workDir?: string;
  name?: string;
  /**
   * Restart on the port and snapshot directory of a stopped server (pass its port and dir):
   * clients reconnect to the same URL, and Dragonfly loads the stream back from its snapshot.
   */
  reuse?: { port: number; dir: string };
  /** Follow this primary (host:port) as a replica. */
  replicaOf?: string;
  /** Dragonfly's --lock_on_hashtags (default on, as in production); ignored by redis-server. */
  lockOnHashtags?: boolean;
  /** Require this password (--requirepass on both servers). */
  password?: string;
  /** Serve TLS only (no plain port), with this certificate; clients need not present one. */
  tls?: ServerTlsFiles;
  /** The address to listen on (default 127.0.0.1). */
  host?: string;
  /** A fixed port (default: a free one): a stream server restarted empty comes back where its clients dial. */
  port?: number;
}

export interface LocalStreamServer {
  kind: StreamServerKind;
  /** redis://HOST:PORT, or rediss:// when started with tls (the password is not in it). */
  url: string;
  /** Set when started with one (requirepass). */
  password?: string;
  /** Holds the log and the snapshot directory; the caller removes it when done (see removeWorkDir). */
  workDir: string;
  /** Where the server writes and loads its snapshot (Dragonfly --dir). */
  dir: string;
  port: number;
  binary: string;
  process: ManagedProcess;
  stop(): Promise<void>;
}

/** The snapshot file name the servers started here use (Dragonfly --dbfilename, Redis --dbfilename). */
export const STREAM_SERVER_DBFILENAME = 'hotstandby';

/** Starts a Redis-protocol server for the operation log: Dragonfly or redis-server (see chooseStreamServer). */
export async function startStreamServer(opts: StartStreamServerOptions = {}): Promise<LocalStreamServer> {
  const kind = opts.kind ?? chooseStreamServer();
  let binary: string;
  if (kind === 'dragonfly') {
    const built = builtDragonfly();
    if (!built) throw new DragonflyNotBuiltError('the dragonfly stream server was asked for');
    binary = built;
  } else {
    binary = requireBinary(['redis-server'], 'redis-server');
  }
  const workDir = opts.workDir ?? fs.mkdtempSync(path.join(os.tmpdir(), `hs-${kind}-`));
  const name = opts.name ?? kind;
  const host = opts.host ?? '127.0.0.1';
  let lastError = '';
  for (let attempt = 1; attempt <= START_ATTEMPTS; attempt++) {
    const port = opts.reuse?.port ?? opts.port ?? (await freePort());
    const dir = opts.reuse?.dir ?? path.join(workDir, `${name}-data-${attempt}`);
    fs.mkdirSync(dir, { recursive: true });
    const args =
      kind === 'dragonfly'
        ? [
            ...localDragonflyArgs({
              port,
              dir,
              dbfilename: STREAM_SERVER_DBFILENAME,
              host,
              ...(opts.lockOnHashtags !== undefined ? { lockOnHashtags: opts.lockOnHashtags } : {}),
              ...(opts.replicaOf ? { replicaOf: opts.replicaOf } : {}),
            }),
            // The main port serves TLS only; no CA is given, since with one Dragonfly demands client certificates.
            ...(opts.tls ? ['--tls', `--tls_cert_file=${opts.tls.certFile}`, `--tls_key_file=${opts.tls.keyFile}`] : []),
            ...(opts.password !== undefined ? [`--requirepass=${opts.password}`] : []),
          ]
        : [
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
            '--bind', host,
            // No periodic saves (tests stay fast); SHUTDOWN and SAVE still write dir/dbfilename.
            '--save', '',
            '--appendonly', 'no',
            '--protected-mode', 'no',
            '--dir', dir,
            '--dbfilename', `${STREAM_SERVER_DBFILENAME}.rdb`,
            '--loglevel', 'warning',
            ...(opts.replicaOf ? ['--replicaof', ...opts.replicaOf.split(':')] : []),
          ];
    const child = new ManagedProcess({ name, command: binary, args, logFile: path.join(workDir, `${name}.log`) });
    if ((await waitForPort(port, READY_TIMEOUT_MS, host)) && child.running && (await answersCommands(host, port, opts))) {
      return {
        kind,
        url: `${opts.tls ? 'rediss' : 'redis'}://${host}:${port}`,
        ...(opts.password !== undefined ? { password: opts.password } : {}),
        workDir,
        dir,
        port,
        binary,
        process: child,
        stop: async () => {
          await child.stop();
        },
      };
    }
    lastError = child.tail();
    await child.stop(1000);
  }
  throw new Error(`${kind} did not become ready after ${START_ATTEMPTS} attempts; last log lines:\n${lastError}`);
}

/** True once the server answers a data command (a restarted one refuses them with LOADING until its snapshot is in). */
async function answersCommands(host: string, port: number, auth: Pick<StartStreamServerOptions, 'password' | 'tls'>): Promise<boolean> {
  const client = new Redis({
    host,
    port,
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    ...(auth.password !== undefined ? { password: auth.password } : {}),
    ...(auth.tls ? { tls: { ca: fs.readFileSync(auth.tls.caFile) } } : {}),
  });
  const deadline = Date.now() + READY_TIMEOUT_MS;
  try {
    await client.connect();
    while (Date.now() < deadline) {
      try {
        await client.dbsize();
        return true;
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    return false;
  } catch {
    return false;
  } finally {
    client.disconnect();
  }
}

/** Removes a store's work directory (data and logs) after it has stopped. */
export function removeWorkDir(store: { workDir: string }): void {
  fs.rmSync(store.workDir, { recursive: true, force: true });
}

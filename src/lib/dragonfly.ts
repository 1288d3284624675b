// Dragonfly as this project runs it: where scripts/build-dragonfly.sh caches the
// binary it builds from source, and the flags a Dragonfly serving hot-standby
// clusters is started with (the local stores, tests and benchmarks use these;
// the operator's managed Dragonfly uses the same ones).
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { hotstandbyCacheRoot } from './cacheroot.ts';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const TOOLS = path.join(REPO, 'tools', 'dragonfly');
/** What scripts/build-dragonfly.sh hashes into the cache key, in this order: then every fixes/*.patch, sorted. */
const KEYED_FILES = ['versions.env', 'sources.txt', 'local-sources.patch'];

function keyedFiles(): string[] {
  let fixes: string[] = [];
  try {
    fixes = fs.readdirSync(path.join(TOOLS, 'fixes')).filter((f) => f.endsWith('.patch')).sort().map((f) => path.join('fixes', f));
  } catch {
    // no fixes directory: nothing more to hash
  }
  return [...KEYED_FILES, ...fixes];
}

export const DRAGONFLY_BUILD_HINT =
  'build it once with `bash scripts/build-dragonfly.sh` (from source, long: see README "Dragonfly")';

/**
 * Where the build script puts (or has put) the binary:
 * <cache>/dragonfly/<version>-<first 12 hex of sha256(versions.env + sources.txt + local-sources.patch + fixes/*.patch)>/dragonfly.
 * Undefined when the tools/dragonfly files are not there (an installed package, not a checkout).
 */
export function dragonflyBinaryPath(): string | undefined {
  const hash = createHash('sha256');
  let version: string | undefined;
  for (const name of keyedFiles()) {
    let text: Buffer;
    try {
      text = fs.readFileSync(path.join(TOOLS, name));
    } catch {
      return undefined;
    }
    hash.update(text);
    if (name === 'versions.env') version = /^DRAGONFLY_VERSION=(\S+)$/m.exec(text.toString('utf8'))?.[1];
  }
  if (!version) return undefined;
  return path.join(hotstandbyCacheRoot(), 'dragonfly', `${version}-${hash.digest('hex').slice(0, 12)}`, 'dragonfly');
}

/** The cached Dragonfly binary when it has been built, else undefined. */
export function builtDragonfly(): string | undefined {
  const binary = dragonflyBinaryPath();
  if (!binary) return undefined;
  try {
    fs.accessSync(binary, fs.constants.X_OK);
    return binary;
  } catch {
    return undefined;
  }
}

/** Every minute (Dragonfly's cron has minute granularity); plus a snapshot at every clean shutdown. */
export const DRAGONFLY_SNAPSHOT_CRON = '* * * * *';

/** What differs between Dragonflies carrying the operation log: where they listen and store, and their size. */
export interface DragonflyServingOptions {
  port: number;
  /** Snapshot directory and file name: a restart loads the stream back from there. */
  dir: string;
  dbfilename: string;
  maxmemoryBytes: number;
  threads: number;
  /**
   * Lock per hash tag instead of per key: a script then locks one cluster's `hs:{ns/name}:*`
   * keys as one, which is what keeps a batch append cheap. On in production; off only to measure it.
   */
  lockOnHashtags?: boolean;
}

/**
 * The flags every Dragonfly carrying the operation log runs with: the operator's managed one
 * (src/operator/builders/dragonfly.ts) and the local one of tests, benchmarks and the demo, so
 * what is tested is what runs. Cache mode stays off: in cache mode Dragonfly evicts keys under
 * memory pressure, and an evicted log, epoch or head would lose acknowledged writes. Snapshots
 * on a schedule as well as at shutdown: Dragonfly has no append-only file. No version check:
 * it calls out to the internet.
 */
export function dragonflyServingArgs(opts: DragonflyServingOptions): string[] {
  return [
    `--port=${opts.port}`,
    opts.lockOnHashtags === false ? '--lock_on_hashtags=false' : '--lock_on_hashtags',
    `--dir=${opts.dir}`,
    `--dbfilename=${opts.dbfilename}`,
    `--snapshot_cron=${DRAGONFLY_SNAPSHOT_CRON}`,
    '--cache_mode=false',
    `--maxmemory=${opts.maxmemoryBytes}`,
    `--proactor_threads=${opts.threads}`,
    '--version_check=false',
  ];
}

/**
 * The local Dragonfly's size: two threads (the stream and its fencing keys share one hash tag,
 * so one shard does the work and more threads only cost memory), and the 256 MiB per thread
 * Dragonfly demands at the least, twice over.
 */
const LOCAL_THREADS = 2;
const LOCAL_MAXMEMORY_BYTES = 1024 * 2 ** 20;

export interface LocalDragonflyOptions extends Pick<DragonflyServingOptions, 'port' | 'dir' | 'dbfilename' | 'lockOnHashtags'> {
  /** Follow a primary (host:port), as a Dragonfly replica does. */
  replicaOf?: string;
  /** The address to listen on (default 127.0.0.1, loopback only). */
  host?: string;
}

/**
 * The local Dragonfly's flags: the serving flags, plus loopback only, logs to stderr (the
 * process's log file; the managed one's image entrypoint adds the same), and --replicaof when
 * it follows a primary.
 */
export function localDragonflyArgs(opts: LocalDragonflyOptions): string[] {
  return [
    ...dragonflyServingArgs({
      port: opts.port,
      dir: opts.dir,
      dbfilename: opts.dbfilename,
      maxmemoryBytes: LOCAL_MAXMEMORY_BYTES,
      threads: LOCAL_THREADS,
      ...(opts.lockOnHashtags !== undefined ? { lockOnHashtags: opts.lockOnHashtags } : {}),
    }),
    `--bind=${opts.host ?? '127.0.0.1'}`,
    '--logtostderr',
    ...(opts.replicaOf ? [`--replicaof=${opts.replicaOf}`] : []),
  ];
}

/** The flags only the local Dragonfly has (see localDragonflyArgs); a unit test checks every other is the managed one's. */
export const LOCAL_ONLY_DRAGONFLY_FLAGS: readonly string[] = ['--bind', '--logtostderr', '--replicaof'];

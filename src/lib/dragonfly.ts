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

export interface DragonflyArgsOptions {
  port: number;
  bind: string;
  /** Snapshot directory and file name: a restart loads the stream back from there. */
  dir: string;
  dbfilename: string;
  /**
   * Lock per hash tag instead of per key: a script then locks one cluster's `hs:{ns/name}:*`
   * keys as one, which is what keeps a batch append cheap. On in production.
   */
  lockOnHashtags?: boolean;
  /** Follow a primary (host:port), as a Dragonfly replica does. */
  replicaOf?: string;
}

/**
 * The flags Dragonfly runs with. Cache mode stays off: in cache mode Dragonfly evicts keys
 * under memory pressure, and an evicted log, epoch or head would lose acknowledged writes.
 * Two proactor threads: the stream and its fencing keys share one hash tag, so one shard does
 * the work and more threads only cost memory. No version check: it calls out to the internet.
 * Logs go to stderr (the process's log file, the container's log), not to files in /tmp.
 */
export function dragonflyArgs(opts: DragonflyArgsOptions): string[] {
  return [
    `--port=${opts.port}`,
    `--bind=${opts.bind}`,
    `--dir=${opts.dir}`,
    `--dbfilename=${opts.dbfilename}`,
    `--lock_on_hashtags=${opts.lockOnHashtags ?? true}`,
    '--proactor_threads=2',
    '--cache_mode=false',
    '--version_check=false',
    '--logtostderr',
    ...(opts.replicaOf ? [`--replicaof=${opts.replicaOf}`] : []),
  ];
}

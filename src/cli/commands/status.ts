// `hotstandby status`: who leads, how far behind each standby is, the log
// head, the latest snapshot and any pending switchover, as a table (or JSON).
// Reads only; safe to run against a production cluster at any time.
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import type { Etcd3 } from 'etcd3';
import type { Redis } from 'ioredis';
import type { Command } from '../command.ts';
import { UsageError } from '../command.ts';
import { openClusterStores, parseEtcdEndpoints, readClusterView, type ClusterView } from '../../lib/clusterview.ts';
import { loadStoreCredentials, type StoreCredentials } from '../../lib/storeclients.ts';
import { parseClusterId, type ClusterRef } from '../../lib/keys.ts';
import { sleep } from '../../lib/time.ts';

const help = `Usage: hotstandby status --cluster NS/NAME --etcd URL[,URL...] [--redis URL] [--json] [--watch]
       hotstandby status NAME [-n NS] [--kubeconfig FILE] [--context CTX] [--json] [--watch]
       kubectl hotstandby status NAME [-n NS]

Shows one cluster as its agents publish it: the members (role, applied
sequence, lag behind the log head, state, age of the last heartbeat) with the
leader marked *, the leader's epoch and since when it leads, the log head, the
latest snapshot and a pending planned switchover.

Options:
  --cluster NS/NAME   the HotStandbyCluster (namespace/name)
  --etcd URLS         etcd endpoints, comma-separated http://host:port
  --redis URL         the stream server (redis://host:port): exact log head and fencing epoch;
                      without it the head is the highest sequence a member reports
  --etcd-ca-file, --etcd-cert-file, --etcd-key-file PATH
                      etcd over TLS (https:// endpoints): its CA, a client certificate and key
  --redis-password-file PATH  the stream server's password (or HOTSTANDBY_REDIS_PASSWORD)
  --redis-ca-file PATH        CA of a rediss:// stream server
  --json              print the same as one JSON object
  --watch             redraw every second until Ctrl-C

With a cluster NAME instead of --cluster/--etcd, reads the HotStandbyCluster
from Kubernetes (the status the operator publishes: leader, members and lag,
log head, snapshot, failovers, conditions). The stores need not be reachable
from here. Installed as kubectl-hotstandby, it is a kubectl plugin.

Exit status: 0 when etcd was read, 1 when it could not be, 2 for bad flags.

Example:
  hotstandby status --cluster default/mooncake --etcd http://etcd:2379 --redis redis://dragonfly:6379`;

/** Where a command writes, and what stops it; tests pass their own. */
export interface CommandIo {
  out: (text: string) => void;
  err: (text: string) => void;
  /** Aborted on Ctrl-C. */
  signal: AbortSignal;
  /** Redraws may clear the screen (only on a terminal). */
  isTty?: boolean;
}

export interface StoreFlags {
  cluster: ClusterRef;
  etcdEndpoints: string[];
  redisUrl: string | undefined;
  credentials?: StoreCredentials;
}

/** The credential flags `status` and `switchover` take, as the agent's (hotstandby agent --help). */
export const CREDENTIAL_FLAGS = {
  'etcd-ca-file': { type: 'string' },
  'etcd-cert-file': { type: 'string' },
  'etcd-key-file': { type: 'string' },
  'redis-password-file': { type: 'string' },
  'redis-ca-file': { type: 'string' },
} as const;

export type CredentialFlagValues = Partial<Record<keyof typeof CREDENTIAL_FLAGS, string>>;

/** Reads the credential files; throws UsageError naming the flag and path of one that cannot be read. */
export function parseCredentialFlags(values: CredentialFlagValues, env: NodeJS.ProcessEnv = process.env): StoreCredentials {
  const files: Array<[keyof typeof CREDENTIAL_FLAGS, 'etcdCaFile' | 'etcdCertFile' | 'etcdKeyFile' | 'redisCaFile']> = [
    ['etcd-ca-file', 'etcdCaFile'],
    ['etcd-cert-file', 'etcdCertFile'],
    ['etcd-key-file', 'etcdKeyFile'],
    ['redis-ca-file', 'redisCaFile'],
  ];
  const paths: Record<string, string> = {};
  for (const [flag, field] of files) {
    const file = values[flag];
    if (!file) continue;
    try {
      loadStoreCredentials({ [field]: file });
    } catch (err) {
      throw new UsageError(`--${flag}: ${(err as Error).message}`);
    }
    paths[field] = file;
  }
  if (Boolean(values['etcd-cert-file']) !== Boolean(values['etcd-key-file'])) {
    throw new UsageError('--etcd-cert-file and --etcd-key-file go together: give both or neither');
  }
  let password = env.HOTSTANDBY_REDIS_PASSWORD || undefined;
  if (values['redis-password-file']) {
    try {
      // As the agent does: one trailing newline of a mounted Secret key is not part of the password.
      password = fs.readFileSync(values['redis-password-file'], 'utf8').replace(/\r?\n$/, '');
    } catch (err) {
      throw new UsageError(`--redis-password-file: cannot read ${values['redis-password-file']}: ${(err as Error).message}`);
    }
  }
  return loadStoreCredentials(paths, password);
}

/** Parses and checks --cluster, --etcd, --redis and the credential flags; throws UsageError naming the flag. */
export function parseStoreFlags(values: { cluster?: string; etcd?: string; redis?: string } & CredentialFlagValues): StoreFlags {
  if (!values.cluster) throw new UsageError('--cluster is required: the cluster as namespace/name, e.g. --cluster default/mooncake');
  let cluster: ClusterRef;
  try {
    cluster = parseClusterId(values.cluster);
  } catch (err) {
    throw new UsageError(`--cluster: ${(err as Error).message}`);
  }
  let etcdEndpoints: string[];
  try {
    etcdEndpoints = parseEtcdEndpoints(values.etcd);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (values.redis !== undefined && !/^rediss?:\/\/[^\s]+$/.test(values.redis)) {
    throw new UsageError(`--redis must look like redis://host:port, got ${JSON.stringify(values.redis)}`);
  }
  const credentials = parseCredentialFlags(values);
  if ((credentials.etcdTls?.ca || credentials.etcdTls?.cert) && etcdEndpoints.some((e) => !e.startsWith('https://'))) {
    throw new UsageError(`--etcd: with etcd TLS files every endpoint must be https://host:port, got ${etcdEndpoints.join(',')}`);
  }
  if (credentials.redisCa && !values.redis?.startsWith('rediss://')) {
    throw new UsageError('--redis-ca-file applies to TLS only: give --redis rediss://host:port');
  }
  return { cluster, etcdEndpoints, redisUrl: values.redis, credentials };
}

/** Store clients for one command run; close() releases both. A tool must answer: bounded retries, then report. */
export async function openStores(flags: StoreFlags): Promise<{ etcd: Etcd3; redis: Redis | undefined; close(): void }> {
  try {
    return await openClusterStores({
      etcdEndpoints: flags.etcdEndpoints,
      ...(flags.redisUrl ? { redisUrl: flags.redisUrl } : {}),
      ...(flags.credentials ? { credentials: flags.credentials } : {}),
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

/** The message for an etcd that could not be read: names the endpoints and the flag. */
export function etcdUnreachable(endpoints: readonly string[], err: unknown): string {
  return `cannot read from etcd at ${endpoints.join(', ')} (--etcd): ${(err as Error).message}. Check that the endpoint is right and reachable from here.`;
}

export async function runStatus(argv: string[], io: CommandIo): Promise<number> {
  let values: { cluster?: string; etcd?: string; redis?: string; json?: boolean; watch?: boolean; namespace?: string; kubeconfig?: string; context?: string } & CredentialFlagValues;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: argv,
      options: {
        cluster: { type: 'string' },
        etcd: { type: 'string' },
        redis: { type: 'string' },
        ...CREDENTIAL_FLAGS,
        json: { type: 'boolean' },
        watch: { type: 'boolean' },
        namespace: { type: 'string', short: 'n' },
        kubeconfig: { type: 'string' },
        context: { type: 'string' },
      },
      allowPositionals: true,
      strict: true,
    }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (positionals.length > 1) throw new UsageError(`give one cluster name, got ${positionals.join(' ')}`);
  if (positionals.length === 1) {
    if (values.cluster || values.etcd || values.redis) throw new UsageError('give either a cluster NAME (read from Kubernetes) or --cluster/--etcd/--redis (read from the stores), not both');
    const { runKubeStatus } = await import('../kube-status.ts');
    return runKubeStatus({ name: positionals[0]!, namespace: values.namespace, kubeconfig: values.kubeconfig, context: values.context, json: values.json, watch: values.watch }, io);
  }
  if (values.namespace || values.kubeconfig || values.context) throw new UsageError('-n, --kubeconfig and --context go with a cluster NAME, e.g. hotstandby status mooncake -n prod');
  const flags = parseStoreFlags(values);
  const stores = await openStores(flags);
  try {
    const read = (): Promise<ClusterView> =>
      readClusterView({ etcd: stores.etcd, cluster: flags.cluster, ...(stores.redis ? { redis: stores.redis } : {}) });
    const show = (view: ClusterView): string => (values.json ? JSON.stringify(view, null, 2) : renderClusterView(view));
    if (!values.watch) {
      let view: ClusterView;
      try {
        view = await read();
      } catch (err) {
        io.err(etcdUnreachable(flags.etcdEndpoints, err));
        return 1;
      }
      io.out(show(view));
      return 0;
    }
    // --watch: redraw every second until the signal; a failed read is shown
    // in place of the table and retried, as an outage is what one watches for.
    for (let frame = 0; !io.signal.aborted; frame++) {
      let view: ClusterView | undefined;
      let error = '';
      try {
        view = await read();
      } catch (err) {
        error = etcdUnreachable(flags.etcdEndpoints, err);
      }
      if (io.signal.aborted) break;
      if (values.json) io.out(JSON.stringify(view ?? { error })); // one object a line, for tools
      else io.out((io.isTty ? '\x1b[H\x1b[2J' : frame > 0 ? '\n' : '') + (view ? renderClusterView(view) : error));
      await sleep(1000, io.signal).catch(() => undefined);
    }
    return 0;
  } finally {
    stores.close();
  }
}

// ---------------------------------------------------------------- rendering

/** Aligns cells into columns separated by two spaces; no trailing spaces. */
export function formatTable(headers: readonly string[], rows: ReadonlyArray<readonly string[]>): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}

/** 850ms, 4.2s, 12s, 3m05s, 2h07m, 3d04h. */
export function formatAge(ms: number | null): string {
  if (ms === null || !Number.isFinite(ms)) return '?';
  if (ms < 1000) return `${Math.round(ms)}ms`;
  const s = ms / 1000;
  if (s < 10) return `${s.toFixed(1)}s`;
  if (s < 60) return `${Math.floor(s)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(Math.floor(s % 60)).padStart(2, '0')}s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h}h${String(m % 60).padStart(2, '0')}m`;
  return `${Math.floor(h / 24)}d${String(h % 24).padStart(2, '0')}h`;
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[u]}`;
}

/** The status as a person reads it: a few summary lines, then the member table. */
export function renderClusterView(view: ClusterView): string {
  const lines: string[] = [];
  const summary: Array<[string, string]> = [];
  summary.push(['CLUSTER', `${view.cluster}  (etcd revision ${view.etcdRevision}, read ${view.readAt})`]);
  summary.push([
    'LEADER',
    view.leader
      ? `${view.leader.member}  epoch ${view.leader.epoch}  address ${view.leader.address || '?'}  since ${view.leader.since || '?'} (${formatAge(view.leader.ageMs)} ago)`
      : 'none (no member leads right now: a failover is under way, or no agent runs)',
  ]);
  summary.push([
    'LOG',
    view.log
      ? view.log.source === 'stream'
        ? `head ${view.log.headSeq}  fencing epoch ${view.log.fencingEpoch ?? '?'}`
        : `head >= ${view.log.headSeq} (the highest a member reports; the stream server gives the exact head)`
      : 'unknown (no members, and no --redis)',
  ]);
  summary.push([
    'SNAPSHOT',
    view.snapshot
      ? `seq ${view.snapshot.seq}  ${formatBytes(view.snapshot.sizeBytes)}  age ${formatAge(view.snapshot.ageMs)}  id ${view.snapshot.id}` +
        (view.snapshot.kept > 1 ? `  (${view.snapshot.kept} kept)` : '')
      : 'none yet',
  ]);
  summary.push([
    'SWITCHOVER',
    view.switchover
      ? `pending: to ${view.switchover.target}, requested ${formatAge(view.switchover.ageMs)} ago`
      : 'none pending',
  ]);
  const labelWidth = Math.max(...summary.map(([k]) => k.length));
  for (const [k, v] of summary) lines.push(`${k.padEnd(labelWidth)}  ${v}`);
  lines.push('');
  if (view.members.length === 0) {
    lines.push('No members are registered (no agent has reached etcd for this cluster).');
  } else {
    lines.push(
      formatTable(
        [' ', 'MEMBER', 'ROLE', 'APPLIED', 'LAG', 'STATE', 'HEARTBEAT AGE'],
        view.members.map((m) => [
          m.isLeader ? '*' : ' ',
          m.member,
          m.role,
          String(m.appliedSeq),
          m.lag === null ? '?' : String(m.lag),
          m.state,
          formatAge(m.heartbeatAgeMs),
        ]),
      ),
    );
    lines.push('(* = leader)');
  }
  for (const p of view.problems) lines.push(`! ${p}`);
  return lines.join('\n');
}

export const statusCommand: Command = {
  name: 'status',
  help,
  async run(argv) {
    const controller = new AbortController();
    const onInt = (): void => controller.abort(new Error('interrupted'));
    process.once('SIGINT', onInt);
    try {
      return await runStatus(argv, {
        out: (t) => console.log(t),
        err: (t) => console.error(`hotstandby status: ${t}`),
        signal: controller.signal,
        isTty: process.stdout.isTTY,
      });
    } finally {
      process.off('SIGINT', onInt);
    }
  },
};

// What deletionPolicy: Delete removes when a HotStandbyCluster is deleted:
// - external etcd: every key under the cluster's prefix /hotstandby/<ns>/<name>/
//   (leader, members, delete events, metadata, snapshot descriptor, switchover);
// - external stream server: every key hs:{<ns>/<name>}:* (log, epoch, head,
//   epochs, batches, snapshot chunks), found with SCAN (never KEYS, which
//   blocks the server) and removed with UNLINK;
// - managed stores: the PersistentVolumeClaims of the cluster's etcd and
//   Dragonfly StatefulSets (<name>-etcd, <name>-dragonfly), which the
//   ownerReference cascade does not delete; the data goes with them.
// Every call has a deadline; a failure throws naming the store, so the
// finalizer stays and the cleanup is retried.
import { Etcd3, type IOptions } from 'etcd3';
import { Redis } from 'ioredis';
import { etcdKeys, streamKeys, type ClusterRef } from '../lib/keys.ts';
import type { Logger } from '../lib/log.ts';
import { withTimeout } from '../lib/time.ts';
import type { HotStandbyClusterSpec } from '../api/v1alpha1.ts';
import { isNotFound, type KubeClient } from './kube/client.ts';

export interface CleanupReport {
  etcdKeysDeleted: number;
  streamKeysDeleted: number;
  pvcsDeleted: string[];
}

export interface CleanupOptions {
  client: KubeClient;
  cluster: ClusterRef;
  spec: Partial<HotStandbyClusterSpec>;
  log: Logger;
  /** Deadline of each store call (default 10 s). */
  timeoutMs?: number;
}

const SCAN_COUNT = 1000;
/** Bound on SCAN rounds: 10 million keys at SCAN_COUNT per round. */
const MAX_SCAN_ROUNDS = 10_000;

export async function cleanupClusterData(opts: CleanupOptions): Promise<CleanupReport> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const report: CleanupReport = { etcdKeysDeleted: 0, streamKeysDeleted: 0, pvcsDeleted: [] };
  const etcdExt = opts.spec.etcd?.external;
  const dfExt = opts.spec.dragonfly?.external;
  if (etcdExt) report.etcdKeysDeleted = await step(`removing the cluster's keys from etcd ${etcdExt.endpoints.join(',')}`, () => deleteEtcdPrefix(opts, etcdExt, timeoutMs));
  if (dfExt) report.streamKeysDeleted = await step(`removing the cluster's keys from the stream server ${dfExt.url}`, () => deleteStreamKeys(opts, dfExt, timeoutMs));
  const managed = [...(opts.spec.etcd?.managed || !etcdExt ? ['etcd'] : []), ...(opts.spec.dragonfly?.managed || !dfExt ? ['dragonfly'] : [])];
  if (managed.length) report.pvcsDeleted = await step(`deleting the PVCs of the managed ${managed.join(' and ')}`, () => deleteStorePvcs(opts, managed, timeoutMs));
  opts.log.info({ cluster: `${opts.cluster.namespace}/${opts.cluster.name}`, ...report }, 'cluster data cleaned up');
  return report;
}

async function step<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw new Error(`${what}: ${(err as Error).message}`, { cause: err });
  }
}

async function deleteEtcdPrefix(opts: CleanupOptions, ext: NonNullable<NonNullable<HotStandbyClusterSpec['etcd']>['external']>, timeoutMs: number): Promise<number> {
  const etcdOptions: IOptions = { hosts: ext.endpoints, dialTimeout: timeoutMs };
  if (ext.tlsSecret) {
    const data = await readSecret(opts.client, opts.cluster.namespace, ext.tlsSecret.name, timeoutMs);
    etcdOptions.credentials = {
      rootCertificate: need(data, 'ca.crt', ext.tlsSecret.name),
      certChain: data['tls.crt'],
      privateKey: data['tls.key'],
    };
  }
  const etcd = new Etcd3(etcdOptions);
  try {
    const prefix = etcdKeys(opts.cluster).prefix;
    const res = await withTimeout(etcd.delete().prefix(prefix).exec(), timeoutMs, `deleting ${prefix} in etcd ${ext.endpoints.join(',')}`);
    return Number(res.deleted);
  } finally {
    etcd.close();
  }
}

async function deleteStreamKeys(opts: CleanupOptions, ext: NonNullable<NonNullable<HotStandbyClusterSpec['dragonfly']>['external']>, timeoutMs: number): Promise<number> {
  let password: string | undefined;
  if (ext.passwordSecret) {
    const data = await readSecret(opts.client, opts.cluster.namespace, ext.passwordSecret.name, timeoutMs);
    password = need(data, ext.passwordSecret.key ?? 'password', ext.passwordSecret.name).toString('utf8');
  }
  const redis = new Redis(ext.url, {
    lazyConnect: true,
    connectTimeout: timeoutMs,
    commandTimeout: timeoutMs,
    maxRetriesPerRequest: 1,
    ...(password !== undefined ? { password } : {}),
  });
  redis.on('error', (err: Error) => opts.log.debug({ err: err.message }, 'stream server connection error during cleanup'));
  try {
    await withTimeout(redis.connect(), timeoutMs, `connecting to the stream server ${ext.url}`);
    // The tag braces are literal in a SCAN pattern; glob characters cannot occur in namespace/name.
    const pattern = `hs:${streamKeys(opts.cluster).tag}:*`;
    let cursor = '0';
    let deleted = 0;
    for (let round = 0; round < MAX_SCAN_ROUNDS; round++) {
      const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', SCAN_COUNT);
      if (keys.length) deleted += await redis.unlink(...keys);
      cursor = next;
      if (cursor === '0') return deleted;
    }
    throw new Error(`more than ${MAX_SCAN_ROUNDS} SCAN rounds over ${pattern}; rerun the cleanup`);
  } finally {
    redis.disconnect();
  }
}

async function deleteStorePvcs(opts: CleanupOptions, stores: string[], timeoutMs: number): Promise<string[]> {
  const { namespace, name } = opts.cluster;
  // StatefulSet claims are named <template>-<statefulset>-<ordinal>.
  const claim = new RegExp(`^.+-${escapeRegExp(name)}-(${stores.join('|')})-[0-9]+$`);
  const path = `/api/v1/namespaces/${encodeURIComponent(namespace)}/persistentvolumeclaims`;
  const list = await opts.client.request<{ items: Array<{ metadata: { name: string; uid: string } }> }>('GET', path, { timeoutMs });
  const deleted: string[] = [];
  for (const pvc of list.items) {
    if (!claim.test(pvc.metadata.name)) continue;
    try {
      await opts.client.request('DELETE', `${path}/${encodeURIComponent(pvc.metadata.name)}`, {
        timeoutMs,
        body: { apiVersion: 'v1', kind: 'DeleteOptions', preconditions: { uid: pvc.metadata.uid } },
      });
      deleted.push(pvc.metadata.name);
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }
  return deleted;
}

async function readSecret(client: KubeClient, namespace: string, name: string, timeoutMs: number): Promise<Record<string, Buffer>> {
  const secret = await client.request<{ data?: Record<string, string> }>('GET', `/api/v1/namespaces/${encodeURIComponent(namespace)}/secrets/${encodeURIComponent(name)}`, { timeoutMs });
  return Object.fromEntries(Object.entries(secret.data ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64')]));
}

function need(data: Record<string, Buffer>, key: string, secret: string): Buffer {
  const v = data[key];
  if (!v) throw new Error(`Secret ${secret} has no key ${key}`);
  return v;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

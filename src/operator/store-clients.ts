// The operator's connections to each cluster's etcd and stream server, and a
// watch on the keys that change who leads (the leader key and the switchover
// request), so the status follows a failover within a second instead of at
// the next resync. Connections are kept per cluster and replaced when the
// addresses or the Secrets they were made from change.
import { Etcd3, type Watcher } from 'etcd3';
import { Redis } from 'ioredis';
import { etcdKeys, type ClusterRef } from '../lib/keys.ts';
import { etcdCredentialOptions, redisCredentialOptions, type EtcdTls } from '../lib/storeclients.ts';
import type { Logger } from '../lib/log.ts';

/** Where a cluster's stores are and how to authenticate, resolved from the spec and its Secrets. */
export interface StoreEndpoints {
  etcdEndpoints: string[];
  etcdTls?: EtcdTls;
  redisUrl: string;
  redisPassword?: string;
  /** Changes whenever any input above changes (addresses, Secret resourceVersions). */
  fingerprint: string;
}

export interface ClusterStores {
  etcd: Etcd3;
  redis: Redis;
  fingerprint: string;
}

const STORE_TIMEOUT_MS = 3000;

export class StoreClients {
  private readonly clients = new Map<string, ClusterStores & { watchers: Watcher[]; ref: ClusterRef }>();
  private readonly log: Logger;
  private readonly onLeadershipChange: (ref: ClusterRef) => void;

  constructor(opts: { log: Logger; onLeadershipChange: (ref: ClusterRef) => void }) {
    this.log = opts.log;
    this.onLeadershipChange = opts.onLeadershipChange;
  }

  /** The clients for a cluster, made (and its watch started) on first use or when its endpoints changed. */
  get(ref: ClusterRef, endpoints: StoreEndpoints): ClusterStores {
    const id = `${ref.namespace}/${ref.name}`;
    const existing = this.clients.get(id);
    if (existing?.fingerprint === endpoints.fingerprint) return existing;
    if (existing) this.forget(ref);
    const etcd = new Etcd3({
      hosts: endpoints.etcdEndpoints,
      dialTimeout: STORE_TIMEOUT_MS,
      ...etcdCredentialOptions(endpoints.etcdTls),
    });
    const redis = new Redis(endpoints.redisUrl, {
      lazyConnect: true,
      connectTimeout: STORE_TIMEOUT_MS,
      commandTimeout: STORE_TIMEOUT_MS,
      maxRetriesPerRequest: 1,
      ...redisCredentialOptions(endpoints.redisUrl, { ...(endpoints.redisPassword !== undefined ? { redisPassword: endpoints.redisPassword } : {}) }),
    });
    redis.on('error', (err: Error) => this.log.debug({ cluster: id, err: err.message }, 'stream server connection error'));
    const entry = { etcd, redis, fingerprint: endpoints.fingerprint, watchers: [] as Watcher[], ref };
    this.clients.set(id, entry);
    void this.watch(entry, id);
    return entry;
  }

  private async watch(entry: ClusterStores & { watchers: Watcher[]; ref: ClusterRef }, id: string): Promise<void> {
    const keys = etcdKeys(entry.ref);
    for (const key of [keys.leader, keys.switchover]) {
      try {
        // etcd3's watcher reconnects by itself and resumes from its last revision.
        const watcher = await entry.etcd.watch().key(key).create();
        if (this.clients.get(id) !== entry) {
          await watcher.cancel().catch(() => undefined);
          return;
        }
        watcher.on('data', () => this.onLeadershipChange(entry.ref));
        watcher.on('error', (err: Error) => this.log.debug({ cluster: id, err: err.message }, 'etcd watch error; it reconnects'));
        entry.watchers.push(watcher);
      } catch (err) {
        // The periodic resync still refreshes the status; the watch is made again with new clients.
        this.log.warn({ cluster: id, err: (err as Error).message }, 'cannot watch the leader key; status follows at the resync period');
      }
    }
  }

  forget(ref: ClusterRef): void {
    const id = `${ref.namespace}/${ref.name}`;
    const c = this.clients.get(id);
    if (!c) return;
    this.clients.delete(id);
    for (const w of c.watchers) void w.cancel().catch(() => undefined);
    c.etcd.close();
    c.redis.disconnect();
  }

  /** Clusters with open clients, as namespace/name. */
  known(): string[] {
    return [...this.clients.keys()];
  }

  close(): void {
    for (const c of [...this.clients.values()]) this.forget(c.ref);
  }
}

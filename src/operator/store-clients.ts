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

/** One pair of connections, shared by every cluster whose stores are the same (same fingerprint). */
interface SharedConnection extends ClusterStores {
  users: Set<string>;
}

interface ClusterEntry {
  ref: ClusterRef;
  connection: SharedConnection;
  watchers: Watcher[];
}

export class StoreClients {
  /** By fingerprint: clusters on one external etcd and stream server share one gRPC channel and one Redis connection. */
  private readonly connections = new Map<string, SharedConnection>();
  private readonly clusters = new Map<string, ClusterEntry>();
  private readonly log: Logger;
  private readonly onLeadershipChange: (ref: ClusterRef) => void;

  constructor(opts: { log: Logger; onLeadershipChange: (ref: ClusterRef) => void }) {
    this.log = opts.log;
    this.onLeadershipChange = opts.onLeadershipChange;
  }

  /** The clients for a cluster (shared with clusters on the same stores); its watch is started on first use or when its endpoints changed. */
  get(ref: ClusterRef, endpoints: StoreEndpoints): ClusterStores {
    const id = `${ref.namespace}/${ref.name}`;
    const existing = this.clusters.get(id);
    if (existing?.connection.fingerprint === endpoints.fingerprint) return existing.connection;
    if (existing) this.forget(ref);
    const connection = this.connections.get(endpoints.fingerprint) ?? this.connect(endpoints);
    connection.users.add(id);
    const entry: ClusterEntry = { ref, connection, watchers: [] };
    this.clusters.set(id, entry);
    void this.watch(entry, id);
    return connection;
  }

  private connect(endpoints: StoreEndpoints): SharedConnection {
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
    redis.on('error', (err: Error) => this.log.debug({ stores: endpoints.etcdEndpoints.join(','), err: err.message }, 'stream server connection error'));
    const connection: SharedConnection = { etcd, redis, fingerprint: endpoints.fingerprint, users: new Set() };
    this.connections.set(endpoints.fingerprint, connection);
    return connection;
  }

  private async watch(entry: ClusterEntry, id: string): Promise<void> {
    const keys = etcdKeys(entry.ref);
    for (const key of [keys.leader, keys.switchover]) {
      try {
        // etcd3's watcher reconnects by itself and resumes from its last revision.
        const watcher = await entry.connection.etcd.watch().key(key).create();
        if (this.clusters.get(id) !== entry) {
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

  /** Stops the cluster's watches; its connections close when no other cluster uses them. */
  forget(ref: ClusterRef): void {
    const id = `${ref.namespace}/${ref.name}`;
    const entry = this.clusters.get(id);
    if (!entry) return;
    this.clusters.delete(id);
    for (const w of entry.watchers) void w.cancel().catch(() => undefined);
    const c = entry.connection;
    c.users.delete(id);
    if (c.users.size === 0) {
      this.connections.delete(c.fingerprint);
      c.etcd.close();
      c.redis.disconnect();
    }
  }

  /** Clusters with open clients, as namespace/name. */
  known(): string[] {
    return [...this.clusters.keys()];
  }

  /** Open connection pairs (clusters on the same stores share one). */
  get connectionCount(): number {
    return this.connections.size;
  }

  close(): void {
    for (const c of [...this.clusters.values()]) this.forget(c.ref);
  }
}

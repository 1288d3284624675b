// Reads one cluster's state as the agents publish it (etcd: leader, members,
// snapshot, switchover; the stream server: log head and fencing epoch) into a
// plain object. `hotstandby status` and `switchover` print it; the operator
// reuses it for the HotStandbyCluster status, so it depends on nothing in the
// agent but the shapes in types.ts.
import type { Etcd3, IRangeResponse } from 'etcd3';
import type { Redis } from 'ioredis';
import type { AgentRole, LeaderRecord, MemberStatus, SnapshotDescriptor } from '../agent/types.ts';
import { parseSyncRecord, type SyncRecord } from '../agent/sync-record.ts';
import { clusterId, etcdKeys, streamKeys, type ClusterRef } from './keys.ts';
import { etcdCredentialOptions, redisCredentialOptions, type StoreCredentials } from './storeclients.ts';
import { withTimeout } from './time.ts';

export interface LeaderView extends LeaderRecord {
  /** Milliseconds since `since`; null when `since` is not a time. */
  ageMs: number | null;
}

export interface MemberView {
  member: string;
  role: AgentRole | string;
  address: string;
  receivedSeq: number;
  appliedSeq: number;
  /** Entries the member has still to apply: head - appliedSeq; null when no head is known. */
  lag: number | null;
  state: string;
  lastHeartbeat: string;
  /** Milliseconds since the member's last heartbeat; null when unparseable. */
  heartbeatAgeMs: number | null;
  version: string;
  /** The member the leader key names. */
  isLeader: boolean;
}

export interface LogView {
  /** Highest sequence number assigned. */
  headSeq: number;
  /** 'stream': read from the stream server; 'members': the highest sequence a member reports (a lower bound). */
  source: 'stream' | 'members';
  /** The epoch the stream server accepts appends from; null when not read from the stream. */
  fencingEpoch: number | null;
  /** Entries kept in the stream (XLEN: trimming keeps it near oplog.maxLength); absent when not read from the stream. */
  length?: number;
}

export interface SnapshotView {
  id: string;
  seq: number;
  epoch: number;
  sizeBytes: number;
  createdAt: string;
  ageMs: number | null;
  /** How many snapshots the descriptor key lists (the newest is shown). */
  kept: number;
}

export interface SwitchoverView {
  target: string;
  requestedAt: string;
  ageMs: number | null;
}

export interface ClusterView {
  cluster: string;
  /** When the view was read (ISO). */
  readAt: string;
  /** The etcd revision the etcd part was read at (one consistent snapshot). */
  etcdRevision: number;
  leader: LeaderView | null;
  /** Leader first, then by name. */
  members: MemberView[];
  log: LogView | null;
  snapshot: SnapshotView | null;
  switchover: SwitchoverView | null;
  /** Sync replication: the sync set or the fallback the leader published (etcd `sync`); null when none. */
  sync?: SyncRecord | null;
  /** Things a reader should know: malformed keys, a leader without a member key, an unreachable stream server. */
  problems: string[];
}

/** How to reach a cluster's stores, credentials included (etcd TLS, Redis password and TLS). */
export interface ClusterStoreConnection {
  etcdEndpoints: string[];
  /** The stream server; without it the log head is estimated from the members. */
  redisUrl?: string;
  credentials?: StoreCredentials;
}

export interface ClusterStores {
  etcd: Etcd3;
  redis: Redis | undefined;
  /** Releases both clients. */
  close(): void;
}

/**
 * Store clients for reading a cluster, with its credentials. Made for tools
 * and the operator: every command answers or fails within a few seconds, and
 * a stream server that stays away is given up on after a few reconnects.
 * Throws (before connecting) when the credentials do not fit the URLs.
 */
export async function openClusterStores(conn: ClusterStoreConnection): Promise<ClusterStores> {
  const creds = conn.credentials ?? {};
  const etcdTls = etcdCredentialOptions(creds.etcdTls);
  const redisAuth = conn.redisUrl ? redisCredentialOptions(conn.redisUrl, creds) : {};
  // Loaded here so that importing this module (e.g. for `hotstandby --help`) does not load the store clients.
  const { Etcd3: Etcd } = await import('etcd3');
  const etcd = new Etcd({ hosts: conn.etcdEndpoints, dialTimeout: 3000, ...etcdTls });
  let redis: Redis | undefined;
  if (conn.redisUrl) {
    const ioredis = await import('ioredis');
    redis = new ioredis.Redis(conn.redisUrl, {
      ...redisAuth,
      lazyConnect: true,
      connectTimeout: 2000,
      commandTimeout: 3000,
      maxRetriesPerRequest: 1,
      retryStrategy: (times) => (times > 2 ? null : 200),
    });
    redis.on('error', () => undefined); // reported through the failed read
  }
  return {
    etcd,
    redis,
    close: () => {
      etcd.close();
      redis?.disconnect();
    },
  };
}

export type ReadClusterViewOptions = ReadClusterViewCommon & ({ etcd: Etcd3 } | { connection: ClusterStoreConnection });

interface ReadClusterViewCommon {
  cluster: ClusterRef;
  /** The stream server, for the log head; without it the head is estimated from the members. */
  redis?: Redis;
  /** Bound on each store read (default 5000 ms). */
  timeoutMs?: number;
  /** Clock, for ages (default Date.now). */
  now?: () => number;
}

const DEFAULT_TIMEOUT_MS = 5000;

/**
 * Reads the cluster's state, from clients the caller owns (`etcd`, `redis`)
 * or from a `connection` opened and closed for this one read. Rejects when
 * etcd cannot be read; a stream server problem only adds to `problems`.
 */
export async function readClusterView(opts: ReadClusterViewOptions): Promise<ClusterView> {
  if ('connection' in opts) {
    const { connection, ...common } = opts;
    const stores = await openClusterStores(connection);
    try {
      return await readClusterView({ ...common, etcd: stores.etcd, ...(stores.redis ? { redis: stores.redis } : {}) });
    } finally {
      stores.close();
    }
  }
  const keys = etcdKeys(opts.cluster);
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const now = opts.now ?? Date.now;
  const problems: string[] = [];
  const { etcd } = opts;

  // One transaction, so leader, members, snapshot and switchover come from
  // the same revision. The comparison is always true (a version is never -1).
  const reads = () => [
    etcd.get(keys.leader),
    etcd.getAll().prefix(keys.membersPrefix),
    etcd.get(keys.snapshot),
    etcd.get(keys.switchover),
    etcd.get(keys.sync),
  ];
  const txn = await withTimeout(
    etcd.if(keys.leader, 'Version', '>', -1).then(...reads()).else(...reads()).commit(),
    timeoutMs,
    'etcd to answer',
  );
  const ranges = txn.responses.map((r) => r.response_range);
  const [leaderRange, membersRange, snapshotRange, switchoverRange, syncRange] = ranges as Array<IRangeResponse | undefined>;
  const readAtMs = now();
  const age = (iso: string | undefined): number | null => {
    const t = iso ? Date.parse(iso) : Number.NaN;
    return Number.isNaN(t) ? null : Math.max(0, readAtMs - t);
  };

  const leaderRaw = parseJson<Partial<LeaderRecord>>(leaderRange?.kvs[0]?.value, 'leader', problems);
  let leader: LeaderView | null = null;
  if (leaderRaw && typeof leaderRaw.member === 'string') {
    leader = {
      member: leaderRaw.member,
      // The epoch is the leader key's create revision; the record's own field
      // is 0 for the moment between the election and its correction.
      epoch: Number(leaderRange?.kvs[0]?.create_revision ?? 0) || num(leaderRaw.epoch),
      address: str(leaderRaw.address),
      since: str(leaderRaw.since),
      ageMs: age(leaderRaw.since),
    };
  } else if (leaderRaw) {
    problems.push('the leader key has no member name');
  }

  const members: MemberView[] = [];
  for (const kv of membersRange?.kvs ?? []) {
    const name = kv.key.toString('utf8').slice(keys.membersPrefix.length);
    const m = parseJson<Partial<MemberStatus>>(kv.value, `members/${name}`, problems);
    if (!m) continue;
    members.push({
      member: typeof m.member === 'string' && m.member ? m.member : name,
      role: str(m.role) || 'unknown',
      address: str(m.address),
      receivedSeq: num(m.receivedSeq),
      appliedSeq: num(m.appliedSeq),
      lag: null,
      state: str(m.state) || 'unknown',
      lastHeartbeat: str(m.lastHeartbeat),
      heartbeatAgeMs: age(m.lastHeartbeat),
      version: str(m.version),
      isLeader: leader?.member === (typeof m.member === 'string' && m.member ? m.member : name),
    });
  }
  members.sort((a, b) => Number(b.isLeader) - Number(a.isLeader) || a.member.localeCompare(b.member));
  if (leader && !members.some((m) => m.isLeader)) {
    problems.push(`the leader ${leader.member} has no member key (its agent stopped heartbeating; the leader lease expires soon)`);
  }

  let log: LogView | null = null;
  if (opts.redis) {
    try {
      log = await readLogHead(opts.redis, opts.cluster, timeoutMs);
    } catch (err) {
      const where = `${opts.redis.options.host ?? '?'}:${opts.redis.options.port ?? '?'}`;
      problems.push(`cannot read the log head from the stream server at ${where}: ${(err as Error).message}`);
    }
  }
  if (!log && members.length > 0) {
    log = { headSeq: Math.max(...members.map((m) => Math.max(m.appliedSeq, m.receivedSeq))), source: 'members', fencingEpoch: null };
  }
  if (log) for (const m of members) m.lag = Math.max(0, log.headSeq - m.appliedSeq);

  const snapshot = pickSnapshot(parseJson<unknown>(snapshotRange?.kvs[0]?.value, 'snapshot', problems), age, problems);

  const so = parseJson<{ target?: unknown; requestedAt?: unknown }>(switchoverRange?.kvs[0]?.value, 'switchover', problems);
  const switchover: SwitchoverView | null =
    so && typeof so.target === 'string' ? { target: so.target, requestedAt: str(so.requestedAt), ageMs: age(str(so.requestedAt)) } : null;

  return {
    cluster: clusterId(opts.cluster),
    readAt: new Date(readAtMs).toISOString(),
    etcdRevision: Number(txn.header.revision),
    leader,
    members,
    log,
    snapshot,
    switchover,
    sync: parseSyncRecord(syncRange?.kvs[0]?.value.toString('utf8')) ?? null,
    problems,
  };
}

async function readLogHead(redis: Redis, cluster: ClusterRef, timeoutMs: number): Promise<LogView> {
  const keys = streamKeys(cluster);
  // Both keys carry the cluster's hash tag, so one MGET is fine on a sharded server too.
  const [[head, epoch], length] = await withTimeout(Promise.all([redis.mget(keys.head, keys.epoch), redis.xlen(keys.log)]), timeoutMs, 'the stream server to answer');
  return { headSeq: Number(head ?? 0) || 0, source: 'stream', fencingEpoch: epoch == null ? null : Number(epoch) || 0, length };
}

/** The snapshot key holds one descriptor or a list of the kept ones; the newest (highest seq) is shown. */
function pickSnapshot(raw: unknown, age: (iso: string | undefined) => number | null, problems: string[]): SnapshotView | null {
  if (raw == null) return null;
  let list: unknown[];
  if (Array.isArray(raw)) list = raw;
  else if (typeof raw === 'object' && Array.isArray((raw as { snapshots?: unknown }).snapshots)) list = (raw as { snapshots: unknown[] }).snapshots;
  else if (typeof raw === 'object' && Array.isArray((raw as { kept?: unknown }).kept)) list = (raw as { kept: unknown[] }).kept;
  else list = [raw];
  const descriptors = list.filter(
    (d): d is SnapshotDescriptor => typeof d === 'object' && d !== null && typeof (d as SnapshotDescriptor).seq === 'number',
  );
  if (descriptors.length === 0) {
    if (list.length > 0) problems.push('the snapshot key holds no descriptor with a sequence number');
    return null;
  }
  const newest = descriptors.reduce((a, b) => (b.seq > a.seq ? b : a));
  return {
    id: str(newest.id),
    seq: newest.seq,
    epoch: num(newest.epoch),
    sizeBytes: num(newest.sizeBytes),
    createdAt: str(newest.createdAt),
    ageMs: age(newest.createdAt),
    kept: descriptors.length,
  };
}

function parseJson<T>(value: Buffer | undefined, what: string, problems: string[]): T | undefined {
  if (!value) return undefined;
  try {
    const parsed = JSON.parse(value.toString('utf8')) as unknown;
    if (parsed === null || typeof parsed !== 'object') throw new Error('not an object');
    return parsed as T;
  } catch {
    problems.push(`the ${what} key does not hold a JSON object: ${JSON.stringify(value.toString('utf8').slice(0, 80))}`);
    return undefined;
  }
}

function num(v: unknown): number {
  return typeof v === 'number' && Number.isFinite(v) ? v : 0;
}

function str(v: unknown): string {
  return typeof v === 'string' ? v : '';
}

/**
 * Parses the --etcd flag: comma-separated http(s)://host:port endpoints.
 * Throws naming the flag and the expected shape.
 */
export function parseEtcdEndpoints(value: string | undefined, flag = '--etcd'): string[] {
  if (!value || !value.trim()) throw new Error(`${flag} is required: the etcd endpoints, e.g. ${flag} http://127.0.0.1:2379`);
  const endpoints = value.split(',').map((s) => s.trim()).filter(Boolean);
  for (const endpoint of endpoints) {
    if (!/^https?:\/\/[^/\s:]+:\d{1,5}\/?$/.test(endpoint)) {
      throw new Error(`${flag}: each endpoint must look like http://host:port, got ${JSON.stringify(endpoint)}`);
    }
  }
  if (endpoints.length === 0) throw new Error(`${flag} is required: the etcd endpoints, e.g. ${flag} http://127.0.0.1:2379`);
  return endpoints;
}

// The key layout in etcd and in the stream server, in one place. The agent
// writes these keys and the operator reads them, so neither may spell a key
// by hand. See docs/DESIGN-notes or ../shared/DESIGN.md "Key layout".

export interface ClusterRef {
  namespace: string;
  name: string;
}

/** "namespace/name", the cluster's identity in logs and keys. */
export function clusterId(ref: ClusterRef): string {
  return `${ref.namespace}/${ref.name}`;
}

/** Parses "namespace/name"; throws naming the expected shape. */
export function parseClusterId(id: string): ClusterRef {
  const parts = id.split('/');
  if (parts.length !== 2 || !parts[0] || !parts[1]) {
    throw new Error(`cluster must be "namespace/name", got ${JSON.stringify(id)}`);
  }
  return { namespace: parts[0], name: parts[1] };
}

export interface EtcdKeys {
  prefix: string;
  leader: string;
  membersPrefix: string;
  member(pod: string): string;
  deletesPrefix: string;
  metaPrefix: string;
  meta(key: string): string;
  snapshot: string;
  switchover: string;
  /** Sync replication: who holds every acknowledged entry (src/agent/sync-record.ts); no lease. */
  sync: string;
}

export function etcdKeys(ref: ClusterRef): EtcdKeys {
  const prefix = `/hotstandby/${ref.namespace}/${ref.name}/`;
  return {
    prefix,
    leader: `${prefix}leader`,
    membersPrefix: `${prefix}members/`,
    member: (pod) => `${prefix}members/${pod}`,
    deletesPrefix: `${prefix}deletes/`,
    metaPrefix: `${prefix}meta/`,
    meta: (key) => `${prefix}meta/${key}`,
    snapshot: `${prefix}snapshot`,
    switchover: `${prefix}switchover`,
    sync: `${prefix}sync`,
  };
}

export interface StreamKeys {
  /** The hash tag, so every key of one cluster lands on one shard. */
  tag: string;
  log: string;
  epoch: string;
  /** Highest sequence number ever assigned (survives trimming of the stream). */
  head: string;
  /** Hash epoch → the head when that epoch was raised: where its entries start. */
  epochStarts: string;
  /** Short-lived record of an append batch by id, for resolving an ambiguous append. */
  batch(id: string): string;
  /** Short-lived list holding a large append's entries until one script appends them. */
  batchStage(id: string): string;
  /** Pub/sub channel where standbys acknowledge what they received (sync replication). */
  acks: string;
  snapshotChunk(id: string, chunk: number): string;
  snapshotChunkPrefix(id: string): string;
}

export function streamKeys(ref: ClusterRef): StreamKeys {
  const tag = `{${ref.namespace}/${ref.name}}`;
  return {
    tag,
    log: `hs:${tag}:log`,
    epoch: `hs:${tag}:epoch`,
    head: `hs:${tag}:head`,
    epochStarts: `hs:${tag}:epochs`,
    batch: (id) => `hs:${tag}:batch:${id}`,
    batchStage: (id) => `hs:${tag}:stage:${id}`,
    acks: `hs:${tag}:acks`,
    snapshotChunk: (id, chunk) => `hs:${tag}:snap:${id}:${chunk}`,
    snapshotChunkPrefix: (id) => `hs:${tag}:snap:${id}:`,
  };
}

// Synchronous replication, the pure parts: the settings, the `sync` record the
// leader publishes in etcd, the rule it imposes on candidates, the wire format
// of a standby's acknowledgement, and what an acknowledgement proves.
//
// The guarantee (docs/replication.md): in sync mode a write is acknowledged
// only after every member of the published sync set has received it, and only
// members of that set may campaign. So whoever wins holds every acknowledged
// entry, even if the leader and the stream server are lost together.
//
// Why a published set (as Patroni's synchronous_mode does) rather than a
// per-batch high-water mark in etcd: an etcd write per batch would cost more
// than the whole append at 10k writes/s. The set changes rarely; the
// acknowledgements that move per batch go through the stream server's pub/sub
// (sync-acks.ts), where they cost one PUBLISH.

export const REPLICATION_MODES = ['async', 'sync'] as const;
export type ReplicationMode = (typeof REPLICATION_MODES)[number];
/** fail: the write fails with 503 sync_timeout. async: it is acknowledged and the cluster runs degraded to async. */
export const SYNC_TIMEOUT_ACTIONS = ['fail', 'async'] as const;
export type SyncTimeoutAction = (typeof SYNC_TIMEOUT_ACTIONS)[number];

/**
 * etcd `sync` (no lease: it must outlive the leader that wrote it, or the
 * candidates would lose the rule exactly when they need it). Written only by
 * the leader, in a transaction that requires its leader key.
 */
export interface SyncRecord {
  /** The writer's epoch. */
  epoch: number;
  leader: string;
  /**
   * sync: every member in `members` holds every acknowledged entry; only they
   * may campaign. degraded: writes were acknowledged without the standbys
   * (fallback after syncTimeoutMs); the async candidacy rule applies.
   */
  mode: 'sync' | 'degraded';
  members: string[];
  /** ISO time of this record. */
  since: string;
  /** Why the record says degraded. */
  reason?: string;
}

export function parseSyncRecord(raw: string | null | undefined): SyncRecord | undefined {
  if (!raw) return undefined;
  try {
    const r = JSON.parse(raw) as Partial<SyncRecord>;
    if ((r.mode !== 'sync' && r.mode !== 'degraded') || !Array.isArray(r.members) || typeof r.epoch !== 'number') return undefined;
    return { epoch: r.epoch, leader: String(r.leader ?? ''), mode: r.mode, members: r.members.map(String), since: String(r.since ?? ''), ...(r.reason ? { reason: String(r.reason) } : {}) };
  } catch {
    return undefined;
  }
}

export type SyncCandidacy =
  /** No restriction: no record, or degraded; the async rule (lag) decides. */
  | { restricted: false }
  /** Only the record's members may campaign; lag does not matter for them (they hold every acknowledged entry). */
  | { restricted: true; eligible: boolean; members: string[]; reason: string };

/**
 * Who may campaign under a sync record. A member outside the set may have
 * missed acknowledged entries, so it must not lead even if the set's members
 * are all gone: the cluster then waits for one of them (as Patroni does) rather
 * than lose acknowledged writes.
 */
export function syncCandidacy(record: SyncRecord | undefined, self: string): SyncCandidacy {
  if (!record || record.mode !== 'sync') return { restricted: false };
  const members = record.members.filter((m) => m !== record.leader);
  if (members.includes(self)) return { restricted: true, eligible: true, members, reason: `in the sync set [${members.join(', ')}]` };
  return {
    restricted: true,
    eligible: false,
    members,
    reason: `not in the sync set [${members.join(', ')}] published by epoch ${record.epoch}: may lack acknowledged entries`,
  };
}

/** A standby's acknowledgement: it holds every entry up to `seq`, the last of which has `epoch`. */
export interface SyncAck {
  member: string;
  epoch: number;
  seq: number;
}

export function formatAck(ack: SyncAck): string {
  return `${ack.member} ${ack.epoch} ${ack.seq}`;
}

export function parseAck(message: string): SyncAck | undefined {
  const parts = message.split(' ');
  if (parts.length !== 3 || !parts[0]) return undefined;
  const epoch = Number(parts[1]);
  const seq = Number(parts[2]);
  if (!Number.isSafeInteger(epoch) || !Number.isSafeInteger(seq) || epoch < 0 || seq < 0) return undefined;
  return { member: parts[0], epoch, seq };
}

/**
 * Up to which sequence an acknowledgement proves the standby holds the
 * leader's history. The leader of `epoch` wrote every entry of its epoch, so an
 * ack whose last entry has that epoch proves everything up to its seq. An ack
 * of an older epoch proves the history only up to where this epoch started
 * (`startHead`): an older-epoch entry beyond it belongs to a history this
 * leader did not continue (entries lost with a wiped stream server), so it
 * proves nothing beyond what was common.
 */
export function ackCovers(ack: Pick<SyncAck, 'epoch' | 'seq'>, leaderEpoch: number, startHead: number): number {
  if (ack.epoch === leaderEpoch) return ack.seq;
  if (ack.epoch < leaderEpoch && ack.seq <= startHead) return ack.seq;
  return 0;
}

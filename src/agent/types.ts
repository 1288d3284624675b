// Types shared by the agent's modules and its local API. Each module (election,
// registry, oplog, snapshots, deletes, metadata, localapi) owns its behaviour;
// this file only fixes the shapes they exchange.

/** One operation a master asks the leader's agent to log. */
export interface OpInput {
  /** The master's operation name, e.g. "put" or "delete". 1-64 chars. */
  op: string;
  /** The object the operation concerns. At most 1024 chars; may be empty. */
  key: string;
  /** Opaque to the agent (JSON, base64, ...). UTF-8 string. */
  payload: string;
}

/** An entry as stored in the stream and handed to standbys. */
export interface OpEntry extends OpInput {
  /** Consecutive from 1 across the cluster's life; never reused. */
  seq: number;
  /** The writer's epoch (fencing token) when it was appended. */
  epoch: number;
  /** CRC-32C of `${op}\n${key}\n${payload}` (see entryChecksum). */
  crc: number;
}

/** Published in etcd under `leader`, with the leader's lease. */
export interface LeaderRecord {
  member: string;
  /** = create revision of the leader key; strictly increasing across leaders. */
  epoch: number;
  /** Where clients reach the leader's master (host:port). */
  address: string;
  /** ISO time the member became leader. */
  since: string;
}

export type AgentRole =
  | 'starting' // connecting to the stores, registering
  | 'standby' // following the leader's log
  | 'candidate' // leader key absent; campaigning (or waiting for its turn)
  | 'promoting' // won the election; epoch raised; master must apply up to headSeq
  | 'leader' // writable
  | 'stopping'; // shutting down; resigning if it led

/** Published in etcd under `members/<pod>`, with the member's own lease. */
export interface MemberStatus {
  member: string;
  role: AgentRole;
  address: string;
  /** Highest sequence the agent has handed to its master. */
  receivedSeq: number;
  /** Highest sequence the master has acknowledged as applied. */
  appliedSeq: number;
  /** "ok", or a short word for trouble: "resyncing", "store-unreachable", ... */
  state: string;
  /** ISO time of the last update (at least once a second). */
  lastHeartbeat: string;
  /** Agent version. */
  version: string;
}

/** Descriptor of a stored snapshot (etcd `snapshot` key holds the kept ones). */
export interface SnapshotDescriptor {
  id: string;
  /** The state includes every entry up to and including this sequence. */
  seq: number;
  epoch: number;
  chunks: number;
  sizeBytes: number;
  crc: number;
  createdAt: string;
}

/** What the local API's GET /v1/role returns. */
export interface RoleStatus {
  /** Bumped on every change of role, epoch, leader, or snapshotWanted. */
  version: number;
  member: string;
  role: AgentRole;
  /** True only when role is "leader": the master may accept writes. */
  writable: boolean;
  /** The epoch of the current leader (ours when leading); 0 when unknown. */
  epoch: number;
  leader: { member: string; address: string; epoch: number } | null;
  headSeq: number;
  receivedSeq: number;
  appliedSeq: number;
  /** Set on the leader when the agent wants the master to PUT a snapshot. */
  snapshotWanted: { reason: string; minSeq: number } | null;
}

/** An append was refused because a newer epoch exists: this writer is deposed. */
export class FencedError extends Error {
  readonly writerEpoch: number;
  readonly currentEpoch: number;
  constructor(writerEpoch: number, currentEpoch: number) {
    super(`append refused: writer epoch ${writerEpoch} is stale, current epoch is ${currentEpoch}`);
    this.name = 'FencedError';
    this.writerEpoch = writerEpoch;
    this.currentEpoch = currentEpoch;
  }
}

/** A write was sent to a member that does not lead. */
export class NotLeaderError extends Error {
  readonly leader: LeaderRecord | undefined;
  constructor(leader: LeaderRecord | undefined) {
    super(leader ? `not the leader; the leader is ${leader.member} at ${leader.address}` : 'not the leader; no leader is known right now');
    this.name = 'NotLeaderError';
    this.leader = leader;
  }
}

/** The text whose CRC-32C an entry carries. */
export function entryChecksumInput(e: OpInput): string {
  return `${e.op}\n${e.key}\n${e.payload}`;
}

// What the local API's HTTP layer needs from the agent. The HTTP layer only
// parses, validates, maps errors and streams; every decision (who leads, what
// the head is, whether an append is fenced) belongs to the implementation
// (class Agent in src/agent/agent.ts). Shapes follow docs/local-api.md.
import type { OpInput, RoleStatus, SnapshotDescriptor } from '../types.ts';

/** One line of GET /v1/log/stream. */
export type StreamLine =
  | { type: 'entry'; seq: number; epoch: number; op: string; key: string; payload: string }
  | { type: 'heartbeat'; headSeq: number }
  | {
      type: 'resync';
      reason: 'gap' | 'duplicate' | 'crc' | 'reset' | 'trimmed';
      snapshot: { id: string; seq: number } | null;
    };

/** One line of GET /v1/deletes. */
export type DeleteLine =
  | { type: 'delete'; revision: number; key: string; payload: string; time: string }
  | { type: 'heartbeat'; revision: number }
  | { type: 'compacted'; compactRevision: number };

export interface MetaValue {
  key: string;
  value: string;
  modRevision: number;
  version: number;
}

/** ok=false: the compare-and-set lost; currentModRevision 0 = the key is absent. */
export type MetaPutOutcome = { ok: true; modRevision: number } | { ok: false; currentModRevision: number };
/** { conflict } carries the current mod revision (0 = absent). */
export type MetaDeleteOutcome = 'deleted' | 'absent' | { conflict: number };

export interface LocalApiBackend {
  readonly member: string;
  /**
   * A request from the master begins (every route but /v1/health, which
   * probes call). `instance` is its X-Master-Instance header. Returns the
   * function the server calls once when the request ends (answered, or the
   * connection closed), with droppedPoll true for a role long-poll the master
   * closed before it was answered. Throws SupersededError for a replaced instance.
   */
  masterRequest(instance: string | undefined): (droppedPoll?: boolean) => void;
  status(): RoleStatus;
  /** Resolves with the status once its version differs from afterVersion, or at timeoutMs with the current one. */
  waitForStatusChange(afterVersion: number, timeoutMs: number, signal: AbortSignal): Promise<RoleStatus>;
  /** Throws NotLeaderError, FencedError (types.ts) or StoreUnavailableError; all or nothing. */
  append(entries: OpInput[]): Promise<{ epoch: number; firstSeq: number; lastSeq: number }>;
  /** Ends (returns) after a resync line or when the signal aborts. */
  streamEntries(fromSeq: number, signal: AbortSignal): AsyncIterable<StreamLine>;
  /** Throws BadRequestError('seq') when seq is above the head. */
  ackApplied(seq: number): void;
  /** Throws NotLeaderError on a member that does not lead; BadRequestError('seq') above the head. */
  putSnapshot(seq: number, data: Buffer): Promise<SnapshotDescriptor>;
  getSnapshot(): Promise<{ descriptor: SnapshotDescriptor; data: Buffer } | undefined>;
  publishDelete(key: string, payload: string): Promise<{ revision: number }>;
  /** fromRevision undefined = only events published from now on. */
  subscribeDeletes(fromRevision: number | undefined, signal: AbortSignal): AsyncIterable<DeleteLine>;
  metaGet(key: string): Promise<MetaValue | undefined>;
  /** expectedModRevision undefined = unconditional; 0 = only if absent. */
  metaPut(key: string, value: string, expectedModRevision?: number): Promise<MetaPutOutcome>;
  metaDelete(key: string, expectedModRevision?: number): Promise<MetaDeleteOutcome>;
  health(): Promise<{ etcd: 'ok' | 'down'; stream: 'ok' | 'down' }>;
}

/** etcd or the stream server cannot be reached; the caller may retry. Maps to 503. */
export class StoreUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StoreUnavailableError';
  }
}

/** A request the backend refuses on its content; `field` names what to fix. Nothing was changed. Maps to 400. */
export class BadRequestError extends Error {
  readonly field: string;
  constructor(field: string, message: string) {
    super(message);
    this.name = 'BadRequestError';
    this.field = field;
  }
}

// The operation log's read side: a standby follows the stream from the entry
// after the one its master applied last, with XREAD BLOCK on a connection of
// its own (a blocking read ties up its connection).
//
// Nothing wrong is ever handed on. Each entry is checked before it is
// returned: its ID must be exactly the next sequence (else a gap, a duplicate,
// or entries trimmed away), its crc32c must match, and where the epoch changes
// the new epoch must start exactly after the previous entry (else the stream
// was reset and rebuilt with a different history). On any of these the tailer
// answers `resync` and the master reloads from the latest snapshot.
import type { RespClient } from '../lib/resp/client.ts';
import { crc32c } from '../lib/crc32c.ts';
import type { StreamKeys } from '../lib/keys.ts';
import type { Logger } from '../lib/log.ts';
import { entryChecksumInput, type OpEntry } from './types.ts';
import { seqOfId } from './oplog.ts';

export type ResyncReason = 'gap' | 'duplicate' | 'crc' | 'reset' | 'trimmed';

export type TailEvent =
  | { type: 'entries'; entries: OpEntry[] }
  /** exact: headSeq is the stream's head as read just now (else a stand-in while the stream has no epoch). */
  | { type: 'idle'; headSeq: number; exact: boolean }
  | { type: 'resync'; reason: ResyncReason; detail: string };

export interface OpLogTailerOptions {
  redis: RespClient;
  keys: StreamKeys;
  /** The first sequence wanted (the master's applied sequence + 1). */
  fromSeq: number;
  log: Logger;
  /** How long one XREAD blocks before reporting idle (a heartbeat). */
  blockMs?: number;
  /** Entries fetched per read at most. */
  batchSize?: number;
}

type StreamReply = Array<[string, Array<[string, string[]]>]> | null;

export class OpLogTailer {
  private readonly conn: RespClient;
  private readonly keys: StreamKeys;
  private readonly log: Logger;
  private readonly blockMs: number;
  private readonly batchSize: number;
  /** The next sequence this tailer must hand on. */
  private expectedSeq: number;
  /** Epoch of the last entry handed on; 0 before the first one. */
  private lastEpoch = 0;
  private closed = false;
  /** A fault found after good entries: those go first, the resync on the next call. */
  private pendingResync: TailEvent | undefined;

  constructor(opts: OpLogTailerOptions) {
    if (!Number.isSafeInteger(opts.fromSeq) || opts.fromSeq < 1) throw new Error(`fromSeq must be an integer >= 1, got ${opts.fromSeq}`);
    // A connection of its own: XREAD BLOCK holds it for up to blockMs. It speaks RESP2
    // (the client never sends HELLO 3): under RESP3 Dragonfly answers an XREAD BLOCK that a
    // write woke with RESP2's array of [key, entries] instead of the map it sends otherwise.
    this.conn = opts.redis.duplicate();
    this.conn.on('error', (err: Error) => opts.log.debug({ err: err.message }, 'tailer connection error'));
    this.keys = opts.keys;
    this.log = opts.log;
    this.expectedSeq = opts.fromSeq;
    this.blockMs = opts.blockMs ?? 500;
    this.batchSize = opts.batchSize ?? 1000;
  }

  /**
   * Waits up to blockMs for entries after the last one handed on. Aborting the
   * signal ends a blocked read at once (the connection is dropped) and rejects.
   */
  async next(signal: AbortSignal): Promise<TailEvent> {
    if (this.closed) throw new Error('tailer is closed');
    signal.throwIfAborted();
    if (this.pendingResync) return this.pendingResync;
    const onAbort = (): void => this.conn.disconnect();
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      const reply = (await this.conn.xread(
        'COUNT',
        this.batchSize,
        'BLOCK',
        this.blockMs,
        'STREAMS',
        this.keys.log,
        `${this.expectedSeq - 1}-0`,
      )) as StreamReply;
      signal.throwIfAborted();
      const items = reply?.[0]?.[1] ?? [];
      if (items.length === 0) return await this.idle();
      return await this.check(items);
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
  }

  private async idle(): Promise<TailEvent> {
    // Head and epoch in one read (MGET is atomic): read apart, a new leader's
    // raise could fall between them (head 0 from before it, epoch from after)
    // and look like a reset.
    const [head, epoch] = await this.conn.mget(this.keys.head, this.keys.epoch);
    const headSeq = Number(head ?? 0);
    if (headSeq < this.expectedSeq - 1) {
      // No epoch at all: the server restarted empty and no leader has raised
      // one since. Wait for that leader instead of resyncing now: this master's
      // state may be the only copy of acknowledged entries (sync replication),
      // and the new leader's head decides whether it still follows on.
      if (epoch === null) return { type: 'idle', headSeq: this.expectedSeq - 1, exact: false };
      return this.resync('reset', `the stream's head is ${headSeq}, below the ${this.expectedSeq - 1} entries already applied`);
    }
    return { type: 'idle', headSeq, exact: true };
  }

  /** The good entries before the first fault; the fault is answered on the next call. */
  private async check(items: Array<[string, string[]]>): Promise<TailEvent> {
    const entries: OpEntry[] = [];
    const fault = await this.collect(items, entries);
    if (!fault) return { type: 'entries', entries };
    if (entries.length === 0) return fault;
    this.pendingResync = fault;
    return { type: 'entries', entries };
  }

  private async collect(items: Array<[string, string[]]>, entries: OpEntry[]): Promise<TailEvent | undefined> {
    for (const [id, fields] of items) {
      const seq = seqOfId(id);
      if (!id.endsWith('-0') || seq < this.expectedSeq) {
        return this.resync('duplicate', `entry ${id} where seq ${this.expectedSeq} was expected`);
      }
      if (seq > this.expectedSeq) {
        const first = await this.conn.xrange(this.keys.log, '-', '+', 'COUNT', 1);
        const firstSeq = first[0] ? seqOfId(first[0][0]) : seq;
        return firstSeq > this.expectedSeq
          ? this.resync('trimmed', `seq ${this.expectedSeq} was trimmed; the stream now starts at ${firstSeq}`)
          : this.resync('gap', `seq ${this.expectedSeq} is missing; the next entry is ${seq}`);
      }
      const entry = parseEntry(seq, fields);
      if (!entry || crc32c(entryChecksumInput(entry)) !== entry.crc) {
        return this.resync('crc', `entry ${seq} fails its crc32c check`);
      }
      if (entry.epoch !== this.lastEpoch) {
        const broken = await this.epochBreak(entry);
        if (broken) return this.resync('reset', broken);
      }
      entries.push(entry);
      this.lastEpoch = entry.epoch;
      this.expectedSeq = seq + 1;
    }
    return undefined;
  }

  /** Why an entry with a new epoch cannot follow the history handed on so far; undefined when it can. */
  private async epochBreak(entry: OpEntry): Promise<string | undefined> {
    if (entry.epoch < this.lastEpoch) return `entry ${entry.seq} has epoch ${entry.epoch}, older than the ${this.lastEpoch} before it`;
    const raw = await this.conn.hget(this.keys.epochStarts, String(entry.epoch));
    if (raw === null) return `epoch ${entry.epoch} of entry ${entry.seq} was never raised on this server (it lost data)`;
    const start = Number(raw);
    // The new epoch's first entry is start + 1. Having handed on entries of an
    // older epoch right up to seq - 1, this entry must be that first entry.
    if (this.lastEpoch > 0 ? start !== entry.seq - 1 : start > entry.seq - 1) {
      return `epoch ${entry.epoch} starts after seq ${start}, but entry ${entry.seq} follows ${this.lastEpoch > 0 ? `epoch ${this.lastEpoch}` : 'the snapshot'}: a different history`;
    }
    return undefined;
  }

  private resync(reason: ResyncReason, detail: string): TailEvent {
    this.log.warn({ reason, detail, expectedSeq: this.expectedSeq }, 'the log cannot be followed from here');
    return { type: 'resync', reason, detail };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.conn.disconnect();
  }
}

/** Entry fields as the append script writes them: e, o, k, p, c. */
function parseEntry(seq: number, f: string[]): OpEntry | undefined {
  if (f.length !== 10 || f[0] !== 'e' || f[2] !== 'o' || f[4] !== 'k' || f[6] !== 'p' || f[8] !== 'c') return undefined;
  const epoch = Number(f[1]);
  const crc = Number(f[9]);
  if (!Number.isSafeInteger(epoch) || !Number.isSafeInteger(crc)) return undefined;
  return { seq, epoch, op: f[3]!, key: f[5]!, payload: f[7]!, crc };
}

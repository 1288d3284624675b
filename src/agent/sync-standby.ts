// A standby's part in sync replication: it keeps the entries it received
// and its master has not yet applied, and acknowledges what it holds to the
// leader.
//
// "Received" means held by this member, not merely present in the stream
// server: the guarantee must survive the stream server coming back empty. The
// master holds what it applied (its acknowledged applied sequence); this buffer
// holds the rest, from there to the last entry read. A new leader re-appends
// from it whatever the stream server lost (Agent.promote). The buffer is
// bounded: past BUFFER_MAX_ENTRIES it stops growing and the acknowledgement
// stops advancing until the master applies, which holds sync writes back
// rather than acknowledge what this member would not hold.
//
// Why pub/sub for the acknowledgement: the leader waits on it for every batch.
// A member key in etcd is written at most every 100 ms and costs a Raft round;
// a PUBLISH on the stream server this member already reads from is one round
// trip (~0.1 ms on loopback) and reaches the leader's subscription at once. It
// needs no durability: each ack is cumulative, a missed one is carried by the
// next, and an idle standby repeats its position every heartbeat.
import type { RespClient } from '../lib/resp/client.ts';
import type { Logger } from '../lib/log.ts';
import type { OpEntry } from './types.ts';
import { formatAck } from './sync-record.ts';

export const BUFFER_MAX_ENTRIES = 200_000;

/**
 * Entries received and not yet applied by the master, consecutive. Together
 * with the master's applied state they cover every entry up to heldThrough():
 * the buffer must start at most one past what the master acknowledged as
 * applied, or there is a hole (a full buffer, a snapshot not yet acknowledged)
 * and nothing is claimed.
 */
export class ReceivedBuffer {
  private entries: OpEntry[] = [];
  private readonly max: number;
  /** The master's acknowledged applied sequence. */
  private appliedSeq = 0;
  get masterApplied(): number {
    return this.appliedSeq;
  }
  constructor(max = BUFFER_MAX_ENTRIES) {
    this.max = max;
  }

  /** Adds entries; a jump (the master restored a snapshot) starts over. Returns false when full (the rest is not held). */
  add(batch: readonly OpEntry[]): boolean {
    for (const e of batch) {
      if (e.seq <= this.appliedSeq) continue;
      const last = this.entries.at(-1);
      if (last && e.seq <= last.seq) continue; // read again by a second stream (the master filling a gap)
      if (last && e.seq !== last.seq + 1) this.entries = [];
      if (this.entries.length >= this.max) return false;
      this.entries.push(e);
    }
    return true;
  }

  /** The master applied up to seq: it holds those now. */
  applied(seq: number): void {
    this.appliedSeq = seq;
    let drop = 0;
    while (drop < this.entries.length && this.entries[drop]!.seq <= seq) drop++;
    if (drop > 0) this.entries = this.entries.slice(drop);
  }

  /** A new master instance or a resync: what the master holds is unknown until it acknowledges again. */
  clear(): void {
    this.entries = [];
    this.appliedSeq = 0;
  }

  /** The last entry of an unbroken run from the master's applied state; undefined when there is a hole or nothing. */
  heldThrough(): OpEntry | undefined {
    const first = this.entries[0];
    if (!first || first.seq > this.appliedSeq + 1) return undefined;
    return this.entries.at(-1);
  }

  /** Entries after `seq` if the buffer holds them from seq + 1 on without a gap; undefined otherwise. */
  after(seq: number): OpEntry[] | undefined {
    const out = this.entries.filter((e) => e.seq > seq);
    if (out.length === 0) return [];
    return out[0]!.seq === seq + 1 ? out : undefined;
  }

  get size(): number {
    return this.entries.length;
  }
}

export interface SyncStandbyOptions {
  redis: RespClient;
  channel: string;
  member: string;
  log: Logger;
}

/** Buffers received entries and publishes the acknowledgement. */
export class SyncStandby {
  readonly buffer = new ReceivedBuffer();
  private readonly opts: SyncStandbyOptions;
  /** The last position published. */
  private position: { epoch: number; seq: number } | undefined;
  private full = false;

  constructor(opts: SyncStandbyOptions) {
    this.opts = opts;
  }

  /** Entries read from the stream, before they are handed to the master. */
  received(entries: readonly OpEntry[]): void {
    const accepted = this.buffer.add(entries);
    if (!accepted && !this.full) this.opts.log.warn({ held: this.buffer.size }, 'sync replication: the master lags so far that the received buffer is full; acknowledgements wait for it');
    this.full = !accepted;
    this.publishHeld();
  }

  /** The master acknowledged it applied up to seq. */
  applied(seq: number): void {
    this.buffer.applied(seq);
    this.publishHeld();
  }

  /** Repeats the position on an idle stream, for a leader that subscribed since. */
  heartbeat(): void {
    if (this.position) this.publish(this.position);
    // Nothing received since the master last (re)started: it holds what it
    // applied, of an older epoch as far as we know (epoch 0 proves only up to
    // where the leader's epoch started; see ackCovers).
    else if (this.buffer.size === 0) this.publish({ epoch: 0, seq: this.buffer.masterApplied });
  }

  /** The master resyncs or was replaced: nothing is claimed until it acknowledges again. */
  reset(): void {
    this.buffer.clear();
    this.position = undefined;
    // Tell the leader at once that this member no longer proves anything, so it leaves the sync set.
    this.publish({ epoch: 0, seq: 0 });
    this.position = undefined;
  }

  private publishHeld(): void {
    const held = this.buffer.heldThrough();
    if (held && (!this.position || held.seq !== this.position.seq || held.epoch !== this.position.epoch)) this.publish({ epoch: held.epoch, seq: held.seq });
  }

  /**
   * Sent at once, never held back behind the previous reply: one connection
   * keeps them in order (commands are written in order), so the leader sees positions
   * only move forward, and a slow reply does not delay the next ack.
   */
  private publish(position: { epoch: number; seq: number }): void {
    this.position = position;
    this.opts.redis
      .publish(this.opts.channel, formatAck({ member: this.opts.member, ...position }))
      .catch((err: Error) => this.opts.log.debug({ err: err.message }, 'sync ack publish failed; the next one carries it'));
  }

}

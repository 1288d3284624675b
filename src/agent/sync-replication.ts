// The leader's part in sync replication: it listens to the standbys'
// acknowledgements, keeps a sync set of minSyncStandbys standbys published in
// etcd (`sync`, sync-record.ts), and holds every write until each member of
// the published set has acknowledged it.
//
// The invariant: every member of the set published in etcd holds every
// acknowledged entry. Candidates obey the set (only its members campaign), so
// whoever wins holds every acknowledged entry. It is kept by:
// - acknowledging a write only when every member of the published set (of
//   this epoch) covers it (ackCovers);
// - publishing a new set only when each of its members already covers the
//   head as it was when the change began and every write acknowledged since
//   (highestAcked): a member joins only once it holds all that was acknowledged;
// - after a failover the set of the old epoch stays in etcd until the new
//   leader replaces it, and the new leader acknowledges nothing before it has
//   published a set of its own (or fallen back, see below);
// - in fallback mode (onSyncTimeout async) a write that waited syncTimeoutMs is
//   acknowledged only after the record says `degraded` in etcd: from then on
//   candidates use the async rule, which is exactly the weaker promise the user
//   chose. While degraded, writes wait for a set being formed (the way back to
//   sync); a write that times out there aborts the attempt.
// Every wait is bounded by syncTimeoutMs; every timer is cleared on stop().
import type { EtcdHttpClient } from '../lib/etcd-http/client.ts';
import type { RespClient } from '../lib/resp/client.ts';
import type { EtcdKeys } from '../lib/keys.ts';
import type { Logger } from '../lib/log.ts';
import { MASTER_DOWN_STATE } from './candidacy.ts';
import type { MemberStatus } from './types.ts';
import { subscribeToChannel, type ChannelSubscriber } from './channel-subscriber.ts';
import { ackCovers, parseAck, parseSyncRecord, type SyncAck, type SyncRecord, type SyncTimeoutAction } from './sync-record.ts';

/** A write that waited syncTimeoutMs for the sync standbys in strict mode. Maps to 503 sync_timeout. */
export class SyncTimeoutError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SyncTimeoutError';
  }
}

const MAINTAIN_EVERY_MS = 50;
const ETCD_CALL_TIMEOUT_MS = 2000;

export interface SyncReplicatorOptions {
  etcd: EtcdHttpClient;
  /** Duplicated for the subscription (a subscribed connection takes no other command). */
  redis: RespClient;
  keys: EtcdKeys;
  channel: string;
  member: string;
  epoch: number;
  /** The head when this epoch was raised: where its entries start. */
  startHead: number;
  minSyncStandbys: number;
  syncTimeoutMs: number;
  onSyncTimeout: SyncTimeoutAction;
  /** Live members (the registry); their leases prove they are alive. */
  members: () => readonly MemberStatus[];
  /** The highest sequence appended so far. */
  headSeq: () => number;
  log: Logger;
  /** Told when the published record changes (for the operator's condition it is in etcd; this is for logs and tests). */
  onRecord?: (record: SyncRecord) => void;
}

interface Waiter {
  lastSeq: number;
  resolve: () => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

export class SyncReplicator {
  private readonly opts: SyncReplicatorOptions;
  private readonly log: Logger;
  private sub: ChannelSubscriber | undefined;
  private readonly acks = new Map<string, SyncAck & { at: number }>();
  /** The record in etcd as this leader knows it; one of an older epoch until it publishes its own. */
  private published: SyncRecord | undefined;
  private forming: { members: string[]; target: number; abort: boolean; publishing: boolean } | undefined;
  /** Publications in order: what etcd holds last is what this leader believes last. */
  private publishChain: Promise<unknown> = Promise.resolve();
  private readonly waiters = new Set<Waiter>();
  private highestAcked = 0;
  private degrading: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private formCooldownUntil = 0;
  /** Members whose position moved back since they last held everything acknowledged. */
  private readonly regressed = new Set<string>();

  constructor(opts: SyncReplicatorOptions) {
    this.opts = opts;
    this.log = opts.log.child({ component: 'sync-replication' });
    this.highestAcked = opts.startHead;
  }

  async start(): Promise<void> {
    const sub = await subscribeToChannel({
      redis: this.opts.redis,
      channel: this.opts.channel,
      onMessage: (message) => this.onAck(message),
      timeoutMs: ETCD_CALL_TIMEOUT_MS,
      log: this.log,
    });
    this.sub = sub;
    if (this.stopped) {
      // stop() ran while we were subscribing: it could not close what did not exist yet.
      sub.close();
      return;
    }
    const raw = await this.opts.etcd.getString(this.opts.keys.sync, ETCD_CALL_TIMEOUT_MS);
    this.published = parseSyncRecord(raw);
    if (this.stopped) return; // stopped during the read: no timer to leak
    this.timer = setInterval(() => this.maintain(), MAINTAIN_EVERY_MS);
    this.log.info({ inherited: this.published ?? null, minSyncStandbys: this.opts.minSyncStandbys }, 'sync replication: waiting for standbys to acknowledge');
  }

  stop(reason: Error): void {
    if (this.stopped) return;
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    if (this.forming) this.forming.abort = true;
    for (const w of this.waiters) {
      clearTimeout(w.timer);
      w.reject(reason);
    }
    this.waiters.clear();
    this.sub?.close();
  }

  /** The current record, for status and tests. */
  record(): SyncRecord | undefined {
    return this.published;
  }

  private ours(): SyncRecord | undefined {
    return this.published?.epoch === this.opts.epoch ? this.published : undefined;
  }

  private covered(member: string): number {
    const ack = this.acks.get(member);
    return ack ? ackCovers(ack, this.opts.epoch, this.opts.startHead) : 0;
  }

  /** Up to where every member of our published sync set holds the log; -1 when no set of ours is published. */
  private syncedThrough(): number {
    const rec = this.ours();
    if (!rec || rec.mode !== 'sync' || rec.members.length < this.opts.minSyncStandbys) return -1;
    let through = Number.MAX_SAFE_INTEGER;
    for (const m of rec.members) through = Math.min(through, this.covered(m));
    return through;
  }

  /**
   * Resolves when the write ending at lastSeq may be acknowledged; rejects
   * with SyncTimeoutError after syncTimeoutMs in strict mode. In fallback mode
   * it resolves after the timeout too, once `degraded` is in etcd.
   */
  awaitReplicated(lastSeq: number): Promise<void> {
    if (this.stopped) return Promise.reject(new Error('not leading'));
    if (this.ours()?.mode === 'degraded' && !this.forming) {
      this.acked(lastSeq);
      return Promise.resolve();
    }
    if (this.satisfied(lastSeq)) {
      this.acked(lastSeq);
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        lastSeq,
        resolve: () => {
          this.acked(lastSeq);
          resolve();
        },
        reject,
        timer: setTimeout(() => void this.onTimeout(waiter), this.opts.syncTimeoutMs),
      };
      this.waiters.add(waiter);
    });
  }

  private satisfied(lastSeq: number): boolean {
    const rec = this.ours();
    if (rec?.mode === 'degraded') {
      // On the way back to sync: the forming set must hold it, or forming would publish a set that lacks it.
      const f = this.forming;
      return !f || f.members.every((m) => this.covered(m) >= lastSeq);
    }
    return this.syncedThrough() >= lastSeq;
  }

  private acked(lastSeq: number): void {
    this.highestAcked = Math.max(this.highestAcked, lastSeq);
  }

  private wake(): void {
    for (const w of this.waiters) {
      if (this.satisfied(w.lastSeq)) {
        clearTimeout(w.timer);
        this.waiters.delete(w);
        w.resolve();
      }
    }
  }

  private async onTimeout(w: Waiter): Promise<void> {
    if (!this.waiters.has(w)) return;
    const status = this.describe();
    if (this.ours()?.mode === 'degraded') {
      // Waiting for a set being formed: give that attempt up, acknowledge as async.
      if (this.forming) {
        this.forming.abort = true;
        if (this.forming.publishing) {
          // Its record may already be on its way to etcd: decide once it landed (bounded by the etcd call timeout).
          w.timer = setTimeout(() => void this.onTimeout(w), 20);
          return;
        }
      }
      this.waiters.delete(w);
      w.resolve();
      return;
    }
    if (this.opts.onSyncTimeout === 'fail') {
      this.waiters.delete(w);
      w.reject(
        new SyncTimeoutError(
          `the write (up to seq ${w.lastSeq}) is in the log but fewer than ${this.opts.minSyncStandbys} sync standby(s) acknowledged it within ${this.opts.syncTimeoutMs} ms (${status}); it is not acknowledged and may still apply. Retry, add standbys, or set onSyncTimeout async`,
        ),
      );
      return;
    }
    try {
      await this.degrade(`a write waited ${this.opts.syncTimeoutMs} ms for sync standbys (${status})`);
    } catch (err) {
      this.waiters.delete(w);
      w.reject(new SyncTimeoutError(`the write timed out waiting for sync standbys and the fallback to async could not be recorded in etcd: ${(err as Error).message}`));
      return;
    }
    if (this.waiters.delete(w)) w.resolve();
  }

  private describe(): string {
    const rec = this.ours();
    const set = rec?.mode === 'sync' ? rec.members : [];
    const positions = [...this.acks.values()].map((a) => `${a.member}@${this.covered(a.member)}`).join(', ');
    return `sync set [${set.join(', ')}], acknowledged positions [${positions}]`;
  }

  /** Records `degraded` in etcd (once for concurrent callers), then writes are acknowledged as async. */
  private degrade(reason: string): Promise<void> {
    if (this.forming) this.forming.abort = true;
    this.degrading ??= this.publish({ mode: 'degraded', members: [], reason })
      .then(() => {
        this.log.warn({ reason }, 'sync replication fell back to async: writes are acknowledged without standbys until enough catch up');
        for (const w of this.waiters) {
          clearTimeout(w.timer);
          w.resolve();
        }
        this.waiters.clear();
      })
      .finally(() => {
        this.degrading = undefined;
      });
    return this.degrading;
  }

  /** Publishes in order after earlier publications; `still()` is checked right before the write. */
  private publish(fields: Pick<SyncRecord, 'mode' | 'members'> & { reason?: string }, still: () => boolean = () => true): Promise<void> {
    const next = this.publishChain.then(
      () => this.publishNow(fields, still),
      () => this.publishNow(fields, still),
    );
    this.publishChain = next.catch(() => undefined);
    return next;
  }

  private async publishNow(fields: Pick<SyncRecord, 'mode' | 'members'> & { reason?: string }, still: () => boolean): Promise<void> {
    if (this.stopped) throw new Error('not leading');
    if (!still()) throw new Error('superseded before publishing');
    const record: SyncRecord = { epoch: this.opts.epoch, leader: this.opts.member, since: new Date().toISOString(), ...fields };
    const { etcd, keys } = this.opts;
    const res = await etcd.txn(
      {
        compare: [{ key: keys.leader, target: 'CREATE', result: 'EQUAL', value: this.opts.epoch }],
        success: [{ put: { key: keys.sync, value: JSON.stringify(record) } }],
      },
      ETCD_CALL_TIMEOUT_MS,
    );
    if (!res.succeeded) throw new Error(`the leader key is no longer epoch ${this.opts.epoch}'s; not publishing the sync set`);
    this.published = record;
    this.opts.onRecord?.(record);
  }

  private onAck(message: string): void {
    const ack = parseAck(message);
    if (!ack || ack.member === this.opts.member) return;
    const before = this.covered(ack.member);
    // One publisher per member, one PUBLISH in flight: messages arrive in order, so the latest is the truth.
    this.acks.set(ack.member, { ...ack, at: Date.now() });
    const after = this.covered(ack.member);
    // A position that moved back (its master restarted or resynced) no longer
    // proves what was acknowledged: such a member must leave the set until it
    // holds everything again.
    if (after < before) this.regressed.add(ack.member);
    else if (after >= this.highestAcked) this.regressed.delete(ack.member);
    this.wake();
  }

  /** Keeps a healthy set published: forms one after a failover or a fallback, replaces a member that is gone. */
  private maintain(): void {
    if (this.stopped || this.forming || this.degrading || Date.now() < this.formCooldownUntil) return;
    const live = new Map(
      this.opts
        .members()
        .filter((m) => m.member !== this.opts.member && (m.role === 'standby' || m.role === 'candidate') && m.state !== MASTER_DOWN_STATE)
        .map((m) => [m.member, m]),
    );
    // An ack older than this says the standby stopped reading (paused, partitioned, master gone).
    const fresh = (m: string): boolean => (this.acks.get(m)?.at ?? 0) > Date.now() - Math.max(1000, this.opts.syncTimeoutMs);
    const rec = this.ours();
    const keep = rec?.mode === 'sync' ? rec.members.filter((m) => live.has(m) && fresh(m) && !this.regressed.has(m)) : [];
    if (rec?.mode === 'sync' && keep.length === rec.members.length && keep.length >= this.opts.minSyncStandbys) return;
    const spares = [...live.keys()]
      .filter((m) => !keep.includes(m) && fresh(m))
      .sort((a, b) => this.covered(b) - this.covered(a) || a.localeCompare(b));
    const members = [...keep, ...spares].slice(0, this.opts.minSyncStandbys);
    if (members.length < this.opts.minSyncStandbys) {
      // No full set can be formed. A member that no longer holds everything
      // must still leave the published set (a subset needs no check): writes
      // then wait, and time out, until a full set forms again.
      const dropped = rec?.mode === 'sync' ? rec.members.filter((m) => this.regressed.has(m)) : [];
      if (dropped.length > 0) void this.shrink(rec!.members.filter((m) => !this.regressed.has(m)), dropped);
      return;
    }
    void this.form(members.sort());
  }

  private async shrink(members: string[], dropped: string[]): Promise<void> {
    const forming = { members, target: 0, abort: false, publishing: true };
    this.forming = forming;
    try {
      await this.publish({ mode: 'sync', members });
      this.log.warn({ members, dropped }, 'sync set shrunk: a member no longer holds every acknowledged write (its master restarted or resynced)');
    } catch (err) {
      this.log.info({ err: (err as Error).message }, 'could not shrink the sync set; trying again shortly');
      this.formCooldownUntil = Date.now() + 200;
    } finally {
      if (this.forming === forming) this.forming = undefined;
      this.wake();
    }
  }

  /** Publishes `members` as the sync set once each holds everything acknowledged so far. Bounded by syncTimeoutMs. */
  private async form(members: string[]): Promise<void> {
    const forming = { members, target: Math.max(this.opts.headSeq(), this.highestAcked), abort: false, publishing: false };
    this.forming = forming;
    const deadline = Date.now() + this.opts.syncTimeoutMs;
    try {
      while (!forming.abort && !this.stopped) {
        const need = Math.max(forming.target, this.highestAcked);
        if (members.every((m) => this.covered(m) >= need)) {
          forming.publishing = true;
          // Checked again in order with a fallback's publication: an attempt given up must not land after it.
          await this.publish({ mode: 'sync', members }, () => !forming.abort && members.every((m) => this.covered(m) >= Math.max(need, this.highestAcked)));
          this.log.info({ members, coveredThrough: need }, 'sync set published: only these standbys may take over; writes wait for them');
          return;
        }
        if (Date.now() > deadline) throw new Error(`${members.join(', ')} did not reach seq ${need} within ${this.opts.syncTimeoutMs} ms`);
        await new Promise((r) => setTimeout(r, 2));
      }
    } catch (err) {
      this.log.info({ err: (err as Error).message, members }, 'could not form the sync set; trying again shortly');
      this.formCooldownUntil = Date.now() + 200;
    } finally {
      if (this.forming === forming) this.forming = undefined;
      this.wake();
    }
  }
}

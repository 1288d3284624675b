// Leader election on an etcd lease (see docs/election.md).
//
// One key, `leader`, holds the current leader's record under the leader's own
// lease. A member becomes leader by creating the key in a transaction that
// succeeds only when the key is absent (createRevision == 0); the key's create
// revision is the leader's epoch, the fencing token every append carries. The
// leader renews the lease a few times per TTL and, independently of etcd,
// demotes itself at a *local* deadline computed from the send time of its last
// successful renewal: it stops claiming leadership before the server can
// possibly expire the lease and let someone else in, even when etcd is
// unreachable and nothing else tells it so.
//
// This file also holds the small etcd pieces registry.ts shares: lease calls
// with deadlines, and EtcdMirror (a watched view of a key or prefix that
// survives broken and cancelled watches).
import { EtcdLeaseNotFoundError, type EtcdHttpClient } from '../lib/etcd-http/client.ts';
import type { KeyValue, RangeResponse } from '../lib/etcd-http/types.ts';
import type { EtcdWatch } from '../lib/etcd-http/watch.ts';
import type { EtcdKeys } from '../lib/keys.ts';
import type { Logger } from '../lib/log.ts';
import { sleep, withTimeout } from '../lib/time.ts';
import { LeaseKeepAlive } from './lease-keepalive.ts';
import type { LeaderRecord } from './types.ts';

// ------------------------------------------------------------ lease primitives

export interface GrantedLease {
  id: string;
  /** The TTL the server chose (it may raise a too-small request), in ms. */
  ttlMs: number;
}

/** A monotonic clock in ms: wall-clock jumps must not move a lease deadline. */
export function monotonicMs(): number {
  return performance.now();
}

export async function grantLease(etcd: EtcdHttpClient, ttlSeconds: number, timeoutMs: number): Promise<GrantedLease> {
  const res = await etcd.leaseGrant(ttlSeconds, timeoutMs);
  return { id: res.ID, ttlMs: Number(res.TTL) * 1000 };
}

/** Revokes a lease (its keys vanish at once). An unknown lease counts as revoked. */
export async function revokeLease(etcd: EtcdHttpClient, leaseId: string, timeoutMs: number): Promise<void> {
  try {
    await etcd.leaseRevoke(leaseId, timeoutMs);
  } catch (err) {
    if (err instanceof EtcdLeaseNotFoundError) return;
    throw err;
  }
}

// ------------------------------------------------------------ watched view

export type EtcdRange = { key: string } | { prefix: string };

/** Pause between a cancelled watch and the re-read that replaces it. */
const WATCH_RETRY_MS = 300;
/** While the watch is connected (and the owner allows), the periodic re-read runs this seldom instead of every resyncMs. */
const WATCHED_RESYNC_MS = 30_000;

export interface EtcdMirrorOptions {
  etcd: EtcdHttpClient;
  range: EtcdRange;
  /** Full re-read this often: the backstop against a watch that stalls or is slow to reconnect. */
  resyncMs: number;
  /**
   * Asked at each period while the watch is connected: true lets the mirror
   * skip that re-read (then it re-reads only every 30 s). Default: never skip.
   */
  quietWhileWatched?: () => boolean;
  callTimeoutMs: number;
  log: Logger;
  /**
   * Called after every applied watch event (changed = true) and after every
   * successful re-read (changed tells whether anything differed). `revision`
   * is the etcd revision the view reflects.
   */
  onChange(view: ReadonlyMap<string, KeyValue>, changed: boolean, revision: number): void;
}

/**
 * A local copy of a key or prefix, kept current by a watch and by periodic
 * re-reads. Every observation carries an etcd revision and an older
 * observation never overwrites a newer one, so a slow read cannot resurrect a
 * deleted key. A watch that breaks or that etcd cancels is dropped; a re-read
 * shortly after opens the next one from the revision it read, and the
 * periodic re-read bounds how stale the view can be meanwhile.
 */
export class EtcdMirror {
  private readonly opts: EtcdMirrorOptions;
  private view = new Map<string, KeyValue>();
  /** Revision of the newest observation applied. */
  private revision = 0;
  private loadedOnce = false;
  private watcher: EtcdWatch | undefined;
  private timer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private inflight: Promise<void> | undefined;
  private stopped = false;
  private lastError = '';
  /** Monotonic ms of the last successful re-read. */
  private lastReadAt = Number.NEGATIVE_INFINITY;

  constructor(opts: EtcdMirrorOptions) {
    this.opts = opts;
  }

  /** Whether the range has been read at least once (before that, the view means nothing). */
  get loaded(): boolean {
    return this.loadedOnce;
  }

  get current(): ReadonlyMap<string, KeyValue> {
    return this.view;
  }

  /** Reads the range once (bounded; a failure is retried by the periodic re-read) and starts watching. */
  async start(): Promise<void> {
    this.timer = setInterval(() => {
      if (!this.periodicReadNeeded()) return;
      void this.resync();
    }, this.opts.resyncMs);
    await this.resync();
  }

  /**
   * Whether the periodic re-read is due. While the watch is connected it is
   * skipped (when the owner allows): it would find nothing the watch has not
   * delivered. The watch starts at the revision right after a read, etcd
   * delivers a watch's events in order and without gaps, and every way a
   * watch can lose events ends it and is repaired with a re-read that opens
   * the next one: a broken stream ('disconnected'), a cancelled watch
   * (compaction: 'canceled'). Observations carry revisions, so the view stays
   * as correct as with the re-read, only without the cost of a read every
   * period. A re-read every 30 s stays as a backstop against a stall nobody
   * reports.
   */
  private periodicReadNeeded(): boolean {
    // Connected: etcd created the watch and it has not ended since.
    if (!this.watcher?.connected || !this.opts.quietWhileWatched?.()) return true;
    return monotonicMs() - this.lastReadAt >= WATCHED_RESYNC_MS;
  }

  /** Re-reads the range now; concurrent calls share one read. Never throws. */
  resync(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    this.inflight ??= this.readRange().finally(() => {
      this.inflight = undefined;
    });
    return this.inflight;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.timer = this.retryTimer = undefined;
    this.dropWatch();
    await this.inflight?.catch(() => undefined);
  }

  private async readRange(): Promise<void> {
    const { etcd, range, callTimeoutMs } = this.opts;
    let res: RangeResponse;
    try {
      res = await etcd.range('key' in range ? { key: range.key } : { key: range.prefix, prefix: true }, callTimeoutMs);
    } catch (err) {
      const message = (err as Error).message;
      if (message !== this.lastError) this.opts.log.debug({ err: message }, 'etcd read failed; retrying');
      this.lastError = message;
      return;
    }
    this.lastError = '';
    if (this.stopped) return;
    this.lastReadAt = monotonicMs();
    const revision = Number(res.header.revision);
    if (revision < this.revision) return; // a newer watch event already arrived
    const next = new Map(res.kvs.map((kv) => [kv.key.toString(), kv]));
    const changed = !this.loadedOnce || !sameView(this.view, next);
    this.view = next;
    this.revision = revision;
    this.loadedOnce = true;
    if (!this.watcher) this.openWatch(revision + 1);
    this.notify(changed);
  }

  private openWatch(fromRevision: number): void {
    const { etcd, range, log } = this.opts;
    const watcher = etcd.watch({ ...('key' in range ? { key: range.key } : { key: range.prefix, prefix: true }), startRevision: fromRevision }, { connectTimeoutMs: this.opts.callTimeoutMs });
    this.watcher = watcher;
    watcher.on('put', (kv) => this.applyEvent(kv, false));
    watcher.on('delete', (kv) => this.applyEvent(kv, true));
    // Either way the watch is over: drop it; a re-read shortly after opens a
    // fresh one from the revision it read (after a compaction, a current
    // one). The pause keeps a watch that fails at once from spinning.
    watcher.on('disconnected', (err) => {
      log.debug({ err: err.message }, 'etcd watch broke; re-reading and watching again');
      this.replaceWatch(watcher);
    });
    watcher.on('canceled', (err) => {
      log.warn({ err: err.message }, 'etcd watch cancelled; re-reading and watching again');
      this.replaceWatch(watcher);
    });
  }

  private replaceWatch(watcher: EtcdWatch): void {
    if (this.watcher !== watcher) return;
    this.dropWatch();
    if (this.stopped || this.retryTimer) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      void this.resync();
    }, WATCH_RETRY_MS);
  }

  private applyEvent(kv: KeyValue, deleted: boolean): void {
    if (this.stopped) return;
    const revision = Number(kv.mod_revision);
    if (revision < this.revision) return; // already covered by a newer read
    const key = kv.key.toString();
    if (deleted) this.view.delete(key);
    else this.view.set(key, kv);
    this.revision = revision;
    this.notify(true);
  }

  private notify(changed: boolean): void {
    try {
      this.opts.onChange(this.view, changed, this.revision);
    } catch (err) {
      this.opts.log.error({ err: (err as Error).message }, 'etcd view listener failed');
    }
  }

  private dropWatch(): void {
    const watcher = this.watcher;
    if (!watcher) return;
    this.watcher = undefined;
    watcher.removeAllListeners();
    watcher.cancel();
  }
}

function sameView(a: ReadonlyMap<string, KeyValue>, b: ReadonlyMap<string, KeyValue>): boolean {
  if (a.size !== b.size) return false;
  for (const [key, kv] of a) {
    const other = b.get(key);
    if (!other || other.mod_revision !== kv.mod_revision || other.create_revision !== kv.create_revision) return false;
  }
  return true;
}

// ------------------------------------------------------------ the election

export interface CandidacyAnswer {
  eligible: boolean;
  delayMs: number;
  reason: string;
}

export interface ElectionOptions {
  etcd: EtcdHttpClient;
  keys: EtcdKeys;
  member: string;
  /** host:port where clients reach this member's master; published in the leader record. */
  address: string;
  /** Default 5. etcd may raise a smaller value to its minimum; the granted TTL is used. */
  leaseTtlSeconds?: number;
  /** The leader's local deadline = send time of the last successful keepalive + TTL - margin. */
  demoteMarginMs: number;
  log: Logger;
  /** Asked each time the leader key is found absent: whether to campaign, and after what delay. */
  candidacy(): Promise<CandidacyAnswer>;
  /** Re-read the leader key this often as a backstop to the watch. Default 1000. */
  resyncMs?: number;
  /** Bound on each etcd call. Default 2000, at most the TTL. */
  callTimeoutMs?: number;
}

export type DeposedReason = 'lease-lost' | 'local-deadline' | 'key-changed' | 'resigned' | 'stopped';

export type ElectionEvent =
  | { type: 'leader-changed'; leader: LeaderRecord | undefined }
  | { type: 'elected'; epoch: number; record: LeaderRecord }
  | { type: 'deposed'; epoch: number; reason: DeposedReason };

/** One term of leadership: everything that belongs to it dies with it. */
interface Term {
  epoch: number;
  leaseId: string;
  ttlMs: number;
  record: LeaderRecord;
  /** Monotonic ms after which this member must not act as leader. */
  deadline: number;
  log: Logger;
  /** One keepalive stream for the whole term (lease-keepalive.ts). */
  keepalive: LeaseKeepAlive;
  keepaliveTimer: NodeJS.Timeout | undefined;
  deadlineTimer: NodeJS.Timeout | undefined;
  /** Last keepalive failure logged, so a long outage logs once, not every round. */
  lastKeepaliveError: string;
}

type Phase = 'new' | 'running' | 'stopped';

const CANDIDACY_TIMEOUT_MS = 5000;

export class LeaderElection {
  private readonly opts: ElectionOptions;
  private readonly log: Logger;
  private readonly ttlSeconds: number;
  private readonly callTimeoutMs: number;
  private readonly mirror: EtcdMirror;
  private readonly listeners = new Set<(e: ElectionEvent) => void>();
  /** Aborted by stop(): ends campaign delays and lease clean-up retries. */
  private readonly lifetime = new AbortController();
  private phase: Phase = 'new';
  private term: Term | undefined;
  /** The leader key as last observed, with its lease. */
  private observed: { record: LeaderRecord; leaseId: string } | undefined;
  private lastAnnounced = identity(undefined);
  private campaignTask: Promise<void> | undefined;
  /** Ends the running campaign's delay when a leader appears: its decision is stale by then. */
  private campaignAbort: AbortController | undefined;
  /** A campaign stood down for a leader that appeared: ask candidacy() afresh once it is done. */
  private campaignAgain = false;
  /** Leases this process granted and has not given up: never treated as stale. */
  private readonly ownLeases = new Set<string>();
  /** Lease clean-ups still retrying; stop() waits for them (bounded). */
  private readonly abandoning = new Set<Promise<void>>();
  private readonly staleRevoked = new Set<string>();
  private holdOffUntil = 0;
  private holdOffTimer: NodeJS.Timeout | undefined;
  private lastIneligibleReason = '';

  constructor(opts: ElectionOptions) {
    this.opts = opts;
    this.log = opts.log;
    this.ttlSeconds = opts.leaseTtlSeconds ?? 5;
    if (!Number.isInteger(this.ttlSeconds) || this.ttlSeconds < 1) {
      throw new RangeError(`leaseTtlSeconds must be an integer >= 1, got ${this.ttlSeconds}`);
    }
    if (!(opts.demoteMarginMs >= 0) || opts.demoteMarginMs >= this.ttlSeconds * 1000) {
      throw new RangeError(`demoteMarginMs must be >= 0 and below the lease TTL (${this.ttlSeconds * 1000} ms), got ${opts.demoteMarginMs}`);
    }
    this.callTimeoutMs = Math.min(opts.callTimeoutMs ?? 2000, this.ttlSeconds * 1000);
    this.mirror = new EtcdMirror({
      etcd: opts.etcd,
      range: { key: opts.keys.leader },
      resyncMs: opts.resyncMs ?? 1000,
      // While the key is absent every re-read asks candidacy() again (an
      // ineligible member may become eligible); while someone holds it, the
      // watch alone tells us when that changes.
      quietWhileWatched: () => this.mirror.current.has(opts.keys.leader),
      callTimeoutMs: this.callTimeoutMs,
      log: this.log,
      onChange: (view, _changed, revision) => this.onLeaderKey(view.get(opts.keys.leader), revision),
    });
  }

  /** Reads and watches the leader key; campaigns (after candidacy()) whenever it is absent. */
  async start(): Promise<void> {
    if (this.phase !== 'new') throw new Error('LeaderElection.start() may be called once');
    this.phase = 'running';
    await this.mirror.start();
  }

  onEvent(listener: (e: ElectionEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** The leader as last observed (ours while leading); undefined when the key is absent or unknown. */
  get leader(): LeaderRecord | undefined {
    return this.observed?.record;
  }

  /** Our epoch while we lead, else 0. */
  get epoch(): number {
    return this.term?.epoch ?? 0;
  }

  /**
   * True only while we lead and our local deadline has not passed. Reads the
   * clock itself, so it is right even when the deadline timer runs late on a
   * busy event loop. Check it before every write.
   */
  holdsLeadership(): boolean {
    return this.term !== undefined && monotonicMs() < this.term.deadline;
  }

  /** The local deadline as wall-clock ms (Date.now() scale) while leading. */
  localDeadline(): number | undefined {
    if (!this.term) return undefined;
    return Date.now() + (this.term.deadline - monotonicMs());
  }

  /**
   * Gives leadership up: stops claiming it at once, emits deposed('resigned'),
   * and revokes the lease so the key vanishes and a standby takes over without
   * waiting for the TTL. Does not campaign again for holdOffMs. When etcd
   * cannot be reached the revocation keeps retrying in the background and the
   * lease expires by TTL at the latest; resign() does not throw.
   */
  async resign(opts: { holdOffMs?: number } = {}): Promise<void> {
    this.holdOff(opts.holdOffMs ?? 0);
    const term = this.endTerm('resigned');
    if (term) await this.releaseLease(term.leaseId, term.log);
  }

  /** Resigns when leading, then closes the watch, the lease and every timer. */
  async stop(): Promise<void> {
    if (this.phase === 'stopped') return;
    this.phase = 'stopped';
    const term = this.endTerm('stopped');
    if (this.holdOffTimer) clearTimeout(this.holdOffTimer);
    // Both are bounded by the call timeout; run them side by side so a dead
    // etcd costs one timeout, not two.
    await Promise.all([term ? this.releaseLease(term.leaseId, term.log) : undefined, this.mirror.stop()]);
    this.lifetime.abort(new Error('election stopped'));
    const pending = [...this.abandoning];
    if (this.campaignTask) pending.push(this.campaignTask);
    await withTimeout(Promise.allSettled(pending), this.callTimeoutMs * 2 + 500, 'election clean-up').catch((err: Error) =>
      this.log.warn({ err: err.message }, 'election clean-up did not finish; leases expire by TTL'),
    );
  }

  // ---------------------------------------------------------- observing the key

  private onLeaderKey(kv: KeyValue | undefined, revision: number): void {
    if (this.phase !== 'running') return;
    const term = this.term;
    // A read answered from before our winning transaction (its reply can
    // overtake the watch event of our own put) says nothing about our term.
    if (term && revision < term.epoch) return;
    if (term && (!kv || Number(kv.create_revision) !== term.epoch)) {
      this.endTerm('key-changed');
      void this.abandonLease(term.leaseId, term.log);
    }
    this.observed = kv ? { record: parseLeaderRecord(kv, this.log), leaseId: kv.lease } : undefined;
    if (this.observed && this.observed.record.member !== this.opts.member) this.someoneElseLeads();
    this.announce();
    if (kv) {
      this.revokeIfStaleOwnKey(kv);
      return;
    }
    this.maybeCampaign();
  }

  private announce(): void {
    const id = identity(this.observed?.record);
    if (id === this.lastAnnounced) return;
    this.lastAnnounced = id;
    const leader = this.observed?.record;
    this.log.info({ leader: leader?.member ?? null, leaderEpoch: leader?.epoch ?? 0 }, leader ? 'leader observed' : 'no leader');
    this.emit({ type: 'leader-changed', leader });
  }

  /**
   * A key naming this member that this process does not hold was left by an
   * earlier incarnation (a crash and restart under the same pod name) or by
   * a term we already gave up. Nobody else writes our name, so revoking its
   * lease is safe, and it spares the cluster a full TTL without a leader.
   */
  private revokeIfStaleOwnKey(kv: KeyValue): void {
    const record = this.observed?.record;
    if (!record || record.member !== this.opts.member) return;
    if (this.term || this.campaignTask || this.ownLeases.has(kv.lease) || kv.lease === '0') return;
    if (this.staleRevoked.has(kv.lease)) return;
    this.staleRevoked.add(kv.lease);
    this.log.warn({ leaderEpoch: record.epoch, lease: kv.lease }, 'the leader key names this member but is not held by this process; revoking its lease');
    void this.abandonLease(kv.lease, this.log);
  }

  // ---------------------------------------------------------- campaigning

  private maybeCampaign(): void {
    if (!this.mayCampaignNow()) return;
    this.campaignTask ??= this.campaign()
      .catch((err: Error) => this.log.error({ err: err.message }, 'campaign failed'))
      .finally(() => {
        this.campaignTask = undefined;
        if (this.campaignAgain) {
          this.campaignAgain = false;
          // The key may have vanished again while the stale campaign wound down.
          queueMicrotask(() => this.maybeCampaign());
        }
      });
  }

  /**
   * Another member holds the key. A campaign waiting out its delay decided on
   * a picture that is gone (say, a switchover hold-off for a switchover that
   * has happened): it stands down, and the next absence asks candidacy()
   * afresh instead of sleeping on. A hold-off of ours has done its job too (it
   * let someone else win): it ends, so this member may campaign at the next
   * failover without waiting it out.
   */
  private someoneElseLeads(): void {
    if (this.campaignAbort && !this.campaignAbort.signal.aborted) {
      this.campaignAgain = true;
      this.campaignAbort.abort();
    }
    if (this.holdOffUntil > 0) {
      this.holdOffUntil = 0;
      if (this.holdOffTimer) clearTimeout(this.holdOffTimer);
      this.holdOffTimer = undefined;
    }
  }

  private mayCampaignNow(): boolean {
    return (
      this.phase === 'running' &&
      !this.term &&
      this.mirror.loaded &&
      !this.mirror.current.has(this.opts.keys.leader) &&
      monotonicMs() >= this.holdOffUntil
    );
  }

  private async campaign(): Promise<void> {
    let decision: CandidacyAnswer;
    try {
      decision = await untilAborted(withTimeout(this.opts.candidacy(), CANDIDACY_TIMEOUT_MS, 'the candidacy check'), this.lifetime.signal);
    } catch (err) {
      if (this.lifetime.signal.aborted) return;
      this.log.warn({ err: (err as Error).message }, 'candidacy check failed; not campaigning this time');
      return;
    }
    if (!this.mayCampaignNow()) return;
    if (!decision.eligible) {
      // Asked again on every re-read while the key stays absent; log changes only.
      if (decision.reason !== this.lastIneligibleReason) this.log.info({ reason: decision.reason }, 'leader key absent; not eligible to campaign');
      this.lastIneligibleReason = decision.reason;
      return;
    }
    this.lastIneligibleReason = '';
    this.log.info({ delayMs: decision.delayMs, reason: decision.reason }, 'leader key absent; campaigning');
    if (decision.delayMs > 0) {
      const abort = new AbortController();
      this.campaignAbort = abort;
      try {
        await sleep(decision.delayMs, AbortSignal.any([this.lifetime.signal, abort.signal]));
      } catch {
        if (abort.signal.aborted && !this.lifetime.signal.aborted) {
          this.log.info({ leader: this.observed?.record.member ?? null }, 'stood down: a leader appeared during the candidacy delay');
        }
        return; // stopped, or a leader appeared
      } finally {
        if (this.campaignAbort === abort) this.campaignAbort = undefined;
      }
      if (!this.mayCampaignNow()) {
        this.log.info({ leader: this.observed?.record.member ?? null }, 'stood down: another member campaigned first, or we hold off');
        return;
      }
    }
    await this.tryAcquire();
  }

  /** Grant a lease, create the key if absent. Leads only on a definite success in time. */
  private async tryAcquire(): Promise<void> {
    const sentAt = monotonicMs();
    let lease: GrantedLease;
    try {
      lease = await grantLease(this.opts.etcd, this.ttlSeconds, this.callTimeoutMs);
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'campaign: lease grant failed');
      return;
    }
    this.ownLeases.add(lease.id);
    const { etcd, keys, member, address } = this.opts;
    // The epoch is the key's create revision, unknown until the txn commits:
    // the record is written with epoch 0 and corrected right after. Readers
    // take the epoch from the create revision (parseLeaderRecord).
    const provisional: LeaderRecord = { member, epoch: 0, address, since: new Date().toISOString() };
    let succeeded: boolean;
    let epoch: number;
    try {
      const res = await etcd.txn(
        {
          compare: [{ key: keys.leader, target: 'CREATE', result: 'EQUAL', value: 0 }],
          success: [{ put: { key: keys.leader, value: JSON.stringify(provisional), lease: lease.id } }],
        },
        this.callTimeoutMs,
      );
      succeeded = res.succeeded;
      // The txn holds one put, so the key's create revision is the txn's revision.
      epoch = Number(res.header.revision);
    } catch (err) {
      // The outcome is unknown: the key may now be ours. Never lead on a maybe;
      // revoking the lease removes the key if it was created.
      this.log.warn({ err: (err as Error).message }, 'campaign transaction failed; giving the lease up');
      await this.abandonLease(lease.id, this.log);
      return;
    }
    if (!succeeded) {
      this.log.info('campaign lost: the leader key exists');
      await this.abandonLease(lease.id, this.log);
      void this.mirror.resync();
      return;
    }
    const deadline = sentAt + lease.ttlMs - this.opts.demoteMarginMs;
    if (this.phase !== 'running' || monotonicMs() >= deadline || monotonicMs() < this.holdOffUntil) {
      this.log.warn({ epoch }, 'won the leader key but must not lead (stopping, holding off, or the win came too late); giving it up');
      await this.abandonLease(lease.id, this.log);
      return;
    }
    const record: LeaderRecord = { ...provisional, epoch };
    const term: Term = {
      epoch,
      leaseId: lease.id,
      ttlMs: lease.ttlMs,
      record,
      deadline,
      log: this.log.child({ epoch }),
      keepalive: new LeaseKeepAlive(this.opts.etcd, lease.id),
      keepaliveTimer: undefined,
      deadlineTimer: undefined,
      lastKeepaliveError: '',
    };
    this.term = term;
    this.scheduleDeadline(term);
    this.scheduleKeepalive(term);
    this.observed = { record, leaseId: lease.id };
    term.log.info({ leaseTtlMs: lease.ttlMs, deadlineInMs: Math.round(deadline - monotonicMs()) }, 'elected leader');
    this.announce();
    this.emit({ type: 'elected', epoch, record });
    void this.publishEpoch(term);
  }

  /** Rewrites the record with its epoch filled in, only while the key is still this term's. */
  private async publishEpoch(term: Term): Promise<void> {
    const { etcd, keys } = this.opts;
    try {
      await etcd.txn(
        {
          compare: [{ key: keys.leader, target: 'CREATE', result: 'EQUAL', value: term.epoch }],
          success: [{ put: { key: keys.leader, value: JSON.stringify(term.record), lease: term.leaseId } }],
        },
        this.callTimeoutMs,
      );
    } catch (err) {
      term.log.debug({ err: (err as Error).message }, 'could not publish the epoch in the leader record (readers use the create revision)');
    }
  }

  // ---------------------------------------------------------- leading

  /**
   * Every TTL/5 while renewals succeed; 100 ms after a failed one, so that
   * while etcd is away there is nearly always a renewal in flight and the
   * first moment etcd answers again extends the deadline.
   */
  private scheduleKeepalive(term: Term, afterFailure = false): void {
    const intervalMs = afterFailure ? 100 : Math.max(100, Math.floor(term.ttlMs / 5));
    term.keepaliveTimer = setTimeout(() => void this.renew(term), intervalMs);
  }

  private async renew(term: Term): Promise<void> {
    if (this.term !== term) return;
    const sentAt = monotonicMs();
    const timeoutMs = Math.max(500, Math.floor(term.ttlMs / 3));
    try {
      const ttlSeconds = await term.keepalive.renew(timeoutMs);
      if (this.term !== term) return;
      if (ttlSeconds <= 0) {
        term.log.warn('etcd reports the leader lease expired or revoked');
        this.endTerm('lease-lost');
        void this.abandonLease(term.leaseId, term.log);
        return;
      }
      if (term.lastKeepaliveError) term.log.info('leader lease renewed again');
      term.lastKeepaliveError = '';
      // The server restarted the TTL no earlier than we sent the request.
      term.deadline = Math.max(term.deadline, sentAt + ttlSeconds * 1000 - this.opts.demoteMarginMs);
      this.scheduleDeadline(term);
    } catch (err) {
      if (this.term !== term) return;
      if (err instanceof EtcdLeaseNotFoundError) {
        term.log.warn('etcd reports the leader lease unknown');
        this.endTerm('lease-lost');
        void this.abandonLease(term.leaseId, term.log);
        return;
      }
      const message = (err as Error).message;
      if (message !== term.lastKeepaliveError) {
        term.log.warn({ err: message, deadlineInMs: Math.round(term.deadline - monotonicMs()) }, 'leader lease renewal failed; retrying until the local deadline');
      }
      term.lastKeepaliveError = message;
      this.scheduleKeepalive(term, true);
      return;
    }
    if (this.term === term) this.scheduleKeepalive(term);
  }

  private scheduleDeadline(term: Term): void {
    if (term.deadlineTimer) clearTimeout(term.deadlineTimer);
    const inMs = Math.max(1, Math.ceil(term.deadline - monotonicMs()));
    term.deadlineTimer = setTimeout(() => {
      if (this.term !== term) return;
      if (monotonicMs() < term.deadline) {
        this.scheduleDeadline(term); // renewed meanwhile, or the timer fired a hair early
        return;
      }
      term.log.warn('local lease deadline passed without a renewal: demoting now');
      this.endTerm('local-deadline');
      void this.abandonLease(term.leaseId, term.log);
    }, inMs);
  }

  /**
   * Ends the current term (if any) synchronously: from the moment this runs,
   * holdsLeadership() is false. Then tells the listeners.
   */
  private endTerm(reason: DeposedReason): Term | undefined {
    const term = this.term;
    if (!term) return undefined;
    this.term = undefined;
    if (term.keepaliveTimer) clearTimeout(term.keepaliveTimer);
    if (term.deadlineTimer) clearTimeout(term.deadlineTimer);
    term.keepalive.close();
    this.ownLeases.delete(term.leaseId);
    const level = reason === 'resigned' || reason === 'stopped' ? 'info' : 'warn';
    term.log[level]({ reason }, 'no longer leader');
    this.emit({ type: 'deposed', epoch: term.epoch, reason });
    // A new campaign may follow once the key is gone (it is re-checked then).
    if (this.phase === 'running') queueMicrotask(() => this.maybeCampaign());
    return term;
  }

  // ---------------------------------------------------------- leases we give up

  /** One bounded revoke; on failure the clean-up continues in the background. */
  private async releaseLease(leaseId: string, log: Logger): Promise<void> {
    try {
      await revokeLease(this.opts.etcd, leaseId, this.callTimeoutMs);
      log.info('leader lease revoked: the key is gone');
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'revoking the leader lease failed; it expires by TTL');
      if (this.phase === 'running') void this.abandonLease(leaseId, log);
    }
  }

  /**
   * Revokes a lease we no longer want, retrying until it works or the lease
   * must have expired on its own (2 TTLs). Bounded by time and by stop().
   */
  private abandonLease(leaseId: string, log: Logger): Promise<void> {
    this.ownLeases.delete(leaseId);
    const giveUpAt = monotonicMs() + 2 * this.ttlSeconds * 1000;
    const task = (async () => {
      for (;;) {
        try {
          await revokeLease(this.opts.etcd, leaseId, Math.min(1000, this.callTimeoutMs));
          return;
        } catch (err) {
          if (monotonicMs() >= giveUpAt || this.lifetime.signal.aborted) {
            log.debug({ err: (err as Error).message, lease: leaseId }, 'gave up revoking a lease; it expires by TTL');
            return;
          }
        }
        try {
          await sleep(250, this.lifetime.signal);
        } catch {
          return;
        }
      }
    })();
    this.abandoning.add(task);
    void task.finally(() => this.abandoning.delete(task));
    return task;
  }

  /**
   * Ends a hold-off early: a planned switchover names this member, which must
   * be free to campaign at once even though it resigned a moment ago.
   */
  endHoldOff(): void {
    this.holdOffUntil = 0;
    if (this.holdOffTimer) clearTimeout(this.holdOffTimer);
    this.holdOffTimer = undefined;
    if (this.phase === 'running') this.maybeCampaign();
  }

  private holdOff(ms: number): void {
    if (ms <= 0) return;
    this.holdOffUntil = Math.max(this.holdOffUntil, monotonicMs() + ms);
    if (this.holdOffTimer) clearTimeout(this.holdOffTimer);
    if (this.phase !== 'running') return;
    this.holdOffTimer = setTimeout(() => {
      this.holdOffTimer = undefined;
      this.maybeCampaign();
    }, Math.ceil(this.holdOffUntil - monotonicMs()) + 1);
  }

  private emit(event: ElectionEvent): void {
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch (err) {
        this.log.error({ err: (err as Error).message, event: event.type }, 'election listener failed');
      }
    }
  }
}

/**
 * The record in the leader key. The epoch always comes from the key's create
 * revision (the value's own epoch may still read 0 right after an election).
 * A key that does not parse still names a leader: someone holds it.
 */
export function parseLeaderRecord(kv: KeyValue, log?: Logger): LeaderRecord {
  const epoch = Number(kv.create_revision);
  try {
    const raw = JSON.parse(kv.value.toString()) as Partial<LeaderRecord>;
    if (typeof raw.member === 'string' && raw.member) {
      return {
        member: raw.member,
        epoch,
        address: typeof raw.address === 'string' ? raw.address : '',
        since: typeof raw.since === 'string' ? raw.since : '',
      };
    }
  } catch {
    // fall through
  }
  log?.warn({ value: kv.value.toString().slice(0, 200) }, 'the leader key holds an unreadable record');
  return { member: '', epoch, address: '', since: '' };
}

/** Settles with the promise, or rejects as soon as the signal aborts (stop() must not wait for a slow check). */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err as Error);
      },
    );
  });
}

function identity(record: LeaderRecord | undefined): string {
  return record ? `${record.member}\n${record.epoch}\n${record.address}` : '';
}

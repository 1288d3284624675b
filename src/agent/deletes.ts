// Delete events: a master records "object X was deleted" and every subscriber
// (the other masters, caches, garbage collectors) sees each event exactly once,
// in order, even across etcd outages and its own restarts.
//
// Each event is one put under `deletes/`; its etcd mod revision is its
// position. Subscribers watch the prefix from a revision and keep, per
// subscription, the highest revision they have queued: a resumed watch starts
// one past it and anything at or below it is dropped, so an outage neither
// loses nor repeats an event. The watch itself never resumes (see
// src/lib/etcd-http/watch.ts): resuming from the newest revision a client has
// *heard of* (a response header) could skip events that were still being
// replayed when the stream broke.
//
// Retention: every event is written with a lease that is never renewed, so
// etcd itself removes it between `retentionSeconds` and `retentionSeconds +
// bucket` after it was written. Events of one time bucket (1/24 of the
// retention, at most an hour) share one lease, so a day of events costs about
// 25 leases whatever the rate, and nobody (not the leader, not the operator)
// has to run a cleanup for the prefix to stay bounded. See
// docs/deletes-and-metadata.md for the trade-offs.
import type { EtcdHttpClient } from '../lib/etcd-http/client.ts';
import type { WatchResponse } from '../lib/etcd-http/types.ts';
import { EtcdWatchCanceledError } from '../lib/etcd-http/watch.ts';
import type { EtcdKeys } from '../lib/keys.ts';
import type { Logger } from '../lib/log.ts';
import { sleep } from '../lib/time.ts';

const { randomBytes } = process.getBuiltinModule('node:crypto');

export interface DeleteEvent {
  /** etcd mod revision of the event: its position; resume from revision + 1. */
  revision: number;
  /** The deleted object's key, as the master named it. */
  key: string;
  /** Opaque to the agent; '' when none was given. */
  payload: string;
  /** ISO time the event was published (the publisher's clock). */
  time: string;
}

export type DeleteStreamItem =
  | ({ type: 'delete' } & DeleteEvent)
  /** Nothing new; every event up to `revision` has been delivered. */
  | { type: 'heartbeat'; revision: number }
  /** etcd no longer has history at the requested position: resync, then subscribe from compactRevision. Last item. */
  | { type: 'compacted'; compactRevision: number };

export const DELETE_RETENTION_DEFAULT_SECONDS = 24 * 60 * 60;
export const DELETE_KEY_MAX_LENGTH = 1024;
/** etcd refuses requests over 1.5 MiB; an event must fit with room to spare. */
export const DELETE_PAYLOAD_MAX_BYTES = 1024 * 1024;
const MAX_RETENTION_SECONDS = 366 * 24 * 60 * 60;
const DEFAULT_HEARTBEAT_MS = 1000;
const DEFAULT_MAX_QUEUED = 10_000;
const DEFAULT_CALL_TIMEOUT_MS = 5000;
const BACKOFF_MIN_MS = 100;
const BACKOFF_MAX_MS = 2000;
/** Revisions fit in 2^63; a binary search over them ends in at most this many probes. */
const MAX_COMPACTION_PROBES = 64;

/** Bad input to publish/subscribe; `field` names what to fix. Nothing was changed. */
export class DeleteEventInputError extends RangeError {
  readonly field: string;
  constructor(field: string, message: string) {
    super(message);
    this.name = 'DeleteEventInputError';
    this.field = field;
  }
}

/** Seconds that events written around the same time share one lease. */
export function retentionBucketSeconds(retentionSeconds: number): number {
  return Math.min(3600, Math.max(1, Math.ceil(retentionSeconds / 24)));
}

/** An error for an event publish() would refuse, or undefined when it is fine. */
export function validateDeleteEvent(key: unknown, payload: unknown): { field: string; message: string } | undefined {
  if (typeof key !== 'string' || key.length === 0 || key.length > DELETE_KEY_MAX_LENGTH) {
    const got = typeof key === 'string' ? `${key.length} characters` : typeof key;
    return { field: 'key', message: `key must be a string of 1-${DELETE_KEY_MAX_LENGTH} characters, got ${got}` };
  }
  if (typeof payload !== 'string') return { field: 'payload', message: `payload must be a string when given, got ${typeof payload}` };
  const bytes = Buffer.byteLength(payload, 'utf8');
  if (bytes > DELETE_PAYLOAD_MAX_BYTES) {
    return { field: 'payload', message: `payload must be at most ${DELETE_PAYLOAD_MAX_BYTES} bytes, got ${bytes}` };
  }
  return undefined;
}

export interface DeleteEventsOptions {
  etcd: EtcdHttpClient;
  keys: EtcdKeys;
  log: Logger;
  /** Events are kept at least this long (default 24 h). A subscriber away longer must resync. */
  retentionSeconds?: number;
  /** Idle subscriptions yield a heartbeat this often (default 1000 ms). */
  heartbeatMs?: number;
  /** Events buffered per subscription before the watch pauses for the reader (default 10000). */
  maxQueued?: number;
  /** Bound on each single etcd call (default 5000 ms). */
  callTimeoutMs?: number;
}

interface BucketLease {
  bucket: number;
  id: Promise<string>;
}

export class DeleteEvents {
  private readonly etcd: EtcdHttpClient;
  private readonly keys: EtcdKeys;
  private readonly log: Logger;
  readonly retentionSeconds: number;
  private readonly bucketMs: number;
  private readonly heartbeatMs: number;
  private readonly maxQueued: number;
  private readonly callTimeoutMs: number;
  private lease: BucketLease | undefined;
  private readonly lifetime = new AbortController();
  private readonly subscriptions = new Set<Subscription>();

  constructor(opts: DeleteEventsOptions) {
    const retention = opts.retentionSeconds ?? DELETE_RETENTION_DEFAULT_SECONDS;
    if (!Number.isInteger(retention) || retention < 1 || retention > MAX_RETENTION_SECONDS) {
      throw new DeleteEventInputError(
        'retentionSeconds',
        `retentionSeconds must be an integer from 1 to ${MAX_RETENTION_SECONDS} (a year), got ${String(retention)}`,
      );
    }
    for (const [field, value] of [
      ['heartbeatMs', opts.heartbeatMs],
      ['maxQueued', opts.maxQueued],
      ['callTimeoutMs', opts.callTimeoutMs],
    ] as const) {
      if (value !== undefined && (!Number.isInteger(value) || value < 1)) {
        throw new DeleteEventInputError(field, `${field} must be a positive integer, got ${String(value)}`);
      }
    }
    this.etcd = opts.etcd;
    this.keys = opts.keys;
    this.log = opts.log.child({ module: 'deletes' });
    this.retentionSeconds = retention;
    this.bucketMs = retentionBucketSeconds(retention) * 1000;
    this.heartbeatMs = opts.heartbeatMs ?? DEFAULT_HEARTBEAT_MS;
    this.maxQueued = opts.maxQueued ?? DEFAULT_MAX_QUEUED;
    this.callTimeoutMs = opts.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
  }

  /** Records one delete event; resolves once etcd has it, with its revision. */
  async publish(key: string, payload = ''): Promise<{ revision: number }> {
    const problem = validateDeleteEvent(key, payload);
    if (problem) throw new DeleteEventInputError(problem.field, problem.message);
    if (this.lifetime.signal.aborted) throw new Error('delete events are closed');
    const now = Date.now();
    const time = new Date(now).toISOString();
    // Time first in the name so `etcdctl get --prefix` lists events in order;
    // the random tail keeps names unique across publishers.
    const name = `${this.keys.deletesPrefix}${String(now).padStart(15, '0')}-${randomBytes(6).toString('hex')}`;
    const value = JSON.stringify({ key, payload, time });
    for (let attempt = 1; ; attempt++) {
      const leaseId = await this.bucketLease(now);
      try {
        const res = await this.etcd.put({ key: name, value, lease: leaseId }, this.callTimeoutMs);
        return { revision: Number(res.header.revision) };
      } catch (err) {
        // The bucket's lease ran out under us (a publisher paused for longer
        // than the retention, or etcd lost it): take a fresh one, once.
        if (attempt === 1 && isLeaseGone(err)) {
          this.lease = undefined;
          continue;
        }
        throw err;
      }
    }
  }

  /**
   * Every event with revision >= fromRevision (only new ones when omitted), in
   * order, each once, across etcd disconnects; a heartbeat when idle; ends
   * after a `compacted` item when etcd no longer has the history, and quietly
   * when `signal` aborts or close() is called.
   */
  subscribe(opts: { fromRevision?: number; signal: AbortSignal }): AsyncIterable<DeleteStreamItem> {
    const from = opts.fromRevision;
    if (from !== undefined && (!Number.isSafeInteger(from) || from < 1)) {
      throw new DeleteEventInputError('fromRevision', `fromRevision must be an integer >= 1 (omit it for only new events), got ${String(from)}`);
    }
    const heartbeatMs = this.heartbeatMs;
    const subscriptions = this.subscriptions;
    return {
      // Each iteration is its own subscription with its own watch and position.
      [Symbol.asyncIterator]: () => {
        const sub = new Subscription({
          etcd: this.etcd,
          prefix: this.keys.deletesPrefix,
          log: this.log,
          fromRevision: from,
          signal: AbortSignal.any([opts.signal, this.lifetime.signal]),
          maxQueued: this.maxQueued,
          callTimeoutMs: this.callTimeoutMs,
        });
        subscriptions.add(sub);
        const inner = sub.items(heartbeatMs);
        // Forget the subscription once its iterator is done, however it ends.
        return {
          next: async () => {
            const r = await inner.next();
            if (r.done) subscriptions.delete(sub);
            return r;
          },
          return: async () => {
            subscriptions.delete(sub);
            return inner.return(undefined);
          },
        };
      },
    };
  }

  /** Ends every subscription and waits (bounded) for their watches to be cancelled. Events stay in etcd. */
  async close(): Promise<void> {
    this.lifetime.abort(new Error('delete events closed'));
    await Promise.all([...this.subscriptions].map((s) => s.stopped()));
    this.subscriptions.clear();
  }

  /** The lease shared by the events of the bucket `now` falls in; granted on first use. */
  private bucketLease(now: number): Promise<string> {
    const bucket = Math.floor(now / this.bucketMs);
    if (this.lease?.bucket === bucket) return this.lease.id;
    // TTL = retention + one bucket: the lease is granted no earlier than the
    // bucket starts and no event of the bucket is younger than its end, so
    // every event lives at least `retention` and at most `retention + bucket`.
    const ttl = this.retentionSeconds + this.bucketMs / 1000;
    const id = this.etcd.leaseGrant(ttl, this.callTimeoutMs).then((res) => res.ID);
    const entry: BucketLease = { bucket, id };
    this.lease = entry;
    id.then(
      (leaseId) => this.log.debug({ leaseId, ttl, bucket }, 'granted a delete-event retention lease'),
      () => {
        if (this.lease === entry) this.lease = undefined; // retry the grant on the next publish
      },
    );
    return id;
  }
}

function isLeaseGone(err: unknown): boolean {
  const e = err as Error | undefined;
  return e?.name === 'EtcdLeaseNotFoundError' || /lease not found/i.test(e?.message ?? '');
}

type WatchOutcome =
  | { kind: 'overflow' }
  | { kind: 'disconnected'; err: Error }
  | { kind: 'canceled'; err: Error }
  | { kind: 'aborted' };

/**
 * One subscriber's position and buffer. A loop keeps one etcd watcher open
 * from `through + 1` and replaces it after every failure; the reader drains
 * the buffer through items().
 */
class Subscription {
  private readonly etcd: EtcdHttpClient;
  private readonly prefix: string;
  private readonly log: Logger;
  private readonly fromRevision: number | undefined;
  private readonly signal: AbortSignal;
  private readonly maxQueued: number;
  private readonly callTimeoutMs: number;
  private readonly queue: DeleteStreamItem[] = [];
  /** Every event at or below this revision has been queued; undefined until the start is known. */
  private through: number | undefined;
  private ended = false;
  /** Aborted when the reader is done, so the watch loop ends even without an outside abort. */
  private readonly own = new AbortController();
  /** Wakes the reader (an item was queued, or the end). */
  private wakeReader: (() => void) | undefined;
  /** Wakes a paused watch loop (the reader drained the buffer). */
  private wakeLoop: (() => void) | undefined;
  private loop: Promise<void> | undefined;

  constructor(opts: {
    etcd: EtcdHttpClient;
    prefix: string;
    log: Logger;
    fromRevision: number | undefined;
    signal: AbortSignal;
    maxQueued: number;
    callTimeoutMs: number;
  }) {
    this.etcd = opts.etcd;
    this.prefix = opts.prefix;
    this.log = opts.log;
    this.fromRevision = opts.fromRevision;
    this.signal = AbortSignal.any([opts.signal, this.own.signal]);
    this.maxQueued = opts.maxQueued;
    this.callTimeoutMs = opts.callTimeoutMs;
  }

  async *items(heartbeatMs: number): AsyncGenerator<DeleteStreamItem, void, undefined> {
    this.loop ??= this.run();
    const onAbort = (): void => this.notifyReader();
    this.signal.addEventListener('abort', onAbort, { once: true });
    let lastYield = Date.now();
    try {
      while (!this.signal.aborted) {
        const item = this.queue.shift();
        if (item) {
          if (this.queue.length <= this.maxQueued / 2) this.notifyLoop(); // a paused watch may resume
          yield item;
          lastYield = Date.now();
          if (item.type === 'compacted') return;
          continue;
        }
        if (this.ended) return;
        const wait = heartbeatMs - (Date.now() - lastYield);
        if (wait <= 0) {
          if (this.through !== undefined) {
            yield { type: 'heartbeat', revision: this.through };
          }
          lastYield = Date.now();
          continue;
        }
        await new Promise<void>((resolve) => {
          const timer = setTimeout(done, wait);
          function done(): void {
            clearTimeout(timer);
            resolve();
          }
          this.wakeReader = done;
        });
      }
    } finally {
      this.signal.removeEventListener('abort', onAbort);
      await this.stopped();
    }
  }

  /** Ends the watch loop and resolves once it has finished (bounded by its cancel timeouts). */
  async stopped(): Promise<void> {
    this.own.abort(new Error('subscription ended'));
    this.notifyLoop();
    this.notifyReader();
    await this.loop;
  }

  private notifyReader(): void {
    const wake = this.wakeReader;
    this.wakeReader = undefined;
    wake?.();
  }

  private notifyLoop(): void {
    const wake = this.wakeLoop;
    this.wakeLoop = undefined;
    wake?.();
  }

  private get stopping(): boolean {
    return this.signal.aborted || this.ended;
  }

  private async run(): Promise<void> {
    let failures = 0;
    while (!this.stopping) {
      try {
        if (this.through === undefined) {
          this.through = this.fromRevision !== undefined ? this.fromRevision - 1 : await this.currentRevision();
        }
        if (this.queue.length >= this.maxQueued) {
          // The reader is behind: stop watching until it has caught up, then
          // resume from where the buffer ends. Memory stays bounded.
          await new Promise<void>((resolve) => {
            const timer = setTimeout(done, 1000);
            function done(): void {
              clearTimeout(timer);
              resolve();
            }
            this.wakeLoop = done;
          });
          continue;
        }
        const outcome = await this.watchOnce(this.through + 1, (start) => {
          if (failures > 0) this.log.info({ start, failures }, 'delete-event watch resumed');
          failures = 0;
        });
        if (outcome.kind === 'aborted' || outcome.kind === 'overflow') continue;
        if (outcome.kind === 'canceled') {
          // etcd names the oldest revision it still has; ask it when it did not.
          const named = outcome.err instanceof EtcdWatchCanceledError ? Number(outcome.err.compactRevision) : 0;
          const compactRevision = named > 0 ? named : await this.compactedSince(this.through + 1);
          if (compactRevision !== undefined) {
            this.log.warn({ fromRevision: this.through + 1, compactRevision }, 'delete events were compacted away; the subscriber must resync');
            this.queue.push({ type: 'compacted', compactRevision });
            this.ended = true;
            this.notifyReader();
            return;
          }
          this.log.warn({ err: outcome.err.message }, 'etcd cancelled the delete-event watch; watching again');
        } else if (outcome.kind === 'disconnected') {
          // One line per outage, not one per retry.
          const level = failures === 0 ? 'info' : 'debug';
          this.log[level]({ err: outcome.err.message, resumeFrom: this.through + 1 }, 'delete-event watch disconnected; resuming');
        }
      } catch (err) {
        this.log[failures === 0 ? 'info' : 'debug']({ err: (err as Error).message }, 'delete-event watch could not start; retrying');
      }
      failures++;
      const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** Math.min(failures - 1, 10));
      await sleep(delay, this.signal).catch(() => undefined);
    }
  }

  private async currentRevision(): Promise<number> {
    const res = await this.call(this.etcd.range({ key: this.prefix }, this.callTimeoutMs));
    return Number(res.header.revision);
  }

  /** One etcd call (the client bounds it by the call timeout), cut short when the subscription ends. */
  private call<T>(promise: Promise<T>): Promise<T> {
    let onAbort: (() => void) | undefined;
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => reject(new Error('subscription ended'));
      if (this.signal.aborted) onAbort();
      else this.signal.addEventListener('abort', onAbort, { once: true });
    });
    aborted.catch(() => undefined);
    return Promise.race([promise, aborted]).finally(() => {
      if (onAbort) this.signal.removeEventListener('abort', onAbort);
    });
  }

  /** Opens one watcher from `start` and resolves when it stops being useful; the watcher is cancelled before resolving. */
  private async watchOnce(start: number, onConnected: (start: number) => void): Promise<WatchOutcome> {
    const watcher = this.etcd.watch({ key: this.prefix, prefix: true, startRevision: start }, { connectTimeoutMs: this.callTimeoutMs });
    let done = false;
    const outcome = await new Promise<WatchOutcome>((resolve) => {
      const finish = (o: WatchOutcome): void => {
        if (done) return;
        done = true;
        this.signal.removeEventListener('abort', onAbort);
        resolve(o);
      };
      const onAbort = (): void => finish({ kind: 'aborted' });
      // Listeners stay attached after finish, guarded by `done`.
      watcher.on('connected', () => {
        if (done) return;
        this.log.debug({ start }, 'delete-event watch connected');
        onConnected(start);
      });
      watcher.on('data', (res: WatchResponse) => {
        if (done) return;
        this.accept(res);
        if (this.queue.length >= this.maxQueued) finish({ kind: 'overflow' });
      });
      watcher.on('disconnected', (err: Error) => finish({ kind: 'disconnected', err }));
      watcher.on('canceled', (err: Error) => finish({ kind: 'canceled', err }));
      if (this.signal.aborted) finish({ kind: 'aborted' });
      else this.signal.addEventListener('abort', onAbort, { once: true });
    });
    // Ends the stream and its connection; a no-op when the watch already ended.
    watcher.cancel();
    return outcome;
  }

  /** Queues the events of one watch response that are past `through`. */
  private accept(res: WatchResponse): void {
    const before = this.through ?? 0;
    let through = before;
    for (const ev of res.events) {
      const revision = Number(ev.kv.mod_revision);
      if (revision <= before) continue; // already queued before a resume
      through = Math.max(through, revision);
      // Deletes under the prefix are retention leases expiring: not news.
      if (ev.type !== 'put') continue;
      const event = parseEvent(ev.kv.value, revision);
      if (event) this.queue.push({ type: 'delete', ...event });
      else this.log.warn({ etcdKey: ev.kv.key.toString(), revision }, 'skipping a malformed delete event');
    }
    // A response without events is a progress notification, which etcd sends
    // only to a watcher that has caught up: everything up to its header
    // revision has been delivered.
    if (res.events.length === 0 && !res.created) through = Math.max(through, Number(res.header.revision));
    this.through = through;
    this.notifyReader();
  }

  /**
   * The lowest revision etcd still has when `revision` was compacted away,
   * else undefined, for a cancelled watch that did not name it: found by
   * probing reads at past revisions (bounded binary search).
   */
  private async compactedSince(revision: number): Promise<number | undefined> {
    const probe = async (rev: number): Promise<'ok' | 'compacted'> => {
      try {
        await this.call(this.etcd.range({ key: this.prefix, revision: rev }, this.callTimeoutMs));
        return 'ok';
      } catch (err) {
        if (/compacted/i.test((err as Error).message)) return 'compacted';
        if (/future revision/i.test((err as Error).message)) return 'ok';
        throw err;
      }
    };
    if ((await probe(revision)) === 'ok') return undefined;
    let low = revision + 1;
    let high = await this.currentRevision();
    for (let i = 0; i < MAX_COMPACTION_PROBES && low < high; i++) {
      const mid = Math.floor((low + high) / 2);
      if ((await probe(mid)) === 'ok') high = mid;
      else low = mid + 1;
    }
    return low;
  }
}

function parseEvent(value: Buffer, revision: number): DeleteEvent | undefined {
  try {
    const parsed = JSON.parse(value.toString('utf8')) as { key?: unknown; payload?: unknown; time?: unknown };
    if (typeof parsed.key !== 'string') return undefined;
    return {
      revision,
      key: parsed.key,
      payload: typeof parsed.payload === 'string' ? parsed.payload : '',
      time: typeof parsed.time === 'string' ? parsed.time : '',
    };
  } catch {
    return undefined;
  }
}

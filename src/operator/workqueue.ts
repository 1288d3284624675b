// The controller's work queue: keys ("namespace/name" of a HotStandbyCluster)
// wait here until a worker reconciles them.
//
// - A key is queued at most once however often it is added (events burst).
// - One key is never reconciled twice at once: a key added while its reconcile
//   runs is queued again when that reconcile ends, so the newest state is seen.
// - A failed reconcile is retried after a per-key delay that doubles up to a
//   cap and is reset by a success; a reconcile may also ask to run again later.
// - Every known key is re-queued periodically (resync), a backstop for missed
//   events and for state outside Kubernetes (the stores) that sends none.
// - At most `concurrency` keys run at once; stop() clears timers and waits
//   (bounded) for running reconciles.
// Pure logic on timers, so it is unit-tested with fake timers.

export interface ReconcileResult {
  /** Run this key again after so many milliseconds (a wait, not an error). */
  requeueAfterMs?: number;
}

export interface WorkQueueOptions {
  handler: (key: string) => Promise<ReconcileResult | void>;
  /** Keys reconciled at the same time (default 4). */
  concurrency?: number;
  /** First retry delay after a failure (default 500 ms). */
  baseDelayMs?: number;
  /** Retry delay cap (default 60 s). */
  maxDelayMs?: number;
  /** Told of every failure with the delay before the retry. */
  onError?: (key: string, err: unknown, failures: number, retryInMs: number) => void;
}

export class WorkQueue {
  private readonly o: Required<Omit<WorkQueueOptions, 'onError'>> & Pick<WorkQueueOptions, 'onError'>;
  /** Keys waiting for a worker, in order. Never holds a running key. */
  private readonly ready: string[] = [];
  /** Keys that must run (again): waiting in `ready`, or running and added meanwhile. */
  private readonly dirty = new Set<string>();
  private readonly running = new Map<string, Promise<void>>();
  private readonly failures = new Map<string, number>();
  private readonly delayed = new Map<string, { at: number; timer: NodeJS.Timeout }>();
  private resyncTimer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(opts: WorkQueueOptions) {
    this.o = { concurrency: 4, baseDelayMs: 500, maxDelayMs: 60_000, ...opts };
    if (!(this.o.concurrency >= 1)) throw new Error(`work queue concurrency must be at least 1, got ${this.o.concurrency}`);
  }

  /** Keys waiting for a worker (the depth metric). */
  get depth(): number {
    return this.ready.length;
  }

  /** Keys waiting on a timer (retry, requeueAfter). */
  get waiting(): number {
    return this.delayed.size;
  }

  get active(): number {
    return this.running.size;
  }

  /** Failures in a row of a key (0 after a success). */
  failuresOf(key: string): number {
    return this.failures.get(key) ?? 0;
  }

  add(key: string): void {
    if (this.stopped || this.dirty.has(key)) return;
    this.dirty.add(key);
    if (!this.running.has(key)) this.ready.push(key);
    this.pump();
  }

  /** Adds the key after `ms`; an earlier pending time for the key wins. */
  addAfter(key: string, ms: number): void {
    if (this.stopped) return;
    if (ms <= 0) return this.add(key);
    const at = Date.now() + ms;
    const pending = this.delayed.get(key);
    if (pending && pending.at <= at) return;
    if (pending) clearTimeout(pending.timer);
    const timer = setTimeout(() => {
      this.delayed.delete(key);
      this.add(key);
    }, ms);
    this.delayed.set(key, { at, timer });
  }

  /** Forgets a key's failures and pending timers (its object is gone). */
  forget(key: string): void {
    this.failures.delete(key);
    const pending = this.delayed.get(key);
    if (pending) clearTimeout(pending.timer);
    this.delayed.delete(key);
  }

  /** Adds every key from `keys()` now and every `everyMs` after. */
  startResync(everyMs: number, keys: () => Iterable<string>): void {
    if (this.resyncTimer) clearInterval(this.resyncTimer);
    this.resyncTimer = setInterval(() => {
      for (const k of keys()) this.add(k);
    }, everyMs);
  }

  /** Stops taking work, clears every timer, and waits up to `timeoutMs` for running reconciles. */
  async stop(timeoutMs = 30_000): Promise<void> {
    this.stopped = true;
    if (this.resyncTimer) clearInterval(this.resyncTimer);
    for (const { timer } of this.delayed.values()) clearTimeout(timer);
    this.delayed.clear();
    this.ready.length = 0;
    this.dirty.clear();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled([...this.running.values()]),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, timeoutMs);
      }),
    ]);
    clearTimeout(timer);
  }

  private pump(): void {
    while (!this.stopped && this.running.size < this.o.concurrency && this.ready.length > 0) {
      const key = this.ready.shift()!;
      this.dirty.delete(key);
      this.running.set(key, this.run(key));
    }
  }

  private async run(key: string): Promise<void> {
    try {
      const result = await this.o.handler(key);
      this.failures.delete(key);
      if (result?.requeueAfterMs !== undefined) this.addAfter(key, result.requeueAfterMs);
    } catch (err) {
      const n = (this.failures.get(key) ?? 0) + 1;
      this.failures.set(key, n);
      const delay = Math.min(this.o.maxDelayMs, this.o.baseDelayMs * 2 ** Math.min(n - 1, 30));
      this.o.onError?.(key, err, n, delay);
      this.addAfter(key, delay);
    } finally {
      this.running.delete(key);
      // Added while it ran: it waited in `dirty` only, so it goes to the back now.
      if (this.dirty.has(key) && !this.stopped) this.ready.push(key);
      this.pump();
    }
  }
}

// The work queue's rules, on fake timers: dedupe, one reconcile per key at a
// time, re-run of a key added while running, capped per-key backoff reset by
// a success, requeueAfter, resync, bounded concurrency, stop.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { WorkQueue, type ReconcileResult } from '../../src/operator/workqueue.ts';

/** A handler whose calls stay open until the test ends them. */
function gatedHandler() {
  const calls: Array<{ key: string; done: (r?: ReconcileResult) => void; fail: (e: Error) => void }> = [];
  const handler = (key: string) =>
    new Promise<ReconcileResult | void>((resolve, reject) => {
      calls.push({ key, done: (r) => resolve(r), fail: reject });
    });
  return { calls, handler };
}

const flush = async (): Promise<void> => {
  for (let i = 0; i < 5; i++) await Promise.resolve();
};

describe('WorkQueue', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('queues a key once however often it is added', async () => {
    const { calls, handler } = gatedHandler();
    const q = new WorkQueue({ handler, concurrency: 1 });
    q.add('ns/blocker');
    q.add('ns/a');
    q.add('ns/a');
    q.add('ns/a');
    expect(q.depth).toBe(1);
    calls[0]!.done();
    await flush();
    expect(calls.map((c) => c.key)).toEqual(['ns/blocker', 'ns/a']);
    calls[1]!.done();
    await flush();
    expect(calls).toHaveLength(2);
    await q.stop();
  });

  it('never runs one key twice at once; a key added while running runs again after', async () => {
    const { calls, handler } = gatedHandler();
    const q = new WorkQueue({ handler, concurrency: 4 });
    q.add('ns/a');
    q.add('ns/a'); // still queued? no: already running, so it is marked to run again
    expect(q.active).toBe(1);
    q.add('ns/a');
    await flush();
    expect(calls).toHaveLength(1);
    expect(q.depth).toBe(0);
    calls[0]!.done();
    await flush();
    expect(calls).toHaveLength(2);
    expect(q.active).toBe(1);
    calls[1]!.done();
    await flush();
    expect(calls).toHaveLength(2);
    await q.stop();
  });

  it('runs at most `concurrency` keys at once, others in order', async () => {
    const { calls, handler } = gatedHandler();
    const q = new WorkQueue({ handler, concurrency: 2 });
    for (const k of ['a', 'b', 'c', 'd']) q.add(`ns/${k}`);
    expect(q.active).toBe(2);
    expect(q.depth).toBe(2);
    calls[1]!.done();
    await flush();
    expect(calls.map((c) => c.key)).toEqual(['ns/a', 'ns/b', 'ns/c']);
    expect(q.depth).toBe(1);
    const stopping = q.stop(10);
    await vi.advanceTimersByTimeAsync(10);
    await stopping;
  });

  it('retries a failing key with doubling delays up to the cap, and a success resets them', async () => {
    let failNext = 4;
    const times: number[] = [];
    const errors: number[] = [];
    const q = new WorkQueue({
      handler: async () => {
        times.push(Date.now());
        if (failNext-- > 0) throw new Error('boom');
      },
      baseDelayMs: 100,
      maxDelayMs: 500,
      onError: (_k, _e, _n, retryIn) => errors.push(retryIn),
    });
    const t0 = Date.now();
    q.add('ns/a');
    await vi.advanceTimersByTimeAsync(5000);
    expect(errors).toEqual([100, 200, 400, 500]);
    expect(times.map((t) => t - t0)).toEqual([0, 100, 300, 700, 1200]);
    expect(q.failuresOf('ns/a')).toBe(0);
    failNext = 1;
    q.add('ns/a');
    await vi.advanceTimersByTimeAsync(5000);
    expect(errors.at(-1)).toBe(100); // reset by the success
    await q.stop();
  });

  it('backoff is per key: a failing key does not delay another', async () => {
    const ran: string[] = [];
    const q = new WorkQueue({
      handler: async (key) => {
        ran.push(key);
        if (key === 'ns/bad') throw new Error('boom');
      },
      baseDelayMs: 1000,
    });
    q.add('ns/bad');
    await vi.advanceTimersByTimeAsync(0);
    q.add('ns/good');
    await vi.advanceTimersByTimeAsync(0);
    expect(ran).toEqual(['ns/bad', 'ns/good']);
    await q.stop();
  });

  it('requeueAfter runs the key again later; the earlier of two pending times wins', async () => {
    const times: number[] = [];
    let first = true;
    const q = new WorkQueue({
      handler: async () => {
        times.push(Date.now());
        if (first) {
          first = false;
          return { requeueAfterMs: 3000 };
        }
      },
    });
    const t0 = Date.now();
    q.add('ns/a');
    await vi.advanceTimersByTimeAsync(0);
    q.addAfter('ns/a', 10_000); // later than the pending 3 s: ignored
    await vi.advanceTimersByTimeAsync(20_000);
    expect(times.map((t) => t - t0)).toEqual([0, 3000]);
    await q.stop();
  });

  it('forget drops pending retries of a key', async () => {
    const ran: string[] = [];
    const q = new WorkQueue({
      handler: async (key) => {
        ran.push(key);
        throw new Error('boom');
      },
      baseDelayMs: 1000,
    });
    q.add('ns/a');
    await vi.advanceTimersByTimeAsync(0);
    expect(q.waiting).toBe(1);
    q.forget('ns/a');
    await vi.advanceTimersByTimeAsync(10_000);
    expect(ran).toEqual(['ns/a']);
    await q.stop();
  });

  it('resync adds every known key periodically', async () => {
    const ran: string[] = [];
    const q = new WorkQueue({ handler: async (key) => void ran.push(key) });
    q.startResync(1000, () => ['ns/a', 'ns/b']);
    await vi.advanceTimersByTimeAsync(2500);
    expect(ran).toEqual(['ns/a', 'ns/b', 'ns/a', 'ns/b']);
    await q.stop();
    await vi.advanceTimersByTimeAsync(5000);
    expect(ran).toHaveLength(4);
  });

  it('stop waits for running reconciles (bounded), clears timers and takes no more work', async () => {
    const { calls, handler } = gatedHandler();
    const q = new WorkQueue({ handler, concurrency: 1 });
    q.add('ns/a');
    q.add('ns/b');
    q.addAfter('ns/c', 1000);
    let stopped = false;
    const stopping = q.stop(5000).then(() => {
      stopped = true;
    });
    await flush();
    expect(stopped).toBe(false);
    calls[0]!.done();
    await stopping;
    expect(q.depth).toBe(0);
    expect(q.waiting).toBe(0);
    q.add('ns/d');
    await vi.advanceTimersByTimeAsync(2000);
    expect(calls.map((c) => c.key)).toEqual(['ns/a']);

    // A reconcile that never ends does not hold stop forever.
    const hung = new WorkQueue({ handler: () => new Promise(() => undefined) });
    hung.add('ns/x');
    const p = hung.stop(1000);
    await vi.advanceTimersByTimeAsync(1000);
    await p;
  });
});

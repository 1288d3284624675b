import { describe, expect, it } from 'vitest';
import { percentile, sleep, TimeoutError, waitFor, withTimeout } from '../../src/lib/time.ts';

describe('time helpers', () => {
  it('withTimeout rejects with a TimeoutError naming what was awaited', async () => {
    await expect(withTimeout(new Promise(() => {}), 20, 'the moon')).rejects.toThrow(/the moon/);
    await expect(withTimeout(Promise.resolve(7), 1000, 'x')).resolves.toBe(7);
  });

  it('waitFor returns the first truthy value and gives up at the deadline', async () => {
    let n = 0;
    await expect(waitFor(() => (++n >= 3 ? n : undefined), { timeoutMs: 1000, intervalMs: 1, what: 'n' })).resolves.toBe(3);
    await expect(waitFor(() => false, { timeoutMs: 30, intervalMs: 5, what: 'never' })).rejects.toBeInstanceOf(TimeoutError);
  });

  it('sleep stops early when aborted', async () => {
    const ac = new AbortController();
    const p = sleep(10_000, ac.signal);
    ac.abort(new Error('stop'));
    await expect(p).rejects.toThrow('stop');
  });

  it('percentile uses nearest rank', () => {
    expect(percentile([5, 1, 3, 2, 4], 50)).toBe(3);
    expect(percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 99)).toBe(10);
    expect(percentile([], 50)).toBeNaN();
  });
});

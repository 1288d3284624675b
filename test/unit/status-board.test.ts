import { describe, expect, it } from 'vitest';
import { StatusBoard } from '../../src/agent/status-board.ts';
import { snapshotWanted } from '../../src/agent/snapshot-policy.ts';

describe('StatusBoard', () => {
  it('bumps the version only for changes a master must act on', () => {
    const board = new StatusBoard('m-0');
    const v = board.get().version;
    board.update({ appliedSeq: 10, headSeq: 12 });
    expect(board.get().version).toBe(v);
    expect(board.get().appliedSeq).toBe(10);
    board.update({ role: 'standby' });
    expect(board.get().version).toBe(v + 1);
    board.update({ leader: { member: 'm-1', address: 'a:1', epoch: 5 } });
    expect(board.get().version).toBe(v + 2);
    board.update({ leader: { member: 'm-1', address: 'a:1', epoch: 5 } });
    expect(board.get().version).toBe(v + 2);
  });

  it('wakes a long-poll on change and returns at its timeout otherwise', async () => {
    const board = new StatusBoard('m-0');
    const v = board.get().version;
    const waiting = board.waitForChange(v, 5000);
    board.update({ role: 'leader', writable: true });
    const s = await waiting;
    expect(s.role).toBe('leader');
    expect(s.version).toBe(v + 1);

    const started = Date.now();
    const unchanged = await board.waitForChange(s.version, 50);
    expect(unchanged.version).toBe(s.version);
    expect(Date.now() - started).toBeGreaterThanOrEqual(45);
  });

  it('answers at once for a stale version and releases waiters on shutdown', async () => {
    const board = new StatusBoard('m-0');
    expect((await board.waitForChange(-1, 10_000)).version).toBe(board.get().version);
    const waiting = board.waitForChange(board.get().version, 60_000);
    board.releaseAll();
    await expect(waiting).resolves.toBeDefined();
  });
});

describe('snapshotWanted', () => {
  const base = { headSeq: 0, lastSnapshotSeq: 0, lastSnapshotAt: 0, now: 1000, everyEntries: 100, intervalSeconds: 60, logLength: 0, maxLength: 10_000 };

  it('asks after everyEntries new entries, and never when nothing is new', () => {
    expect(snapshotWanted({ ...base, headSeq: 99 })).toBeNull();
    expect(snapshotWanted({ ...base, headSeq: 100 })?.minSeq).toBe(100);
    expect(snapshotWanted({ ...base, headSeq: 50, lastSnapshotSeq: 50, now: 10_000_000 })).toBeNull();
  });

  it('asks when the log fills half its maximum or the interval passes', () => {
    expect(snapshotWanted({ ...base, headSeq: 10, logLength: 5000 })?.reason).toMatch(/half its maximum/);
    expect(snapshotWanted({ ...base, headSeq: 10, now: 61_000 })?.reason).toMatch(/60 s/);
    expect(snapshotWanted({ ...base, headSeq: 10, now: 61_000, intervalSeconds: 0 })).toBeNull();
  });

  it('asks at once when the log no longer reaches back to the newest snapshot (a stream server restarted empty)', () => {
    // Epoch raised to head 200 on an empty stream, no snapshot: entries 1-200 exist nowhere but in the masters.
    expect(snapshotWanted({ ...base, headSeq: 200, logLength: 0, logStartSeq: 200 })?.reason).toMatch(/log starts after seq 200/);
    expect(snapshotWanted({ ...base, headSeq: 230, logLength: 30, logStartSeq: 200, lastSnapshotSeq: 150 })?.minSeq).toBe(230);
    // The log covers everything after the snapshot: no extra snapshot.
    expect(snapshotWanted({ ...base, headSeq: 50, logLength: 50, logStartSeq: 0 })).toBeNull();
    expect(snapshotWanted({ ...base, headSeq: 250, logLength: 100, logStartSeq: 150, lastSnapshotSeq: 200 })).toBeNull();
  });
});

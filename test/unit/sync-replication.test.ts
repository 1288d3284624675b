// The pure parts of sync replication: the candidacy rule a published sync set
// imposes, the acknowledgement's wire format, what an acknowledgement proves,
// and the standby's received buffer (what it may claim to hold).
import { describe, expect, it } from 'vitest';
import { ackCovers, formatAck, parseAck, parseSyncRecord, syncCandidacy, type SyncRecord } from '../../src/agent/sync-record.ts';
import { ReceivedBuffer } from '../../src/agent/sync-standby.ts';
import type { OpEntry } from '../../src/agent/types.ts';

const record = (over: Partial<SyncRecord> = {}): SyncRecord => ({ epoch: 7, leader: 'm-0', mode: 'sync', members: ['m-1'], since: 'now', ...over });

describe('syncCandidacy', () => {
  it('no record or a degraded one: no restriction (the async rule applies)', () => {
    expect(syncCandidacy(undefined, 'm-2')).toEqual({ restricted: false });
    expect(syncCandidacy(record({ mode: 'degraded', members: [] }), 'm-2')).toEqual({ restricted: false });
  });

  it('only members of the set may campaign; others are told why', () => {
    expect(syncCandidacy(record(), 'm-1')).toMatchObject({ restricted: true, eligible: true, members: ['m-1'] });
    const out = syncCandidacy(record(), 'm-2');
    expect(out).toMatchObject({ restricted: true, eligible: false });
    expect(out.restricted && out.reason).toMatch(/not in the sync set \[m-1\] published by epoch 7/);
  });

  it('the leader that wrote the set is not a candidate through it', () => {
    expect(syncCandidacy(record({ members: ['m-0', 'm-1'] }), 'm-0')).toMatchObject({ restricted: true, eligible: false });
  });

  it('parses only well-formed records', () => {
    expect(parseSyncRecord(JSON.stringify(record()))).toEqual(record());
    expect(parseSyncRecord('{"mode":"sometimes","members":[],"epoch":1}')).toBeUndefined();
    expect(parseSyncRecord('not json')).toBeUndefined();
    expect(parseSyncRecord(null)).toBeUndefined();
  });
});

describe('acknowledgements', () => {
  it('round-trip and refuse malformed messages', () => {
    expect(parseAck(formatAck({ member: 'm-1', epoch: 12, seq: 340 }))).toEqual({ member: 'm-1', epoch: 12, seq: 340 });
    for (const bad of ['', 'm-1 12', 'm-1 x 3', 'm-1 1 -2', ' 1 2', 'm-1 1 2 3']) expect(parseAck(bad)).toBeUndefined();
  });

  it("an ack of the leader's epoch proves its seq; an older epoch proves at most where this epoch started", () => {
    // Leader of epoch 20, whose entries start after seq 100.
    expect(ackCovers({ epoch: 20, seq: 150 }, 20, 100)).toBe(150);
    expect(ackCovers({ epoch: 9, seq: 100 }, 20, 100)).toBe(100);
    expect(ackCovers({ epoch: 9, seq: 80 }, 20, 100)).toBe(80);
    // An older-epoch entry past the start belongs to a history this leader did not continue.
    expect(ackCovers({ epoch: 9, seq: 120 }, 20, 100)).toBe(0);
    // A newer epoch than ours is not ours to count.
    expect(ackCovers({ epoch: 21, seq: 150 }, 20, 100)).toBe(0);
  });
});

function entries(from: number, to: number, epoch = 1): OpEntry[] {
  return Array.from({ length: to - from + 1 }, (_, i) => ({ seq: from + i, epoch, op: 'put', key: `k${from + i}`, payload: 'v', crc: 0 }));
}

describe('ReceivedBuffer', () => {
  it('holds what the master has not applied, and claims an unbroken run from the applied state', () => {
    const b = new ReceivedBuffer();
    b.add(entries(1, 5));
    expect(b.heldThrough()?.seq).toBe(5);
    b.applied(3);
    expect(b.size).toBe(2);
    expect(b.after(3)?.map((e) => e.seq)).toEqual([4, 5]);
    b.applied(5);
    expect(b.size).toBe(0);
    expect(b.heldThrough()).toBeUndefined();
    expect(b.after(5)).toEqual([]);
  });

  it('skips entries read twice, starts over at a jump, and claims nothing across a hole', () => {
    const b = new ReceivedBuffer();
    b.add(entries(1, 4));
    b.add(entries(3, 6)); // a second stream re-reads 3..4
    expect(b.after(0)?.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5, 6]);
    b.add(entries(50, 52)); // the master restored a snapshot at 49
    expect(b.heldThrough()).toBeUndefined(); // until the master acknowledges 49
    expect(b.after(6)).toBeUndefined();
    b.applied(49);
    expect(b.heldThrough()?.seq).toBe(52);
  });

  it('is bounded: when full it stops claiming more until the master applies', () => {
    const b = new ReceivedBuffer(3);
    expect(b.add(entries(1, 5))).toBe(false);
    expect(b.heldThrough()?.seq).toBe(3);
    b.applied(5); // the master applied what the buffer could not hold
    expect(b.add(entries(6, 7))).toBe(true);
    expect(b.heldThrough()?.seq).toBe(7);
  });

  it('a new master instance: nothing is claimed until it acknowledges', () => {
    const b = new ReceivedBuffer();
    b.add(entries(1, 3));
    b.clear();
    b.add(entries(10, 11));
    expect(b.heldThrough()).toBeUndefined();
    b.applied(9);
    expect(b.heldThrough()?.seq).toBe(11);
  });
});

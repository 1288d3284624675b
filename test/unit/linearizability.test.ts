// The linearizability checker (tools/linearizability, Porcupine) on
// hand-made histories, through the real binary: pure logic, no cluster.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HistoryRecorder, outcomeOfStatus, type HistoryOp } from '../../src/chaos/history.ts';
import { checkHistory, ensureChecker } from '../../src/chaos/linearizability.ts';

let dir: string;
beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hs-lin-'));
  await ensureChecker(); // builds it once when missing (scripts/build-linearizability.sh)
}, 600_000);
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const op = (o: Partial<HistoryOp> & Pick<HistoryOp, 'op' | 'invokeMs' | 'completeMs'>): HistoryOp => ({
  client: 0,
  key: 'a',
  value: null,
  ok: true,
  member: 'kv-0',
  epoch: 1,
  ...o,
});

function write(name: string, ops: HistoryOp[]): string {
  const rec = new HistoryRecorder();
  for (const o of ops) rec.record(o);
  const file = path.join(dir, `${name}.jsonl`);
  rec.write(file);
  return file;
}

describe('linearizability checker', () => {
  it('passes a linearizable history, with concurrent ops, a not-found read and a refused write', async () => {
    const file = write('ok', [
      op({ client: 1, op: 'get', value: null, invokeMs: 0, completeMs: 1 }),
      op({ client: 0, op: 'put', value: '1', invokeMs: 2, completeMs: 10 }),
      // concurrent with the put: either value is fine
      op({ client: 1, op: 'get', value: null, invokeMs: 3, completeMs: 4 }),
      op({ client: 2, op: 'get', value: '1', invokeMs: 5, completeMs: 6 }),
      // refused before it was applied: it never happened, so reads still see 1
      op({ client: 0, op: 'put', value: '2', invokeMs: 11, completeMs: 12, ok: false }),
      op({ client: 1, op: 'get', value: '1', invokeMs: 13, completeMs: 14, member: 'kv-1', epoch: 2 }),
      op({ client: 0, op: 'put', value: '3', key: 'b', invokeMs: 13, completeMs: 15 }),
      op({ client: 1, op: 'get', value: '3', key: 'b', invokeMs: 16, completeMs: 17 }),
    ]);
    const r = await checkHistory(file);
    expect(r).toMatchObject({ linearizable: true, ops: 8, keys: 2, failingKeys: [], visualization: null, refused: 1, unknown: 0 });
    expect(fs.existsSync(file.replace(/\.jsonl$/, '.html'))).toBe(false);
  });

  it('fails a stale read after an acknowledged write and leaves a visualization beside the history', async () => {
    const file = write('stale', [
      op({ client: 0, op: 'put', value: '1', invokeMs: 0, completeMs: 5 }),
      op({ client: 0, op: 'put', value: '2', invokeMs: 6, completeMs: 9, member: 'kv-1', epoch: 2 }),
      // a deposed leader still serving its old state
      op({ client: 1, op: 'get', value: '1', invokeMs: 10, completeMs: 11, member: 'kv-0', epoch: 1 }),
      op({ client: 1, op: 'get', key: 'fine', value: null, invokeMs: 10, completeMs: 11 }),
    ]);
    const r = await checkHistory(file);
    expect(r.linearizable).toBe(false);
    expect(r.failingKeys).toEqual(['a']);
    expect(r.visualization).toBe(file.replace(/\.jsonl$/, '.html'));
    const html = fs.readFileSync(r.visualization!, 'utf8');
    expect(html).toContain('<html');
    expect(html).toContain('member kv-0, epoch 1');
  });

  it('fails a read of a value nobody wrote, and a write acknowledged but then lost', async () => {
    const phantom = await checkHistory(write('phantom', [op({ op: 'get', value: 'x', invokeMs: 0, completeMs: 1 })]));
    expect(phantom.linearizable).toBe(false);
    const lost = await checkHistory(
      write('lost', [op({ op: 'put', value: '1', invokeMs: 0, completeMs: 1 }), op({ client: 1, op: 'get', value: null, invokeMs: 2, completeMs: 3, member: 'kv-1', epoch: 2 })]),
    );
    expect(lost.linearizable).toBe(false);
  });

  it('accepts an unknown-outcome write that shows up later, and one that never does', async () => {
    const later = await checkHistory(
      write('unknown-later', [
        op({ op: 'put', value: '1', invokeMs: 0, completeMs: 1 }),
        op({ op: 'put', value: '2', invokeMs: 2, completeMs: 2000, ok: null }),
        op({ client: 1, op: 'get', value: '1', invokeMs: 2100, completeMs: 2101, member: 'kv-1', epoch: 2 }),
        op({ client: 1, op: 'get', value: '2', invokeMs: 5000, completeMs: 5001, member: 'kv-1', epoch: 2 }),
        // a read whose answer never came constrains nothing
        op({ client: 2, op: 'get', value: null, invokeMs: 5002, completeMs: 7000, ok: null }),
      ]),
    );
    expect(later).toMatchObject({ linearizable: true, unknown: 2 });
    const never = await checkHistory(
      write('unknown-never', [
        op({ op: 'put', value: '1', invokeMs: 0, completeMs: 1 }),
        op({ op: 'put', value: '2', invokeMs: 2, completeMs: 2000, ok: null }),
        op({ client: 1, op: 'get', value: '1', invokeMs: 3000, completeMs: 3001 }),
      ]),
    );
    expect(never.linearizable).toBe(true);
    // but once it was seen, the older value cannot come back
    const back = await checkHistory(
      write('unknown-flipflop', [
        op({ op: 'put', value: '1', invokeMs: 0, completeMs: 1 }),
        op({ op: 'put', value: '2', invokeMs: 2, completeMs: 2000, ok: null }),
        op({ client: 1, op: 'get', value: '2', invokeMs: 3000, completeMs: 3001 }),
        op({ client: 1, op: 'get', value: '1', invokeMs: 3002, completeMs: 3003 }),
      ]),
    );
    expect(back.linearizable).toBe(false);
  });

  it('refuses a malformed history with the line and field named', async () => {
    const file = path.join(dir, 'bad.jsonl');
    fs.writeFileSync(file, `${JSON.stringify(op({ op: 'put', value: '1', invokeMs: 0, completeMs: 1 }))}\n{"client":0,"op":"cas","key":"a","invokeMs":0,"completeMs":1,"ok":true}\n`);
    await expect(checkHistory(file)).rejects.toThrow(/line 2: "op" must be "put" or "get"/);
  });
});

describe('outcomeOfStatus', () => {
  it('treats only answers given before the append as refusals', () => {
    expect(outcomeOfStatus(200, undefined)).toBe(true);
    expect(outcomeOfStatus(409, 'not_leader')).toBe(false);
    expect(outcomeOfStatus(503, 'catching_up')).toBe(false);
    expect(outcomeOfStatus(503, 'unavailable')).toBeNull();
    expect(outcomeOfStatus(500, 'internal')).toBeNull();
  });
});

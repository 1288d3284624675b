// The history of client operations a fault run records, one JSON object per
// operation (JSON lines on disk), and the checks that need only the history:
//
//   {"client": 0, "op": "put", "key": "w0-17", "value": "17", "invokeMs": ..., "completeMs": ...,
//    "ok": true, "member": "kv-1", "epoch": 12}
//
// ok: true = acknowledged, false = refused (definitely not applied), null =
// unknown outcome (timeout, connection lost, or an error that does not say).
// For a get, value is what was read (null = absent or not read). Times are
// wall-clock ms with sub-ms precision from one monotonic clock (timeOrigin +
// performance.now()), so invoke/complete order is real-time order. The
// linearizability checker reads exactly this format.
import fs from 'node:fs';

export interface Operation {
  client: number;
  op: 'put' | 'get';
  key: string;
  value: string | null;
  invokeMs: number;
  completeMs: number;
  ok: boolean | null;
  member: string;
  epoch: number | null;
}

/** Wall-clock ms that never jumps (one clock for every operation of a run). */
export function nowMs(): number {
  return performance.timeOrigin + performance.now();
}

export class HistoryRecorder {
  readonly ops: Operation[] = [];

  record(op: Operation): void {
    this.ops.push(op);
  }

  /** Acknowledged puts, in completion order. */
  ackedPuts(): Operation[] {
    return this.ops.filter((o) => o.op === 'put' && o.ok === true).sort((a, b) => a.completeMs - b.completeMs);
  }

  toJsonLines(): string {
    return this.ops.map((o) => JSON.stringify(o)).join('\n') + (this.ops.length ? '\n' : '');
  }

  writeFile(file: string): void {
    fs.writeFileSync(file, this.toJsonLines());
  }

  static readFile(file: string): Operation[] {
    return fs
      .readFileSync(file, 'utf8')
      .split('\n')
      .filter((l) => l.trim())
      .map((l) => JSON.parse(l) as Operation);
  }
}

/**
 * "At most one member had writes acknowledged at any time", from the client
 * side. Every acknowledged write carries the epoch its member led under.
 * (a) No two members acknowledge under the same epoch. (b) Real-time order
 * agrees with epoch order: once member A's acknowledgement under epoch e has
 * completed, no other member may acknowledge a write invoked after that under
 * an epoch <= e (that member would be a deposed leader still acknowledging).
 * Client-side intervals of two leaders may overlap in time (network latency);
 * this is the strongest claim the history itself supports. Returns the
 * violations, described (empty = fine).
 */
export function singleWriterViolations(ops: readonly Operation[]): string[] {
  const acked = ops.filter((o) => o.op === 'put' && o.ok === true);
  const problems: string[] = [];
  const byEpoch = new Map<number, Set<string>>();
  for (const o of acked) {
    if (o.epoch === null) {
      problems.push(`acknowledged put ${o.key} on ${o.member} carries no epoch`);
      continue;
    }
    const members = byEpoch.get(o.epoch) ?? new Set<string>();
    members.add(o.member);
    byEpoch.set(o.epoch, members);
  }
  for (const [epoch, members] of byEpoch) if (members.size > 1) problems.push(`epoch ${epoch} acknowledged by ${[...members].join(' and ')}`);

  // Sweep: acks sorted by completion; for each ack x (by invoke time), the
  // highest epoch each member had acknowledged before x was invoked.
  const byComplete = [...acked].sort((a, b) => a.completeMs - b.completeMs);
  const byInvoke = [...acked].sort((a, b) => a.invokeMs - b.invokeMs);
  const best = new Map<string, Operation>();
  let i = 0;
  for (const x of byInvoke) {
    while (i < byComplete.length && byComplete[i]!.completeMs < x.invokeMs) {
      const y = byComplete[i++]!;
      const had = best.get(y.member);
      if (!had || (y.epoch ?? 0) > (had.epoch ?? 0)) best.set(y.member, y);
    }
    for (const [member, y] of best) {
      if (member !== x.member && (y.epoch ?? 0) >= (x.epoch ?? 0)) {
        problems.push(
          `${x.member} acknowledged ${x.key} under epoch ${x.epoch} (invoked at ${x.invokeMs.toFixed(1)}) after ${member} ` +
            `had acknowledged ${y.key} under epoch ${y.epoch} (completed at ${y.completeMs.toFixed(1)})`,
        );
        if (problems.length > 20) return problems;
      }
    }
  }
  return problems;
}

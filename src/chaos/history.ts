// The history of client operations a fault run records (hotstandby chaos,
// the network-fault tests), one JSON object per operation (JSON lines on disk):
//
//   {"client": 0, "op": "put"|"get", "key": "k", "value": "v"|null,
//    "invokeMs": 12.5, "completeMs": 14.1, "ok": true|false|null,
//    "member": "kv-0", "epoch": 7|null}
//
// ok=true: acknowledged (a get's value is what was read; null = not found).
// ok=false: definitely refused before it was applied (it did not happen).
// ok=null: the outcome is unknown (timeout, connection reset after sending,
// a 503 after the append was sent): a put may or may not have taken effect.
// Times are wall-clock ms with sub-ms precision from one monotonic clock
// (timeOrigin + performance.now(), see nowMs), so invoke/complete order is
// real-time order. The linearizability checker (tools/linearizability, via
// ./linearizability.ts) reads exactly this format; docs/chaos.md describes it.
// The checks that need only the history (one writer at a time) are here too.
import fs from 'node:fs';

export interface HistoryOp {
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

/** What the server answered to one request, as the history records it. */
export type Outcome = Pick<HistoryOp, 'ok' | 'value' | 'epoch'>;

export class HistoryRecorder {
  readonly ops: HistoryOp[] = [];

  /** Marks the start of an operation; call the returned function with its outcome when it completes. */
  begin(client: number, op: 'put' | 'get', key: string, member: string, value: string | null = null): (outcome: Outcome) => HistoryOp {
    const invokeMs = nowMs();
    return (outcome) => {
      const rec: HistoryOp = {
        client,
        op,
        key,
        value: op === 'put' ? value : outcome.value,
        invokeMs,
        completeMs: nowMs(),
        ok: outcome.ok,
        member,
        epoch: outcome.epoch,
      };
      this.ops.push(rec);
      return rec;
    };
  }

  /** Adds an operation whose times the caller measured (with nowMs). */
  record(op: HistoryOp): void {
    this.ops.push(op);
  }

  /** Acknowledged puts, in completion order. */
  ackedPuts(): HistoryOp[] {
    return this.ops.filter((o) => o.op === 'put' && o.ok === true).sort((a, b) => a.completeMs - b.completeMs);
  }

  toJsonLines(): string {
    return this.ops.map((o) => JSON.stringify(o)).join('\n') + (this.ops.length ? '\n' : '');
  }

  /** Writes the history as JSON lines (the checker's input). */
  write(file: string): void {
    fs.writeFileSync(file, this.toJsonLines());
  }

  static read(file: string): HistoryOp[] {
    return fs
      .readFileSync(file, 'utf8')
      .split('\n')
      .filter((l) => l.trim())
      .map((l) => JSON.parse(l) as HistoryOp);
  }
}

/**
 * How a kvmaster answer maps onto the history's `ok`. Only answers given
 * before the write was handed to the log are definite refusals: 409
 * not_leader (never queued, or refused by the agent / fenced by epoch before
 * appending) and 503 catching_up. Any other 503 may come after the append was
 * sent (its outcome unknown, or in the log but not applied here): unknown.
 */
export function outcomeOfStatus(status: number, code: string | undefined): boolean | null {
  if (status === 200) return true;
  if (status === 409) return false;
  if (status === 503 && code === 'catching_up') return false;
  if (status === 400 || status === 404 || status === 405 || status === 413) return false;
  return null;
}

/** Wall-clock ms that never jumps (one clock for every operation of a run). */
export function nowMs(): number {
  return performance.timeOrigin + performance.now();
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
export function singleWriterViolations(ops: readonly HistoryOp[]): string[] {
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
  const best = new Map<string, HistoryOp>();
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

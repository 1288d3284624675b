// A recorder of client operations for the linearizability checker
// (tools/linearizability, via ./linearizability.ts). One JSON object per line:
//
//   {"client": 0, "op": "put"|"get", "key": "k", "value": "v"|null,
//    "invokeMs": 12.5, "completeMs": 14.1, "ok": true|false|null,
//    "member": "kv-0", "epoch": 7|null}
//
// ok=true: acknowledged (a get's value is what was read; null = not found).
// ok=false: definitely refused before it was applied (it did not happen).
// ok=null: the outcome is unknown (timeout, connection reset after sending,
// a 503 after the append was sent): a put may or may not have taken effect.
// Times are performance.now() milliseconds of this process. docs/chaos.md has
// the full description; the network-partition tests write the same format.
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
    const invokeMs = performance.now();
    return (outcome) => {
      const rec: HistoryOp = {
        client,
        op,
        key,
        value: op === 'put' ? value : outcome.value,
        invokeMs,
        completeMs: performance.now(),
        ok: outcome.ok,
        member,
        epoch: outcome.epoch,
      };
      this.ops.push(rec);
      return rec;
    };
  }

  append(op: HistoryOp): void {
    this.ops.push(op);
  }

  /** Writes the history as JSON lines (the checker's input). */
  write(file: string): void {
    fs.writeFileSync(file, this.ops.map((o) => JSON.stringify(o)).join('\n') + (this.ops.length ? '\n' : ''));
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

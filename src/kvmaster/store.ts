// The reference master's state: a map of keys to values and the sequence of
// the last log entry applied to it. Pure; the master decides what to apply.

export interface KvEntry {
  seq: number;
  op: string;
  key: string;
  payload: string;
}

interface SnapshotBody {
  format: 'kvmaster/1';
  seq: number;
  data: Array<[string, string]>;
}

export class KvStore {
  private map = new Map<string, string>();
  private seq = 0;

  get appliedSeq(): number {
    return this.seq;
  }

  get size(): number {
    return this.map.size;
  }

  get(key: string): string | undefined {
    return this.map.get(key);
  }

  /** Applies the entry that must come next; throws on any other sequence so nothing is applied out of order. */
  apply(entry: KvEntry): void {
    if (entry.seq !== this.seq + 1) throw new Error(`entry ${entry.seq} applied after ${this.seq}: entries must be applied in order`);
    if (entry.op === 'put') this.map.set(entry.key, entry.payload);
    else if (entry.op === 'delete') this.map.delete(entry.key);
    // Other ops belong to other masters sharing no log with us; they still consume their sequence number.
    this.seq = entry.seq;
  }

  /** The whole state at appliedSeq. */
  snapshot(): Buffer {
    const body: SnapshotBody = { format: 'kvmaster/1', seq: this.seq, data: [...this.map] };
    return Buffer.from(JSON.stringify(body));
  }

  /** Replaces the state with a snapshot; `seq` is the sequence the agent says it covers. */
  restore(data: Buffer, seq: number): void {
    const body = JSON.parse(data.toString('utf8')) as Partial<SnapshotBody>;
    if (body.format !== 'kvmaster/1' || !Array.isArray(body.data) || body.seq !== seq) {
      throw new Error(`not a kvmaster snapshot at seq ${seq} (format ${String(body.format)}, seq ${String(body.seq)})`);
    }
    this.map = new Map(body.data);
    this.seq = seq;
  }

  /** Empty state before entry 1 (a resync with no snapshot). */
  clear(): void {
    this.map.clear();
    this.seq = 0;
  }
}

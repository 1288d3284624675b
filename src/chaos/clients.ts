// Clients for fault runs: one per member, each writing to (and now and then
// reading from) that member's master directly, whatever its role, and
// recording every operation in a HistoryRecorder. Asking every member, not
// just the leader, is what lets a history show a deposed leader that still
// acknowledges. Every put writes a key of its own (w<client>-<n> = n), so any
// acknowledged key missing later is a lost write.
import { sleep } from '../lib/time.ts';
import { HistoryRecorder, nowMs, type HistoryOp } from './history.ts';

export interface ClientTarget {
  name: string;
  /** host:port of the member's master. */
  kvAddress: string;
}

export interface MemberClientsOptions {
  targets: readonly ClientTarget[];
  history?: HistoryRecorder;
  /** Pause between two operations of one client. Default 20. */
  pauseMs?: number;
  /** A request without an answer in this time has an unknown outcome. Default 2000. */
  timeoutMs?: number;
  /** Every n-th operation of a client is a read of one of its own earlier keys. Default 5. */
  readEvery?: number;
  /** Clients per member, each with its own keys. Default 1. */
  clientsPerMember?: number;
}

/** The answer codes that say for certain nothing was applied. */
const DEFINITE_REFUSALS = new Set(['not_leader', 'catching_up', 'bad_request', 'not_found']);

export class MemberClients {
  readonly history: HistoryRecorder;
  private readonly opts: Required<Omit<MemberClientsOptions, 'history'>>;
  private readonly stopped = new AbortController();
  private running: Promise<void>[] = [];

  constructor(opts: MemberClientsOptions) {
    this.history = opts.history ?? new HistoryRecorder();
    this.opts = { pauseMs: 20, timeoutMs: 2000, readEvery: 5, clientsPerMember: 1, ...opts };
  }

  start(): void {
    const n = this.opts.targets.length;
    for (let k = 0; k < this.opts.clientsPerMember; k++) this.opts.targets.forEach((t, i) => this.running.push(this.client(k * n + i, t)));
  }

  async stop(): Promise<void> {
    this.stopped.abort();
    await Promise.allSettled(this.running);
  }

  private async client(id: number, target: ClientTarget): Promise<void> {
    const signal = this.stopped.signal;
    for (let n = 1; !signal.aborted; n++) {
      if (n % this.opts.readEvery === 0) await this.get(id, target, `w${id}-${Math.floor(Math.random() * n)}`);
      else await this.put(id, target, `w${id}-${n}`, String(n));
      await sleep(this.opts.pauseMs, signal).catch(() => undefined);
    }
  }

  private async put(client: number, target: ClientTarget, key: string, value: string): Promise<void> {
    const invokeMs = nowMs();
    const op: HistoryOp = { client, op: 'put', key, value, invokeMs, completeMs: invokeMs, ok: null, member: target.name, epoch: null };
    try {
      const res = await fetch(`http://${target.kvAddress}/kv/${encodeURIComponent(key)}`, { method: 'PUT', body: value, signal: AbortSignal.timeout(this.opts.timeoutMs) });
      const body = (await res.json()) as { epoch?: number; error?: { code: string } };
      if (res.status === 200) {
        op.ok = true;
        op.epoch = body.epoch ?? null;
      } else if (DEFINITE_REFUSALS.has(body.error?.code ?? '')) op.ok = false;
    } catch (err) {
      if (refusedConnection(err)) op.ok = false;
    }
    op.completeMs = nowMs();
    this.history.record(op);
  }

  private async get(client: number, target: ClientTarget, key: string): Promise<void> {
    const invokeMs = nowMs();
    const op: HistoryOp = { client, op: 'get', key, value: null, invokeMs, completeMs: invokeMs, ok: null, member: target.name, epoch: null };
    try {
      const res = await fetch(`http://${target.kvAddress}/kv/${encodeURIComponent(key)}`, { signal: AbortSignal.timeout(this.opts.timeoutMs) });
      const body = (await res.json()) as { value?: string; error?: { code: string } };
      if (res.status === 200) {
        op.ok = true;
        op.value = body.value ?? null;
      } else if (res.status === 404) op.ok = true; // read as absent
      else op.ok = false; // a read that was refused changed nothing
    } catch {
      op.ok = false; // nor did one that got no answer
    }
    op.completeMs = nowMs();
    this.history.record(op);
  }
}

function refusedConnection(err: unknown): boolean {
  const cause = (err as { cause?: { code?: string } }).cause;
  return cause?.code === 'ECONNREFUSED';
}

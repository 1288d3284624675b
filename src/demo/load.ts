// A steady write load against whoever leads, with a ledger of every
// acknowledged write, and the check that none of them was lost.
//
// Each client owns its keys and writes them one at a time with values that
// only grow, so a key's stored value can be judged: at least the last
// acknowledged value is fine (a later write may have landed without its
// acknowledgement arriving); anything older, or nothing, is a lost write.
import type { Member } from './localcluster.ts';
import type { HistoryRecorder } from '../chaos/history.ts';
import { outcomeOfStatus } from '../chaos/history.ts';
import { sleep } from '../lib/time.ts';

export interface LoadOptions {
  members: () => readonly Member[];
  /** Writes per second across all clients. */
  rate: number;
  clients?: number;
  keysPerClient?: number;
  /** Records every attempt (client = the writer's index) for the linearizability checker. */
  history?: HistoryRecorder;
}

export interface AckEvent {
  member: Member;
  /** performance.now() when the acknowledgement arrived, and when the acknowledged request was sent. */
  at: number;
  sentAt: number;
}

export interface LoadStats {
  acked: number;
  failed: number;
}

export class WriteLoad {
  /** key → last acknowledged value (a counter). */
  readonly ledger = new Map<string, number>();
  readonly stats: LoadStats = { acked: 0, failed: 0 };
  private readonly opts: Required<Omit<LoadOptions, 'history'>> & Pick<LoadOptions, 'history'>;
  private readonly stopped = new AbortController();
  private running: Promise<void>[] = [];
  private ackListeners: Array<(e: AckEvent) => void> = [];
  private target: Member | undefined;

  constructor(opts: LoadOptions) {
    this.opts = { clients: 4, keysPerClient: 100, ...opts };
  }

  start(): void {
    for (let c = 0; c < this.opts.clients; c++) this.running.push(this.client(c));
  }

  /**
   * Milliseconds from `t0` (performance.now()) to the first write acknowledged
   * by a member `match` accepts; rejects after `timeoutMs` or when `signal` aborts.
   */
  firstAckAfter(t0: number, match: (m: Member) => boolean, timeoutMs: number, signal: AbortSignal): Promise<number> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        done();
        reject(new Error(`no write was acknowledged within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      const done = (): void => {
        clearTimeout(timer);
        off();
        signal.removeEventListener('abort', onAbort);
      };
      const onAbort = (): void => {
        done();
        reject(new Error('stopped'));
      };
      const off = this.onAck((e) => {
        if (e.at > t0 && match(e.member)) {
          done();
          resolve(e.at - t0);
        }
      });
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Called for every acknowledged write (the failover clock stops at the new leader's first). */
  onAck(listener: (e: AckEvent) => void): () => void {
    this.ackListeners.push(listener);
    return () => {
      this.ackListeners = this.ackListeners.filter((l) => l !== listener);
    };
  }

  async stop(): Promise<void> {
    this.stopped.abort();
    await Promise.allSettled(this.running);
  }

  private async client(c: number): Promise<void> {
    const intervalMs = (1000 * this.opts.clients) / this.opts.rate;
    const signal = this.stopped.signal;
    let counter = 0;
    let next = performance.now();
    while (!signal.aborted) {
      const key = `c${c}-k${counter % this.opts.keysPerClient}`;
      counter++;
      await this.writeOnce(c, key, counter, signal);
      next += intervalMs;
      const wait = next - performance.now();
      if (wait > 0) await sleep(wait, signal).catch(() => undefined);
      else next = performance.now(); // behind schedule: do not burst to catch up
    }
  }

  /** Tries one write until it is acknowledged, refused for good, or 3 s pass. */
  private async writeOnce(c: number, key: string, value: number, signal: AbortSignal): Promise<void> {
    const deadline = Date.now() + 3000;
    while (!signal.aborted && Date.now() < deadline) {
      const member = this.pickTarget();
      if (!member) {
        await sleep(50, signal).catch(() => undefined);
        continue;
      }
      const record = this.opts.history?.begin(c, 'put', key, member.name, String(value));
      const sentAt = performance.now();
      try {
        const res = await fetch(`http://${member.kvAddress}/kv/${key}`, {
          method: 'PUT',
          body: String(value),
          signal: AbortSignal.any([signal, AbortSignal.timeout(2000)]),
        });
        const body = await res.text();
        if (record) {
          const answer = parseAnswer(body);
          record({ ok: outcomeOfStatus(res.status, answer.error?.code), value: null, epoch: answer.epoch ?? null });
        }
        if (res.status === 200) {
          this.ledger.set(key, value);
          this.stats.acked++;
          const event = { member, at: performance.now(), sentAt };
          for (const l of this.ackListeners) l(event);
          return;
        }
        // 409 names the leader; anything else: try the next member shortly.
        const leader = res.headers.get('x-leader');
        this.target = (leader && this.opts.members().find((m) => m.kvAddress === leader)) || this.nextMember(member);
      } catch (err) {
        // Refused connections never carried the request; anything else may have.
        record?.({ ok: connectionRefused(err) ? false : null, value: null, epoch: null });
        this.target = this.nextMember(member);
      }
      await sleep(20, signal).catch(() => undefined);
    }
    if (!signal.aborted) this.stats.failed++;
  }

  private pickTarget(): Member | undefined {
    this.target ??= this.opts.members()[0];
    return this.target;
  }

  private nextMember(after: Member): Member | undefined {
    const all = this.opts.members();
    return all[(all.indexOf(after) + 1) % all.length];
  }
}

function parseAnswer(body: string): { epoch?: number; error?: { code?: string } } {
  try {
    return JSON.parse(body) as { epoch?: number; error?: { code?: string } };
  } catch {
    return {};
  }
}

/** True when fetch failed because nothing listened (the request was never sent). */
export function connectionRefused(err: unknown): boolean {
  return (err as { cause?: { code?: string } } | undefined)?.cause?.code === 'ECONNREFUSED';
}

/** Reads every ledger key from the leader; returns the keys whose acknowledged write is missing. */
export async function findLostWrites(leader: Member, ledger: ReadonlyMap<string, number>, concurrency = 16): Promise<string[]> {
  // Values only grow, so what was acknowledged before the reads start is a floor.
  const expected = new Map(ledger);
  const keys = [...expected.keys()];
  const lost: string[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < keys.length) {
      const key = keys[next++]!;
      const res = await fetch(`http://${leader.kvAddress}/kv/${key}`, { signal: AbortSignal.timeout(5000) });
      if (res.status === 404) {
        lost.push(key);
        continue;
      }
      if (res.status !== 200) throw new Error(`reading ${key} from ${leader.name} answered ${res.status}; cannot verify`);
      const { value } = (await res.json()) as { value: string };
      if (Number(value) < expected.get(key)!) lost.push(key);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return lost;
}

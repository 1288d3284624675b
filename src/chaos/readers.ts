// Readers beside the write load (src/demo/load.ts) for the linearizability
// check: each reads keys the writers are writing, from whoever it believes
// leads, and records every attempt in the history. A reader keeps its member
// while it answers (as a client behind a stale Service endpoint would) and
// follows X-Leader on a 409, so a deposed leader that still serves reads shows
// up in the history as a stale read.
import type { Member } from '../demo/localcluster.ts';
import { connectionRefused } from '../demo/load.ts';
import { sleep } from '../lib/time.ts';
import { outcomeOfStatus, type HistoryRecorder } from './history.ts';

export interface ReadLoadOptions {
  members: () => readonly Member[];
  history: HistoryRecorder;
  /** Reads per second across all readers. */
  rate: number;
  readers: number;
  /** Client ids in the history start here (after the writers'). */
  firstClientId: number;
  /** The keys to read, chosen at random each time. */
  keys: () => readonly string[];
  random: () => number;
}

export class ReadLoad {
  reads = 0;
  private readonly opts: ReadLoadOptions;
  private readonly stopped = new AbortController();
  private running: Promise<void>[] = [];

  constructor(opts: ReadLoadOptions) {
    this.opts = opts;
  }

  start(): void {
    for (let r = 0; r < this.opts.readers; r++) this.running.push(this.reader(this.opts.firstClientId + r));
  }

  async stop(): Promise<void> {
    this.stopped.abort();
    await Promise.allSettled(this.running);
  }

  private async reader(client: number): Promise<void> {
    const signal = this.stopped.signal;
    const intervalMs = (1000 * this.opts.readers) / this.opts.rate;
    let target: Member | undefined;
    while (!signal.aborted) {
      const keys = this.opts.keys();
      const all = this.opts.members();
      target ??= all[0];
      if (keys.length === 0 || !target) {
        await sleep(50, signal).catch(() => undefined);
        continue;
      }
      const key = keys[Math.floor(this.opts.random() * keys.length)]!;
      const member: Member = target;
      const record = this.opts.history.begin(client, 'get', key, member.name);
      try {
        const res = await fetch(`http://${member.kvAddress}/kv/${key}`, { signal: AbortSignal.any([signal, AbortSignal.timeout(2000)]) });
        const body = (await res.json().catch(() => ({}))) as { value?: string; error?: { code?: string } };
        const ok = res.status === 404 && body.error?.code === 'not_found' ? true : outcomeOfStatus(res.status, body.error?.code);
        record({ ok, value: res.status === 200 ? (body.value ?? null) : null, epoch: null });
        this.reads++;
        if (res.status === 409) {
          const leader = res.headers.get('x-leader');
          target = (leader && all.find((m) => m.kvAddress === leader)) || all[(all.indexOf(member) + 1) % all.length];
        } else if (res.status !== 200 && res.status !== 404) {
          target = all[(all.indexOf(member) + 1) % all.length];
        }
      } catch (err) {
        record({ ok: connectionRefused(err) ? false : null, value: null, epoch: null });
        target = all[(all.indexOf(member) + 1) % all.length];
      }
      await sleep(intervalMs, signal).catch(() => undefined);
    }
  }
}

// Kubernetes Events (events.k8s.io/v1) on the objects the operator manages,
// shown by `kubectl describe hsc` and `kubectl events`.
//
// The same event on the same object (same type, reason and note) within the
// window is one Event whose series count grows, not a new Event each time: a
// reconcile that fails every few seconds must not flood etcd. Series updates
// are sent at most once per `minPatchIntervalMs` per series; the count in
// between is kept and sent with the next update (a timer makes sure it is).
// Recording never throws and never blocks a reconcile: failures are logged.
import { randomBytes } from 'node:crypto';
import type { Logger } from '../../lib/log.ts';
import { isNotFound, type KubeClient } from './client.ts';

export const REPORTING_CONTROLLER = 'hotstandby.dev/operator';

export interface EventRegarding {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; uid?: unknown; [k: string]: unknown };
}

export interface EventInput {
  type: 'Normal' | 'Warning';
  /** UpperCamelCase, e.g. ChildCreated, FailoverObserved, ReconcileError. */
  reason: string;
  /** What the operator did or saw, UpperCamelCase, e.g. Apply, Failover, Reconcile. */
  action: string;
  /** Human-readable, at most 1 kB (longer notes are cut). */
  note: string;
}

interface Series {
  name: string;
  namespace: string;
  count: number;
  sentCount: number;
  lastAt: number;
  lastSentAt: number;
  timer: NodeJS.Timeout | undefined;
  chain: Promise<void>;
}

export interface EventRecorderOptions {
  client: KubeClient;
  /** reportingInstance: this operator replica (pod name). */
  instance: string;
  log: Logger;
  /** Repeats within this window join one series (default 10 min). */
  windowMs?: number;
  /** Least time between two updates of one series (default 10 s). */
  minPatchIntervalMs?: number;
}

const MAX_SERIES = 2000;
const NOTE_MAX = 1024;

/** MicroTime as the API server requires it: RFC 3339 with six fractional digits. */
export function microTime(d: Date = new Date()): string {
  return d.toISOString().replace(/Z$/, '000Z');
}

export class EventRecorder {
  private readonly o: Required<EventRecorderOptions>;
  private readonly series = new Map<string, Series>();
  private stopped = false;

  constructor(opts: EventRecorderOptions) {
    this.o = { windowMs: 10 * 60_000, minPatchIntervalMs: 10_000, ...opts };
  }

  /** Records an event on `regarding`; returns at once (see flush). */
  record(regarding: EventRegarding, ev: EventInput): void {
    if (this.stopped) return;
    const namespace = regarding.metadata.namespace ?? 'default';
    const note = ev.note.length > NOTE_MAX ? `${ev.note.slice(0, NOTE_MAX - 3)}...` : ev.note;
    const key = `${regarding.kind}|${namespace}|${regarding.metadata.name}|${String(regarding.metadata.uid ?? '')}|${ev.type}|${ev.reason}|${note}`;
    const now = Date.now();
    const s = this.series.get(key);
    if (s && now - s.lastAt <= this.o.windowMs) {
      s.count++;
      s.lastAt = now;
      this.scheduleUpdate(s);
      return;
    }
    if (s?.timer) clearTimeout(s.timer);
    this.evictOld(now);
    const name = `${regarding.metadata.name}.${now.toString(16)}${randomBytes(4).toString('hex')}`;
    const fresh: Series = { name, namespace, count: 1, sentCount: 1, lastAt: now, lastSentAt: now, timer: undefined, chain: Promise.resolve() };
    this.series.set(key, fresh);
    const body = {
      apiVersion: 'events.k8s.io/v1',
      kind: 'Event',
      metadata: { name, namespace },
      eventTime: microTime(new Date(now)),
      reportingController: REPORTING_CONTROLLER,
      reportingInstance: this.o.instance,
      action: ev.action,
      reason: ev.reason,
      note,
      type: ev.type,
      regarding: {
        apiVersion: regarding.apiVersion,
        kind: regarding.kind,
        name: regarding.metadata.name,
        namespace,
        ...(regarding.metadata.uid ? { uid: String(regarding.metadata.uid) } : {}),
      },
    };
    fresh.chain = this.o.client
      .request('POST', `/apis/events.k8s.io/v1/namespaces/${encodeURIComponent(namespace)}/events`, { body })
      .then(
        () => undefined,
        (err: Error) => {
          // Forget the series so the next occurrence tries to create it again.
          if (this.series.get(key) === fresh) this.series.delete(key);
          this.o.log.warn({ reason: ev.reason, regarding: `${namespace}/${regarding.metadata.name}`, err: err.message }, 'could not record an event');
        },
      );
  }

  /** Waits for every event write started so far (tests, shutdown). */
  async flush(): Promise<void> {
    for (const s of this.series.values()) {
      if (s.timer) {
        clearTimeout(s.timer);
        s.timer = undefined;
        this.sendUpdate(s);
      }
    }
    await Promise.allSettled([...this.series.values()].map((s) => s.chain));
  }

  /** Sends pending series counts, then records nothing more. */
  async stop(): Promise<void> {
    await this.flush();
    this.stopped = true;
  }

  private scheduleUpdate(s: Series): void {
    if (s.timer) return;
    const wait = Math.max(0, s.lastSentAt + this.o.minPatchIntervalMs - Date.now());
    s.timer = setTimeout(() => {
      s.timer = undefined;
      this.sendUpdate(s);
    }, wait);
  }

  private sendUpdate(s: Series): void {
    if (s.count === s.sentCount) return;
    const count = s.count;
    const observed = microTime(new Date(s.lastAt));
    s.lastSentAt = Date.now();
    s.chain = s.chain.then(async () => {
      try {
        await this.o.client.request('PATCH', `/apis/events.k8s.io/v1/namespaces/${encodeURIComponent(s.namespace)}/events/${encodeURIComponent(s.name)}`, {
          body: { series: { count, lastObservedTime: observed } },
          contentType: 'application/merge-patch+json',
        });
        s.sentCount = Math.max(s.sentCount, count);
      } catch (err) {
        // An Event the API server already expired: the next occurrence starts a new series.
        if (isNotFound(err)) s.lastAt = 0;
        this.o.log.warn({ event: `${s.namespace}/${s.name}`, err: (err as Error).message }, 'could not update an event series');
      }
    });
  }

  private evictOld(now: number): void {
    if (this.series.size < MAX_SERIES) return;
    for (const [k, s] of this.series) {
      if (now - s.lastAt > this.o.windowMs && !s.timer) this.series.delete(k);
    }
    // Still full (a burst of distinct events): drop the oldest.
    while (this.series.size >= MAX_SERIES) {
      const [k, s] = this.series.entries().next().value!;
      if (s.timer) clearTimeout(s.timer);
      this.series.delete(k);
    }
  }
}

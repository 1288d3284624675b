// An informer for one kind: client-node's ListWatch (list, then watch from the
// list's resourceVersion; a 410 Gone relists and reports vanished objects as
// deleted) with what it lacks for a long-running controller:
// - ListWatch stops for good on any error other than 410 or a timeout (API
//   server down, connection refused, 403): we start it again after a delay
//   that doubles up to a cap and resets once a list or an event gets through;
//   restarting resumes the watch from the last resourceVersion it saw.
// - stop() aborts every watch, including one whose request was still in
//   flight when stop was called (ListWatch would keep that one running).
// - Watches ask for bookmarks, so a quiet kind's resourceVersion stays fresh
//   and a reconnect rarely needs a relist.
// One ListWatch per watched namespace, or one for all namespaces. The cache
// (get, list) serves the reconciler, so steady state costs no GETs.
import { ListWatch, Watch, type KubeConfig, type KubernetesObject } from '@kubernetes/client-node';
import type { Logger } from '../../lib/log.ts';
import { sleep } from '../../lib/time.ts';
import type { KindRef, KubeClient, KubeObject } from './client.ts';

export type InformerEvent = 'add' | 'update' | 'delete';
export type InformerHandler = (event: InformerEvent, obj: KubeObject) => void;

export interface InformerOptions {
  client: KubeClient;
  kind: KindRef;
  /** Namespaces to watch; empty: all namespaces. */
  namespaces: string[];
  labelSelector?: string;
  log: Logger;
  restartBaseMs?: number;
  restartMaxMs?: number;
  /** Client-side inactivity timeout of a watch (bookmarks arrive about once a minute). */
  watchIdleTimeoutMs?: number;
  /** Server-side watch duration in seconds; the watch is then reopened from its resourceVersion. */
  watchTimeoutSeconds?: number;
}

const LIST_TIMEOUT_MS = 60_000;

export class Informer {
  readonly kind: KindRef;
  private readonly o: Required<Omit<InformerOptions, 'labelSelector'>> & Pick<InformerOptions, 'labelSelector'>;
  private readonly watches: Array<{ namespace: string; lw: ListWatch<KubernetesObject>; watch: StoppableWatch; synced: boolean }> = [];
  private readonly handlers: InformerHandler[] = [];
  private readonly abort = new AbortController();
  private readonly restartTimers = new Set<NodeJS.Timeout>();
  private stopped = false;
  /** Restarts after errors, for tests and logs. */
  restarts = 0;

  constructor(opts: InformerOptions) {
    this.kind = opts.kind;
    this.o = { restartBaseMs: 1000, restartMaxMs: 30_000, watchIdleTimeoutMs: 150_000, watchTimeoutSeconds: 300, ...opts };
  }

  on(handler: InformerHandler): void {
    this.handlers.push(handler);
  }

  /** True once every namespace's first list is in the cache. */
  get synced(): boolean {
    return this.watches.length > 0 && this.watches.every((w) => w.synced);
  }

  /** Starts listing and watching; resolves without waiting for the first list (see waitForSync). */
  async start(): Promise<void> {
    const namespaces = this.o.namespaces.length ? this.o.namespaces : [''];
    for (const namespace of namespaces) {
      const path = await this.o.client.collectionPath(this.kind, namespace || undefined);
      const watch = new StoppableWatch(this.o.client.kc, this.o.watchIdleTimeoutMs, this.o.watchTimeoutSeconds, () => this.healthy(entry));
      let delay = this.o.restartBaseMs;
      const list = async () => {
        const result = await this.o.client.list(this.kind, {
          namespace: namespace || undefined,
          labelSelector: this.o.labelSelector,
          signal: AbortSignal.any([this.abort.signal, AbortSignal.timeout(LIST_TIMEOUT_MS)]),
        });
        // ListWatch fills its cache right after this promise resolves; mark synced after that.
        setImmediate(() => this.healthy(entry));
        return result;
      };
      // The reconnect delay is cut short by stop(), so no timer outlives the informer.
      const delayFn = (ms: number): Promise<void> => sleep(ms, this.abort.signal).catch(() => undefined);
      const lw = new ListWatch<KubernetesObject>(path, watch as unknown as Watch, list as unknown as () => Promise<never>, false, this.o.labelSelector, undefined, {
        delayFn,
      });
      const entry = {
        namespace,
        lw,
        watch,
        synced: false,
        resetDelay: () => {
          delay = this.o.restartBaseMs;
        },
      };
      this.watches.push(entry);
      lw.on('add', (obj) => this.emit('add', obj as unknown as KubeObject));
      lw.on('update', (obj) => this.emit('update', obj as unknown as KubeObject));
      lw.on('delete', (obj) => this.emit('delete', obj as unknown as KubeObject));
      lw.on('error', (err: unknown) => {
        if (this.stopped) return;
        const wait = delay;
        delay = Math.min(this.o.restartMaxMs, delay * 2);
        this.restarts++;
        this.o.log.warn({ kind: this.kind.kind, namespace: namespace || 'all', err: errorText(err), retryInMs: wait }, 'watch failed; restarting it');
        const timer = setTimeout(() => {
          this.restartTimers.delete(timer);
          if (!this.stopped) void lw.start().catch((e: unknown) => this.o.log.warn({ kind: this.kind.kind, err: errorText(e) }, 'watch restart failed'));
        }, wait);
        this.restartTimers.add(timer);
      });
      void lw.start().catch((e: unknown) => this.o.log.warn({ kind: this.kind.kind, err: errorText(e) }, 'watch start failed'));
    }
  }

  /** Waits until synced, or throws after `timeoutMs` naming the kind. */
  async waitForSync(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.synced) {
      if (this.stopped) throw new Error(`informer for ${this.kind.kind} stopped before its first list`);
      if (Date.now() > deadline) throw new Error(`no list of ${this.kind.kind} (${this.kind.apiVersion}) within ${timeoutMs} ms: is it served, and may the operator list and watch it?`);
      await sleep(20);
    }
  }

  get(namespace: string, name: string): KubeObject | undefined {
    for (const w of this.watches) {
      if (w.namespace && w.namespace !== namespace) continue;
      const found = w.lw.get(name, namespace);
      if (found) return found as unknown as KubeObject;
    }
    return undefined;
  }

  /** Objects in a namespace (all namespaces when omitted), optionally with these labels. */
  list(namespace?: string, labels?: Record<string, string>): KubeObject[] {
    const out: KubeObject[] = [];
    for (const w of this.watches) {
      if (namespace && w.namespace && w.namespace !== namespace) continue;
      for (const obj of w.lw.list(namespace) as unknown as KubeObject[]) {
        if (labels && !Object.entries(labels).every(([k, v]) => obj.metadata.labels?.[k] === v)) continue;
        out.push(obj);
      }
    }
    return out;
  }

  /** The resourceVersion each watch resumes from (for tests and logs). */
  resourceVersions(): string[] {
    return this.watches.map((w) => w.lw.latestResourceVersion());
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.restartTimers) clearTimeout(t);
    this.restartTimers.clear();
    this.abort.abort(new Error('informer stopped'));
    for (const w of this.watches) {
      w.watch.stop();
      await w.lw.stop();
    }
  }

  private healthy(entry: { synced: boolean; resetDelay: () => void }): void {
    entry.synced = true;
    entry.resetDelay();
  }

  private emit(event: InformerEvent, obj: KubeObject): void {
    for (const h of this.handlers) {
      try {
        h(event, obj);
      } catch (err) {
        this.o.log.error({ kind: this.kind.kind, err: errorText(err) }, 'informer handler threw');
      }
    }
  }
}

/**
 * client-node's Watch with bookmarks, a server-side timeout, a longer idle
 * timeout, a hook that sees events arrive, and a stop that aborts every watch
 * it started, also one that connects after stop was called.
 */
class StoppableWatch {
  private readonly inner: Watch;
  private readonly active = new Set<AbortController>();
  private stopped = false;
  private readonly timeoutSeconds: number;
  private readonly onEvent: () => void;

  constructor(kc: KubeConfig, idleTimeoutMs: number, timeoutSeconds: number, onEvent: () => void) {
    this.timeoutSeconds = timeoutSeconds;
    this.onEvent = onEvent;
    this.inner = new Watch(kc);
    (this.inner as unknown as { requestTimeoutMs: number }).requestTimeoutMs = idleTimeoutMs;
  }

  async watch(
    path: string,
    query: Record<string, unknown>,
    callback: (phase: string, obj: unknown, watchObj?: unknown) => void,
    done: (err: unknown) => void,
  ): Promise<AbortController> {
    if (this.stopped) {
      const c = new AbortController();
      c.abort();
      done(new Error('watch stopped'));
      return c;
    }
    // Spread the reconnects of many watches: 1x to 2x the configured duration.
    const timeoutSeconds = String(Math.round(this.timeoutSeconds * (1 + Math.random())));
    const c = await this.inner.watch(
      path,
      { ...query, allowWatchBookmarks: 'true', timeoutSeconds },
      (phase, obj, watchObj) => {
        if (phase !== 'ERROR') this.onEvent();
        callback(phase, obj, watchObj);
      },
      done,
    );
    if (this.stopped) c.abort();
    else {
      this.active.add(c);
      c.signal.addEventListener('abort', () => this.active.delete(c), { once: true });
    }
    return c;
  }

  stop(): void {
    this.stopped = true;
    for (const c of this.active) c.abort();
    this.active.clear();
  }
}

function errorText(err: unknown): string {
  if (err instanceof Error) return err.message;
  if (err && typeof err === 'object') return JSON.stringify(err);
  return String(err);
}

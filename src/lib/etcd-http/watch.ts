// One etcd watch over the JSON gateway: `POST /v3/watch` with a create
// request, answered by a never-ending stream of JSON lines, each a watch
// response. It holds its own connection for its whole life.
//
// Unlike etcd3's watcher it never reconnects by itself: when the stream
// breaks it reports 'disconnected' and is over, and its owner (who knows the
// revision it has reached and whether a re-read is due) opens the next one.
// One path for every loss: a broken stream, a member that never answered,
// a watch etcd cancelled.
//
// Events:
//   'connected' ()                    etcd created the watch
//   'data'      (WatchResponse)       every later response, progress notifications included
//   'put'       (kv, prevKv?)         each put event, in order
//   'delete'    (kv, prevKv?)         each delete event, in order
//   'canceled'  (EtcdWatchCanceledError)  etcd cancelled it (e.g. compacted past the start); over
//   'disconnected' (Error)            no watch: could not connect, no answer in time, stream broke; over
import { EventEmitter } from 'node:events';
import { TimeoutError } from '../time.ts';
import type { EtcdHttpClient } from './client.ts';
import { decodeWatch, encodeWatch, type KeyValue, type WatchRequest, type WatchResponse } from './types.ts';

export class EtcdWatchCanceledError extends Error {
  /** The oldest revision etcd still has, when the start revision was compacted away ("0" otherwise). */
  readonly compactRevision: string;
  constructor(reason: string, compactRevision: string) {
    super(reason);
    this.name = 'EtcdWatchCanceledError';
    this.compactRevision = compactRevision;
  }
}

export interface EtcdWatchEvents {
  connected: [];
  data: [WatchResponse];
  put: [KeyValue, KeyValue | undefined];
  delete: [KeyValue, KeyValue | undefined];
  canceled: [EtcdWatchCanceledError];
  disconnected: [Error];
}

export class EtcdWatch extends EventEmitter<EtcdWatchEvents> {
  private abort: (() => void) | undefined;
  private connectTimer: NodeJS.Timeout | undefined;
  private over = false;
  private created = false;

  constructor(client: EtcdHttpClient, req: WatchRequest, connectTimeoutMs: number) {
    super();
    // Opened on the next tick, so the owner attaches its listeners first.
    process.nextTick(() => {
      if (this.over) return;
      this.connectTimer = setTimeout(() => this.end('disconnected', new TimeoutError('etcd to create the watch', connectTimeoutMs)), connectTimeoutMs);
      this.abort = client.openStream('/v3/watch', encodeWatch(req), {
        onMessage: (message) => this.onMessage(message),
        onClose: (err) => this.end('disconnected', err ?? new Error('etcd ended the watch stream')),
        // The client's close() ends its watches as cancel() does: no event, no timer left.
        onClientClosed: () => this.cancel(),
      });
    });
  }

  /** Whether etcd has created the watch and it is still running. */
  get connected(): boolean {
    return this.created && !this.over;
  }

  /** Stops the watch; no event follows. Safe to call more than once. */
  cancel(): void {
    if (this.over) return;
    this.over = true;
    this.cleanup();
  }

  private onMessage(message: Record<string, unknown>): void {
    if (this.over) return;
    if (message.error) {
      const e = message.error as { message?: unknown; error?: unknown };
      return this.end('disconnected', new Error(`etcd watch failed: ${String(e.message ?? e.error ?? 'unknown error')}`));
    }
    const res = decodeWatch((message.result ?? {}) as Record<string, unknown>);
    if (res.created) {
      this.created = true;
      clearTimeout(this.connectTimer);
      this.emit('connected');
      // A create response can also carry a cancel (e.g. a compacted start revision).
      if (!res.canceled) return;
    }
    if (res.canceled) {
      const reason = res.cancel_reason || (res.compact_revision !== '0' ? `required revision has been compacted (oldest ${res.compact_revision})` : 'etcd cancelled the watch');
      return this.end('canceled', new EtcdWatchCanceledError(reason, res.compact_revision));
    }
    this.emit('data', res);
    for (const ev of res.events) {
      if (this.over) return; // a listener cancelled the watch
      if (ev.type === 'put') this.emit('put', ev.kv, ev.prev_kv);
      else this.emit('delete', ev.kv, ev.prev_kv);
    }
  }

  private end(kind: 'canceled', err: EtcdWatchCanceledError): void;
  private end(kind: 'disconnected', err: Error): void;
  private end(kind: 'canceled' | 'disconnected', err: Error): void {
    if (this.over) return;
    this.over = true;
    this.cleanup();
    if (kind === 'canceled') this.emit('canceled', err as EtcdWatchCanceledError);
    else this.emit('disconnected', err);
  }

  private cleanup(): void {
    clearTimeout(this.connectTimer);
    this.abort?.();
    this.abort = undefined;
  }
}

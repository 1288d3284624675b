// The controller machinery, generic over the child kinds: informers on the
// primary kind (HotStandbyCluster) and on every kind it owns, a work queue of
// cluster keys ("namespace/name"), and a reconcile function called with a
// context that reads from the informer caches and applies/prunes children.
//
// Child events map to their cluster's key through the controller
// ownerReference, else the hotstandby.dev/cluster label (a cluster's Pods are
// owned by its StatefulSet, not by the cluster). Children are watched with the
// label selector `hotstandby.dev/cluster` (exists), so the caches hold only the
// operator's objects, not every Service and Pod of the namespace.
import type { KubeConfig } from '@kubernetes/client-node';
import { GROUP, KIND, VERSION } from '../api/v1alpha1.ts';
import { CLUSTER_LABEL } from '../lib/labels.ts';
import type { Logger } from '../lib/log.ts';
import { Applier, type ApplyResult } from './kube/apply.ts';
import { KubeApiError, KubeClient, describeObject, type KindRef, type KubeObject } from './kube/client.ts';
import type { EventRecorder } from './kube/events.ts';
import { Informer } from './kube/informer.ts';
import { isControlledBy, pruneChildren } from './kube/prune.ts';
import type { OperatorMetrics } from './metrics.ts';
import { WorkQueue, type ReconcileResult } from './workqueue.ts';

export const HOTSTANDBY_CLUSTER: KindRef = { apiVersion: `${GROUP}/${VERSION}`, kind: KIND };

export interface ControllerCache {
  /** The primary object of a key, or undefined when it is gone. */
  primary(key: string): KubeObject | undefined;
  get(kind: KindRef, namespace: string, name: string): KubeObject | undefined;
  list(kind: KindRef, namespace?: string, labels?: Record<string, string>): KubeObject[];
  /** Objects of the owned kinds that this primary controls (ownerReference with its uid). */
  children(primary: KubeObject): KubeObject[];
}

export interface SyncSummary {
  created: string[];
  updated: string[];
  unchanged: number;
  pruned: string[];
}

export interface ReconcileContext {
  cache: ControllerCache;
  client: KubeClient;
  events: EventRecorder | undefined;
  log: Logger;
  /** Applies one object (server-side apply, skipped when nothing would change). */
  apply(desired: KubeObject): Promise<ApplyResult>;
  /**
   * Makes the primary's children exactly `desired`: each gets a controller
   * ownerReference to the primary (so deletion cascades) and is applied; owned
   * children of the watched kinds that are not desired are deleted. Records
   * ChildCreated/ChildUpdated/ChildDeleted events on the primary.
   */
  syncChildren(primary: KubeObject, desired: KubeObject[]): Promise<SyncSummary>;
}

export interface ControllerOptions {
  kc: KubeConfig;
  /** Namespaces to watch; empty: all. */
  namespaces: string[];
  /** The kind whose objects are the queue's keys (default HotStandbyCluster). */
  primary?: KindRef;
  /** Kinds the primary owns, watched for changes and pruned. */
  kinds: KindRef[];
  /** Kinds watched (for events and cache reads) but never pruned, e.g. the cluster's Pods. */
  watchOnly?: KindRef[];
  reconcile: (key: string, ctx: ReconcileContext) => Promise<ReconcileResult | void>;
  log: Logger;
  metrics: OperatorMetrics;
  events?: EventRecorder;
  concurrency?: number;
  /** Every key is reconciled at least this often (default 5 min). */
  resyncMs?: number;
  /** Reconcile only while this says so (the Lease holder); informers run regardless, so a takeover starts warm. */
  active?: () => boolean;
  /** Label selector of the children's informers (default: the cluster label exists). */
  childSelector?: string;
  /** How long start() waits for the first lists (default 60 s). */
  syncTimeoutMs?: number;
  retryBaseMs?: number;
  retryMaxMs?: number;
}

export class Controller {
  readonly client: KubeClient;
  readonly queue: WorkQueue;
  readonly primaryInformer: Informer;
  readonly childInformers: Informer[];
  private readonly o: ControllerOptions;
  private readonly primary: KindRef;
  private readonly applier: Applier;
  private readonly cache: ControllerCache;
  private started = false;

  constructor(opts: ControllerOptions) {
    this.o = opts;
    this.primary = opts.primary ?? HOTSTANDBY_CLUSTER;
    this.client = new KubeClient(opts.kc, { onRequest: (verb) => opts.metrics.kubeRequests.inc({ verb }) });
    const informer = (kind: KindRef, labelSelector?: string) =>
      new Informer({ client: this.client, kind, namespaces: opts.namespaces, labelSelector, log: opts.log });
    this.primaryInformer = informer(this.primary);
    this.childInformers = [...opts.kinds, ...(opts.watchOnly ?? [])].map((k) => informer(k, opts.childSelector ?? CLUSTER_LABEL));
    this.cache = this.makeCache();
    this.applier = new Applier({
      client: this.client,
      live: (d) => this.informerFor(d)?.get(d.metadata.namespace ?? '', d.metadata.name),
      onWrite: (kind) => opts.metrics.applyWrites.inc({ kind }),
    });
    this.queue = new WorkQueue({
      handler: (key) => this.runReconcile(key),
      concurrency: opts.concurrency ?? 4,
      baseDelayMs: opts.retryBaseMs ?? 500,
      maxDelayMs: opts.retryMaxMs ?? 60_000,
      onError: (key, err, failures, retryInMs) => this.onReconcileError(key, err, failures, retryInMs),
    });
    opts.metrics.workqueueDepthSource = () => this.queue.depth;

    this.primaryInformer.on((event, obj) => {
      opts.metrics.watchEvents.inc({ kind: obj.kind });
      const key = keyOf(obj);
      if (event === 'delete') {
        this.queue.forget(key);
        if (obj.metadata.uid) for (const child of this.childrenOf(obj)) if (child.metadata.uid) this.applier.forget(child.metadata.uid);
      }
      this.queue.add(key);
    });
    for (const inf of this.childInformers) {
      inf.on((event, obj) => {
        opts.metrics.watchEvents.inc({ kind: inf.kind.kind });
        const key = this.ownerKey(obj);
        if (event === 'delete' && obj.metadata.uid) this.applier.forget(obj.metadata.uid);
        if (key) this.queue.add(key);
      });
    }
  }

  /** Starts the informers, waits for their first lists (bounded), then starts reconciling. */
  async start(): Promise<void> {
    const all = [this.primaryInformer, ...this.childInformers];
    await Promise.all(all.map((i) => i.start()));
    const timeout = this.o.syncTimeoutMs ?? 60_000;
    await Promise.all(all.map((i) => i.waitForSync(timeout)));
    this.started = true;
    this.resyncNow();
    this.queue.startResync(this.o.resyncMs ?? 5 * 60_000, () => this.primaryKeys());
    this.o.log.info({ kinds: all.map((i) => i.kind.kind), namespaces: this.o.namespaces.length ? this.o.namespaces : 'all' }, 'controller started');
  }

  /** Queues every primary now (e.g. when this replica becomes the Lease holder). */
  resyncNow(): void {
    for (const k of this.primaryKeys()) this.queue.add(k);
  }

  /** Stops reconciling (waits for running reconciles, bounded) and aborts every watch. */
  async stop(): Promise<void> {
    await this.queue.stop();
    await Promise.all([this.primaryInformer, ...this.childInformers].map((i) => i.stop()));
    this.started = false;
  }

  get readCache(): ControllerCache {
    return this.cache;
  }

  private primaryKeys(): string[] {
    return this.primaryInformer.list().map(keyOf);
  }

  private async runReconcile(key: string): Promise<ReconcileResult | void> {
    if (!this.started || (this.o.active && !this.o.active())) return;
    const end = this.o.metrics.reconcileDuration.startTimer();
    try {
      const result = await this.o.reconcile(key, this.context(key));
      end({ result: 'ok' });
      return result;
    } catch (err) {
      end({ result: 'error' });
      throw err;
    }
  }

  private onReconcileError(key: string, err: unknown, failures: number, retryInMs: number): void {
    const reason = errorReason(err);
    this.o.metrics.reconcileErrors.inc({ reason });
    const message = (err as Error)?.message ?? String(err);
    this.o.log.warn({ cluster: key, reason, err: message, failures, retryInMs }, 'reconcile failed; retrying');
    const obj = this.cache.primary(key);
    if (obj) this.o.events?.record(obj, { type: 'Warning', reason: 'ReconcileError', action: 'Reconcile', note: message });
  }

  private context(key: string): ReconcileContext {
    const log = this.o.log.child({ cluster: key });
    return {
      cache: this.cache,
      client: this.client,
      events: this.o.events,
      log,
      apply: (desired) => this.applier.apply(desired),
      syncChildren: (primary, desired) => this.syncChildren(primary, desired, log),
    };
  }

  private async syncChildren(primary: KubeObject, desired: KubeObject[], log: Logger): Promise<SyncSummary> {
    const summary: SyncSummary = { created: [], updated: [], unchanged: 0, pruned: [] };
    const namespace = primary.metadata.namespace ?? '';
    for (const d of desired) {
      const obj = withOwner({ ...d, metadata: { ...d.metadata, namespace: d.metadata.namespace ?? namespace } }, primary);
      const r = await this.applier.apply(obj);
      const what = describeObject(obj);
      if (r.outcome === 'unchanged') summary.unchanged++;
      else {
        (r.outcome === 'created' ? summary.created : summary.updated).push(what);
        log.info({ child: what }, r.outcome === 'created' ? 'child created' : 'child changed');
        this.o.events?.record(primary, {
          type: 'Normal',
          reason: r.outcome === 'created' ? 'ChildCreated' : 'ChildUpdated',
          action: 'Apply',
          note: `${r.outcome === 'created' ? 'created' : 'changed'} ${obj.kind} ${obj.metadata.name}`,
        });
      }
    }
    const prunable = new Set(this.o.kinds.map((k) => `${k.apiVersion}|${k.kind}`));
    const candidates = this.childInformers.filter((i) => prunable.has(`${i.kind.apiVersion}|${i.kind.kind}`)).flatMap((i) => i.list(namespace));
    const deleted = await pruneChildren({
      client: this.client,
      owner: primary,
      candidates,
      desired,
      onDelete: (obj) => {
        this.o.metrics.prunes.inc({ kind: obj.kind });
        log.info({ child: describeObject(obj) }, 'child no longer wanted: deleted');
        this.o.events?.record(primary, { type: 'Normal', reason: 'ChildDeleted', action: 'Prune', note: `deleted ${obj.kind} ${obj.metadata.name}: no longer wanted` });
      },
    });
    summary.pruned = deleted.map(describeObject);
    return summary;
  }

  private makeCache(): ControllerCache {
    return {
      primary: (key) => {
        const [ns, name] = splitKey(key);
        return this.primaryInformer.get(ns, name);
      },
      get: (kind, namespace, name) => this.informerFor(kind)?.get(namespace, name),
      list: (kind, namespace, labels) => {
        const inf = this.informerFor(kind);
        if (!inf) throw new Error(`${kind.kind} (${kind.apiVersion}) is not watched by this controller; add it to kinds or watchOnly`);
        return inf.list(namespace, labels);
      },
      children: (primary) => this.childrenOf(primary),
    };
  }

  private childrenOf(primary: KubeObject): KubeObject[] {
    const uid = primary.metadata.uid ?? '';
    return this.childInformers.flatMap((i) => i.list(primary.metadata.namespace)).filter((o) => isControlledBy(o, uid));
  }

  private informerFor(kind: KindRef): Informer | undefined {
    if (kind.apiVersion === this.primary.apiVersion && kind.kind === this.primary.kind) return this.primaryInformer;
    return this.childInformers.find((i) => i.kind.apiVersion === kind.apiVersion && i.kind.kind === kind.kind);
  }

  /** The key of the cluster a child belongs to: its controller owner of the primary kind, else its cluster label. */
  private ownerKey(obj: KubeObject): string | undefined {
    const ns = obj.metadata.namespace ?? '';
    const owner = (obj.metadata.ownerReferences ?? []).find((r) => r.controller && r.kind === this.primary.kind && r.apiVersion.split('/')[0] === this.primary.apiVersion.split('/')[0]);
    if (owner) return `${ns}/${owner.name}`;
    const label = obj.metadata.labels?.[CLUSTER_LABEL];
    return label ? `${ns}/${label}` : undefined;
  }
}

export function keyOf(obj: { metadata: { namespace?: string; name: string } }): string {
  return `${obj.metadata.namespace ?? ''}/${obj.metadata.name}`;
}

function splitKey(key: string): [string, string] {
  const i = key.indexOf('/');
  return i < 0 ? ['', key] : [key.slice(0, i), key.slice(i + 1)];
}

/** Adds a controller ownerReference to the primary unless the object has one already. */
export function withOwner(obj: KubeObject, owner: KubeObject): KubeObject {
  const refs = obj.metadata.ownerReferences ?? [];
  if (refs.some((r) => r.controller)) return obj;
  if (!owner.metadata.uid) throw new Error(`the owner ${describeObject(owner)} has no uid yet`);
  return {
    ...obj,
    metadata: {
      ...obj.metadata,
      ownerReferences: [
        ...refs,
        { apiVersion: owner.apiVersion, kind: owner.kind, name: owner.metadata.name, uid: owner.metadata.uid, controller: true, blockOwnerDeletion: true },
      ],
    },
  };
}

/** A short, bounded label value for the errors metric. */
export function errorReason(err: unknown): string {
  for (let e = err, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    if (e instanceof KubeApiError) return e.reason.replace(/[^A-Za-z]/g, '').slice(0, 40) || String(e.code);
    if (e instanceof Error && e.name === 'TimeoutError') return 'Timeout';
  }
  return 'Error';
}

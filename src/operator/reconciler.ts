// One reconcile of one HotStandbyCluster, as a straight list of steps:
//   1. gone: forget its store clients and metrics;
//   2. being deleted: run the deletionPolicy's cleanup, release the finalizer;
//   3. keep the finalizer in step with deletionPolicy;
//   4. resolve the stores (spec + Secrets) and read what the agents publish;
//   5. apply every child the spec wants (server-side apply, writes only on a
//      difference) and prune the ones it no longer wants;
//   6. role labels as a backstop for the agents (which move them themselves);
//   7. switchover asked for by annotation, then the rollout's next step;
//   8. status (only written when it changed) and Events.
// The desired children come from the pure builders; everything this file
// reads comes from the informer caches or the stores, and every write goes
// through the small interfaces below, so the steps stay readable and testable.
import { GROUP, PLURAL, VERSION, type HotStandbyCluster, type HotStandbyClusterStatus } from '../api/v1alpha1.ts';
import { readClusterView, type ClusterView } from '../lib/clusterview.ts';
import { etcdKeys, type ClusterRef } from '../lib/keys.ts';
import { CLUSTER_LABEL, ROLE_LABEL, ROLE_LEADER, ROLE_STANDBY, SWITCHOVER_ANNOTATION } from '../lib/labels.ts';
import type { Logger } from '../lib/log.ts';
import { requestSwitchover, withdrawSwitchover } from '../lib/switchover.ts';
import { withTimeout } from '../lib/time.ts';
import { desiredChildren, storageStatus, type BuildContext } from './builders/index.ts';
import { cleanupClusterData } from './cleanup.ts';
import type { ReconcileContext } from './controller.ts';
import { CLEANUP_FINALIZER, deletionPolicyOf, handleFinalizer } from './finalizer.ts';
import { isNotFound, type KubeObject } from './kube/client.ts';
import type { EventInput } from './kube/events.ts';
import type { OperatorMetrics } from './metrics.ts';
import { nextRolloutStep, podOrdinal, type RolloutPlan } from './rollout.ts';
import { mergeConditions, statusFromView, statusWithProblem, syncReplicationEvent, type LastSeenLeader, type StatusInput } from './status.ts';
import type { ClusterStores, StoreClients } from './store-clients.ts';
import { StoreConfigError, resolveStoreEndpoints, secretReader, type ReadSecret } from './store-endpoints.ts';
import { decideSwitchover, type SwitchoverStatus } from './switchover.ts';

const STORE_TIMEOUT_MS = 3000;
/** How often a healthy cluster's status (lag, log head, snapshot) is refreshed without an event. */
export const STATUS_REFRESH_MS = 5000;
const SWITCHOVER_TIMEOUT_MS = 30_000;
/** The agent labels its own pod on promotion; the operator steps in only after this long. */
const LABEL_BACKSTOP_GRACE_MS = 3000;
/** How long a label the backstop set counts while the cache does not show it yet (a watch event is normally ms away). */
const LABELS_SET_MEMORY_MS = 5000;
const POD = { apiVersion: 'v1', kind: 'Pod' };
const STATEFUL_SET = { apiVersion: 'apps/v1', kind: 'StatefulSet' };

export interface ReconcilerDeps {
  stores: StoreClients;
  buildContext: BuildContext;
  metrics: OperatorMetrics;
  log: Logger;
  now?: () => Date;
}

export interface ReconcileResult {
  requeueAfterMs?: number;
}

export class Reconciler {
  private readonly d: ReconcilerDeps;
  private readonly lastSeen = new Map<string, LastSeenLeader>();
  /**
   * The status this replica last wrote, per cluster. The operator is the only
   * writer of the status, and a reconcile may run before the informer has
   * delivered the previous write: building on a stale status would count a
   * failover twice or move a finished switchover back to Pending.
   */
  private readonly written = new Map<string, { uid: string; status: HotStandbyClusterStatus }>();
  /**
   * Role labels the backstop set, by pod uid, until the cache shows them: a
   * reconcile that runs before the pod's watch event arrives (the status write
   * itself queues one) must neither patch again nor report the label missing.
   */
  private readonly labelsSet = new Map<string, { role: string | null; atMs: number }>();

  constructor(deps: ReconcilerDeps) {
    this.d = deps;
  }

  async reconcile(key: string, ctx: ReconcileContext): Promise<ReconcileResult> {
    const [namespace, name] = key.split('/') as [string, string];
    const ref: ClusterRef = { namespace, name };
    const hsc = ctx.cache.primary(key) as unknown as HotStandbyCluster | undefined;
    if (!hsc) {
      this.forget(ref);
      return {};
    }
    const log = this.d.log.child({ cluster: key });
    const now = (this.d.now ?? (() => new Date()))();
    const started = Date.now();
    const mine = this.written.get(key);
    const previous = mine && mine.uid === hsc.metadata.uid ? mine.status : hsc.status;
    const input: StatusInput = {
      name,
      generation: Number(hsc.metadata.generation ?? 0),
      spec: hsc.spec,
      previous,
      now,
    };

    const io = new ClusterIo(ctx, hsc);
    const pods = ctx.cache.list(POD, namespace, { [CLUSTER_LABEL]: name, 'app.kubernetes.io/component': 'master' });

    // ---- 2, 3: deletion and the finalizer
    if (hsc.metadata.deletionTimestamp) {
      const finalizers = (hsc.metadata.finalizers as string[] | undefined) ?? [];
      const sts = ctx.cache.get(STATEFUL_SET, namespace, name);
      if (finalizers.includes(CLEANUP_FINALIZER) && deletionPolicyOf(hsc) === 'Delete' && (sts || pods.length > 0)) {
        // Masters first: a running agent would write its keys again right after the cleanup.
        if (sts && !sts.metadata.deletionTimestamp) await io.deleteObject(sts);
        log.info({ pods: pods.length }, 'deletionPolicy Delete: waiting for the masters to stop before removing the cluster data');
        return { requeueAfterMs: 1000 };
      }
    }
    const state = await handleFinalizer({
      client: ctx.client,
      obj: hsc as unknown as KubeObject,
      policy: deletionPolicyOf(hsc),
      log,
      cleanup: async () => {
        await cleanupClusterData({ client: ctx.client, cluster: ref, spec: hsc.spec, log, readSecret: io.readSecret });
      },
    });
    if (state === 'deleting') {
      this.forget(ref);
      return {};
    }

    // ---- 4: the stores and the agents' view
    let view: ClusterView | undefined;
    let storeProblem: string | undefined;
    let stores: ReturnType<StoreClients['get']> | undefined;
    try {
      stores = this.d.stores.get(ref, await resolveStoreEndpoints(hsc, io.readSecret));
      view = await readClusterView({ etcd: stores.etcd, redis: stores.redis, cluster: ref, timeoutMs: STORE_TIMEOUT_MS });
    } catch (err) {
      if (err instanceof StoreConfigError) {
        io.event({ type: 'Warning', reason: err.reason, action: 'Reconcile', note: err.message });
        await this.writeStatus(io, key, previous, statusWithProblem(input, { phase: 'Pending', type: 'Reconciled', reason: err.reason, message: err.message }));
        return { requeueAfterMs: 30_000 };
      }
      storeProblem = (err as Error).message;
    }

    // ---- 5: children (events for each created, changed or pruned child come from syncChildren)
    const desired = desiredChildren(hsc, this.d.buildContext) as unknown as KubeObject[];
    const masters = desired.find((o) => o.kind === 'StatefulSet' && o.metadata.name === name);
    const plan = this.rolloutPlan(hsc, previous, ctx, pods, view);
    if (masters && plan) (masters.spec as { replicas: number }).replicas = plan.statefulSetReplicas;
    await ctx.syncChildren(hsc as unknown as KubeObject, desired);

    // ---- 6: role labels (backstop)
    const labelled = view && stores ? await this.backstopRoleLabels(io, pods, view, stores, log) : new Map<string, string | null>();

    // ---- 7: switchover and rollout
    let switchover = previous?.switchover as SwitchoverStatus | undefined;
    if (view && stores) {
      const annotation = (hsc.metadata.annotations as Record<string, string> | undefined)?.[SWITCHOVER_ANNOTATION];
      switchover = await this.handleSwitchover(io, view, stores, annotation, switchover, now, undefined);
      if (annotation !== undefined) await io.removeAnnotation(SWITCHOVER_ANNOTATION);
      if (plan && switchover?.result !== 'Pending') switchover = await this.rolloutStep(io, pods, plan, view, stores, switchover, now, log);
    }

    // ---- 8: status
    let status: HotStandbyClusterStatus;
    if (view) {
      // The pods' role labels as they are now: the cache's, with what the backstop just set.
      const podRoles = new Map(
        pods.filter((p) => !p.metadata.deletionTimestamp).map((p) => [p.metadata.name, labelled.has(p.metadata.name) ? (labelled.get(p.metadata.name) ?? undefined) : p.metadata.labels?.[ROLE_LABEL]] as const),
      );
      status = statusFromView({ ...input, podRoles }, view, this.lastSeen.get(key));
      const leader = view.members.find((m) => m.isLeader);
      if (view.leader && leader) this.lastSeen.set(key, { pod: view.leader.member, epoch: view.leader.epoch, lastHeartbeat: leader.lastHeartbeat });
      if ((status.failoverCount ?? 0) > (previous?.failoverCount ?? 0) && status.lastFailover) {
        const f = status.lastFailover;
        io.event({
          type: 'Normal',
          reason: 'FailoverObserved',
          action: 'Failover',
          note: `failover from ${f.from} to ${f.to} at epoch ${status.leader?.epoch ?? '?'}${f.durationMs !== undefined ? `, ${f.durationMs} ms after the old leader's last heartbeat` : ''}`,
        });
        this.d.metrics.leaderChanges.inc({ cluster: key });
        if (f.durationMs !== undefined) this.d.metrics.failoverDuration.observe({ cluster: key }, f.durationMs / 1000);
        log.info({ epoch: status.leader?.epoch, ...f }, 'failover observed');
      }
      const syncEvent = syncReplicationEvent(previous?.conditions, status.conditions);
      if (syncEvent) io.event(syncEvent);
    } else {
      status = statusWithProblem(input, { phase: previous?.phase === 'Running' ? 'Degraded' : 'Provisioning', type: 'Available', reason: 'StoresUnreachable', message: `cannot read the cluster's stores: ${storeProblem}` });
    }
    status.conditions = mergeConditions(status.conditions, now, input.generation, [
      view
        ? { type: 'StoresReady', status: 'True', reason: 'StoresReachable', message: 'etcd and the stream server answer' }
        : { type: 'StoresReady', status: 'False', reason: 'StoresUnreachable', message: storeProblem ?? 'not read yet' },
      { type: 'Reconciled', status: 'True', reason: 'ChildrenApplied', message: `${desired.length} children match the spec` },
      ...(plan
        ? [
            plan.step.kind === 'done'
              ? { type: 'Updated', status: 'True' as const, reason: 'AllUpdated', message: `${plan.updatedReplicas} pods run the current template` }
              : { type: 'Updated', status: 'False' as const, reason: 'RollingUpdate', message: rolloutMessage(plan) },
          ]
        : []),
    ]);
    if (plan) status.updatedReplicas = plan.updatedReplicas;
    status.storage = storageStatus(hsc);
    if (switchover) status.switchover = switchover;
    status.selector = `app.kubernetes.io/component=master,hotstandby.dev/cluster=${name}`;
    await this.writeStatus(io, key, previous, status);
    this.observe(key, status);
    log.debug({ ms: Date.now() - started, leader: status.leader?.pod, phase: status.phase, switchover: status.switchover?.result, rollout: plan?.step.kind }, 'reconciled');
    return { requeueAfterMs: STATUS_REFRESH_MS };
  }

  private rolloutPlan(hsc: HotStandbyCluster, previous: HotStandbyClusterStatus | undefined, ctx: ReconcileContext, pods: KubeObject[], view: ClusterView | undefined): RolloutPlan | undefined {
    const sts = ctx.cache.get(STATEFUL_SET, hsc.metadata.namespace!, hsc.metadata.name);
    if (!sts) return undefined;
    const stsStatus = (sts.status ?? {}) as { updateRevision?: string };
    return nextRolloutStep({
      desiredReplicas: hsc.spec.replicas ?? 3,
      currentReplicas: Number((sts.spec as { replicas?: number } | undefined)?.replicas ?? 0),
      updateRevision: stsStatus.updateRevision,
      pods: pods.map((p) => ({
        name: p.metadata.name,
        ordinal: podOrdinal(p.metadata.name),
        revision: p.metadata.labels?.['controller-revision-hash'],
        ready: isPodReady(p),
        terminating: Boolean(p.metadata.deletionTimestamp),
      })),
      leader: view?.leader?.member,
      members: (view?.members ?? []).map((m) => ({ pod: m.member, lag: m.lag ?? undefined })),
      maxCatchUpLag: hsc.spec.election?.maxLagOnFailover ?? 1000,
      switchoverPending: (previous?.switchover as SwitchoverStatus | undefined)?.result === 'Pending' || Boolean(view?.switchover),
    });
  }

  private async rolloutStep(
    io: ClusterIo,
    pods: KubeObject[],
    plan: RolloutPlan,
    view: ClusterView,
    stores: ClusterStores,
    switchover: SwitchoverStatus | undefined,
    now: Date,
    log: Logger,
  ): Promise<SwitchoverStatus | undefined> {
    const step = plan.step;
    if (step.kind === 'delete-pod') {
      const pod = pods.find((p) => p.metadata.name === step.pod);
      if (pod) {
        await io.deleteObject(pod);
        io.event({ type: 'Normal', reason: 'PodReplaced', action: 'RollingUpdate', note: `${step.pod}: ${step.reason}` });
        log.info({ pod: step.pod, reason: step.reason }, 'rolling update: replacing a pod');
      }
    } else if (step.kind === 'switchover') {
      return this.handleSwitchover(io, view, stores, step.to, switchover, now, step.reason);
    }
    return switchover;
  }

  /** Carries out the switchover decision; returns status.switchover as it should be now. */
  private async handleSwitchover(
    io: ClusterIo,
    view: ClusterView,
    stores: ClusterStores,
    annotation: string | undefined,
    current: SwitchoverStatus | undefined,
    now: Date,
    cause: string | undefined,
  ): Promise<SwitchoverStatus | undefined> {
    const hsc = io.hsc;
    const decision = decideSwitchover({ annotation, current, view, now, timeoutMs: SWITCHOVER_TIMEOUT_MS, maxLag: hsc.spec.election?.maxLagOnFailover ?? 1000, ...(cause ? { cause } : {}) });
    if (decision.kind === 'none') return current;
    const keys = etcdKeys({ namespace: hsc.metadata.namespace!, name: hsc.metadata.name });
    if (decision.kind === 'request') {
      const written = await requestSwitchover({ etcd: stores.etcd, keys, leaderEpoch: decision.leaderEpoch, target: decision.target, now });
      if (written === undefined) {
        const note = `the cluster changed while the switchover to ${decision.target} was being requested (new leader, member gone, or another request); nothing was written`;
        io.event({ type: 'Warning', reason: 'SwitchoverRefused', action: 'Switchover', note });
        return { target: decision.target, requestedAt: now.toISOString(), result: 'Failed', message: note, completedAt: now.toISOString() };
      }
      io.event({ ...decision.event, action: 'Switchover' });
      return decision.status;
    }
    if (decision.withdraw) {
      const pending = await withTimeout(stores.etcd.get(keys.switchover).string(), STORE_TIMEOUT_MS, 'etcd to read the switchover request').catch(() => null);
      if (pending) await withdrawSwitchover(stores.etcd, keys, pending);
    }
    io.event({ ...decision.event, action: 'Switchover' });
    return decision.status;
  }

  /**
   * The agents move the role labels themselves (failover must not need the
   * operator). This puts them right when an agent could not: only after the
   * leader has led for a grace period, only when the leader key still names
   * the same epoch, and each patch is conditional on the pod's
   * resourceVersion, so a label an agent has just moved is never moved back.
   */
  /** Returns the labels it set (pod name → role, null: removed). */
  private async backstopRoleLabels(io: ClusterIo, pods: KubeObject[], view: ClusterView, stores: ClusterStores, log: Logger): Promise<Map<string, string | null>> {
    const set = new Map<string, string | null>();
    const leader = view.leader;
    const roles = new Map(view.members.map((m) => [m.member, m]));
    const wanted = new Map<string, string | null>();
    const now = Date.now();
    for (const [uid, l] of this.labelsSet) if (now - l.atMs > LABELS_SET_MEMORY_MS) this.labelsSet.delete(uid);
    for (const pod of pods) {
      if (pod.metadata.deletionTimestamp) continue;
      const cached = pod.metadata.labels?.[ROLE_LABEL];
      const mine = this.labelsSet.get(pod.metadata.uid ?? '');
      if (mine && mine.role === (cached ?? null)) this.labelsSet.delete(pod.metadata.uid ?? ''); // the cache caught up
      const have = mine && mine.role !== (cached ?? null) ? (mine.role ?? undefined) : cached;
      if (mine && have !== cached) set.set(pod.metadata.name, mine.role);
      const m = roles.get(pod.metadata.name);
      let want: string | null | undefined;
      if (leader && pod.metadata.name === leader.member && m?.role === 'leader') {
        if (leader.ageMs !== null && leader.ageMs >= LABEL_BACKSTOP_GRACE_MS) want = ROLE_LEADER;
      } else if (have === ROLE_LEADER) want = m && m.role === 'standby' ? ROLE_STANDBY : null;
      else if (m?.role === 'standby' && have === undefined) want = ROLE_STANDBY;
      if (want !== undefined && want !== (have ?? null)) wanted.set(pod.metadata.name, want);
    }
    if (wanted.size === 0) return set;
    // Re-check the leader right before moving labels: a failover since the view was read wins.
    const keys = etcdKeys({ namespace: io.hsc.metadata.namespace!, name: io.hsc.metadata.name });
    const current = await withTimeout(stores.etcd.get(keys.leader).exec(), STORE_TIMEOUT_MS, 'etcd to read the leader').catch(() => undefined);
    const epoch = current?.kvs[0] ? Number(current.kvs[0].create_revision) : undefined;
    if (epoch !== leader?.epoch) return set;
    for (const pod of pods) {
      const want = wanted.get(pod.metadata.name);
      if (want === undefined) continue;
      try {
        await io.patchPodLabels(pod, { [ROLE_LABEL]: want });
        set.set(pod.metadata.name, want);
        if (pod.metadata.uid) this.labelsSet.set(pod.metadata.uid, { role: want, atMs: Date.now() });
        log.info({ pod: pod.metadata.name, role: want, epoch }, 'role label set by the operator (backstop)');
      } catch (err) {
        log.debug({ pod: pod.metadata.name, err: (err as Error).message }, 'role label backstop skipped; the pod changed meanwhile');
      }
    }
    return set;
  }

  /** Writes the status when it differs from the last one known, and remembers it. */
  private async writeStatus(io: ClusterIo, key: string, previous: HotStandbyClusterStatus | undefined, status: HotStandbyClusterStatus): Promise<void> {
    if (JSON.stringify(status) === JSON.stringify(previous ?? {})) return;
    const changed = Object.keys({ ...status, ...previous }).filter((k) => JSON.stringify((status as Record<string, unknown>)[k]) !== JSON.stringify((previous as Record<string, unknown> | undefined)?.[k]));
    this.d.log.debug({ cluster: key, changed }, 'writing the status');
    await io.writeStatus(status);
    this.written.set(key, { uid: String(io.hsc.metadata.uid), status });
  }

  /** Forgets what this replica wrote: another replica may write while this one does not lead. */
  resetMemory(): void {
    this.written.clear();
  }

  private observe(key: string, status: HotStandbyClusterStatus): void {
    const m = this.d.metrics;
    const labels = { cluster: key };
    m.clusterReadyMembers.set(labels, status.readyReplicas ?? 0);
    m.clusterMaxLag.set(labels, status.maxLag ?? 0);
    m.clusterHeadSeq.set(labels, status.oplog?.headSeq ?? 0);
    m.clusterFailovers.set(labels, status.failoverCount ?? 0);
    m.clusterLeaderEpoch.set(labels, status.leader?.epoch ?? 0);
    m.setMemberLags(key, (status.members ?? []).map((x) => ({ member: x.pod, lag: x.lag ?? 0 })));
  }

  forget(ref: ClusterRef): void {
    const key = `${ref.namespace}/${ref.name}`;
    this.d.stores.forget(ref);
    this.lastSeen.delete(key);
    this.written.delete(key);
    this.d.metrics.dropCluster(key);
  }
}

/** The writes one reconcile makes besides applying children, on the cluster and its pods. */
class ClusterIo {
  readonly hsc: HotStandbyCluster;
  readonly readSecret: ReadSecret;
  private readonly ctx: ReconcileContext;

  constructor(ctx: ReconcileContext, hsc: HotStandbyCluster) {
    this.ctx = ctx;
    this.hsc = hsc;
    this.readSecret = secretReader(ctx.client);
  }

  private get path(): string {
    return `/apis/${GROUP}/${VERSION}/namespaces/${encodeURIComponent(this.hsc.metadata.namespace!)}/${PLURAL}/${encodeURIComponent(this.hsc.metadata.name)}`;
  }

  event(ev: EventInput): void {
    this.ctx.events?.record(this.hsc as unknown as KubeObject, ev);
  }

  async writeStatus(status: HotStandbyClusterStatus): Promise<void> {
    await this.ctx.client.request('PATCH', `${this.path}/status`, { body: { status }, contentType: 'application/merge-patch+json' });
  }

  async removeAnnotation(key: string): Promise<void> {
    await this.ctx.client.request('PATCH', this.path, { body: { metadata: { annotations: { [key]: null } } }, contentType: 'application/merge-patch+json' });
  }

  /** A merge patch of the pod's labels that the server refuses (409) when the pod changed since the cache saw it. */
  async patchPodLabels(pod: KubeObject, labels: Record<string, string | null>): Promise<void> {
    await this.ctx.client.request('PATCH', await this.ctx.client.objectPath(pod), {
      body: { metadata: { resourceVersion: pod.metadata.resourceVersion, labels } },
      contentType: 'application/merge-patch+json',
    });
  }

  /** Deletes the object as the cache saw it (uid precondition); gone already is fine. */
  async deleteObject(obj: KubeObject): Promise<void> {
    try {
      await this.ctx.client.request('DELETE', await this.ctx.client.objectPath(obj), { body: { apiVersion: 'v1', kind: 'DeleteOptions', preconditions: { uid: obj.metadata.uid } } });
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }

}

function isPodReady(pod: KubeObject): boolean {
  const conditions = ((pod.status as { conditions?: Array<{ type: string; status: string }> } | undefined)?.conditions ?? []);
  return conditions.some((c) => c.type === 'Ready' && c.status === 'True');
}

function rolloutMessage(plan: RolloutPlan): string {
  const s = plan.step;
  switch (s.kind) {
    case 'wait':
      return `waiting: ${s.reason}`;
    case 'delete-pod':
      return `replacing ${s.pod}: ${s.reason}`;
    case 'switchover':
      return `switching over to ${s.to}: ${s.reason}`;
    default:
      return '';
  }
}

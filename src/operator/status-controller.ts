// Keeps every HotStandbyCluster's status in step with what its agents publish.
// It reads each cluster's stores (etcd: leader, members, snapshot; the stream
// server: log head) and writes the status through the status subresource when
// it changed. It is never on the failover path: it only watches and reports.
//
// This version reports on clusters that name external stores. Provisioning
// managed etcd and Dragonfly, and the masters' StatefulSet, is not built yet;
// such clusters get phase Pending and a condition that says so.
import { CustomObjectsApi, PatchStrategy, setHeaderOptions, type KubeConfig } from '@kubernetes/client-node';
import { Etcd3 } from 'etcd3';
import { Redis } from 'ioredis';
import { GROUP, PLURAL, VERSION, type HotStandbyCluster, type HotStandbyClusterStatus } from '../api/v1alpha1.ts';
import { readClusterView } from '../lib/clusterview.ts';
import type { Logger } from '../lib/log.ts';
import { withTimeout } from '../lib/time.ts';
import type { EventRecorder } from './kube/events.ts';
import type { OperatorMetrics } from './metrics.ts';
import { statusFromView, statusWithProblem, type LastSeenLeader, type StatusInput } from './status.ts';

const STORE_TIMEOUT_MS = 3000;
const API_TIMEOUT_MS = 10_000;

interface StoreClients {
  /** The spec's store addresses these clients were made for. */
  key: string;
  etcd: Etcd3;
  redis: Redis;
}

export class StatusController {
  private readonly api: CustomObjectsApi;
  private readonly clients = new Map<string, StoreClients>();
  private readonly lastSeen = new Map<string, LastSeenLeader>();
  private readonly namespaces: string[];
  private readonly log: Logger;
  private readonly metrics: OperatorMetrics;
  private readonly events: EventRecorder | undefined;

  constructor(opts: { kc: KubeConfig; namespaces: string[]; log: Logger; metrics: OperatorMetrics; events?: EventRecorder }) {
    this.api = opts.kc.makeApiClient(CustomObjectsApi);
    this.namespaces = opts.namespaces;
    this.log = opts.log;
    this.metrics = opts.metrics;
    this.events = opts.events;
  }

  /** One pass over every cluster; a failure on one cluster does not stop the others. */
  async syncAll(): Promise<void> {
    const items = await this.list();
    const seen = new Set<string>();
    for (const hsc of items) {
      const id = `${hsc.metadata.namespace}/${hsc.metadata.name}`;
      seen.add(id);
      try {
        await this.sync(hsc);
      } catch (err) {
        this.log.warn({ cluster: id, err: (err as Error).message }, 'status sync failed; retrying on the next pass');
      }
    }
    for (const id of [...this.clients.keys()]) if (!seen.has(id)) this.forget(id);
  }

  private async list(): Promise<HotStandbyCluster[]> {
    const lists =
      this.namespaces.length === 0
        ? [await withTimeout(this.api.listClusterCustomObject({ group: GROUP, version: VERSION, plural: PLURAL }), API_TIMEOUT_MS, 'listing HotStandbyClusters')]
        : await Promise.all(
            this.namespaces.map((namespace) =>
              withTimeout(this.api.listNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: PLURAL }), API_TIMEOUT_MS, `listing HotStandbyClusters in ${namespace}`),
            ),
          );
    return lists.flatMap((l) => (l as { items: HotStandbyCluster[] }).items);
  }

  private async sync(hsc: HotStandbyCluster): Promise<void> {
    const namespace = hsc.metadata.namespace!;
    const name = hsc.metadata.name;
    const id = `${namespace}/${name}`;
    const input: StatusInput = {
      name,
      generation: Number((hsc.metadata as { generation?: number }).generation ?? 0),
      spec: hsc.spec,
      previous: hsc.status,
      now: new Date(),
    };
    const etcdExt = hsc.spec.etcd?.external;
    const dfExt = hsc.spec.dragonfly?.external;
    if (!etcdExt || !dfExt) {
      return this.write(hsc, statusWithProblem(input, {
        phase: 'Pending',
        type: 'Reconciled',
        reason: 'ManagedStoresNotSupported',
        message: 'this operator version reports on clusters with external etcd and Dragonfly; provisioning managed stores is not built yet. Set spec.etcd.external and spec.dragonfly.external.',
      }));
    }
    if (etcdExt.tlsSecret || dfExt.passwordSecret) {
      return this.write(hsc, statusWithProblem(input, {
        phase: 'Pending',
        type: 'Reconciled',
        reason: 'SecretsNotSupported',
        message: 'this operator version cannot use spec.etcd.external.tlsSecret or spec.dragonfly.external.passwordSecret yet; remove them or wait for a version that can.',
      }));
    }
    const clients = this.clientsFor(id, etcdExt.endpoints, dfExt.url);
    let status: HotStandbyClusterStatus;
    try {
      const view = await readClusterView({ etcd: clients.etcd, redis: clients.redis, cluster: { namespace, name }, timeoutMs: STORE_TIMEOUT_MS });
      status = statusFromView(input, view, this.lastSeen.get(id));
      const leader = view.members.find((m) => m.isLeader);
      if (view.leader && leader) this.lastSeen.set(id, { pod: view.leader.member, epoch: view.leader.epoch, lastHeartbeat: leader.lastHeartbeat });
      if (status.lastFailover && status.failoverCount !== (hsc.status?.failoverCount ?? 0)) {
        this.log.info({ cluster: id, epoch: status.leader?.epoch, ...status.lastFailover }, 'failover observed');
        this.metrics.leaderChanges.inc({ cluster: id });
        const { from, to, durationMs } = status.lastFailover;
        if (durationMs !== undefined) this.metrics.failoverDuration.observe({ cluster: id }, durationMs / 1000);
        this.events?.record(hsc, {
          type: 'Normal',
          reason: 'FailoverObserved',
          action: 'Failover',
          note: `leader changed from ${from ?? 'unknown'} to ${to ?? 'unknown'} in ${durationMs ?? '?'} ms (epoch ${status.leader?.epoch ?? '?'})`,
        });
      }
      this.metrics.setMemberLags(
        id,
        (status.members ?? []).filter((m) => m.lag !== undefined).map((m) => ({ member: m.pod, lag: m.lag! })),
      );
    } catch (err) {
      status = statusWithProblem(input, {
        phase: 'Degraded',
        type: 'Available',
        reason: 'StoresUnreachable',
        message: `cannot read the cluster's etcd (${etcdExt.endpoints.join(',')}): ${(err as Error).message}`,
      });
    }
    const labels = { cluster: id };
    this.metrics.clusterReadyMembers.set(labels, status.readyReplicas ?? 0);
    this.metrics.clusterMaxLag.set(labels, status.maxLag ?? 0);
    this.metrics.clusterHeadSeq.set(labels, status.oplog?.headSeq ?? 0);
    this.metrics.clusterFailovers.set(labels, status.failoverCount ?? 0);
    this.metrics.clusterLeaderEpoch.set(labels, status.leader?.epoch ?? 0);
    await this.write(hsc, status);
  }

  /** Writes the status through the status subresource, only when it changed. */
  private async write(hsc: HotStandbyCluster, status: HotStandbyClusterStatus): Promise<void> {
    if (JSON.stringify(status) === JSON.stringify(hsc.status ?? {})) return;
    await withTimeout(
      this.api.patchNamespacedCustomObjectStatus(
        { group: GROUP, version: VERSION, namespace: hsc.metadata.namespace!, plural: PLURAL, name: hsc.metadata.name, body: { status } },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      ),
      API_TIMEOUT_MS,
      'writing the status',
    );
  }

  private clientsFor(id: string, endpoints: string[], url: string): StoreClients {
    const key = `${endpoints.join(',')} ${url}`;
    const existing = this.clients.get(id);
    if (existing?.key === key) return existing;
    if (existing) this.forget(id);
    const redis = new Redis(url, { lazyConnect: true, connectTimeout: STORE_TIMEOUT_MS, commandTimeout: STORE_TIMEOUT_MS, maxRetriesPerRequest: 1 });
    redis.on('error', (err: Error) => this.log.debug({ cluster: id, err: err.message }, 'stream server connection error'));
    const made = { key, etcd: new Etcd3({ hosts: endpoints, dialTimeout: STORE_TIMEOUT_MS }), redis };
    this.clients.set(id, made);
    return made;
  }

  private forget(id: string): void {
    const c = this.clients.get(id);
    if (!c) return;
    c.etcd.close();
    c.redis.disconnect();
    this.clients.delete(id);
    this.lastSeen.delete(id);
    this.metrics.dropCluster(id);
  }

  close(): void {
    for (const id of [...this.clients.keys()]) this.forget(id);
  }
}

// The operator process: Lease election among replicas, the controller
// (informers, work queue, reconciler), store watches that queue a cluster the
// moment its leader changes, Events, and the /metrics, /healthz, /readyz
// endpoints. Informers run on every replica so a takeover starts warm; only
// the Lease holder reconciles.
import { CoordinationV1Api, KubeConfig } from '@kubernetes/client-node';
import type { Logger } from '../lib/log.ts';
import { childKinds } from './builders/index.ts';
import { Controller } from './controller.ts';
import { startOperatorHttp } from './http.ts';
import { KubeClient } from './kube/client.ts';
import { EventRecorder } from './kube/events.ts';
import { LeaseElector } from './lease-elector.ts';
import { OperatorMetrics } from './metrics.ts';
import { Reconciler } from './reconciler.ts';
import { StoreClients } from './store-clients.ts';

export interface OperatorOptions {
  identity: string;
  leaderElect: boolean;
  leaseName: string;
  leaseNamespace: string;
  namespaces: string[];
  metricsPort: number;
  resyncSeconds: number;
  agentImage: string;
  agentClusterRole: string;
  log: Logger;
  /** Resolves when the process should stop (SIGTERM). */
  untilStop: Promise<void>;
}

export async function runOperator(o: OperatorOptions): Promise<void> {
  const kc = new KubeConfig();
  kc.loadFromDefault();
  const { log } = o;
  const metrics = new OperatorMetrics();
  const events = new EventRecorder({ client: new KubeClient(kc), instance: o.identity, log });
  const elector = o.leaderElect
    ? new LeaseElector({
        api: kc.makeApiClient(CoordinationV1Api),
        namespace: o.leaseNamespace,
        name: o.leaseName,
        identity: o.identity,
        log,
        onChange: (leading) => {
          metrics.operatorLeader.set(leading ? 1 : 0);
          reconciler.resetMemory();
          // A new holder looks at every cluster at once rather than at the next resync.
          if (leading) controller.resyncNow();
        },
      })
    : undefined;
  const stores = new StoreClients({ log, onLeadershipChange: (ref) => controller.queue.add(`${ref.namespace}/${ref.name}`) });
  const reconciler = new Reconciler({
    stores,
    metrics,
    log,
    buildContext: { agentImage: o.agentImage, agentClusterRole: o.agentClusterRole },
  });
  const controller: Controller = new Controller({
    kc,
    namespaces: o.namespaces,
    kinds: childKinds.map(({ apiVersion, kind }) => ({ apiVersion, kind })),
    watchOnly: [{ apiVersion: 'v1', kind: 'Pod' }],
    reconcile: (key, ctx) => reconciler.reconcile(key, ctx),
    log,
    metrics,
    events,
    resyncMs: o.resyncSeconds * 1000,
    active: () => (elector ? elector.isLeader() : true),
  });
  let ready = false;
  const server = await startOperatorHttp({ port: o.metricsPort, metrics, ready: () => ready });
  metrics.operatorLeader.set(elector ? 0 : 1);
  elector?.start();
  try {
    await controller.start();
    ready = true;
    log.info({ metricsPort: server.port, namespaces: o.namespaces.length ? o.namespaces : 'all', leaderElect: o.leaderElect, agentImage: o.agentImage }, 'operator started');
    await o.untilStop;
  } finally {
    ready = false;
    await controller.stop();
    await elector?.stop();
    stores.close();
    await events.stop();
    await server.close();
    log.info('operator stopped');
  }
}

// `hotstandby operator`: the controller, as the Helm chart runs it.
import os from 'node:os';
import type { Command } from '../command.ts';
import { UsageError, intFlag, parseFlags } from '../command.ts';
import { untilStopSignal } from '../signals.ts';

const help = `Usage: hotstandby operator [--leader-elect=true|false] [--lease-name NAME] [--lease-namespace NS]
                           [--namespaces a,b] [--metrics-port 8080] [--resync-seconds 2]
                           [--log-level info] [--agent-cluster-role NAME]

Runs the controller. Replicas elect one active controller through a
coordination.k8s.io Lease; only it acts. It keeps each HotStandbyCluster's status
(leader, members and lag, log head, snapshot, failovers, conditions) in step with
what the cluster's agents publish in etcd and the stream server, and serves
/healthz, /readyz and /metrics. It is never on the failover path.

This version reports on clusters with external etcd and Dragonfly; provisioning
managed stores and the masters' StatefulSet is not built yet (such clusters get
phase Pending and a condition saying so).

Kubernetes credentials: in a pod, its ServiceAccount; elsewhere $KUBECONFIG or
~/.kube/config.

Options:
  --leader-elect=BOOL       elect one active replica (default true)
  --lease-name NAME         the Lease (default hotstandby-operator)
  --lease-namespace NS      its namespace (default $POD_NAMESPACE, else default)
  --namespaces a,b          namespaces to watch (default: all)
  --metrics-port PORT       /metrics, /healthz, /readyz (default 8080; 0 = any free port)
  --resync-seconds S        how often statuses are refreshed, 1-60 (default 2)
  --log-level LEVEL         fatal|error|warn|info|debug|trace (default info)
  --agent-cluster-role NAME the agents' ClusterRole (accepted for the chart; used once
                            the operator provisions agents)`;

export const operatorCommand: Command = {
  name: 'operator',
  help,
  async run(argv) {
    const values = parseFlags(
      argv,
      Object.fromEntries(
        ['leader-elect', 'lease-name', 'lease-namespace', 'namespaces', 'metrics-port', 'resync-seconds', 'log-level', 'agent-cluster-role'].map((f) => [
          f,
          { type: 'string' as const },
        ]),
      ),
    ) as Record<string, string | undefined>;
    const leaderElect = (values['leader-elect'] ?? 'true') !== 'false';
    if (!['true', 'false', undefined].includes(values['leader-elect'])) throw new UsageError('--leader-elect must be true or false');
    const metricsPort = intFlag(values['metrics-port'], 'metrics-port', 0, 65535, 8080);
    const resyncSeconds = Number(values['resync-seconds'] ?? 2);
    if (!Number.isFinite(resyncSeconds) || resyncSeconds < 1 || resyncSeconds > 60) throw new UsageError(`--resync-seconds must be 1-60, got ${values['resync-seconds']}`);
    const namespaces = (values.namespaces ?? '').split(',').map((s) => s.trim()).filter(Boolean);

    const { KubeConfig, CoordinationV1Api } = await import('@kubernetes/client-node');
    const { createLogger } = await import('../../lib/log.ts');
    const { LeaseElector } = await import('../../operator/lease-elector.ts');
    const { StatusController } = await import('../../operator/status-controller.ts');
    const { Metrics } = await import('../../operator/metrics.ts');
    const { startOperatorHttp } = await import('../../operator/http.ts');

    const identity = process.env.POD_NAME || `${os.hostname()}-${process.pid}`;
    const log = createLogger({ component: 'operator', member: identity, ...(values['log-level'] ? { level: values['log-level'] } : {}) });
    const kc = new KubeConfig();
    kc.loadFromDefault();
    const metrics = new Metrics();
    metrics.define('hotstandby_operator_leader', 'Whether this replica is the active controller');
    const controller = new StatusController({ kc, namespaces, log, metrics });
    const elector = leaderElect
      ? new LeaseElector({
          api: kc.makeApiClient(CoordinationV1Api),
          namespace: values['lease-namespace'] ?? process.env.POD_NAMESPACE ?? 'default',
          name: values['lease-name'] ?? 'hotstandby-operator',
          identity,
          log,
        })
      : undefined;
    const isLeader = (): boolean => (elector ? elector.isLeader() : true);
    let started = false;
    const server = await startOperatorHttp({ port: metricsPort, metrics, ready: () => started });
    elector?.start();
    log.info({ metricsPort: server.port, namespaces: namespaces.length ? namespaces : 'all', leaderElect }, 'operator started');

    let stopping = false;
    let timer: NodeJS.Timeout | undefined;
    let pass: Promise<void> | undefined;
    const loop = (): void => {
      if (stopping) return;
      const leading = isLeader();
      metrics.set('hotstandby_operator_leader', {}, leading ? 1 : 0);
      pass = (leading ? controller.syncAll() : Promise.resolve())
        .catch((err: Error) => log.warn({ err: err.message }, 'status pass failed'))
        .finally(() => {
          pass = undefined;
          if (!stopping) timer = setTimeout(loop, resyncSeconds * 1000);
        });
    };
    started = true;
    loop();
    await untilStopSignal();
    stopping = true;
    if (timer) clearTimeout(timer);
    await pass;
    await elector?.stop();
    controller.close();
    await server.close();
    log.info('operator stopped');
    return 0;
  },
};

// `hotstandby operator`: the controller, as the Helm chart runs it.
import os from 'node:os';
import type { Command } from '../command.ts';
import { UsageError, intFlag, parseFlags } from '../command.ts';
import { untilStopSignal } from '../signals.ts';

const help = `Usage: hotstandby operator [--leader-elect=true|false] [--lease-name NAME] [--lease-namespace NS]
                           [--namespaces a,b] [--metrics-port 8080] [--resync-seconds 60]
                           [--agent-image IMAGE] [--agent-cluster-role NAME] [--log-level info]

Runs the controller. Replicas elect one active controller through a
coordination.k8s.io Lease; only it acts. For every HotStandbyCluster it makes
the managed etcd and Dragonfly (unless the spec names external ones), the
masters' StatefulSet with the agent as a native sidecar, the leader, standby
and members Services, the agents' ServiceAccount and RoleBinding and the
PodDisruptionBudgets, all by server-side apply; it orders rolling updates
(standbys, switchover, old leader), carries out switchovers asked for with the
hotstandby.dev/switchover-to annotation, and keeps the status (leader, members
and lag, log head, snapshot, failovers, conditions) in step with what the
agents publish. Failover never needs it: the agents elect, fence and move the
leader label themselves.

Kubernetes credentials: in a pod, its ServiceAccount; elsewhere $KUBECONFIG or
~/.kube/config.

Options:
  --leader-elect=BOOL       elect one active replica (default true)
  --lease-name NAME         the Lease (default hotstandby-operator)
  --lease-namespace NS      its namespace (default $POD_NAMESPACE, else default)
  --namespaces a,b          namespaces to watch (default: all)
  --metrics-port PORT       /metrics, /healthz, /readyz (default 8080; 0 = any free port)
  --resync-seconds S        every cluster is reconciled at least this often, 1-3600
                            (default 60; status follows leader changes at once and
                            lag every 5 s regardless)
  --agent-image IMAGE       image of the agent sidecar (default $HOTSTANDBY_OPERATOR_IMAGE,
                            which the chart sets to the operator's own image)
  --agent-cluster-role NAME the agents' ClusterRole, bound in each cluster's namespace
                            (default hotstandby-operator-agent)
  --log-level LEVEL         fatal|error|warn|info|debug|trace (default info)`;

const FLAGS = ['leader-elect', 'lease-name', 'lease-namespace', 'namespaces', 'metrics-port', 'resync-seconds', 'log-level', 'agent-cluster-role', 'agent-image'];

export const operatorCommand: Command = {
  name: 'operator',
  help,
  async run(argv) {
    const values = parseFlags(argv, Object.fromEntries(FLAGS.map((f) => [f, { type: 'string' as const }]))) as Record<string, string | undefined>;
    if (!['true', 'false', undefined].includes(values['leader-elect'])) throw new UsageError('--leader-elect must be true or false');
    const leaderElect = (values['leader-elect'] ?? 'true') !== 'false';
    const metricsPort = intFlag(values['metrics-port'], 'metrics-port', 0, 65535, 8080);
    const resyncSeconds = intFlag(values['resync-seconds'], 'resync-seconds', 1, 3600, 60);
    const namespaces = (values.namespaces ?? '').split(',').map((s) => s.trim()).filter(Boolean);
    const agentImage = values['agent-image'] ?? process.env.HOTSTANDBY_OPERATOR_IMAGE;
    if (!agentImage) {
      throw new UsageError('--agent-image is required outside the Helm chart: the image the agent sidecars run (the chart passes the operator image as $HOTSTANDBY_OPERATOR_IMAGE)');
    }

    const { createLogger } = await import('../../lib/log.ts');
    const { runOperator } = await import('../../operator/main.ts');
    const identity = process.env.POD_NAME || `${os.hostname()}-${process.pid}`;
    const log = createLogger({ component: 'operator', member: identity, ...(values['log-level'] ? { level: values['log-level'] } : {}) });
    await runOperator({
      identity,
      leaderElect,
      leaseName: values['lease-name'] ?? 'hotstandby-operator',
      leaseNamespace: values['lease-namespace'] ?? process.env.POD_NAMESPACE ?? 'default',
      namespaces,
      metricsPort,
      resyncSeconds,
      agentImage,
      agentClusterRole: values['agent-cluster-role'] ?? 'hotstandby-operator-agent',
      log,
      untilStop: untilStopSignal().then(() => undefined),
    });
    return 0;
  },
};

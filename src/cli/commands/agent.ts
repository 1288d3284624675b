// `hotstandby agent`: the process beside every master. SIGTERM or SIGINT
// resign leadership (a standby takes over at once) and exit.
import type { Command } from '../command.ts';
import { UsageError, parseFlags } from '../command.ts';
import { untilStopSignal } from '../signals.ts';
import { AGENT_DEFAULTS, ConfigError, FLAG_NAMES, resolveAgentConfig, type AgentConfig, type RawAgentSettings, type SettingName } from '../../agent/config.ts';

const help = `Usage: hotstandby agent --cluster NS/NAME --address HOST:PORT --etcd URLS --redis URL [options]

Runs the agent beside one master: leader election on an etcd lease, the fenced
operation log in a Redis-protocol stream, snapshots, delete events, metadata,
and the local API the master talks to. Every flag can also be set through the
environment variable in brackets.

Required:
  --cluster NS/NAME           the HotStandbyCluster this member belongs to  [HOTSTANDBY_CLUSTER]
  --address HOST:PORT         where clients reach this member's master      [HOTSTANDBY_ADDRESS]
  --etcd URL[,URL...]         etcd endpoints, http://host:port               [HOTSTANDBY_ETCD]
  --redis URL                 stream server (Dragonfly/Redis), redis://host:port [HOTSTANDBY_REDIS]

Options:
  --member NAME               this member's name (default: $POD_NAME, else the hostname) [HOTSTANDBY_MEMBER]
  --api-listen ADDR           local API: 127.0.0.1:PORT or unix:/path (default ${AGENT_DEFAULTS.apiListen})
  --lease-ttl SECONDS         leader lease TTL, 2-60 (default ${AGENT_DEFAULTS.leaseTtlSeconds})
  --demote-margin-ms MS       the leader stops writing this long before its lease can expire (default: min(1000, TTL/5))
  --max-lag-on-failover N     a standby further behind than N entries does not campaign (default ${AGENT_DEFAULTS.maxLagOnFailover})
  --candidacy-step-ms MS      delay between candidates ranked by how caught-up they are (default ${AGENT_DEFAULTS.candidacyStepMs})
  --master-liveness-timeout-ms MS  the master is gone after this long with no request open to the agent:
                              a leader resigns, a standby does not campaign, 100-600000 (default ${AGENT_DEFAULTS.masterLivenessTimeoutMs}) [HOTSTANDBY_MASTER_LIVENESS_TIMEOUT_MS]
  --promotion-timeout-ms MS   how long a new leader waits for its master to apply the log (default ${AGENT_DEFAULTS.promotionTimeoutMs})
  --replication async|sync    sync: a write is acknowledged only after --min-sync-standbys standbys
                              received it; only those may then take over (default async) [HOTSTANDBY_REPLICATION]
  --min-sync-standbys N       sync mode: standbys that must receive each batch, 1-8 (default 1) [HOTSTANDBY_MIN_SYNC_STANDBYS]
  --sync-timeout-ms MS        sync mode: how long a write waits for them, 10-60000 (default ${AGENT_DEFAULTS.syncTimeoutMs}) [HOTSTANDBY_SYNC_TIMEOUT_MS]
  --on-sync-timeout fail|async  sync mode, after that wait: fail the write (503 sync_timeout), or
                              acknowledge it and fall back to async until standbys catch up (default fail) [HOTSTANDBY_ON_SYNC_TIMEOUT]
  --oplog-max-length N        the stream's approximate MAXLEN (default ${AGENT_DEFAULTS.oplogMaxLength})
  --snapshot-every-entries N  ask the master for a snapshot every N entries (default ${AGENT_DEFAULTS.snapshotEveryEntries})
  --snapshot-interval SECONDS ...and at least this often while writes arrive; 0 = off (default ${AGENT_DEFAULTS.snapshotIntervalSeconds})
  --snapshot-keep N           snapshots kept; the log is trimmed before the oldest (default ${AGENT_DEFAULTS.snapshotKeep})
  --log-level LEVEL           fatal|error|warn|info|debug|trace|silent (default info)
  --health-listen HOST:PORT   serve GET /healthz and /readyz for kubelet probes; off to disable
                              (default: ${AGENT_DEFAULTS.healthListenInPod} in a pod, off elsewhere) [HOTSTANDBY_HEALTH_LISTEN]

Store credentials (files, e.g. mounted from Secrets):
  --etcd-ca-file PATH         CA of etcd's certificate (needs https:// endpoints) [HOTSTANDBY_ETCD_CA_FILE]
  --etcd-cert-file PATH       client certificate for etcd, with --etcd-key-file [HOTSTANDBY_ETCD_CERT_FILE]
  --etcd-key-file PATH        its key                                     [HOTSTANDBY_ETCD_KEY_FILE]
  --redis-password-file PATH  the stream server's password [HOTSTANDBY_REDIS_PASSWORD_FILE];
                              or the password itself in HOTSTANDBY_REDIS_PASSWORD (e.g. a secretKeyRef)
  --redis-ca-file PATH        CA of a rediss:// stream server's certificate [HOTSTANDBY_REDIS_CA_FILE]
  The agent uses etcd's JSON gateway: with a trusted CA, etcd's serving certificate must allow
  clientAuth too (extendedKeyUsage serverAuth,clientAuth, as kubeadm makes them).

Pod role labels (the leader Service selects hotstandby.dev/role=leader):
  --pod-labels auto|on|off    label this pod leader/standby; auto = on when Kubernetes credentials
                              exist (in a pod, or --kube-api-server given) (default auto) [HOTSTANDBY_POD_LABELS]
  --kube-api-server URL       https://host:port (default: in-cluster) [HOTSTANDBY_KUBE_API_SERVER]
  --kube-token-file PATH      bearer token, re-read as it rotates (default: the service account token) [HOTSTANDBY_KUBE_TOKEN_FILE]
  --kube-ca-file PATH         CA of the API server (default: the service account ca.crt) [HOTSTANDBY_KUBE_CA_FILE]
  --pod-namespace NS          namespace of this pod (default: $POD_NAMESPACE, the service account's
                              namespace file, else the cluster's namespace) [HOTSTANDBY_POD_NAMESPACE]

Example:
  hotstandby agent --cluster default/mooncake --member m-0 --address 10.0.0.5:50051 \\
    --etcd http://etcd:2379 --redis redis://dragonfly:6379 --api-listen 127.0.0.1:7070`;

// Flag name (without --) → config field.
const FLAG_TO_FIELD = Object.fromEntries(
  (Object.entries(FLAG_NAMES) as Array<[SettingName, string]>).map(([field, flag]) => [flag.slice(2), field]),
) as Record<string, SettingName>;

export function parseAgentFlags(argv: string[]): RawAgentSettings {
  const values: Record<string, string | boolean | undefined> = parseFlags(
    argv,
    Object.fromEntries(Object.keys(FLAG_TO_FIELD).map((flag) => [flag, { type: 'string' as const }])),
  );
  const raw: RawAgentSettings = {};
  for (const [flag, value] of Object.entries(values)) {
    const field = FLAG_TO_FIELD[flag];
    if (field && typeof value === 'string') raw[field] = value;
  }
  return raw;
}

export const agentCommand: Command = {
  name: 'agent',
  help,
  async run(argv) {
    let config: AgentConfig;
    try {
      config = resolveAgentConfig(parseAgentFlags(argv));
    } catch (err) {
      if (err instanceof ConfigError) throw new UsageError(err.message);
      throw err;
    }
    // Imported here so `hotstandby --help` does not load the store clients.
    const { Agent } = await import('../../agent/agent.ts');
    const agent = await Agent.start(config);
    const signal = await untilStopSignal();
    process.stderr.write(`received ${signal}; resigning and stopping\n`);
    await agent.close();
    return 0;
  },
};

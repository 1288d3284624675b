// The agent's settings: defaults, parsing from flags and environment, and
// validation with messages that name the setting and the fix. Flags win over
// environment variables (HOTSTANDBY_<NAME>), which win over defaults.
import os from 'node:os';
import { parseClusterId, type ClusterRef } from '../lib/keys.ts';
import { urlHasPassword } from '../lib/storeclients.ts';
import { IN_CLUSTER_CA_FILE, IN_CLUSTER_NAMESPACE_FILE, IN_CLUSTER_TOKEN_FILE, type KubeAccess } from './kube-client.ts';
import { parseHostPort } from './health-server.ts';
import { REPLICATION_MODES, SYNC_TIMEOUT_ACTIONS, type ReplicationMode, type SyncTimeoutAction } from './sync-record.ts';

const fs = process.getBuiltinModule('node:fs');

export interface AgentConfig {
  cluster: ClusterRef;
  /** This member's name; the pod name in Kubernetes. */
  member: string;
  /** host:port where clients reach this member's master. */
  address: string;
  etcdEndpoints: string[];
  redisUrl: string;
  /** 127.0.0.1:PORT or unix:/path for the local API. */
  apiListen: string;
  leaseTtlSeconds: number;
  /** The leader stops writing this long before its lease could expire on the server. */
  demoteMarginMs: number;
  /** A standby further behind the head than this does not campaign. */
  maxLagOnFailover: number;
  /** Delay between successive candidates in the catch-up ranking. */
  candidacyStepMs: number;
  /**
   * The master is gone once it has had no request open to the local API for
   * this long: a leader resigns, a standby does not campaign (MasterSession).
   */
  masterLivenessTimeoutMs: number;
  /** How long a new leader waits for its master to apply the log to its end. */
  promotionTimeoutMs: number;
  /**
   * async: a write is acknowledged once it is in the stream server. sync: also
   * only after minSyncStandbys standbys received it (src/agent/sync-replication.ts).
   */
  replication: ReplicationMode;
  /** sync mode: how many standbys must have received a batch before it is acknowledged. */
  minSyncStandbys: number;
  /** sync mode: how long a write waits for the standbys before onSyncTimeout applies. */
  syncTimeoutMs: number;
  /** sync mode, after syncTimeoutMs: fail the write (strict) or fall back to async until standbys catch up. */
  onSyncTimeout: SyncTimeoutAction;
  oplogMaxLength: number;
  snapshotEveryEntries: number;
  snapshotIntervalSeconds: number;
  snapshotKeep: number;
  logLevel: string;
  /** HOST:PORT for /healthz and /readyz (kubelet probes); undefined = off. */
  healthListen: string | undefined;
  /** etcd over TLS: CA, client certificate and key files (each optional). */
  etcdCaFile: string | undefined;
  etcdCertFile: string | undefined;
  etcdKeyFile: string | undefined;
  /** CA file for a rediss:// stream server. */
  redisCaFile: string | undefined;
  /** The stream server's password, from --redis-password-file or HOTSTANDBY_REDIS_PASSWORD. Never logged. */
  redisPassword: string | undefined;
  /** Pod labelling (role=leader/standby): how to reach the API server; undefined = off. */
  kube: KubeAccess | undefined;
}

export const AGENT_DEFAULTS = {
  apiListen: '127.0.0.1:7070',
  leaseTtlSeconds: 5,
  maxLagOnFailover: 1000,
  candidacyStepMs: 250,
  // Why 500 ms. A crashed master's connections close at once, and a dropped
  // role long-poll (a live master never drops its own) makes the master gone
  // after a fifth of this, 100 ms; the failover after that costs ~100-200 ms
  // (revoke, watch, candidacy, grant + txn, raise the epoch), so master crash
  // -> writes accepted elsewhere stays well under 1 s at p99 with the default
  // 5 s TTL, which is never waited out (the lease is revoked). The full 500 ms
  // applies to a master that holds no poll open (heartbeat masters: a call
  // at least every 250 ms), still under 1 s. A live master re-issues its poll
  // within milliseconds of each answer and holds it open through its own
  // pauses (GC, a big apply), so 500 ms with nothing open is not a hiccup.
  masterLivenessTimeoutMs: 500,
  promotionTimeoutMs: 30_000,
  replication: 'async',
  minSyncStandbys: 1,
  syncTimeoutMs: 2000,
  onSyncTimeout: 'fail',
  oplogMaxLength: 1_000_000,
  snapshotEveryEntries: 100_000,
  snapshotIntervalSeconds: 300,
  snapshotKeep: 3,
  logLevel: 'info',
  /** Where probes are served in a pod unless --health-listen says otherwise. */
  healthListenInPod: '0.0.0.0:7071',
} as const;

export class ConfigError extends Error {
  readonly field: string;
  constructor(field: string, message: string) {
    super(`${field}: ${message}`);
    this.name = 'ConfigError';
    this.field = field;
  }
}

/**
 * Every setting a flag or environment variable gives: the config fields that
 * are plain strings, plus the raw inputs of the ones resolved from several
 * (kube access, the Redis password).
 */
export type SettingName =
  | Exclude<keyof AgentConfig, 'redisPassword' | 'kube'>
  | 'redisPasswordFile'
  | 'podLabels'
  | 'kubeApiServer'
  | 'kubeTokenFile'
  | 'kubeCaFile'
  | 'podNamespace';

/** Raw string settings, as they come from flags or the environment. */
export type RawAgentSettings = Partial<Record<SettingName, string>>;

const ENV_NAMES: Record<SettingName, string> = {
  cluster: 'HOTSTANDBY_CLUSTER',
  member: 'HOTSTANDBY_MEMBER',
  address: 'HOTSTANDBY_ADDRESS',
  etcdEndpoints: 'HOTSTANDBY_ETCD',
  redisUrl: 'HOTSTANDBY_REDIS',
  apiListen: 'HOTSTANDBY_API_LISTEN',
  leaseTtlSeconds: 'HOTSTANDBY_LEASE_TTL',
  demoteMarginMs: 'HOTSTANDBY_DEMOTE_MARGIN_MS',
  maxLagOnFailover: 'HOTSTANDBY_MAX_LAG_ON_FAILOVER',
  candidacyStepMs: 'HOTSTANDBY_CANDIDACY_STEP_MS',
  masterLivenessTimeoutMs: 'HOTSTANDBY_MASTER_LIVENESS_TIMEOUT_MS',
  promotionTimeoutMs: 'HOTSTANDBY_PROMOTION_TIMEOUT_MS',
  replication: 'HOTSTANDBY_REPLICATION',
  minSyncStandbys: 'HOTSTANDBY_MIN_SYNC_STANDBYS',
  syncTimeoutMs: 'HOTSTANDBY_SYNC_TIMEOUT_MS',
  onSyncTimeout: 'HOTSTANDBY_ON_SYNC_TIMEOUT',
  oplogMaxLength: 'HOTSTANDBY_OPLOG_MAX_LENGTH',
  snapshotEveryEntries: 'HOTSTANDBY_SNAPSHOT_EVERY_ENTRIES',
  snapshotIntervalSeconds: 'HOTSTANDBY_SNAPSHOT_INTERVAL_SECONDS',
  snapshotKeep: 'HOTSTANDBY_SNAPSHOT_KEEP',
  logLevel: 'HOTSTANDBY_LOG_LEVEL',
  healthListen: 'HOTSTANDBY_HEALTH_LISTEN',
  etcdCaFile: 'HOTSTANDBY_ETCD_CA_FILE',
  etcdCertFile: 'HOTSTANDBY_ETCD_CERT_FILE',
  etcdKeyFile: 'HOTSTANDBY_ETCD_KEY_FILE',
  redisCaFile: 'HOTSTANDBY_REDIS_CA_FILE',
  redisPasswordFile: 'HOTSTANDBY_REDIS_PASSWORD_FILE',
  podLabels: 'HOTSTANDBY_POD_LABELS',
  kubeApiServer: 'HOTSTANDBY_KUBE_API_SERVER',
  kubeTokenFile: 'HOTSTANDBY_KUBE_TOKEN_FILE',
  kubeCaFile: 'HOTSTANDBY_KUBE_CA_FILE',
  podNamespace: 'HOTSTANDBY_POD_NAMESPACE',
};

/** The password itself comes only from the environment (a secretKeyRef), never a flag: flags show in `ps`. */
export const REDIS_PASSWORD_ENV = 'HOTSTANDBY_REDIS_PASSWORD';

/** The flag that sets a field, for error messages. */
export const FLAG_NAMES: Record<SettingName, string> = {
  cluster: '--cluster',
  member: '--member',
  address: '--address',
  etcdEndpoints: '--etcd',
  redisUrl: '--redis',
  apiListen: '--api-listen',
  leaseTtlSeconds: '--lease-ttl',
  demoteMarginMs: '--demote-margin-ms',
  maxLagOnFailover: '--max-lag-on-failover',
  candidacyStepMs: '--candidacy-step-ms',
  masterLivenessTimeoutMs: '--master-liveness-timeout-ms',
  promotionTimeoutMs: '--promotion-timeout-ms',
  replication: '--replication',
  minSyncStandbys: '--min-sync-standbys',
  syncTimeoutMs: '--sync-timeout-ms',
  onSyncTimeout: '--on-sync-timeout',
  oplogMaxLength: '--oplog-max-length',
  snapshotEveryEntries: '--snapshot-every-entries',
  snapshotIntervalSeconds: '--snapshot-interval',
  snapshotKeep: '--snapshot-keep',
  logLevel: '--log-level',
  healthListen: '--health-listen',
  etcdCaFile: '--etcd-ca-file',
  etcdCertFile: '--etcd-cert-file',
  etcdKeyFile: '--etcd-key-file',
  redisCaFile: '--redis-ca-file',
  redisPasswordFile: '--redis-password-file',
  podLabels: '--pod-labels',
  kubeApiServer: '--kube-api-server',
  kubeTokenFile: '--kube-token-file',
  kubeCaFile: '--kube-ca-file',
  podNamespace: '--pod-namespace',
};

function fieldName(field: SettingName): string {
  return `${FLAG_NAMES[field]} (${ENV_NAMES[field]})`;
}

function intSetting(raw: string | undefined, field: SettingName, fallback: number, min: number, max: number): number {
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(fieldName(field), `must be a whole number from ${min} to ${max}, got ${JSON.stringify(raw)}`);
  }
  return value;
}

function required(raw: string | undefined, field: SettingName, example: string): string {
  if (raw === undefined || raw.trim() === '') {
    throw new ConfigError(fieldName(field), `is required; for example ${FLAG_NAMES[field]} ${example}`);
  }
  return raw.trim();
}

function oneOf<T extends string>(raw: string | undefined, field: SettingName, allowed: readonly T[], fallback: T): T {
  if (raw === undefined || raw === '') return fallback;
  if (!(allowed as readonly string[]).includes(raw)) {
    throw new ConfigError(fieldName(field), `must be one of ${allowed.join(', ')}, got ${JSON.stringify(raw)}`);
  }
  return raw as T;
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/**
 * Builds a validated config from flag values (already parsed) and the
 * environment. Throws ConfigError naming the first bad setting.
 */
export function resolveAgentConfig(flags: RawAgentSettings, env: NodeJS.ProcessEnv = process.env): AgentConfig {
  const get = (field: SettingName): string | undefined => flags[field] ?? env[ENV_NAMES[field]];

  let cluster: ClusterRef;
  try {
    cluster = parseClusterId(required(get('cluster'), 'cluster', 'default/mooncake'));
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(fieldName('cluster'), (err as Error).message);
  }

  const member = get('member') ?? env.POD_NAME ?? os.hostname();
  if (!/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(member)) {
    throw new ConfigError(fieldName('member'), `must be a DNS-1123 name (lowercase letters, digits, '-', '.'), got ${JSON.stringify(member)}`);
  }

  const address = required(get('address'), 'address', '10.0.0.5:8080');
  if (!/^[^\s:]+:\d{1,5}$/.test(address)) {
    throw new ConfigError(fieldName('address'), `must be host:port where clients reach this member's master, got ${JSON.stringify(address)}`);
  }

  const etcdEndpoints = required(get('etcdEndpoints'), 'etcdEndpoints', 'http://127.0.0.1:2379')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const endpoint of etcdEndpoints) {
    if (!/^https?:\/\/[^\s/]+$/.test(endpoint)) {
      throw new ConfigError(fieldName('etcdEndpoints'), `each endpoint must look like http://host:port, got ${JSON.stringify(endpoint)}`);
    }
  }

  const redisUrl = required(get('redisUrl'), 'redisUrl', 'redis://127.0.0.1:6379');
  if (!/^rediss?:\/\/.+/.test(redisUrl)) {
    throw new ConfigError(fieldName('redisUrl'), `must be a redis:// or rediss:// URL, got ${JSON.stringify(redisUrl)}`);
  }

  const apiListen = get('apiListen') ?? AGENT_DEFAULTS.apiListen;
  if (!/^(unix:\/.+|[^\s:]+:\d{1,5})$/.test(apiListen)) {
    throw new ConfigError(fieldName('apiListen'), `must be host:port (normally 127.0.0.1:PORT) or unix:/absolute/path, got ${JSON.stringify(apiListen)}`);
  }

  const leaseTtlSeconds = intSetting(get('leaseTtlSeconds'), 'leaseTtlSeconds', AGENT_DEFAULTS.leaseTtlSeconds, 2, 60);
  // Margin: enough to cover a GC pause and clock-rate drift, small enough to leave time to renew.
  const defaultMargin = Math.min(1000, Math.floor((leaseTtlSeconds * 1000) / 5));
  const demoteMarginMs = intSetting(get('demoteMarginMs'), 'demoteMarginMs', defaultMargin, 100, 30_000);
  if (demoteMarginMs * 2 >= leaseTtlSeconds * 1000) {
    throw new ConfigError(
      fieldName('demoteMarginMs'),
      `must be less than half the lease TTL (${leaseTtlSeconds * 500} ms for a ${leaseTtlSeconds} s TTL), got ${demoteMarginMs}`,
    );
  }

  const snapshotEveryEntries = intSetting(get('snapshotEveryEntries'), 'snapshotEveryEntries', AGENT_DEFAULTS.snapshotEveryEntries, 1, 1e9);
  const oplogMaxLength = intSetting(get('oplogMaxLength'), 'oplogMaxLength', AGENT_DEFAULTS.oplogMaxLength, 1000, 1e9);
  if (oplogMaxLength < 2 * snapshotEveryEntries) {
    throw new ConfigError(
      fieldName('oplogMaxLength'),
      `must be at least twice --snapshot-every-entries (${snapshotEveryEntries}) so that a standby can always reach the log after the latest snapshot; got ${oplogMaxLength}`,
    );
  }

  const logLevel = get('logLevel') ?? AGENT_DEFAULTS.logLevel;
  if (!LOG_LEVELS.includes(logLevel)) {
    throw new ConfigError(fieldName('logLevel'), `must be one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(logLevel)}`);
  }

  const replication = oneOf(get('replication'), 'replication', REPLICATION_MODES, AGENT_DEFAULTS.replication);
  const onSyncTimeout = oneOf(get('onSyncTimeout'), 'onSyncTimeout', SYNC_TIMEOUT_ACTIONS, AGENT_DEFAULTS.onSyncTimeout);
  const minSyncStandbys = intSetting(get('minSyncStandbys'), 'minSyncStandbys', AGENT_DEFAULTS.minSyncStandbys, 1, 8);
  // Below the lease TTL's scale and above a loaded machine's hiccup; a write never waits longer.
  const syncTimeoutMs = intSetting(get('syncTimeoutMs'), 'syncTimeoutMs', AGENT_DEFAULTS.syncTimeoutMs, 10, 60_000);

  const storeCredentials = resolveStoreCredentials(get, env, etcdEndpoints, redisUrl);

  const inPod = Boolean(env.KUBERNETES_SERVICE_HOST);
  const healthRaw = get('healthListen') ?? (inPod ? AGENT_DEFAULTS.healthListenInPod : 'off');
  let healthListen: string | undefined;
  if (healthRaw !== 'off' && healthRaw !== '') {
    try {
      parseHostPort(healthRaw);
    } catch (err) {
      throw new ConfigError(fieldName('healthListen'), `${(err as Error).message}, or off`);
    }
    healthListen = healthRaw;
  }

  return {
    ...storeCredentials,
    healthListen,
    kube: resolveKubeAccess(get, env, cluster),
    cluster,
    member,
    address,
    etcdEndpoints,
    redisUrl,
    apiListen,
    leaseTtlSeconds,
    demoteMarginMs,
    maxLagOnFailover: intSetting(get('maxLagOnFailover'), 'maxLagOnFailover', AGENT_DEFAULTS.maxLagOnFailover, 0, 1e12),
    candidacyStepMs: intSetting(get('candidacyStepMs'), 'candidacyStepMs', AGENT_DEFAULTS.candidacyStepMs, 0, 10_000),
    masterLivenessTimeoutMs: intSetting(get('masterLivenessTimeoutMs'), 'masterLivenessTimeoutMs', AGENT_DEFAULTS.masterLivenessTimeoutMs, 100, 600_000),
    promotionTimeoutMs: intSetting(get('promotionTimeoutMs'), 'promotionTimeoutMs', AGENT_DEFAULTS.promotionTimeoutMs, 1000, 3_600_000),
    replication,
    minSyncStandbys,
    syncTimeoutMs,
    onSyncTimeout,
    oplogMaxLength,
    snapshotEveryEntries,
    snapshotIntervalSeconds: intSetting(get('snapshotIntervalSeconds'), 'snapshotIntervalSeconds', AGENT_DEFAULTS.snapshotIntervalSeconds, 0, 86_400 * 7),
    snapshotKeep: intSetting(get('snapshotKeep'), 'snapshotKeep', AGENT_DEFAULTS.snapshotKeep, 1, 100),
    logLevel,
  };
}

/** A file setting: absent, or a path this process can read. */
function readableFile(get: (f: SettingName) => string | undefined, field: SettingName, what: string): string | undefined {
  const path = get(field);
  if (path === undefined || path === '') return undefined;
  try {
    fs.accessSync(path, fs.constants.R_OK);
  } catch (err) {
    throw new ConfigError(fieldName(field), `cannot read ${what} at ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}; give a readable file`);
  }
  return path;
}

function resolveStoreCredentials(
  get: (f: SettingName) => string | undefined,
  env: NodeJS.ProcessEnv,
  etcdEndpoints: string[],
  redisUrl: string,
): Pick<AgentConfig, 'etcdCaFile' | 'etcdCertFile' | 'etcdKeyFile' | 'redisCaFile' | 'redisPassword'> {
  const etcdCaFile = readableFile(get, 'etcdCaFile', "the CA of etcd's serving certificate");
  const etcdCertFile = readableFile(get, 'etcdCertFile', 'the etcd client certificate');
  const etcdKeyFile = readableFile(get, 'etcdKeyFile', 'the etcd client key');
  if (Boolean(etcdCertFile) !== Boolean(etcdKeyFile)) {
    const missing: SettingName = etcdCertFile ? 'etcdKeyFile' : 'etcdCertFile';
    throw new ConfigError(fieldName(missing), 'is required with ' + FLAG_NAMES[missing === 'etcdKeyFile' ? 'etcdCertFile' : 'etcdKeyFile'] + ': a client certificate and its key go together');
  }
  if ((etcdCaFile || etcdCertFile) && etcdEndpoints.some((e) => !e.startsWith('https://'))) {
    throw new ConfigError(fieldName('etcdEndpoints'), `etcd TLS files are set, so every endpoint must be https://host:port, got ${etcdEndpoints.join(',')}`);
  }
  const redisCaFile = readableFile(get, 'redisCaFile', "the CA of the stream server's certificate");
  if (redisCaFile && !redisUrl.startsWith('rediss://')) {
    throw new ConfigError(fieldName('redisCaFile'), `applies to TLS only: use a rediss:// URL in --redis, got ${redisUrl.replace(/\/\/[^@/]*@/, '//***@')}`);
  }
  let redisPassword: string | undefined;
  const passwordFile = readableFile(get, 'redisPasswordFile', 'the stream server password');
  if (passwordFile) {
    // A Secret key mounted as a file often ends with a newline that is not part of the password.
    redisPassword = fs.readFileSync(passwordFile, 'utf8').replace(/\r?\n$/, '');
    if (env[REDIS_PASSWORD_ENV] !== undefined) {
      throw new ConfigError(fieldName('redisPasswordFile'), `and ${REDIS_PASSWORD_ENV} are both set; give the password in one place`);
    }
  } else if (env[REDIS_PASSWORD_ENV] !== undefined && env[REDIS_PASSWORD_ENV] !== '') {
    redisPassword = env[REDIS_PASSWORD_ENV];
  }
  if (redisPassword !== undefined && urlHasPassword(redisUrl)) {
    throw new ConfigError(fieldName('redisUrl'), `has a password and ${FLAG_NAMES.redisPasswordFile} or ${REDIS_PASSWORD_ENV} gives one too; give it in one place`);
  }
  return { etcdCaFile, etcdCertFile, etcdKeyFile, redisCaFile, redisPassword };
}

const POD_LABEL_MODES = ['auto', 'on', 'off'];

/**
 * Pod labelling is on when --pod-labels says on, or (auto, the default) when
 * there are credentials to use: an explicit --kube-api-server, or those
 * Kubernetes gives every pod (KUBERNETES_SERVICE_HOST and the token file).
 */
function resolveKubeAccess(get: (f: SettingName) => string | undefined, env: NodeJS.ProcessEnv, cluster: ClusterRef): KubeAccess | undefined {
  const mode = get('podLabels') || 'auto';
  if (!POD_LABEL_MODES.includes(mode)) {
    throw new ConfigError(fieldName('podLabels'), `must be one of ${POD_LABEL_MODES.join(', ')}, got ${JSON.stringify(mode)}`);
  }
  if (mode === 'off') return undefined;
  const explicitServer = get('kubeApiServer');
  const host = env.KUBERNETES_SERVICE_HOST;
  const inClusterServer = host ? `https://${host.includes(':') ? `[${host}]` : host}:${env.KUBERNETES_SERVICE_PORT || '443'}` : undefined;
  const server = explicitServer || inClusterServer;
  const tokenFile = get('kubeTokenFile') || (server ? IN_CLUSTER_TOKEN_FILE : undefined);
  const hasToken = tokenFile !== undefined && fs.existsSync(tokenFile);
  if (mode === 'auto' && (!server || (!explicitServer && !hasToken))) return undefined;
  if (!server) {
    throw new ConfigError(fieldName('kubeApiServer'), `is required with ${FLAG_NAMES.podLabels} on outside a pod, e.g. ${FLAG_NAMES.kubeApiServer} https://127.0.0.1:6443`);
  }
  if (!/^https:\/\/[^\s/]+\/?$/.test(server)) {
    throw new ConfigError(fieldName('kubeApiServer'), `must be https://host:port, got ${JSON.stringify(server)}`);
  }
  const token = readableFile((f) => (f === 'kubeTokenFile' ? tokenFile : get(f)), 'kubeTokenFile', 'the Kubernetes API token');
  if (!token) throw new ConfigError(fieldName('kubeTokenFile'), `is required to label pods; give a file with a bearer token`);
  const caDefault = !explicitServer && fs.existsSync(IN_CLUSTER_CA_FILE) ? IN_CLUSTER_CA_FILE : undefined;
  const caFile = readableFile((f) => (f === 'kubeCaFile' ? (get(f) ?? caDefault) : get(f)), 'kubeCaFile', "the CA of the API server's certificate");
  let namespace = get('podNamespace') || env.POD_NAMESPACE;
  if (!namespace && fs.existsSync(IN_CLUSTER_NAMESPACE_FILE)) namespace = fs.readFileSync(IN_CLUSTER_NAMESPACE_FILE, 'utf8').trim();
  namespace ||= cluster.namespace;
  if (!/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(namespace)) {
    throw new ConfigError(fieldName('podNamespace'), `must be a namespace name, got ${JSON.stringify(namespace)}`);
  }
  return { server: server.replace(/\/$/, ''), tokenFile: token, ...(caFile ? { caFile } : {}), namespace };
}

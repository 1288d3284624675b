// The agent's settings: defaults, parsing from flags and environment, and
// validation with messages that name the setting and the fix. Flags win over
// environment variables (HOTSTANDBY_<NAME>), which win over defaults.
import os from 'node:os';
import { parseClusterId, type ClusterRef } from '../lib/keys.ts';

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
  oplogMaxLength: number;
  snapshotEveryEntries: number;
  snapshotIntervalSeconds: number;
  snapshotKeep: number;
  logLevel: string;
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
  oplogMaxLength: 1_000_000,
  snapshotEveryEntries: 100_000,
  snapshotIntervalSeconds: 300,
  snapshotKeep: 3,
  logLevel: 'info',
} as const;

export class ConfigError extends Error {
  readonly field: string;
  constructor(field: string, message: string) {
    super(`${field}: ${message}`);
    this.name = 'ConfigError';
    this.field = field;
  }
}

/** Raw string settings, as they come from flags or the environment. */
export type RawAgentSettings = Partial<Record<keyof AgentConfig | 'cluster', string>>;

const ENV_NAMES: Record<keyof AgentConfig, string> = {
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
  oplogMaxLength: 'HOTSTANDBY_OPLOG_MAX_LENGTH',
  snapshotEveryEntries: 'HOTSTANDBY_SNAPSHOT_EVERY_ENTRIES',
  snapshotIntervalSeconds: 'HOTSTANDBY_SNAPSHOT_INTERVAL_SECONDS',
  snapshotKeep: 'HOTSTANDBY_SNAPSHOT_KEEP',
  logLevel: 'HOTSTANDBY_LOG_LEVEL',
};

/** The flag that sets a field, for error messages. */
export const FLAG_NAMES: Record<keyof AgentConfig, string> = {
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
  oplogMaxLength: '--oplog-max-length',
  snapshotEveryEntries: '--snapshot-every-entries',
  snapshotIntervalSeconds: '--snapshot-interval',
  snapshotKeep: '--snapshot-keep',
  logLevel: '--log-level',
};

function fieldName(field: keyof AgentConfig): string {
  return `${FLAG_NAMES[field]} (${ENV_NAMES[field]})`;
}

function intSetting(raw: string | undefined, field: keyof AgentConfig, fallback: number, min: number, max: number): number {
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(fieldName(field), `must be a whole number from ${min} to ${max}, got ${JSON.stringify(raw)}`);
  }
  return value;
}

function required(raw: string | undefined, field: keyof AgentConfig, example: string): string {
  if (raw === undefined || raw.trim() === '') {
    throw new ConfigError(fieldName(field), `is required; for example ${FLAG_NAMES[field]} ${example}`);
  }
  return raw.trim();
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/**
 * Builds a validated config from flag values (already parsed) and the
 * environment. Throws ConfigError naming the first bad setting.
 */
export function resolveAgentConfig(flags: RawAgentSettings, env: NodeJS.ProcessEnv = process.env): AgentConfig {
  const get = (field: keyof AgentConfig): string | undefined => flags[field] ?? env[ENV_NAMES[field]];

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

  return {
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
    oplogMaxLength,
    snapshotEveryEntries,
    snapshotIntervalSeconds: intSetting(get('snapshotIntervalSeconds'), 'snapshotIntervalSeconds', AGENT_DEFAULTS.snapshotIntervalSeconds, 0, 86_400 * 7),
    snapshotKeep: intSetting(get('snapshotKeep'), 'snapshotKeep', AGENT_DEFAULTS.snapshotKeep, 1, 100),
    logLevel,
  };
}

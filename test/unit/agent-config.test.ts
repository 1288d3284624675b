import { describe, expect, it } from 'vitest';
import { AGENT_DEFAULTS, ConfigError, resolveAgentConfig } from '../../src/agent/config.ts';

const base = {
  cluster: 'default/mooncake',
  member: 'm-0',
  address: '127.0.0.1:8080',
  etcdEndpoints: 'http://127.0.0.1:2379',
  redisUrl: 'redis://127.0.0.1:6379',
};

function errorOf(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

describe('agent config', () => {
  it('applies the documented defaults', () => {
    const config = resolveAgentConfig(base, {});
    expect(config.cluster).toEqual({ namespace: 'default', name: 'mooncake' });
    expect(config.leaseTtlSeconds).toBe(5);
    expect(config.demoteMarginMs).toBe(1000);
    expect(config.maxLagOnFailover).toBe(AGENT_DEFAULTS.maxLagOnFailover);
    expect(config.apiListen).toBe('127.0.0.1:7070');
    expect(config.etcdEndpoints).toEqual(['http://127.0.0.1:2379']);
  });

  it('reads the environment when a flag is absent, and flags win', () => {
    const env = { HOTSTANDBY_LEASE_TTL: '7', HOTSTANDBY_MEMBER: 'from-env' };
    expect(resolveAgentConfig({ ...base, member: undefined }, env).member).toBe('from-env');
    expect(resolveAgentConfig(base, env).leaseTtlSeconds).toBe(7);
    expect(resolveAgentConfig({ ...base, leaseTtlSeconds: '3' }, env).leaseTtlSeconds).toBe(3);
  });

  it('names the setting and the fix for bad input', () => {
    expect(errorOf(() => resolveAgentConfig({ ...base, cluster: undefined }, {})).message).toMatch(/--cluster .*required.*default\/mooncake/);
    expect(errorOf(() => resolveAgentConfig({ ...base, cluster: 'nonamespace' }, {})).message).toMatch(/--cluster.*namespace\/name/);
    expect(errorOf(() => resolveAgentConfig({ ...base, leaseTtlSeconds: '1' }, {})).message).toMatch(/--lease-ttl.*2 to 60/);
    expect(errorOf(() => resolveAgentConfig({ ...base, etcdEndpoints: 'localhost:2379' }, {})).message).toMatch(/--etcd.*http:\/\/host:port/);
    expect(errorOf(() => resolveAgentConfig({ ...base, address: 'nohost' }, {})).field).toMatch(/--address/);
    expect(errorOf(() => resolveAgentConfig({ ...base, member: 'Bad_Name' }, {})).message).toMatch(/DNS-1123/);
    expect(errorOf(() => resolveAgentConfig({ ...base, demoteMarginMs: '2500' }, {})).message).toMatch(/less than half the lease TTL/);
    expect(errorOf(() => resolveAgentConfig({ ...base, oplogMaxLength: '1000', snapshotEveryEntries: '1000' }, {})).message).toMatch(/at least twice/);
    expect(errorOf(() => resolveAgentConfig({ ...base, logLevel: 'loud' }, {})).message).toMatch(/one of/);
    expect(errorOf(() => resolveAgentConfig({ ...base, apiListen: '7070' }, {})).message).toMatch(/--api-listen/);
  });

  it('the master liveness timeout: default, environment, and bounds naming the flag and the variable', () => {
    expect(resolveAgentConfig(base, {}).masterLivenessTimeoutMs).toBe(AGENT_DEFAULTS.masterLivenessTimeoutMs);
    expect(AGENT_DEFAULTS.masterLivenessTimeoutMs).toBe(500);
    expect(resolveAgentConfig(base, { HOTSTANDBY_MASTER_LIVENESS_TIMEOUT_MS: '800' }).masterLivenessTimeoutMs).toBe(800);
    expect(resolveAgentConfig({ ...base, masterLivenessTimeoutMs: '300' }, { HOTSTANDBY_MASTER_LIVENESS_TIMEOUT_MS: '800' }).masterLivenessTimeoutMs).toBe(300);
    for (const bad of ['50', '1.5', 'soon', '600001']) {
      const err = errorOf(() => resolveAgentConfig({ ...base, masterLivenessTimeoutMs: bad }, {}));
      expect(err.field).toBe('--master-liveness-timeout-ms (HOTSTANDBY_MASTER_LIVENESS_TIMEOUT_MS)');
      expect(err.message).toMatch(/whole number from 100 to 600000/);
    }
  });
});

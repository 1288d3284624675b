import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
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

describe('agent config: sync replication', () => {
  it('defaults to async; the four settings come from flags or HOTSTANDBY_* variables', () => {
    const d = resolveAgentConfig(base, {});
    expect([d.replication, d.minSyncStandbys, d.syncTimeoutMs, d.onSyncTimeout]).toEqual(['async', 1, 2000, 'fail']);
    const env = { HOTSTANDBY_REPLICATION: 'sync', HOTSTANDBY_MIN_SYNC_STANDBYS: '2', HOTSTANDBY_SYNC_TIMEOUT_MS: '500', HOTSTANDBY_ON_SYNC_TIMEOUT: 'async' };
    const e = resolveAgentConfig(base, env);
    expect([e.replication, e.minSyncStandbys, e.syncTimeoutMs, e.onSyncTimeout]).toEqual(['sync', 2, 500, 'async']);
    expect(resolveAgentConfig({ ...base, onSyncTimeout: 'fail' }, env).onSyncTimeout).toBe('fail');
  });

  it('refuses bad values, naming the flag, the variable and what is allowed', () => {
    const rep = errorOf(() => resolveAgentConfig({ ...base, replication: 'semi' }, {}));
    expect(rep.field).toBe('--replication (HOTSTANDBY_REPLICATION)');
    expect(rep.message).toMatch(/one of async, sync, got "semi"/);
    expect(errorOf(() => resolveAgentConfig({ ...base, onSyncTimeout: 'retry' }, {})).message).toMatch(/--on-sync-timeout.*one of fail, async/);
    expect(errorOf(() => resolveAgentConfig({ ...base, minSyncStandbys: '0' }, {})).message).toMatch(/--min-sync-standbys.*1 to 8/);
    expect(errorOf(() => resolveAgentConfig({ ...base, syncTimeoutMs: '5' }, {})).message).toMatch(/--sync-timeout-ms.*10 to 60000/);
  });
});

describe('agent config: probes, store credentials, pod labels', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hs-config-'));
  const file = (name: string, text: string): string => {
    const p = path.join(dir, name);
    fs.writeFileSync(p, text);
    return p;
  };
  const ca = file('ca.crt', 'pem');
  const cert = file('tls.crt', 'pem');
  const key = file('tls.key', 'pem');
  const token = file('token', 'jwt');
  const tlsBase = { ...base, etcdEndpoints: 'https://127.0.0.1:2379' };
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('serves probes on 0.0.0.0:7071 in a pod, nowhere outside one, unless told', () => {
    expect(resolveAgentConfig(base, {}).healthListen).toBeUndefined();
    expect(resolveAgentConfig(base, { KUBERNETES_SERVICE_HOST: '10.96.0.1' }).healthListen).toBe('0.0.0.0:7071');
    expect(resolveAgentConfig({ ...base, healthListen: 'off' }, { KUBERNETES_SERVICE_HOST: '10.96.0.1' }).healthListen).toBeUndefined();
    expect(resolveAgentConfig(base, { HOTSTANDBY_HEALTH_LISTEN: '127.0.0.1:9000' }).healthListen).toBe('127.0.0.1:9000');
    expect(errorOf(() => resolveAgentConfig({ ...base, healthListen: '7071' }, {})).message).toMatch(/--health-listen \(HOTSTANDBY_HEALTH_LISTEN\).*HOST:PORT/);
  });

  it('takes etcd TLS files and refuses unreadable or inconsistent ones, naming flag and path', () => {
    const c = resolveAgentConfig({ ...tlsBase, etcdCaFile: ca, etcdCertFile: cert, etcdKeyFile: key }, {});
    expect([c.etcdCaFile, c.etcdCertFile, c.etcdKeyFile]).toEqual([ca, cert, key]);
    expect(resolveAgentConfig(tlsBase, { HOTSTANDBY_ETCD_CA_FILE: ca }).etcdCaFile).toBe(ca);
    const missing = path.join(dir, 'nope.crt');
    const err = errorOf(() => resolveAgentConfig({ ...tlsBase, etcdCaFile: missing }, {}));
    expect(err.message).toContain('--etcd-ca-file (HOTSTANDBY_ETCD_CA_FILE)');
    expect(err.message).toContain(missing);
    expect(err.message).toMatch(/ENOENT/);
    expect(errorOf(() => resolveAgentConfig({ ...tlsBase, etcdCertFile: cert }, {})).message).toMatch(/--etcd-key-file.*required with --etcd-cert-file/);
    expect(errorOf(() => resolveAgentConfig({ ...base, etcdCaFile: ca }, {})).message).toMatch(/--etcd .*https:\/\//);
  });

  it('takes the Redis password from a file or the environment, once, and never with a URL password', () => {
    const pw = file('password', 'hunter2\n');
    expect(resolveAgentConfig({ ...base, redisPasswordFile: pw }, {}).redisPassword).toBe('hunter2');
    expect(resolveAgentConfig(base, { HOTSTANDBY_REDIS_PASSWORD: 'from-env' }).redisPassword).toBe('from-env');
    expect(resolveAgentConfig(base, {}).redisPassword).toBeUndefined();
    expect(errorOf(() => resolveAgentConfig({ ...base, redisPasswordFile: pw }, { HOTSTANDBY_REDIS_PASSWORD: 'x' })).message).toMatch(/one place/);
    const inUrl = errorOf(() => resolveAgentConfig({ ...base, redisUrl: 'redis://:secret@127.0.0.1:6379' }, { HOTSTANDBY_REDIS_PASSWORD: 'x' }));
    expect(inUrl.message).toMatch(/--redis .*one place/);
    expect(errorOf(() => resolveAgentConfig({ ...base, redisPasswordFile: path.join(dir, 'none') }, {})).message).toMatch(/--redis-password-file.*cannot read/);
    expect(errorOf(() => resolveAgentConfig({ ...base, redisCaFile: ca }, {})).message).toMatch(/--redis-ca-file.*rediss:\/\//);
    expect(resolveAgentConfig({ ...base, redisUrl: 'rediss://127.0.0.1:6380', redisCaFile: ca }, {}).redisCaFile).toBe(ca);
  });

  it('labels pods when credentials exist (auto), when told (on), never when off', () => {
    expect(resolveAgentConfig(base, {}).kube).toBeUndefined();
    // In a pod without a token file (automountServiceAccountToken: false): auto stays off.
    expect(resolveAgentConfig(base, { KUBERNETES_SERVICE_HOST: '10.96.0.1' }).kube).toBeUndefined();
    const explicit = { ...base, kubeApiServer: 'https://127.0.0.1:6443', kubeTokenFile: token, kubeCaFile: ca };
    expect(resolveAgentConfig(explicit, {}).kube).toEqual({ server: 'https://127.0.0.1:6443', tokenFile: token, caFile: ca, namespace: 'default' });
    expect(resolveAgentConfig(explicit, { POD_NAMESPACE: 'team-a' }).kube?.namespace).toBe('team-a');
    expect(resolveAgentConfig({ ...explicit, podNamespace: 'team-b' }, { POD_NAMESPACE: 'team-a' }).kube?.namespace).toBe('team-b');
    expect(resolveAgentConfig({ ...explicit, podLabels: 'off' }, {}).kube).toBeUndefined();
    expect(errorOf(() => resolveAgentConfig({ ...base, podLabels: 'on' }, {})).message).toMatch(/--kube-api-server .*required with --pod-labels on/);
    expect(errorOf(() => resolveAgentConfig({ ...base, podLabels: 'yes' }, {})).message).toMatch(/--pod-labels.*auto, on, off/);
    expect(errorOf(() => resolveAgentConfig({ ...explicit, kubeApiServer: 'http://127.0.0.1:6443' }, {})).message).toMatch(/--kube-api-server.*https:\/\//);
    const noToken = errorOf(() => resolveAgentConfig({ ...explicit, kubeTokenFile: path.join(dir, 'no-token') }, {}));
    expect(noToken.message).toMatch(/--kube-token-file .*cannot read the Kubernetes API token at .*no-token/);
    // In a pod with --pod-labels on but no token mounted: says which file is missing.
    expect(errorOf(() => resolveAgentConfig({ ...base, podLabels: 'on' }, { KUBERNETES_SERVICE_HOST: '10.96.0.1' })).message).toMatch(
      /--kube-token-file.*\/var\/run\/secrets\/kubernetes.io\/serviceaccount\/token/,
    );
  });
});

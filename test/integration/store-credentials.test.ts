// The agent and the cluster reader against stores that demand credentials: a
// real etcd serving TLS with client-certificate auth, a real redis-server with
// requirepass, and one serving TLS only. Whole members (agent + kvmaster
// processes) elect, write and fail over through them; wrong or missing
// credentials fail at once with a message naming the setting to fix.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeEachStreamServer } from '../harness/stores.ts';
import { makeTestPki, type TestPki } from '../harness/tls.ts';
import { removeWorkDir, startEtcd, startStreamServer, type LocalEtcd, type LocalStreamServer } from '../../src/lib/localstores.ts';
import { LocalCluster } from '../../src/demo/localcluster.ts';
import { Agent } from '../../src/agent/agent.ts';
import { resolveAgentConfig, type RawAgentSettings } from '../../src/agent/config.ts';
import { readClusterView } from '../../src/lib/clusterview.ts';
import { runStatus } from '../../src/cli/commands/status.ts';
import { loadStoreCredentials } from '../../src/lib/storeclients.ts';
import { silentLogger } from '../../src/lib/log.ts';

const PASSWORD = 's3cret pass';

describeEachStreamServer('stores with credentials', (kind) => {
  let dir: string;
  let pki: TestPki;
  let etcd: LocalEtcd;
  let redis: LocalStreamServer;
  let redisTls: LocalStreamServer;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hs-creds-'));
    pki = makeTestPki(path.join(dir, 'pki'));
    const server = { caFile: pki.caFile, certFile: pki.serverCertFile, keyFile: pki.serverKeyFile };
    [etcd, redis, redisTls] = await Promise.all([
      startEtcd({ tls: { ...server, clientCertAuth: true, clientCert: { certFile: pki.clientCertFile, keyFile: pki.clientKeyFile } } }),
      startStreamServer({ kind, password: PASSWORD }),
      startStreamServer({ kind, password: PASSWORD, tls: server, name: `${kind}-tls` }),
    ]);
  }, 60_000);

  afterAll(async () => {
    await Promise.allSettled([etcd?.stop(), redis?.stop(), redisTls?.stop()]);
    for (const s of [etcd, redis, redisTls]) if (s) removeWorkDir(s);
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  const etcdFlags = (): RawAgentSettings => ({ etcdCaFile: pki.caFile, etcdCertFile: pki.clientCertFile, etcdKeyFile: pki.clientKeyFile });

  function config(flags: RawAgentSettings, env: NodeJS.ProcessEnv = { HOTSTANDBY_REDIS_PASSWORD: PASSWORD }): ReturnType<typeof resolveAgentConfig> {
    return resolveAgentConfig(
      {
        cluster: 'ns/creds',
        member: 'solo',
        address: '127.0.0.1:9999',
        etcdEndpoints: etcd.endpoint,
        redisUrl: redis.url,
        apiListen: `unix:${path.join(dir, `agent-${Math.random().toString(36).slice(2)}.sock`)}`,
        ...etcdFlags(),
        ...flags,
      },
      env,
    );
  }

  /** Agent.start must reject; returns the message. */
  async function startFails(flags: RawAgentSettings, env?: NodeJS.ProcessEnv): Promise<string> {
    const agent = await Agent.start(config(flags, env), { log: silentLogger() }).then(
      (a) => a,
      (err: Error) => err,
    );
    if (agent instanceof Agent) {
      await agent.close();
      throw new Error('the agent started with wrong credentials');
    }
    return agent.message;
  }

  it('the stores really demand the credentials', async () => {
    expect(etcd.endpoint).toMatch(/^https:\/\//);
    // TLS with the right CA but no client certificate: refused.
    const noCert = new Etcd3({ hosts: etcd.endpoint, dialTimeout: 2000, credentials: { rootCertificate: fs.readFileSync(pki.caFile) } });
    try {
      await expect(noCert.get('x').string()).rejects.toThrow();
    } finally {
      noCert.close();
    }
    // A plain client's first command, on the wire: refused until AUTH.
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = net.connect(redis.port, '127.0.0.1', () => socket.write('PING\r\n'));
      socket.setTimeout(3000, () => socket.destroy(new Error('no answer')));
      socket.once('data', (d) => {
        resolve(d.toString());
        socket.destroy();
      });
      socket.once('error', reject);
    });
    expect(answer).toMatch(/^-NOAUTH/);
  });

  it('members elect, write and fail over through TLS etcd and a password-protected stream server', async () => {
    const passwordFile = path.join(dir, 'password');
    fs.writeFileSync(passwordFile, `${PASSWORD}\n`); // as a Secret key mounted as a file often is
    const cluster = await LocalCluster.start({
      members: 2,
      streamServer: kind,
      leaseTtlSeconds: 2,
      stores: {
        etcd: { tls: { caFile: pki.caFile, certFile: pki.serverCertFile, keyFile: pki.serverKeyFile, clientCertAuth: true, clientCert: { certFile: pki.clientCertFile, keyFile: pki.clientKeyFile } } },
        redis: { password: PASSWORD },
      },
      agentArgs: ['--etcd-ca-file', pki.caFile, '--etcd-cert-file', pki.clientCertFile, '--etcd-key-file', pki.clientKeyFile],
      // One member reads the password from a file, the other from the environment (a secretKeyRef).
      memberAgent: (name) => (name === 'kv-0' ? { args: ['--redis-password-file', passwordFile] } : { env: { HOTSTANDBY_REDIS_PASSWORD: PASSWORD } }),
    });
    try {
      const leader = await cluster.waitForLeader();
      const put = await fetch(`http://${leader.kvAddress}/kv/a`, { method: 'PUT', body: '1', signal: AbortSignal.timeout(5000) });
      expect(put.status).toBe(200);
      cluster.kill(leader);
      const next = await cluster.waitForLeader({ not: leader });
      const got = await fetch(`http://${next.kvAddress}/kv/a`, { signal: AbortSignal.timeout(5000) });
      expect(await got.json()).toMatchObject({ key: 'a', value: '1' });

      // The cluster reader takes the same credentials.
      const view = await readClusterView({
        cluster: cluster.ref,
        connection: {
          etcdEndpoints: [cluster.etcd.endpoint],
          redisUrl: cluster.redis.url,
          credentials: loadStoreCredentials({ etcdCaFile: pki.caFile, etcdCertFile: pki.clientCertFile, etcdKeyFile: pki.clientKeyFile }, PASSWORD),
        },
      });
      expect(view.leader?.member).toBe(next.name);
      expect(view.log).toMatchObject({ source: 'stream', headSeq: 1 });
      expect(view.problems).toEqual([]);
      // Without the password the reader still reads etcd, and says why the log head is missing.
      const noPassword = await readClusterView({
        cluster: cluster.ref,
        connection: { etcdEndpoints: [cluster.etcd.endpoint], redisUrl: cluster.redis.url, credentials: loadStoreCredentials(etcdFiles(pki)) },
      });
      expect(noPassword.problems.join('\n')).toMatch(/NOAUTH/);

      // `hotstandby status` takes the same credentials as flags (the password from the environment here).
      const out: string[] = [];
      const io = { out: (t: string) => out.push(t), err: (t: string) => out.push(`ERR ${t}`), signal: new AbortController().signal };
      const argv = ['--cluster', `${cluster.ref.namespace}/${cluster.ref.name}`, '--etcd', cluster.etcd.endpoint, '--redis', cluster.redis.url, '--json',
        '--etcd-ca-file', pki.caFile, '--etcd-cert-file', pki.clientCertFile, '--etcd-key-file', pki.clientKeyFile];
      process.env.HOTSTANDBY_REDIS_PASSWORD = PASSWORD;
      try {
        expect(await runStatus(argv, io)).toBe(0);
      } finally {
        delete process.env.HOTSTANDBY_REDIS_PASSWORD;
      }
      expect(JSON.parse(out.join(''))).toMatchObject({ leader: { member: next.name }, log: { source: 'stream', headSeq: 1 }, problems: [] });
      await expect(runStatus([...argv.slice(0, -6), '--etcd-ca-file', path.join(dir, 'missing.crt')], io)).rejects.toThrow(/--etcd-ca-file: cannot read .*missing\.crt/);
    } finally {
      await cluster.stop();
    }
  }, 120_000);

  it('a rediss:// stream server with --redis-ca-file', async () => {
    const agent = await Agent.start(config({ redisUrl: redisTls.url, redisCaFile: pki.caFile }), { log: silentLogger() });
    try {
      expect(await agent.health()).toEqual({ etcd: 'ok', stream: 'ok' });
    } finally {
      await agent.close();
    }
    expect(await startFails({ redisUrl: redisTls.url, redisCaFile: pki.otherCaFile })).toMatch(/TLS failed.*--redis-ca-file/s);
  }, 60_000);

  it('a wrong or missing password fails at once, naming where to fix it', async () => {
    expect(await startFails({}, { HOTSTANDBY_REDIS_PASSWORD: 'wrong' })).toMatch(/refused the password.*--redis-password-file or HOTSTANDBY_REDIS_PASSWORD/s);
    expect(await startFails({}, {})).toMatch(/requires a password.*NOAUTH.*--redis-password-file or HOTSTANDBY_REDIS_PASSWORD/s);
    // The password never appears in the message.
    expect(await startFails({}, { HOTSTANDBY_REDIS_PASSWORD: 'wrong-and-secret' })).not.toContain('wrong-and-secret');
  }, 60_000);

  it('a wrong etcd CA or a missing client certificate fails at once, naming the TLS flags', async () => {
    const wrongCa = await startFails({ etcdCaFile: pki.otherCaFile });
    expect(wrongCa).toMatch(/etcd at https:\/\/127\.0\.0\.1:\d+.*TLS failed.*--etcd-ca-file/s);
    const noClientCert = await startFails({ etcdCertFile: '', etcdKeyFile: '' });
    expect(noClientCert).toMatch(/etcd at https:\/\/127\.0\.0\.1:\d+.*TLS failed.*--etcd-cert-file/s);
  }, 90_000);
});

describe('an etcd whose serving certificate does not allow client authentication', () => {
  let dir: string;
  let pki: TestPki;
  let etcd: LocalEtcd;
  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hs-gateway-tls-'));
    pki = makeTestPki(dir);
    etcd = await startEtcd({ name: 'etcd-server-only', tls: { caFile: pki.caFile, certFile: pki.serverOnlyCertFile, keyFile: pki.serverOnlyKeyFile, clientCertAuth: true, clientCert: { certFile: pki.clientCertFile, keyFile: pki.clientKeyFile } } });
  }, 60_000);
  afterAll(async () => {
    await etcd?.stop();
    if (etcd) removeWorkDir(etcd);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('the agent does not start, and says the certificate needs clientAuth for etcd\'s gateway', async () => {
    const cfg = resolveAgentConfig(
      {
        cluster: 'ns/gateway-tls',
        member: 'solo',
        address: '127.0.0.1:9999',
        etcdEndpoints: etcd.endpoint,
        redisUrl: 'redis://127.0.0.1:1',
        apiListen: `unix:${path.join(dir, 'agent.sock')}`,
        ...etcdFiles(pki),
      },
      {},
    );
    const err = await Agent.start(cfg, { log: silentLogger() }).then(
      async (agent) => {
        await agent.close();
        return undefined;
      },
      (e: Error) => e,
    );
    expect(err?.message).toMatch(/etcd at https:\/\/127\.0\.0\.1:\d+.*gateway.*extendedKeyUsage serverAuth,clientAuth/s);
  }, 90_000);
});

function etcdFiles(pki: TestPki): { etcdCaFile: string; etcdCertFile: string; etcdKeyFile: string } {
  return { etcdCaFile: pki.caFile, etcdCertFile: pki.clientCertFile, etcdKeyFile: pki.clientKeyFile };
}

// The probe listener (--health-listen) of a real Agent on a real etcd and
// redis-server: /healthz and /readyz answer as kubelet expects, readiness
// follows the stores, and nothing else is served there.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useStores } from '../harness/stores.ts';
import { Agent } from '../../src/agent/agent.ts';
import { resolveAgentConfig } from '../../src/agent/config.ts';
import { removeWorkDir, startStreamServer, type LocalStreamServer } from '../../src/lib/localstores.ts';
import { silentLogger } from '../../src/lib/log.ts';
import { freePort, isPortOpen } from '../../src/lib/ports.ts';
import { waitFor } from '../../src/lib/time.ts';

describe('agent probe endpoints', () => {
  const stores = useStores();
  let dir: string;
  let redis: LocalStreamServer;
  let agent: Agent | undefined;
  let base: string;
  let port: number;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hs-health-'));
    // A stream server of its own: the test stops it.
    redis = await startStreamServer();
    port = await freePort();
    base = `http://127.0.0.1:${port}`;
    const config = resolveAgentConfig(
      {
        cluster: 'ns/health',
        member: 'm-0',
        address: '127.0.0.1:9000',
        etcdEndpoints: stores().etcd.endpoint,
        redisUrl: redis.url,
        apiListen: `unix:${path.join(dir, 'api.sock')}`,
        healthListen: `127.0.0.1:${port}`,
      },
      {},
    );
    expect(config.kube).toBeUndefined(); // no Kubernetes here: pod labels are off
    agent = await Agent.start(config, { log: silentLogger() });
  });

  afterAll(async () => {
    await agent?.close();
    await redis?.stop();
    if (redis) removeWorkDir(redis);
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  async function get(p: string, method = 'GET'): Promise<{ status: number; body: string }> {
    const res = await fetch(`${base}${p}`, { method, signal: AbortSignal.timeout(3000) });
    return { status: res.status, body: await res.text() };
  }

  it('GET /healthz and /readyz are 200 with both stores up', async () => {
    expect(await get('/healthz')).toEqual({ status: 200, body: expect.stringMatching(/^ok: role /) as string });
    expect(await get('/readyz')).toEqual({ status: 200, body: 'ok: member m-0 registered; stores reachable\n' });
    expect((await get('/readyz', 'HEAD')).status).toBe(200);
  });

  it('serves nothing else: other paths 404, other methods 405', async () => {
    expect((await get('/v1/role')).status).toBe(404);
    expect((await get('/metrics')).status).toBe(404);
    expect((await get('/healthz', 'POST')).status).toBe(405);
  });

  it('is not ready while the stream server is down, and stays alive', async () => {
    await redis.stop();
    const notReady = await waitFor(
      async () => {
        const r = await get('/readyz');
        return r.status === 503 ? r : undefined;
      },
      { timeoutMs: 10_000, intervalMs: 100, what: '/readyz to report the stream server down' },
    );
    expect(notReady.body).toMatch(/^not ok: stream server: /);
    expect((await get('/healthz')).status).toBe(200);
  });

  it('closes the listener on shutdown', async () => {
    await agent!.close();
    agent = undefined;
    expect(await isPortOpen(port)).toBe(false);
  });
});

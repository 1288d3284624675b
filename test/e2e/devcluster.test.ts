// The test control plane itself: a real kube-apiserver with RBAC, a scheduler
// and kwok nodes on which pods become Running; and `hotstandby dev-cluster`.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { expect, it } from 'vitest';
import { describeE2E, useDevCluster } from '../harness/kube.ts';
import { waitFor } from '../../src/lib/time.ts';
import { isProcessAlive as alive } from '../../src/lib/childproc.ts';

const run = promisify(execFile);
const BIN = path.resolve(import.meta.dirname, '../../bin/hotstandby.js');

describeE2E('dev cluster', () => {
  const cluster = useDevCluster();

  it('schedules a Deployment onto kwok nodes where its pods become Running', async () => {
    const c = cluster();
    await c.kubectl(['create', 'namespace', 'web']);
    await c.kubectl(['-n', 'web', 'create', 'deployment', 'nginx', '--image=nginx:1.27', '--replicas=3']);
    const phases = await waitFor(
      async () => {
        const out = await c.kubectl(['-n', 'web', 'get', 'pods', '-o', 'jsonpath={range .items[*]}{.status.phase} {.spec.nodeName}{"\\n"}{end}']);
        const lines = out.trim().split('\n').filter(Boolean);
        return lines.length === 3 && lines.every((l) => l.startsWith('Running kwok-node-')) ? lines : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 500, what: '3 Running pods' },
    );
    expect(phases).toHaveLength(3);
  });

  it('enforces RBAC: a ServiceAccount token without rights is refused', async () => {
    const c = cluster();
    await c.kubectl(['create', 'serviceaccount', 'nobody']);
    const token = (await c.kubectl(['create', 'token', 'nobody'])).trim();
    expect(token.split('.')).toHaveLength(3); // a signed JWT from the service-account issuer
    const err = await c.kubectl(['--token', token, 'get', 'pods', '-n', 'kube-system']).then(
      () => undefined,
      (e: Error) => e,
    );
    expect(err?.message).toMatch(/forbidden/i);
    expect(err?.message).toContain('system:serviceaccount:default:nobody');
    await c.kubectl(['create', 'rolebinding', 'nobody-view', '--clusterrole=view', '--serviceaccount=default:nobody']);
    await waitFor(() => c.kubectl(['--token', token, 'get', 'pods', '-n', 'default']).then(() => true), { timeoutMs: 10_000, what: 'RBAC to allow the bound token' });
  });

  it('stop() leaves no process behind', async () => {
    const { startDevCluster } = await import('../../src/devcluster/cluster.ts');
    const other = await startDevCluster({ nodes: 1 });
    const pids = other.processes.map((p) => p.pid!);
    expect(pids.every(alive)).toBe(true);
    await other.stop();
    expect(pids.filter(alive)).toEqual([]);
    expect(fs.existsSync(other.workDir)).toBe(false);
  }, 180_000);

  it('hotstandby dev-cluster up / status / down', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hs-devcli-'));
    try {
      const { stdout } = await run(process.execPath, [BIN, 'dev-cluster', 'up', '--state-dir', dir], { timeout: 180_000 });
      const kubeconfig = /^kubeconfig: (.+)$/m.exec(stdout)?.[1];
      expect(kubeconfig).toBeDefined();
      const state = JSON.parse(fs.readFileSync(path.join(dir, 'state.json'), 'utf8')) as { pid: number };
      const status = await run(process.execPath, [BIN, 'dev-cluster', 'status', '--state-dir', dir]);
      expect(status.stdout).toMatch(/^ready/);
      const kubectl = cluster().binaries.kubectl;
      const nodes = await run(kubectl, ['--kubeconfig', kubeconfig!, 'get', 'nodes', '-o', 'name']);
      expect(nodes.stdout).toContain('node/kwok-node-0');
      await run(process.execPath, [BIN, 'dev-cluster', 'down', '--state-dir', dir], { timeout: 60_000 });
      expect(alive(state.pid)).toBe(false);
      expect(fs.existsSync(dir)).toBe(false);
    } finally {
      await run(process.execPath, [BIN, 'dev-cluster', 'down', '--state-dir', dir]).catch(() => undefined);
    }
  }, 240_000);
});

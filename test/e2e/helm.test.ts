// The Helm chart against a real kube-apiserver: lint, schema refusals, install
// (and what it creates, down to what the operator may and may not do), the
// namespaced variant, and uninstall.
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { expect, it } from 'vitest';
import { describeE2E, useDevCluster } from '../harness/kube.ts';
import { waitFor } from '../../src/lib/time.ts';

const run = promisify(execFile);
const CHART = path.resolve(import.meta.dirname, '../../charts/hotstandby-operator');
const NS = 'hso-system';
const SA = `system:serviceaccount:${NS}:hso-hotstandby-operator`;

describeE2E('Helm chart', () => {
  const cluster = useDevCluster();

  async function helm(args: string[]): Promise<string> {
    const c = cluster();
    try {
      const { stdout } = await run(c.binaries.helm, ['--kubeconfig', c.kubeconfig, ...args], { timeout: 180_000 });
      return stdout;
    } catch (err) {
      const e = err as { stderr?: string; message: string };
      throw new Error(`helm ${args.join(' ')}: ${(e.stderr || e.message).trim()}`, { cause: err });
    }
  }

  async function canI(verb: string, resource: string, namespace?: string): Promise<boolean> {
    const out = await cluster()
      .kubectl(['auth', 'can-i', verb, resource, `--as=${SA}`, ...(namespace ? ['-n', namespace] : ['--all-namespaces'])])
      .catch((e: Error) => e.message);
    return out.trim().endsWith('yes');
  }

  it('helm lint --strict is clean', async () => {
    const out = await helm(['lint', '--strict', CHART]);
    expect(out).toContain('0 chart(s) failed');
  });

  it('values.schema.json refuses a bad value, naming it', async () => {
    await expect(helm(['template', 'x', CHART, '--set', 'replicaCount=0'])).rejects.toThrow(/replicaCount/);
    await expect(helm(['template', 'x', CHART, '--set', 'logLevel=loud'])).rejects.toThrow(/logLevel.*fatal, error|logLevel/);
    await expect(helm(['template', 'x', CHART, '--set', 'imageTypo=1'])).rejects.toThrow(/imageTypo/);
  });

  it('helm install creates the operator, its RBAC, the agents role, the metrics Service and the CRD', async () => {
    const c = cluster();
    await helm(['install', 'hso', CHART, '--namespace', NS, '--create-namespace', '--wait', '--timeout', '120s']);
    const deploy = JSON.parse(await c.kubectl(['get', 'deployment', 'hso-hotstandby-operator', '-n', NS, '-o', 'json'])) as {
      spec: { replicas: number; template: { spec: { containers: Array<{ args: string[] }> } } };
    };
    expect(deploy.spec.replicas).toBe(2);
    expect(deploy.spec.template.spec.containers[0]!.args).toEqual(expect.arrayContaining(['operator', '--leader-elect=true', `--lease-namespace=${NS}`]));
    const pods = await waitFor(
      async () => {
        const out = await c.kubectl(['get', 'pods', '-n', NS, '-o', 'jsonpath={range .items[*]}{.status.phase} {.spec.nodeName}{"\\n"}{end}']);
        const lines = out.trim().split('\n').filter((l) => l.startsWith('Running kwok-node-'));
        return lines.length === 2 ? lines : undefined;
      },
      { timeoutMs: 60_000, what: 'two operator pods Running on kwok nodes' },
    );
    expect(pods).toHaveLength(2);
    await c.kubectl(['get', 'serviceaccount', 'hso-hotstandby-operator', '-n', NS]);
    await c.kubectl(['get', 'clusterrole', 'hso-hotstandby-operator']);
    await c.kubectl(['get', 'clusterrolebinding', 'hso-hotstandby-operator']);
    await c.kubectl(['get', 'clusterrole', 'hso-hotstandby-operator-agent']);
    await c.kubectl(['get', 'role,rolebinding', 'hso-hotstandby-operator-leader-election', '-n', NS]);
    expect(await c.kubectl(['get', 'service', 'hso-hotstandby-operator-metrics', '-n', NS, '-o', 'jsonpath={.spec.ports[0].port}'])).toBe('8080');
    await c.kubectl(['get', 'crd', 'hotstandbyclusters.hotstandby.dev']);
  });

  it('the operator may do its job and nothing more', async () => {
    expect(await canI('patch', 'hotstandbyclusters.hotstandby.dev/status')).toBe(true);
    expect(await canI('create', 'statefulsets.apps')).toBe(true);
    expect(await canI('patch', 'pods')).toBe(true);
    expect(await canI('delete', 'pods')).toBe(true); // rolling updates: the masters' StatefulSet is OnDelete
    expect(await canI('get', 'secrets')).toBe(true);
    expect(await canI('create', 'secrets')).toBe(false);
    expect(await canI('delete', 'secrets')).toBe(false);
    expect(await canI('delete', 'nodes')).toBe(false);
    expect(await canI('bind', 'clusterroles/hso-hotstandby-operator-agent')).toBe(true);
    expect(await canI('bind', 'clusterroles/cluster-admin')).toBe(false);
    expect(await canI('update', 'leases.coordination.k8s.io', NS)).toBe(true);
    expect(await canI('update', 'leases.coordination.k8s.io', 'default')).toBe(false);
  });

  it('helm uninstall removes what it installed (the CRD stays, as Helm keeps crds/)', async () => {
    const c = cluster();
    await helm(['uninstall', 'hso', '--namespace', NS, '--wait', '--timeout', '120s']);
    for (const [kind, name, ns] of [
      ['deployment', 'hso-hotstandby-operator', NS],
      ['serviceaccount', 'hso-hotstandby-operator', NS],
      ['service', 'hso-hotstandby-operator-metrics', NS],
      ['clusterrole', 'hso-hotstandby-operator', undefined],
      ['clusterrole', 'hso-hotstandby-operator-agent', undefined],
      ['clusterrolebinding', 'hso-hotstandby-operator', undefined],
    ] as const) {
      const out = await c.kubectl(['get', kind, name, ...(ns ? ['-n', ns] : [])]).catch((e: Error) => e.message);
      expect(out, `${kind}/${name}`).toMatch(/NotFound/);
    }
    await c.kubectl(['get', 'crd', 'hotstandbyclusters.hotstandby.dev']);
  });

  it('with watchNamespaces the operator gets Roles in those namespaces, no ClusterRole', async () => {
    const c = cluster();
    await c.kubectl(['create', 'namespace', 'team-a']);
    await helm(['install', 'hso', CHART, '--namespace', NS, '--set', 'watchNamespaces={team-a}', '--wait', '--timeout', '120s']);
    await c.kubectl(['get', 'role,rolebinding', 'hso-hotstandby-operator', '-n', 'team-a']);
    expect(await c.kubectl(['get', 'clusterrole', 'hso-hotstandby-operator']).catch((e: Error) => e.message)).toMatch(/NotFound/);
    expect(await canI('patch', 'hotstandbyclusters.hotstandby.dev/status', 'team-a')).toBe(true);
    expect(await canI('patch', 'hotstandbyclusters.hotstandby.dev/status', 'default')).toBe(false);
    const args = await c.kubectl(['get', 'deployment', 'hso-hotstandby-operator', '-n', NS, '-o', 'jsonpath={.spec.template.spec.containers[0].args}']);
    expect(args).toContain('--namespaces=team-a');
    await helm(['uninstall', 'hso', '--namespace', NS, '--wait', '--timeout', '120s']);
    expect(await c.kubectl(['get', 'role', 'hso-hotstandby-operator', '-n', 'team-a']).catch((e: Error) => e.message)).toMatch(/NotFound/);
  });
});

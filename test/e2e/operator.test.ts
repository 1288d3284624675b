// The operator against a real kube-apiserver and a real hot-standby cluster
// (agents and masters as processes, with their etcd and redis-server): two
// operator replicas elect one through a Lease; the active one keeps the
// HotStandbyCluster status (and so `kubectl get hsc`) in step with the agents,
// counts a failover, and hands over to the other replica when it dies.
import path from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeE2E, useDevCluster } from '../harness/kube.ts';
import { LocalCluster } from '../../src/demo/localcluster.ts';
import { ManagedProcess } from '../../src/lib/childproc.ts';
import { freePort } from '../../src/lib/ports.ts';
import { waitFor } from '../../src/lib/time.ts';

const ROOT = path.resolve(import.meta.dirname, '../..');
const BIN = path.join(ROOT, 'bin/hotstandby.js');

describeE2E('hotstandby operator', () => {
  const kube = useDevCluster({ nodes: 1 });
  let members: LocalCluster;
  const operators: Array<{ proc: ManagedProcess; port: number; name: string }> = [];

  const status = async (name: string, jsonpath: string): Promise<string> =>
    kube().kubectl(['get', 'hsc', name, '-n', 'default', '-o', `jsonpath={${jsonpath}}`]);

  beforeAll(async () => {
    const k = kube();
    await k.kubectl(['apply', '--server-side', '-f', path.join(ROOT, 'crds')]);
    await k.kubectl(['wait', '--for=condition=Established', 'crd/hotstandbyclusters.hotstandby.dev', '--timeout=60s']);
    members = await LocalCluster.start({ members: 3, leaseTtlSeconds: 2, cluster: { namespace: 'default', name: 'kv' } });
    const hsc = {
      apiVersion: 'hotstandby.dev/v1alpha1',
      kind: 'HotStandbyCluster',
      metadata: { name: 'kv', namespace: 'default' },
      spec: { replicas: 3, master: { image: 'example/kvmaster:1' }, etcd: { external: { endpoints: [members.etcd.endpoint] } }, dragonfly: { external: { url: members.redis.url } } },
    };
    await k.kubectl(['apply', '-f', '-'], { input: stringify(hsc) });
    await k.kubectl(['apply', '-f', path.join(ROOT, 'examples/minimal.yaml'), '-n', 'default']);
    for (const name of ['op-a', 'op-b']) {
      const port = await freePort();
      const proc = new ManagedProcess({
        name,
        command: process.execPath,
        args: [BIN, 'operator', '--lease-namespace=default', `--metrics-port=${port}`, '--resync-seconds=1', '--agent-image=hotstandby/operator:e2e'],
        logFile: path.join(k.workDir, `${name}.log`),
        env: { ...process.env, KUBECONFIG: k.kubeconfig, POD_NAME: name },
      });
      operators.push({ proc, port, name });
    }
  }, 180_000);

  afterAll(async () => {
    await Promise.allSettled(operators.map((o) => o.proc.stop()));
    await members?.stop();
  });

  it('publishes the leader, readiness and lag of a running cluster, shown by kubectl get hsc', async () => {
    const leader = await members.waitForLeader();
    // Running also needs the leader's pod labelled role=leader (here by the operator's backstop: the agents run outside the pods).
    await waitFor(
      async () =>
        (await status('kv', '.status.leader.pod')) === leader.name && (await status('kv', '.status.ready')) === '3/3' && (await status('kv', '.status.phase')) === 'Running',
      {
        timeoutMs: 60_000,
        intervalMs: 500,
        what: `status.leader.pod = ${leader.name}, ready 3/3 and phase Running (operator logs: ${operators.map((o) => o.proc.logFile).join(', ')})`,
      },
    );
    expect(await status('kv', '.status.conditions[?(@.type=="Available")].status')).toBe('True');
    const [header, row] = (await kube().kubectl(['get', 'hsc', 'kv', '-n', 'default'])).trim().split('\n');
    expect(header!.split(/\s+/).slice(0, 4)).toEqual(['NAME', 'LEADER', 'READY', 'MAX-LAG']);
    expect(row!.split(/\s+/).slice(0, 3)).toEqual(['kv', leader.name, '3/3']);
  });

  it('a cluster with managed stores gets its etcd and Dragonfly; while they are not reachable the status says so', async () => {
    await waitFor(async () => (await status('mooncake-master', '.status.conditions[?(@.type=="StoresReady")].status')) === 'False', { timeoutMs: 30_000, what: 'StoresReady False' });
    expect(await status('mooncake-master', '.status.phase')).toBe('Provisioning');
    for (const sts of ['mooncake-master-etcd', 'mooncake-master-dragonfly', 'mooncake-master']) {
      expect(await kube().kubectl(['get', 'statefulset', sts, '-n', 'default', '-o', 'name'])).toContain(sts);
    }
    expect(await status('mooncake-master', '.status.storage.etcd')).toBe('EmptyDir');
  });

  it('exactly one replica holds the Lease and acts; /metrics says which', async () => {
    const holder = (await kube().kubectl(['get', 'lease', 'hotstandby-operator', '-n', 'default', '-o', 'jsonpath={.spec.holderIdentity}'])).trim();
    expect(operators.map((o) => o.name)).toContain(holder);
    for (const o of operators) {
      const text = await (await fetch(`http://127.0.0.1:${o.port}/metrics`)).text();
      expect(text).toContain(`hotstandby_operator_leader ${o.name === holder ? 1 : 0}`);
      if (o.name === holder) expect(text).toMatch(/hotstandby_cluster_ready_members\{cluster="default\/kv"\} 3/);
      expect((await fetch(`http://127.0.0.1:${o.port}/readyz`)).status).toBe(200);
    }
  });

  it('counts a failover of the cluster and names who took over', async () => {
    const old = await members.waitForLeader();
    const before = Number((await status('kv', '.status.failoverCount')) || 0);
    members.kill(old);
    const next = await members.waitForLeader({ not: old, timeoutMs: 30_000 });
    await waitFor(async () => (await status('kv', '.status.leader.pod')) === next.name, { timeoutMs: 30_000, intervalMs: 500, what: 'the new leader in the status' });
    expect(Number(await status('kv', '.status.failoverCount'))).toBe(before + 1);
    expect(await status('kv', '.status.lastFailover.from')).toBe(old.name);
    expect(await status('kv', '.status.lastFailover.to')).toBe(next.name);
    expect(Number(await status('kv', '.status.lastFailover.durationMs'))).toBeGreaterThan(0);
    // The failover is an Event on the cluster and a leader change in /metrics.
    await waitFor(
      async () => {
        const events = JSON.parse(await kube().kubectl(['get', 'events.events.k8s.io', '-n', 'default', '-o', 'json'])) as { items: Array<{ reason: string; note: string; regarding: { name: string } }> };
        return events.items.some((e) => e.reason === 'FailoverObserved' && e.regarding.name === 'kv' && e.note.includes(`from ${old.name} to ${next.name}`));
      },
      { timeoutMs: 15_000, intervalMs: 500, what: `a FailoverObserved event from ${old.name} to ${next.name}` },
    );
    const holder = (await kube().kubectl(['get', 'lease', 'hotstandby-operator', '-n', 'default', '-o', 'jsonpath={.spec.holderIdentity}'])).trim();
    const text = await (await fetch(`http://127.0.0.1:${operators.find((o) => o.name === holder)!.port}/metrics`)).text();
    expect(text).toMatch(/hotstandby_leader_changes_total\{cluster="default\/kv"\} [1-9]/);
    expect(text).toMatch(/hotstandby_failover_duration_seconds_count\{cluster="default\/kv"\} [1-9]/);
    expect(text).toMatch(/hotstandby_member_lag\{cluster="default\/kv",member="[^"]+"\} \d+/);
    await members.restart(old);
  });

  it('when the active replica dies, the other takes the Lease over and keeps reporting', async () => {
    const holder = (await kube().kubectl(['get', 'lease', 'hotstandby-operator', '-n', 'default', '-o', 'jsonpath={.spec.holderIdentity}'])).trim();
    const active = operators.find((o) => o.name === holder)!;
    const other = operators.find((o) => o !== active)!;
    active.proc.killNow('SIGKILL');
    await waitFor(
      async () => (await kube().kubectl(['get', 'lease', 'hotstandby-operator', '-n', 'default', '-o', 'jsonpath={.spec.holderIdentity}'])).trim() === other.name,
      { timeoutMs: 40_000, intervalMs: 500, what: `${other.name} to take the Lease over` },
    );
    const old = await members.waitForLeader();
    members.kill(old);
    const next = await members.waitForLeader({ not: old, timeoutMs: 30_000 });
    await waitFor(async () => (await status('kv', '.status.leader.pod')) === next.name, { timeoutMs: 30_000, intervalMs: 500, what: 'the new replica to report the new leader' });
  }, 120_000);
});

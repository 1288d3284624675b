// Agents move the leader label themselves, against a real kube-apiserver with
// RBAC: the pods are records on kwok nodes, and each pod's agent and master run
// as local processes (src/demo/localcluster.ts) whose member names are the pod
// names, authenticated with a ServiceAccount token bound to the chart's agent
// ClusterRole. Failover (kill -9, SIGSTOP) must move the label with no
// operator running; without API access failover and writes still work.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeE2E, useDevCluster } from '../harness/kube.ts';
import { LocalCluster, type Member } from '../../src/demo/localcluster.ts';
import { KubeApiError, KubeClient } from '../../src/agent/kube-client.ts';
import { CLUSTER_LABEL, ROLE_LABEL } from '../../src/lib/labels.ts';
import { waitFor } from '../../src/lib/time.ts';

const run = promisify(execFile);
const CHART = path.resolve(import.meta.dirname, '../../charts/hotstandby-operator');
const NS = 'labels-a';
const DENIED_NS = 'labels-b';
const PODS = ['kv-0', 'kv-1', 'kv-2'];
const TTL = 2;

function podYaml(namespace: string, name: string, cluster: string, role?: string): string {
  return `apiVersion: v1
kind: Pod
metadata:
  name: ${name}
  namespace: ${namespace}
  labels:
    ${CLUSTER_LABEL}: ${cluster}
    app.kubernetes.io/component: master
${role ? `    ${ROLE_LABEL}: ${role}\n` : ''}spec:
  containers:
  - name: master
    image: example.invalid/kvmaster:1
`;
}

describeE2E('agents label their pods leader/standby', () => {
  const cluster = useDevCluster();
  let dir: string;
  let tokenFile: string;
  let deniedTokenFile: string;
  let caFile: string;
  let kv: LocalCluster | undefined;
  let denied: LocalCluster | undefined;

  const kubeArgs = (token: string): string[] => ['--pod-labels', 'on', '--kube-api-server', cluster().server, '--kube-token-file', token, '--kube-ca-file', caFile];

  async function roles(namespace: string): Promise<Record<string, string | undefined>> {
    const out = JSON.parse(await cluster().kubectl(['get', 'pods', '-n', namespace, '-o', 'json'])) as {
      items: Array<{ metadata: { name: string; labels?: Record<string, string> } }>;
    };
    return Object.fromEntries(out.items.map((p) => [p.metadata.name, p.metadata.labels?.[ROLE_LABEL]]));
  }

  /** Waits until the pods' role labels are exactly `want` (undefined = no label). */
  async function expectRoles(namespace: string, want: Record<string, string | undefined>, what: string, timeoutMs = 20_000): Promise<void> {
    let last: Record<string, string | undefined> = {};
    try {
      await waitFor(
        async () => {
          last = await roles(namespace);
          return Object.entries(want).every(([pod, role]) => last[pod] === role);
        },
        { timeoutMs, intervalMs: 100, what },
      );
    } catch (err) {
      throw new Error(`${(err as Error).message}; want ${JSON.stringify(want)}, have ${JSON.stringify(last)}`, { cause: err });
    }
  }

  async function put(m: Member, key: string, value: string): Promise<number> {
    const res = await fetch(`http://${m.kvAddress}/kv/${key}`, { method: 'PUT', body: value, signal: AbortSignal.timeout(5000) });
    return res.status;
  }

  beforeAll(async () => {
    const c = cluster();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hs-labels-'));
    caFile = path.join(c.workDir, 'pki', 'ca.crt');
    // The agents' ClusterRole exactly as the chart renders it.
    const { stdout: role } = await run(c.binaries.helm, ['template', 'hso', CHART, '--show-only', 'templates/rbac-agent.yaml'], { timeout: 60_000 });
    await c.kubectl(['apply', '-f', '-'], { input: role });
    for (const ns of [NS, DENIED_NS]) await c.kubectl(['create', 'namespace', ns]);
    await c.kubectl(['create', 'serviceaccount', 'kv-agent', '-n', NS]);
    await c.kubectl(['create', 'rolebinding', 'kv-agent', '-n', NS, '--clusterrole=hso-hotstandby-operator-agent', `--serviceaccount=${NS}:kv-agent`]);
    await c.kubectl(['create', 'serviceaccount', 'unbound', '-n', DENIED_NS]);
    // kv-2 carries a stale leader label; other-0 leads a different cluster in the same namespace.
    const pods = [
      podYaml(NS, 'kv-0', 'kv'),
      podYaml(NS, 'kv-1', 'kv'),
      podYaml(NS, 'kv-2', 'kv', 'leader'),
      podYaml(NS, 'other-0', 'other', 'leader'),
      ...PODS.map((p) => podYaml(DENIED_NS, p, 'kv')),
    ];
    await c.kubectl(['apply', '-f', '-'], { input: pods.join('---\n') });
    await waitFor(
      async () => {
        const out = await c.kubectl(['get', 'pods', '-A', '-l', CLUSTER_LABEL, '-o', 'jsonpath={range .items[*]}{.status.phase}{"\\n"}{end}']);
        return out.trim().split('\n').filter((l) => l === 'Running').length === pods.length;
      },
      { timeoutMs: 60_000, intervalMs: 500, what: 'the master pods Running on kwok nodes' },
    );
    tokenFile = path.join(dir, 'token');
    fs.writeFileSync(tokenFile, (await c.kubectl(['create', 'token', 'kv-agent', '-n', NS, '--duration=2h'])).trim());
    deniedTokenFile = path.join(dir, 'denied-token');
    fs.writeFileSync(deniedTokenFile, (await c.kubectl(['create', 'token', 'unbound', '-n', DENIED_NS, '--duration=2h'])).trim());
    kv = await LocalCluster.start({
      cluster: { namespace: NS, name: 'kv' },
      memberNames: PODS,
      leaseTtlSeconds: TTL,
      agentArgs: kubeArgs(tokenFile),
    });
  }, 180_000);

  afterAll(async () => {
    await Promise.allSettled([kv?.stop(), denied?.stop()]);
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  it('labels the leader pod leader and the others standby, and strips a stale leader label', async () => {
    const leader = await kv!.waitForLeader();
    const want = Object.fromEntries(PODS.map((p) => [p, p === leader.name ? 'leader' : 'standby']));
    await expectRoles(NS, { ...want, 'other-0': 'leader' }, 'leader/standby labels on the kv pods');
    // Another cluster's pods are not ours to touch.
    expect((await roles(NS))['other-0']).toBe('leader');
  });

  it('kill -9 of the leader: the new leader labels its pod and strips the old one, with no operator', async () => {
    const old = await kv!.waitForLeader();
    kv!.kill(old);
    const next = await kv!.waitForLeader({ not: old, timeoutMs: 30_000 });
    const want = Object.fromEntries(PODS.map((p) => [p, p === next.name ? 'leader' : p === old.name ? undefined : 'standby']));
    await expectRoles(NS, want, 'the new leader labelled, the dead one stripped');
    expect(await put(next, 'after-kill', 'v')).toBe(200);
    // The old member comes back as a standby and says so on its pod.
    await kv!.restart(old);
    await expectRoles(NS, { [old.name]: 'standby', [next.name]: 'leader' }, 'the restarted member labelled standby');
  });

  it('SIGSTOP of the leader agent past the TTL: its pod loses the leader label while it is frozen', async () => {
    const frozen = await kv!.waitForLeader();
    kv!.pauseAgent(frozen);
    try {
      const next = await kv!.waitForLeader({ not: frozen, timeoutMs: 30_000 });
      await expectRoles(NS, { [frozen.name]: undefined, [next.name]: 'leader' }, 'the frozen leader stripped, the new one labelled');
      // Still frozen now: the label moved without its cooperation.
      expect(fs.readFileSync(`/proc/${frozen.agent.pid}/stat`, 'utf8').split(' ')[2]).toBe('T');
      expect(await put(next, 'after-freeze', 'v')).toBe(200);
    } finally {
      kv!.resumeAgent(frozen);
    }
    // Thawed, it finds itself deposed and labels its pod standby; one leader label remains.
    const leader = await kv!.waitForLeader({ not: frozen });
    await expectRoles(NS, Object.fromEntries(PODS.map((p) => [p, p === leader.name ? 'leader' : 'standby'])), 'one leader label after the thaw');
  });

  it('the chart role lets an agent list and patch pods in its namespace and nothing more', async () => {
    const canI = async (verb: string, resource: string, namespace: string): Promise<boolean> => {
      const out = await cluster()
        .kubectl(['auth', 'can-i', verb, resource, `--as=system:serviceaccount:${NS}:kv-agent`, '-n', namespace])
        .catch((e: Error) => e.message);
      return out.trim().endsWith('yes');
    };
    expect(await canI('list', 'pods', NS)).toBe(true);
    expect(await canI('patch', 'pods', NS)).toBe(true);
    expect(await canI('delete', 'pods', NS)).toBe(false);
    expect(await canI('create', 'pods', NS)).toBe(false);
    expect(await canI('get', 'secrets', NS)).toBe(false);
    expect(await canI('create', 'events', NS)).toBe(false);
    expect(await canI('patch', 'pods', DENIED_NS)).toBe(false);
  });

  it('the agent token cannot label pods in another namespace', async () => {
    const other = new KubeClient({ server: cluster().server, tokenFile, caFile, namespace: DENIED_NS });
    const own = new KubeClient({ server: cluster().server, tokenFile, caFile, namespace: NS });
    try {
      const refused = await other.patchPodLabels('kv-0', { [ROLE_LABEL]: 'leader' }).then(() => undefined, (err: unknown) => err);
      expect(refused).toBeInstanceOf(KubeApiError);
      expect((refused as KubeApiError).status).toBe(403);
      await expect(other.listPods(`${CLUSTER_LABEL}=kv`)).rejects.toMatchObject({ status: 403 });
      // The same token works in its own namespace (so the 403 is about the namespace).
      expect((await own.listPods(`${CLUSTER_LABEL}=kv`)).map((p) => p.name).sort()).toEqual(PODS);
      expect((await roles(DENIED_NS))['kv-0']).toBeUndefined();
    } finally {
      other.close();
      own.close();
    }
  });

  it('without API access promotion still happens and writes are accepted; the label failures are logged', async () => {
    denied = await LocalCluster.start({
      cluster: { namespace: DENIED_NS, name: 'kv' },
      memberNames: PODS,
      leaseTtlSeconds: TTL,
      agentArgs: kubeArgs(deniedTokenFile),
    });
    const leader = await denied.waitForLeader();
    expect(await put(leader, 'denied', 'still-writable')).toBe(200);
    const log = await waitFor(
      () => {
        const text = fs.readFileSync(leader.agent.logFile, 'utf8');
        return /pod labels not set yet; accepting writes anyway/.test(text) ? text : undefined;
      },
      { timeoutMs: 10_000, what: 'the leader agent to log that it leads without labels' },
    );
    const failures = log.split('\n').filter((l) => l.includes('could not set the pod role label'));
    expect(failures.length).toBeGreaterThan(0);
    expect(failures[0]).toContain('403 Forbidden');
    expect(Object.values(await roles(DENIED_NS))).toEqual([undefined, undefined, undefined]);
  });
});

// The operator end to end on a real kube-apiserver (kwok nodes): it runs as
// the chart's ServiceAccount, makes every child of a HotStandbyCluster, and
// the masters' pods come alive through a stand-in kubelet that runs each
// pod's agent (with the env and args the operator gave it) and a reference
// master as local processes, against a local etcd and redis-server named as
// external stores. The agents label their own pods through the real API with
// their own ServiceAccount's token, so the leader Service's EndpointSlice is
// what a client would follow.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { parse, stringify } from 'yaml';
import { Etcd3 } from 'etcd3';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeE2E, useDevCluster } from '../harness/kube.ts';
import { PodStandIns } from '../harness/pod-standins.ts';
import { makeTestPki } from '../harness/tls.ts';
import { WriteLoad, findLostWrites } from '../../src/demo/load.ts';
import { ManagedProcess } from '../../src/lib/childproc.ts';
import { etcdKeys, streamKeys } from '../../src/lib/keys.ts';
import { startEtcd, startStreamServer, type LocalEtcd, type LocalStreamServer } from '../../src/lib/localstores.ts';
import { freePort } from '../../src/lib/ports.ts';
import { sleep, waitFor } from '../../src/lib/time.ts';

const run = promisify(execFile);
const ROOT = path.resolve(import.meta.dirname, '../..');
const BIN = path.join(ROOT, 'bin/hotstandby.js');
const CHART = path.join(ROOT, 'charts/hotstandby-operator');
const OPERATOR_NS = 'hso-system';
const NS = 'apps';
const TTL = 2;

describeE2E('the operator provisions and runs a HotStandbyCluster', () => {
  const kube = useDevCluster({ nodes: 2 });
  let etcd: LocalEtcd;
  let redis: LocalStreamServer;
  let workDir: string;
  let operatorKubeconfig: string;
  let operator: { proc: ManagedProcess; port: number } | undefined;
  const standIns: PodStandIns[] = [];

  const k = (args: string[], input?: string): Promise<string> => kube().kubectl(args, input === undefined ? {} : { input });
  const json = async <T>(args: string[]): Promise<T> => JSON.parse(await k([...args, '-o', 'json'])) as T;
  const jsonpath = async (args: string[], expr: string): Promise<string> => (await k([...args, '-o', `jsonpath={${expr}}`])).trim();
  const hscStatus = (name: string, expr: string): Promise<string> => jsonpath(['get', 'hsc', name, '-n', NS], expr);

  async function startOperator(): Promise<void> {
    const port = await freePort();
    const proc = new ManagedProcess({
      name: 'operator',
      command: process.execPath,
      args: [
        BIN, 'operator',
        `--lease-namespace=${OPERATOR_NS}`,
        `--metrics-port=${port}`,
        '--agent-image=hotstandby/operator:e2e',
        '--agent-cluster-role=hso-hotstandby-operator-agent',
        '--resync-seconds=5',
      ],
      logFile: path.join(workDir, 'operator.log'),
      env: { ...process.env, KUBECONFIG: operatorKubeconfig, POD_NAME: 'operator-e2e', HOTSTANDBY_LOG_LEVEL: 'debug' },
    });
    operator = { proc, port };
  }

  async function stopOperator(): Promise<void> {
    await operator?.proc.stop(5000);
    operator = undefined;
  }

  async function metric(name: string): Promise<number> {
    const text = await (await fetch(`http://127.0.0.1:${operator!.port}/metrics`)).text();
    return text
      .split('\n')
      .filter((l) => l.startsWith(name))
      .reduce((sum, l) => sum + Number(l.split(' ').pop()), 0);
  }

  function clusterYaml(name: string, extra: Record<string, unknown> = {}): string {
    return stringify({
      apiVersion: 'hotstandby.dev/v1alpha1',
      kind: 'HotStandbyCluster',
      metadata: { name, namespace: NS },
      spec: {
        replicas: 3,
        master: { image: 'hotstandby/kvmaster:1', ports: [{ name: 'kv', containerPort: 8080 }] },
        election: { leaseTTLSeconds: TTL },
        etcd: { external: { endpoints: [etcd.endpoint] } },
        dragonfly: { external: { url: redis.url } },
        ...extra,
      },
    });
  }

  async function leaderEndpoints(name: string): Promise<string[]> {
    const slices = await json<{ items: Array<{ endpoints?: Array<{ targetRef?: { name: string }; conditions?: { ready?: boolean } }> }> }>([
      'get', 'endpointslices', '-n', NS, '-l', `kubernetes.io/service-name=${name}`,
    ]);
    return slices.items.flatMap((s) => (s.endpoints ?? []).filter((e) => e.conditions?.ready !== false).map((e) => e.targetRef?.name ?? '?')).sort();
  }

  async function startCluster(name: string, extra: Record<string, unknown> = {}): Promise<PodStandIns> {
    await k(['apply', '-f', '-'], clusterYaml(name, extra));
    const s = new PodStandIns({ kube: kube(), namespace: NS, cluster: name, workDir: path.join(workDir, name) }).start();
    standIns.push(s);
    await s.waitForPods(3, 120_000);
    return s;
  }

  async function leaderOf(s: PodStandIns, not?: string) {
    const leader = await waitFor(
      async () => {
        for (const m of s.members()) {
          const res = await fetch(`http://${m.kvAddress}/status`, { signal: AbortSignal.timeout(500) }).catch(() => undefined);
          const body = res ? ((await res.json()) as { writable: boolean }) : undefined;
          if (body?.writable && m.name !== not) return m;
        }
        return undefined;
      },
      { timeoutMs: 30_000, intervalMs: 50, what: 'a writable leader' },
    );
    return leader;
  }

  beforeAll(async () => {
    const c = kube();
    workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hs-op-e2e-'));
    [etcd, redis] = await Promise.all([startEtcd(), startStreamServer()]);
    await run(c.binaries.helm, ['--kubeconfig', c.kubeconfig, 'install', 'hso', CHART, '--namespace', OPERATOR_NS, '--create-namespace', '--set', 'replicaCount=1', '--wait', '--timeout', '120s'], { timeout: 180_000 });
    await k(['create', 'namespace', NS]);
    // The operator runs here as a process, but with the chart's ServiceAccount: what it may do is what the chart grants.
    const token = (await k(['create', 'token', 'hso-hotstandby-operator', '-n', OPERATOR_NS, '--duration=2h'])).trim();
    const ca = fs.readFileSync(path.join(c.workDir, 'pki', 'ca.crt')).toString('base64');
    operatorKubeconfig = path.join(workDir, 'operator.kubeconfig');
    fs.writeFileSync(
      operatorKubeconfig,
      stringify({
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [{ name: 'dev', cluster: { server: c.server, 'certificate-authority-data': ca } }],
        users: [{ name: 'operator', user: { token } }],
        contexts: [{ name: 'dev', context: { cluster: 'dev', user: 'operator' } }],
        'current-context': 'dev',
      }),
      { mode: 0o600 },
    );
    await startOperator();
  }, 300_000);

  afterAll(async () => {
    await Promise.allSettled(standIns.map((s) => s.stop()));
    await stopOperator();
    await Promise.allSettled([etcd?.stop(), redis?.stop()]);
    if (workDir && !process.env.HOTSTANDBY_KEEP_TEST_DIRS) fs.rmSync(workDir, { recursive: true, force: true });
  }, 60_000);

  it('makes every child with owner, labels, selectors, ports, probes and the agent sidecar; the cluster runs and the leader Service follows the leader', async () => {
    const s = await startCluster('kv');
    const uid = await jsonpath(['get', 'hsc', 'kv', '-n', NS], '.metadata.uid');
    const sts = await json<{
      metadata: { ownerReferences: Array<{ uid: string; controller: boolean; kind: string }>; labels: Record<string, string> };
      spec: { serviceName: string; updateStrategy: { type: string }; template: { spec: { serviceAccountName: string; containers: Array<{ name: string }>; initContainers: Array<{ name: string; restartPolicy?: string; readinessProbe?: unknown; image: string }> } } };
    }>(['get', 'statefulset', 'kv', '-n', NS]);
    expect(sts.metadata.ownerReferences).toEqual([expect.objectContaining({ uid, controller: true, kind: 'HotStandbyCluster' })]);
    expect(sts.metadata.labels).toMatchObject({ 'hotstandby.dev/cluster': 'kv', 'app.kubernetes.io/managed-by': 'hotstandby-operator', 'app.kubernetes.io/instance': 'kv' });
    expect(sts.spec.serviceName).toBe('kv-members');
    expect(sts.spec.updateStrategy.type).toBe('OnDelete');
    expect(sts.spec.template.spec.serviceAccountName).toBe('kv-agent');
    const agent = sts.spec.template.spec.initContainers.find((c) => c.name === 'agent');
    expect(agent).toMatchObject({ restartPolicy: 'Always', image: 'hotstandby/operator:e2e' });
    expect(agent?.readinessProbe).toBeDefined();
    expect(sts.spec.template.spec.containers.map((c) => c.name)).toContain('master');
    const leaderSvc = await json<{ spec: { selector: Record<string, string>; ports: Array<{ port: number }> } }>(['get', 'service', 'kv', '-n', NS]);
    expect(leaderSvc.spec.selector).toMatchObject({ 'hotstandby.dev/cluster': 'kv', 'hotstandby.dev/role': 'leader' });
    expect(leaderSvc.spec.ports.map((p) => p.port)).toEqual([8080]);
    expect(await jsonpath(['get', 'service', 'kv-standby', '-n', NS], '.spec.selector.hotstandby\\.dev/role')).toBe('standby');
    expect(await jsonpath(['get', 'service', 'kv-members', '-n', NS], '.spec.publishNotReadyAddresses')).toBe('true');
    expect(await jsonpath(['get', 'service', 'kv-members', '-n', NS], '.spec.clusterIP')).toBe('None');
    expect(await jsonpath(['get', 'pdb', 'kv', '-n', NS], '.spec.maxUnavailable')).toBe('1');
    expect(await jsonpath(['get', 'rolebinding', 'kv-agent', '-n', NS], '.roleRef.name')).toBe('hso-hotstandby-operator-agent');
    // External stores: no store children.
    await expect(k(['get', 'statefulset', 'kv-etcd', '-n', NS])).rejects.toThrow(/NotFound/);

    const leader = await leaderOf(s);
    await waitFor(async () => (await leaderEndpoints('kv')).join(',') === leader.name, { timeoutMs: 20_000, intervalMs: 200, what: `the leader Service to select only ${leader.name}` });
    await waitFor(async () => (await hscStatus('kv', '.status.leader.pod')) === leader.name && (await hscStatus('kv', '.status.ready')) === '3/3', {
      timeoutMs: 30_000,
      intervalMs: 250,
      what: 'status.leader and ready 3/3',
    });
    expect(await hscStatus('kv', '.status.phase')).toBe('Running');
    expect((await leaderEndpoints('kv-standby')).length).toBe(2);
    const [header, row] = (await k(['get', 'hsc', 'kv', '-n', NS])).trim().split('\n');
    expect(header!.split(/\s+/).slice(0, 3)).toEqual(['NAME', 'LEADER', 'READY']);
    expect(row!.split(/\s+/).slice(0, 3)).toEqual(['kv', leader.name, '3/3']);
  }, 240_000);

  it('a reconcile that finds nothing to change writes nothing; a hand edit is reverted and a deleted child comes back', async () => {
    const before = await metric('hotstandby_apply_writes_total');
    await sleep(12_000); // two resyncs
    expect(await metric('hotstandby_apply_writes_total')).toBe(before);

    await k(['patch', 'service', 'kv', '-n', NS, '--type=merge', '-p', '{"spec":{"selector":{"hotstandby.dev/role":"standby"}}}']);
    await waitFor(async () => (await jsonpath(['get', 'service', 'kv', '-n', NS], '.spec.selector.hotstandby\\.dev/role')) === 'leader', {
      timeoutMs: 20_000,
      intervalMs: 200,
      what: 'the hand-edited selector to be reverted',
    });
    await k(['delete', 'service', 'kv-standby', '-n', NS]);
    await waitFor(async () => (await k(['get', 'service', 'kv-standby', '-n', NS]).catch(() => '')) !== '', { timeoutMs: 20_000, intervalMs: 200, what: 'the deleted Service to come back' });
  }, 60_000);

  it('kill -9 of the leader pair under load: the leader Service moves to the new leader within TTL + 2 s, the status and an Event record it, nothing acknowledged is lost', async () => {
    const s = standIns[0]!;
    const old = await leaderOf(s);
    const load = new WriteLoad({ members: () => s.members(), rate: 200 });
    load.start();
    await sleep(1000);
    const failovers = Number((await hscStatus('kv', '.status.failoverCount')) || 0);
    const killedAt = Date.now();
    s.kill(old.name);
    const next = await leaderOf(s, old.name);
    await waitFor(async () => (await leaderEndpoints('kv')).join(',') === next.name, { timeoutMs: (TTL + 2) * 1000 + 5000, intervalMs: 50, what: `the leader Service to select only ${next.name}` });
    const movedMs = Date.now() - killedAt;
    process.stderr.write(`leader Service moved ${old.name} -> ${next.name} ${movedMs} ms after kill -9 (TTL ${TTL} s)\n`);
    expect(movedMs).toBeLessThan((TTL + 2) * 1000 + 2000); // TTL + 2 s, with slack for a loaded 2-core machine's polling
    await waitFor(async () => (await hscStatus('kv', '.status.leader.pod')) === next.name, { timeoutMs: 10_000, intervalMs: 200, what: 'status.leader to name the new leader' });
    expect(Number(await hscStatus('kv', '.status.failoverCount'))).toBe(failovers + 1);
    expect(await hscStatus('kv', '.status.lastFailover.from')).toBe(old.name);
    await waitFor(async () => (await k(['get', 'events.events.k8s.io', '-n', NS, '--field-selector', 'reason=FailoverObserved', '-o', 'name'])).trim() !== '', {
      timeoutMs: 10_000,
      intervalMs: 300,
      what: 'a FailoverObserved Event',
    });
    await load.stop();
    expect(load.stats.acked).toBeGreaterThan(100);
    expect(await findLostWrites(next, load.ledger)).toEqual([]);
    s.revive(old.name);
    await s.waitForPods(3);
  }, 120_000);

  it('with the operator stopped, a failover still moves the leader Service; the status catches up when it returns; a frozen old leader loses the label', async () => {
    const s = standIns[0]!;
    await stopOperator();
    const old = await leaderOf(s);
    s.member(old.name)!.agent.killNow('SIGSTOP');
    try {
      const next = await leaderOf(s, old.name);
      await waitFor(async () => (await leaderEndpoints('kv')).join(',') === next.name, { timeoutMs: (TTL + 2) * 1000 + 5000, intervalMs: 50, what: 'the leader Service to move without the operator' });
      expect(await jsonpath(['get', 'pod', old.name, '-n', NS], '.metadata.labels.hotstandby\\.dev/role')).not.toBe('leader');
      await startOperator();
      const spawned = Date.now();
      await waitFor(async () => (await fetch(`http://127.0.0.1:${operator!.port}/readyz`).catch(() => undefined))?.status === 200, { timeoutMs: 60_000, intervalMs: 100, what: 'the operator to be ready again' });
      const back = Date.now();
      await waitFor(async () => (await hscStatus('kv', '.status.leader.pod')) === next.name, { timeoutMs: 30_000, intervalMs: 100, what: 'status to catch up after the operator returns' });
      process.stderr.write(`status caught up ${Date.now() - back} ms after the operator was ready (${back - spawned} ms from start to ready)\n`);
    } finally {
      s.member(old.name)?.agent.killNow('SIGCONT');
    }
  }, 120_000);

  it('switchover by annotation under load: done, recorded in status and an Event, the annotation removed, nothing lost', async () => {
    const s = standIns[0]!;
    const old = await leaderOf(s);
    const target = s.members().find((m) => m.name !== old.name)!;
    const load = new WriteLoad({ members: () => s.members(), rate: 200 });
    load.start();
    await sleep(500);
    const asked = Date.now();
    await k(['annotate', 'hsc', 'kv', '-n', NS, `hotstandby.dev/switchover-to=${target.name}`]);
    await waitFor(async () => (await hscStatus('kv', '.status.switchover.result')) === 'Succeeded' && (await hscStatus('kv', '.status.switchover.target')) === target.name, {
      timeoutMs: 20_000,
      intervalMs: 100,
      what: 'status.switchover Succeeded',
    });
    process.stderr.write(`switchover by annotation ${old.name} -> ${target.name}: ${Date.now() - asked} ms (${await hscStatus('kv', '.status.switchover.message')})\n`);
    expect(await jsonpath(['get', 'hsc', 'kv', '-n', NS], '.metadata.annotations.hotstandby\\.dev/switchover-to')).toBe('');
    await waitFor(async () => (await leaderEndpoints('kv')).join(',') === target.name, { timeoutMs: 10_000, intervalMs: 100, what: 'the leader Service to follow the switchover' });
    await load.stop();
    const now = await leaderOf(s);
    expect(now.name).toBe(target.name);
    expect(await findLostWrites(now, load.ledger)).toEqual([]);
    // A bad target is refused with a reason, and nothing moves.
    await k(['annotate', 'hsc', 'kv', '-n', NS, 'hotstandby.dev/switchover-to=kv-9']);
    let last = '';
    await waitFor(async () => /kv-9 is not a member/.test((last = await hscStatus('kv', '.status.switchover'))), { timeoutMs: 10_000, intervalMs: 200, what: `the refusal in status (status.switchover: ${last})` });
    expect((await leaderOf(s)).name).toBe(target.name);
  }, 120_000);

  it('kubectl hotstandby status shows the cluster from Kubernetes', async () => {
    const { stdout } = await run(process.execPath, [BIN, 'status', 'kv', '-n', NS, '--kubeconfig', kube().kubeconfig], { timeout: 30_000 });
    expect(stdout).toMatch(/LEADER\s+kv-\d\s+epoch \d+/);
    expect(stdout).toMatch(/MEMBER\s+ROLE\s+APPLIED\s+LAG\s+READY/);
    const missing = await run(process.execPath, [BIN, 'status', 'nope', '-n', NS, '--kubeconfig', kube().kubeconfig], { timeout: 30_000 }).catch((e: { stderr: string; code: number }) => e);
    expect((missing as { code: number }).code).toBe(1);
    expect((missing as { stderr: string }).stderr).toMatch(/HotStandbyCluster apps\/nope not found/);
  }, 60_000);

  it('hotstandby switchover NAME --to any|POD asks the operator and reports how it ended', async () => {
    const s = standIns[0]!;
    const before = await leaderOf(s);
    const cli = (args: string[]) =>
      run(process.execPath, [BIN, 'switchover', 'kv', '-n', NS, '--kubeconfig', kube().kubeconfig, ...args], { timeout: 60_000 }).then(
        (r) => ({ code: 0, out: r.stdout, err: r.stderr }),
        (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, out: e.stdout, err: e.stderr }),
      );
    const ok = await cli(['--to', 'any']);
    expect(ok.code, ok.err).toBe(0);
    expect(ok.out).toMatch(/switchover complete: kv-\d leads \(epoch \d+\)/);
    expect((await leaderOf(s)).name).not.toBe(before.name);
    const bad = await cli(['--to', 'kv-9']);
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(/switchover failed: kv-9 is not a member of this cluster/);
  }, 120_000);

  it('rolling update of the master image under load: standbys one at a time, then a switchover, then the old leader; nothing lost', async () => {
    const s = standIns[0]!;
    const leader = await leaderOf(s);
    const uidsBefore = new Map(s.members().map((m) => [m.name, m.uid]));
    const replaced: string[] = [];
    const watcher = setInterval(() => {
      for (const m of s.members()) if (uidsBefore.get(m.name) !== m.uid && !replaced.includes(m.name)) replaced.push(m.name);
    }, 50);
    const load = new WriteLoad({ members: () => s.members(), rate: 200 });
    load.start();
    try {
      await k(['patch', 'hsc', 'kv', '-n', NS, '--type=merge', '-p', '{"spec":{"master":{"image":"hotstandby/kvmaster:2"}}}']);
      await waitFor(async () => replaced.length === 3 && (await hscStatus('kv', '.status.updatedReplicas')) === '3' && (await hscStatus('kv', '.status.ready')) === '3/3', {
        timeoutMs: 180_000,
        intervalMs: 500,
        what: `all three pods replaced (so far: ${replaced.join(', ')})`,
      });
    } finally {
      clearInterval(watcher);
      await load.stop();
    }
    // The old leader went last, after a switchover to an updated standby.
    expect(replaced[2]).toBe(leader.name);
    const now = await leaderOf(s);
    expect(now.name).not.toBe(leader.name);
    expect(load.stats.acked).toBeGreaterThan(100);
    expect(await findLostWrites(now, load.ledger)).toEqual([]);
  }, 240_000);

  it('scale-down that removes the leader\'s ordinal switches over first', async () => {
    const s = standIns[0]!;
    if ((await leaderOf(s)).name !== 'kv-2') {
      await k(['annotate', 'hsc', 'kv', '-n', NS, 'hotstandby.dev/switchover-to=kv-2', '--overwrite']);
      await waitFor(async () => (await leaderOf(s)).name === 'kv-2', { timeoutMs: 20_000, what: 'kv-2 to lead' });
    }
    await k(['scale', 'hsc', 'kv', '-n', NS, '--replicas=2']);
    await waitFor(async () => (await jsonpath(['get', 'statefulset', 'kv', '-n', NS], '.spec.replicas')) === '2', { timeoutMs: 60_000, intervalMs: 200, what: 'the StatefulSet to shrink to 2' });
    const after = await leaderOf(s);
    expect(['kv-0', 'kv-1']).toContain(after.name);
    await waitFor(async () => s.members().length === 2, { timeoutMs: 30_000, what: 'kv-2 to go' });
  }, 120_000);

  it('RBAC: an agent may patch its own cluster\'s pods and nothing in other namespaces, and cannot read Secrets', async () => {
    const as = `--as=system:serviceaccount:${NS}:kv-agent`;
    const can = async (args: string[]): Promise<boolean> => (await k(['auth', 'can-i', ...args, as]).catch((e: Error) => e.message)).trim().endsWith('yes');
    expect(await can(['patch', 'pods', '-n', NS])).toBe(true);
    expect(await can(['patch', 'pods', '-n', 'default'])).toBe(false);
    expect(await can(['get', 'secrets', '-n', NS])).toBe(false);
    expect(await can(['delete', 'pods', '-n', NS])).toBe(false);
  });

  it('external stores behind TLS (etcd with client certificates) and a password (redis-server): the operator and the agents use the Secrets', async () => {
    const pki = makeTestPki(path.join(workDir, 'pki'));
    const tlsEtcd = await startEtcd({ tls: { certFile: pki.serverCertFile, keyFile: pki.serverKeyFile, caFile: pki.caFile, clientCertAuth: true, clientCert: { certFile: pki.clientCertFile, keyFile: pki.clientKeyFile } } });
    const pwRedis = await startStreamServer({ password: 'e2e-s3cret' });
    try {
      await k(['create', 'secret', 'generic', 'etcd-tls', '-n', NS, `--from-file=ca.crt=${pki.caFile}`, `--from-file=tls.crt=${pki.clientCertFile}`, `--from-file=tls.key=${pki.clientKeyFile}`]);
      await k(['create', 'secret', 'generic', 'stream-password', '-n', NS, '--from-literal=password=e2e-s3cret']);
      const yaml = clusterYaml('sec').replace(etcd.endpoint, tlsEtcd.endpoint).replace(redis.url, pwRedis.url);
      const doc = parse(yaml) as { spec: { etcd: { external: Record<string, unknown> }; dragonfly: { external: Record<string, unknown> } } };
      doc.spec.etcd.external.tlsSecret = { name: 'etcd-tls' };
      doc.spec.dragonfly.external.passwordSecret = { name: 'stream-password' };
      await k(['apply', '-f', '-'], stringify(doc));
      const s = new PodStandIns({ kube: kube(), namespace: NS, cluster: 'sec', workDir: path.join(workDir, 'sec') }).start();
      standIns.push(s);
      await s.waitForPods(3, 120_000);
      expect(s.members()[0]!.agentEnv.HOTSTANDBY_REDIS_PASSWORD).toBe('e2e-s3cret');
      expect(s.members()[0]!.agentEnv.HOTSTANDBY_ETCD_CA_FILE).toMatch(/mounts/);
      const leader = await leaderOf(s);
      const put = await fetch(`http://${leader.kvAddress}/kv/tls-key`, { method: 'PUT', body: 'v1' });
      expect(put.status).toBe(200);
      await waitFor(async () => (await hscStatus('sec', '.status.leader.pod')) === leader.name && (await hscStatus('sec', '.status.conditions[?(@.type=="StoresReady")].status')) === 'True', {
        timeoutMs: 30_000,
        intervalMs: 250,
        what: 'the operator to read the TLS etcd and the password-protected stream server',
      });
      await waitFor(async () => (await leaderEndpoints('sec')).join(',') === leader.name, { timeoutMs: 20_000, intervalMs: 200, what: 'the leader Service of the TLS cluster' });
      await s.stop();
      await k(['delete', 'hsc', 'sec', '-n', NS]);
    } finally {
      await Promise.allSettled([tlsEtcd.stop(), pwRedis.stop()]);
    }
  }, 180_000);

  it('deletion cascades; deletionPolicy Delete also clears the cluster keys from the external stores', async () => {
    await k(['apply', '-f', '-'], clusterYaml('gone', { deletionPolicy: 'Delete' }));
    const s = new PodStandIns({ kube: kube(), namespace: NS, cluster: 'gone', workDir: path.join(workDir, 'gone') }).start();
    standIns.push(s);
    const members = await s.waitForPods(3, 120_000);
    await leaderOf(s);
    const client = new Etcd3({ hosts: etcd.endpoint });
    const r = new Redis(redis.url);
    try {
      const prefix = etcdKeys({ namespace: NS, name: 'gone' }).prefix;
      expect((await client.getAll().prefix(prefix).keys()).length).toBeGreaterThan(0);
      expect(await jsonpath(['get', 'hsc', 'gone', '-n', NS], '.metadata.finalizers[0]')).toBe('hotstandby.dev/cleanup');
      await k(['delete', 'hsc', 'gone', '-n', NS, '--wait=false']);
      await waitFor(async () => (await k(['get', 'hsc', 'gone', '-n', NS]).catch(() => '')) === '', { timeoutMs: 60_000, intervalMs: 500, what: 'the cluster to be deleted' });
      // The operator stopped the masters first (their pods are gone, which the
      // stand-in, like a kubelet, allows only once their processes exited), then
      // removed the data, then released the finalizer.
      expect(s.members()).toEqual([]);
      expect(members.map((m) => [m.name, m.agent.running, m.master.running])).toEqual(members.map((m) => [m.name, false, false]));
      await waitFor(async () => (await k(['get', 'statefulset', 'gone', '-n', NS]).catch(() => '')) === '', { timeoutMs: 60_000, intervalMs: 500, what: 'the StatefulSet to be gone' });
      expect(await client.getAll().prefix(prefix).keys()).toEqual([]);
      expect(await r.exists(streamKeys({ namespace: NS, name: 'gone' }).log)).toBe(0);
    } finally {
      client.close();
      r.disconnect();
    }
  }, 180_000);
});

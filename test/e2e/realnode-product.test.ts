// The product, end to end on a real node: `helm install` of the chart with no
// image override runs the operator; a HotStandbyCluster of reference masters
// (examples/kvmaster-real.yaml: the project's own image running `hotstandby
// kvmaster`) with managed etcd and managed Dragonfly reaches Running 3/3 in real
// pods; a client on the host writes through the leader Service's ClusterIP under
// load; the leader pod is force-deleted, then the leader's master process alone
// is killed, and each time writes resume through the same ClusterIP with no
// acknowledged write lost. The measured times go to stderr.
// Needs root (it is skipped elsewhere, saying why) and one real node per machine.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { binaryPaths } from '../../src/devcluster/binaries.ts';
import { startDevCluster, type DevCluster } from '../../src/devcluster/cluster.ts';
import { imageRefs, refString } from '../../src/devcluster/images.ts';
import { sleep, waitFor } from '../../src/lib/time.ts';
import { realNodeAvailability } from '../harness/realnode.ts';

const run = promisify(execFile);
const ROOT = path.resolve(import.meta.dirname, '../..');

const { unavailable, skip } = realNodeAvailability('real-node product e2e tests');

const NS = 'product';
const NAME = 'kv';
const PORT = 8080;

interface Ack {
  key: string;
  value: number;
  epoch: number;
  sentAt: number;
  ackAt: number;
}

/**
 * Writers on the host, each owning its keys and writing values that only grow,
 * through one address (the leader Service's ClusterIP). The ledger keeps the last
 * acknowledged value per key; a stored value below it is a lost write.
 */
class ClusterIpLoad {
  readonly ledger = new Map<string, number>();
  readonly acks: Ack[] = [];
  failed = 0;
  private readonly stopped = new AbortController();
  private running: Promise<void>[] = [];

  private readonly address: string;
  private readonly clients: number;
  private readonly intervalMs: number;

  constructor(address: string, clients = 4, intervalMs = 20) {
    this.address = address;
    this.clients = clients;
    this.intervalMs = intervalMs;
  }

  start(): void {
    for (let c = 0; c < this.clients; c++) this.running.push(this.client(c));
  }

  async stop(): Promise<void> {
    this.stopped.abort();
    await Promise.allSettled(this.running);
  }

  private async client(c: number): Promise<void> {
    const signal = this.stopped.signal;
    let counter = 0;
    while (!signal.aborted) {
      counter++;
      const key = `c${c}-k${counter % 50}`;
      const sentAt = Date.now();
      try {
        const res = await fetch(`http://${this.address}/kv/${key}`, {
          method: 'PUT',
          body: String(counter),
          signal: AbortSignal.any([signal, AbortSignal.timeout(2000)]),
        });
        const body = (await res.json().catch(() => ({}))) as { epoch?: number };
        if (res.status === 200) {
          this.ledger.set(key, counter);
          this.acks.push({ key, value: counter, epoch: body.epoch ?? -1, sentAt, ackAt: Date.now() });
        } else {
          this.failed++;
        }
      } catch {
        if (!signal.aborted) this.failed++;
      }
      await sleep(this.intervalMs, signal).catch(() => undefined);
    }
  }
}

describe.skipIf(skip)('the product on a real node: chart, operator, managed stores, kvmaster behind the leader Service', () => {
  let cluster: DevCluster | undefined;
  const c = (): DevCluster => {
    if (!cluster) throw new Error('the dev cluster did not start');
    return cluster;
  };
  const refs = imageRefs();
  const kubectl = (args: string[], opts?: { input?: string; timeoutMs?: number }): Promise<string> => c().kubectl(['-n', NS, ...args], opts);
  let clusterIp = '';

  const hscState = async (): Promise<string> =>
    (await kubectl(['get', 'hsc', NAME, '-o', 'jsonpath={.status.phase} {.status.ready}']).catch(() => '')).trim();
  const leaderPod = async (): Promise<string | undefined> =>
    (await kubectl(['get', 'pods', '-l', `hotstandby.dev/role=leader,hotstandby.dev/cluster=${NAME}`, '-o', 'jsonpath={.items[*].metadata.name}']).catch(() => ''))
      .trim()
      .split(/\s+/)
      .filter(Boolean)[0];
  /** What a person would look at when a step fails: pods with labels, the agents' and masters' last lines, the operator's. */
  const diagnostics = async (): Promise<string> => {
    const parts = [`pods:\n${await kubectl(['get', 'pods', '-o', 'wide', '--show-labels']).catch((e: Error) => e.message)}`];
    parts.push(`status: ${await kubectl(['get', 'hsc', NAME, '-o', 'jsonpath={.status}']).catch((e: Error) => e.message)}`);
    const pods = (await kubectl(['get', 'pods', '-l', `hotstandby.dev/cluster=${NAME},app.kubernetes.io/component=master`, '-o', 'jsonpath={.items[*].metadata.name}']).catch(() => ''))
      .trim()
      .split(/\s+/)
      .filter(Boolean);
    for (const pod of pods) {
      for (const container of ['agent', 'master']) {
        const logs = await kubectl(['logs', pod, '-c', container, '--tail=25']).catch((e: Error) => e.message);
        parts.push(`--- ${pod}/${container}:\n${logs.trim()}`);
      }
    }
    const operator = await c().kubectl(['-n', 'hs-system', 'logs', '-l', 'app.kubernetes.io/name=hotstandby-operator', '--tail=25']).catch((e: Error) => e.message);
    parts.push(`--- operator:\n${operator.trim()}`);
    return parts.join('\n');
  };
  /** The pod labelled leader; it may take a moment after a failover (the agent labels its pod before its master may write). */
  const waitLeaderPod = async (what: string): Promise<string> =>
    waitFor(leaderPod, { timeoutMs: 30_000, intervalMs: 250, what: `a pod labelled hotstandby.dev/role=leader (${what})` }).catch(async (err: Error) => {
      throw new Error(`${err.message}\n${await diagnostics()}`);
    });
  const waitRunning = async (what: string, timeoutMs: number): Promise<void> => {
    let last = '';
    await waitFor(
      async () => {
        last = await hscState();
        return last === 'Running 3/3';
      },
      { timeoutMs, intervalMs: 1000, what: `${what} (last seen: ${JSON.stringify(last)})` },
    ).catch(async (err: Error) => {
      const events = await kubectl(['get', 'events', '--sort-by=.lastTimestamp']).catch(() => '');
      throw new Error(`${err.message}\n${await diagnostics()}\nevents:\n${events.split('\n').slice(-40).join('\n')}`);
    });
  };
  /** Every ledger key read back through the ClusterIP: at least its last acknowledged value. */
  const lostWrites = async (load: ClusterIpLoad): Promise<string[]> => {
    const lost: string[] = [];
    for (const [key, acked] of load.ledger) {
      const stored = await waitFor(
        async () => {
          const res = await fetch(`http://${clusterIp}:${PORT}/kv/${key}`, { signal: AbortSignal.timeout(2000) }).catch(() => undefined);
          if (!res) return undefined;
          if (res.status === 404) return { value: undefined };
          if (res.status !== 200) return undefined;
          return { value: ((await res.json()) as { value: string }).value };
        },
        { timeoutMs: 20_000, intervalMs: 200, what: `GET /kv/${key} through ${clusterIp}` },
      );
      if (stored.value === undefined || Number(stored.value) < acked) lost.push(`${key}: acked ${acked}, stored ${String(stored.value)}`);
    }
    return lost;
  };
  const currentEpoch = async (): Promise<number> =>
    waitFor(
      async () => {
        const res = await fetch(`http://${clusterIp}:${PORT}/status`, { signal: AbortSignal.timeout(2000) }).catch(() => undefined);
        const s = res?.ok ? ((await res.json()) as { epoch?: number; writable?: boolean }) : undefined;
        return s?.writable && s.epoch ? s.epoch : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 250, what: 'a writable leader behind the ClusterIP' },
    );
  const say = (line: string): void => {
    process.stderr.write(`[product] ${line}\n`);
  };

  beforeAll(async () => {
    if (unavailable) throw new Error(`the real node cannot run here: ${unavailable}`);
    const started = Date.now();
    cluster = await startDevCluster({ realNode: true, progress: (l) => process.stderr.write(`[real node +${Math.round((Date.now() - started) / 1000)}s] ${l}\n`) });
    await c().kubectl(['create', 'namespace', NS]);
  }, 40 * 60_000);

  afterAll(async () => {
    await cluster?.stop();
  }, 180_000);

  it('helm install of the chart, with no image override, makes the operator Deployment Available in real pods', async () => {
    const chart = path.join(ROOT, 'charts/hotstandby-operator');
    await run(binaryPaths().helm, ['install', 'hs', chart, '--kubeconfig', c().kubeconfig, '--namespace', 'hs-system', '--create-namespace', '--wait', '--timeout', '150s'], { timeout: 170_000 });
    await c().kubectl(['-n', 'hs-system', 'wait', '--for=condition=Available', 'deployment', '-l', 'app.kubernetes.io/name=hotstandby-operator', '--timeout=60s'], { timeoutMs: 70_000 });
    const pods = await c().kubectl(['-n', 'hs-system', 'get', 'pods', '-o', 'jsonpath={range .items[*]}{.spec.containers[0].image} {.status.phase}{"\\n"}{end}']);
    const lines = pods.trim().split('\n');
    expect(lines.length).toBeGreaterThan(0);
    for (const l of lines) expect(l).toBe(`${refString(refs.operator)} Running`);
  }, 240_000);

  it('examples/kvmaster-real.yaml (kvmaster of the chart\'s image, managed etcd and Dragonfly) reaches Running 3/3 in real pods', async () => {
    const example = fs.readFileSync(path.join(ROOT, 'examples/kvmaster-real.yaml'), 'utf8');
    expect(example).toContain(`image: ${refString(refs.operator)}`);
    await kubectl(['apply', '-f', '-'], { input: example });
    await waitRunning('kubectl get hsc kv: Running 3/3', 300_000);
    const images = await kubectl(['get', 'pods', '-o', 'jsonpath={range .items[*]}{.metadata.name} {.status.phase} {.spec.containers[*].image}{"\\n"}{end}']);
    say(`pods:\n${images.trim()}`);
    expect(images).toMatch(new RegExp(`^${NAME}-etcd-0 Running ${refString(refs.etcd).replace(/[.]/g, '\\.')}`, 'm'));
    expect(images).toMatch(new RegExp(`^${NAME}-dragonfly-0 Running ${refString(refs.dragonfly).replace(/[.]/g, '\\.')}`, 'm'));
    clusterIp = (await kubectl(['get', 'service', NAME, '-o', 'jsonpath={.spec.clusterIP}'])).trim();
    expect(clusterIp).toMatch(/^10\.96\./);
    expect(await waitLeaderPod('after Running 3/3')).toMatch(new RegExp(`^${NAME}-\\d$`));
  }, 360_000);

  it('force-deleting the leader pod: writes through the same ClusterIP resume, no acknowledged write lost', async () => {
    expect(clusterIp).not.toBe('');
    const epochBefore = await currentEpoch();
    const leader = await waitLeaderPod('before the leader pod is deleted');
    const uidBefore = (await kubectl(['get', 'pod', leader, '-o', 'jsonpath={.metadata.uid}'])).trim();
    const load = new ClusterIpLoad(`${clusterIp}:${PORT}`);
    load.start();
    try {
      await waitFor(() => load.acks.length >= 50, { timeoutMs: 30_000, intervalMs: 100, what: '50 acknowledged writes before the kill' });
      const killAt = Date.now();
      await kubectl(['delete', 'pod', leader, '--grace-period=0', '--force', '--wait=false']);
      const resumed = await waitFor(() => load.acks.find((a) => a.epoch > epochBefore), {
        timeoutMs: 60_000,
        intervalMs: 50,
        what: `a write acknowledged through ${clusterIp} by a new leader (epoch > ${epochBefore})`,
      }).catch(async (err: Error) => {
        throw new Error(`${err.message}\n${await diagnostics()}`);
      });
      const firstAfter = load.acks.find((a) => a.sentAt >= killAt);
      say(
        `leader pod ${leader} force-deleted: first write acknowledged by the new leader (epoch ${resumed.epoch}) ${resumed.ackAt - killAt} ms after the delete; ` +
          `first acknowledged write sent after the delete: ${firstAfter ? `${firstAfter.ackAt - killAt} ms (epoch ${firstAfter.epoch})` : 'none'}`,
      );
      await waitFor(() => load.acks.filter((a) => a.epoch > epochBefore).length >= 50, { timeoutMs: 30_000, intervalMs: 100, what: '50 writes acknowledged by the new leader' });
    } finally {
      await load.stop();
    }
    say(`load: ${load.acks.length} acknowledged, ${load.failed} refused or failed, ${load.ledger.size} keys`);
    expect(await lostWrites(load)).toEqual([]);
    const newLeader = await leaderPod();
    say(`new leader: ${newLeader}`);
    // The StatefulSet makes the deleted pod again; it rejoins as a standby.
    await waitFor(async () => (await kubectl(['get', 'pod', leader, '-o', 'jsonpath={.metadata.uid}']).catch(() => '')).trim() !== uidBefore, {
      timeoutMs: 60_000,
      intervalMs: 500,
      what: `pod ${leader} made again`,
    });
    await kubectl(['wait', '--for=condition=Ready', `pod/${leader}`, '--timeout=120s'], { timeoutMs: 130_000 });
    await waitRunning('Running 3/3 again after the leader pod was deleted', 180_000);
  }, 360_000);

  it("killing only the leader's master process (SIGKILL from the host): writes through the same ClusterIP resume, no acknowledged write lost", async () => {
    expect(clusterIp).not.toBe('');
    const leader = await waitLeaderPod('before the master process is killed');
    const pid = kvmasterPid(leader);
    const restarts = async (): Promise<number> =>
      Number((await kubectl(['get', 'pod', leader, '-o', 'jsonpath={.status.containerStatuses[?(@.name=="master")].restartCount}'])).trim());
    const restartsBefore = await restarts();
    const epochBefore = await currentEpoch();
    const load = new ClusterIpLoad(`${clusterIp}:${PORT}`);
    load.start();
    try {
      await waitFor(() => load.acks.length >= 50, { timeoutMs: 30_000, intervalMs: 100, what: '50 acknowledged writes before the kill' });
      const killAt = Date.now();
      process.kill(pid, 'SIGKILL');
      const resumed = await waitFor(() => load.acks.find((a) => a.sentAt > killAt), {
        timeoutMs: 60_000,
        intervalMs: 50,
        what: `a write sent after the kill acknowledged through ${clusterIp}`,
      }).catch(async (err: Error) => {
        throw new Error(`${err.message}\n${await diagnostics()}`);
      });
      say(
        `master process ${pid} of ${leader} killed: first write sent after it acknowledged ${resumed.ackAt - killAt} ms after the kill (epoch ${epochBefore} → ${resumed.epoch}, ` +
          `leader now ${await leaderPod()})`,
      );
      await waitFor(() => load.acks.filter((a) => a.sentAt > killAt).length >= 50, { timeoutMs: 30_000, intervalMs: 100, what: '50 writes acknowledged after the kill' });
    } finally {
      await load.stop();
    }
    say(`load: ${load.acks.length} acknowledged, ${load.failed} refused or failed, ${load.ledger.size} keys`);
    expect(await lostWrites(load)).toEqual([]);
    // The kubelet restarts the master container; the pod rejoins as a standby.
    await waitFor(async () => (await restarts()) > restartsBefore, { timeoutMs: 60_000, intervalMs: 500, what: `the master container of ${leader} restarted` });
    await kubectl(['wait', '--for=condition=Ready', `pod/${leader}`, '--timeout=120s'], { timeoutMs: 130_000 });
    await waitRunning('Running 3/3 again after the master process was killed', 180_000);
  }, 360_000);
});

/** The host pid of the kvmaster process in pod `pod` (its HOSTNAME is the pod's name). */
function kvmasterPid(pod: string): number {
  const found: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (!cmdline.includes('kvmaster')) continue;
      const env = fs.readFileSync(`/proc/${entry}/environ`, 'utf8').split('\0');
      if (env.includes(`HOSTNAME=${pod}`)) found.push(Number(entry));
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  if (found.length !== 1) throw new Error(`expected one kvmaster process of pod ${pod} on this host, found ${found.length}`);
  return found[0]!;
}

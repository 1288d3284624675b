// The managed etcd's command line, run for real: the args the builder writes
// for a 3-member StatefulSet start three etcd processes that form one cluster
// from --initial-cluster, and the probe endpoints the pod spec names answer.
// Only the DNS names become loopback addresses (one port set per member),
// as the kubelet's $(POD_NAME) expansion and the cluster DNS would resolve them.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Etcd3 } from 'etcd3';
import type { V1StatefulSet } from '@kubernetes/client-node';
import { binaryPaths } from '../../src/devcluster/binaries.ts';
import { ManagedProcess } from '../../src/lib/childproc.ts';
import { freePort } from '../../src/lib/ports.ts';
import { waitFor } from '../../src/lib/time.ts';
import { desiredChildren } from '../../src/operator/builders/index.ts';

// The probes need etcd 3.6+ (/livez, /readyz); Debian's etcd is 3.4, so this
// uses the etcd the test control plane builds.
const ETCD = binaryPaths().etcd;
const haveEtcd = fs.existsSync(ETCD);
if (!haveEtcd) process.stderr.write(`builders-etcd: skipped, ${ETCD} is not built (bash scripts/build-control-plane.sh)\n`);

const MEMBERS = 3;
const hsc = {
  apiVersion: 'hotstandby.dev/v1alpha1' as const,
  kind: 'HotStandbyCluster' as const,
  metadata: { name: 'c1', namespace: 'shop', uid: 'u1' },
  spec: { master: { image: 'm' }, etcd: { managed: { replicas: MEMBERS as 1 | 3 | 5 } } },
};

describe.skipIf(!haveEtcd)('managed etcd args with a real etcd', () => {
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hs-builders-etcd-'));
  const procs: ManagedProcess[] = [];
  afterAll(async () => {
    await Promise.all(procs.map((p) => p.stop()));
    if (!process.env.HOTSTANDBY_KEEP_TEST_DIRS) fs.rmSync(workDir, { recursive: true, force: true });
  });

  it('three members bootstrap one cluster from the generated --initial-cluster; /readyz and /livez answer on the metrics port', async () => {
    const sts = desiredChildren(hsc, { agentImage: 'a', agentClusterRole: 'r' }).find((o) => o.kind === 'StatefulSet' && o.metadata!.name === 'c1-etcd') as V1StatefulSet;
    const container = sts.spec!.template.spec!.containers[0]!;
    const ports = await Promise.all(Array.from({ length: MEMBERS }, async () => ({ client: await freePort(), peer: await freePort(), metrics: await freePort() })));

    const argsFor = (i: number): string[] => {
      let line = container.args!.map((a) => a.replaceAll('$(POD_NAME)', `c1-etcd-${i}`));
      ports.forEach((p, j) => {
        const host = `c1-etcd-${j}.c1-etcd-peer.shop.svc`;
        line = line.map((a) => a.replaceAll(`${host}:2380`, `127.0.0.1:${p.peer}`).replaceAll(`${host}:2379`, `127.0.0.1:${p.client}`));
      });
      const own = ports[i]!;
      return line.map((a) =>
        a
          .replace('0.0.0.0:2379', `127.0.0.1:${own.client}`)
          .replace('0.0.0.0:2380', `127.0.0.1:${own.peer}`)
          .replace('0.0.0.0:2381', `127.0.0.1:${own.metrics}`)
          .replace('--data-dir=/var/lib/etcd/data', `--data-dir=${path.join(workDir, `member-${i}`)}`),
      );
    };
    // Every DNS name was mapped: nothing cluster-internal is left on the command lines.
    for (let i = 0; i < MEMBERS; i++) expect(argsFor(i).join(' ')).not.toMatch(/svc|0\.0\.0\.0|POD_NAME/);

    for (let i = 0; i < MEMBERS; i++) {
      procs.push(new ManagedProcess({ name: `etcd-${i}`, command: ETCD, args: argsFor(i), logFile: path.join(workDir, `etcd-${i}.log`) }));
    }

    const probe = async (port: number, probePath: string): Promise<number> => (await fetch(`http://127.0.0.1:${port}${probePath}`, { signal: AbortSignal.timeout(2000) })).status;
    const readyPath = container.readinessProbe!.httpGet!.path!;
    const livePath = container.livenessProbe!.httpGet!.path!;
    expect(container.readinessProbe!.httpGet!.port).toBe(2381);
    for (const p of ports) {
      await waitFor(async () => (await probe(p.metrics, readyPath)) === 200, { timeoutMs: 30_000, intervalMs: 200, what: `etcd ${readyPath} on ${p.metrics} (logs in ${workDir})` });
      expect(await probe(p.metrics, livePath)).toBe(200);
    }

    const client = new Etcd3({ hosts: ports.map((p) => `http://127.0.0.1:${p.client}`) });
    try {
      const members = await client.cluster.memberList({});
      expect(members.members.map((m) => m.name).sort()).toEqual(['c1-etcd-0', 'c1-etcd-1', 'c1-etcd-2']);
      await client.put('/hotstandby/shop/c1/probe').value('ok');
      expect(await client.get('/hotstandby/shop/c1/probe').string()).toBe('ok');
    } finally {
      client.close();
    }
  }, 60_000);
});

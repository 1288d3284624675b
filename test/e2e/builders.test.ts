// The builders' output against a real kube-apiserver: for every example, the
// cluster is created, read back (defaults and uid from the server), its
// children built and server-side applied under the operator's field manager;
// the server accepts every object, a second apply would change nothing (so the
// operator's re-applies cause no churn), the StatefulSets' pods are created
// with the sidecar, and deleting the cluster garbage-collects every child.
import fs from 'node:fs';
import path from 'node:path';
import { parse } from 'yaml';
import { beforeAll, expect, it } from 'vitest';
import type { KubernetesObject } from '@kubernetes/client-node';
import type { HotStandbyCluster } from '../../src/api/v1alpha1.ts';
import { FIELD_MANAGER } from '../../src/lib/labels.ts';
import { waitFor } from '../../src/lib/time.ts';
import { desiredChildren } from '../../src/operator/builders/index.ts';
import { describeE2E, useDevCluster } from '../harness/kube.ts';

const ROOT = path.resolve(import.meta.dirname, '../..');
const NS = 'builders';
const CTX = { agentImage: 'ghcr.io/hotstandby-dev/hotstandby-operator:0.1.0', agentClusterRole: 'hotstandby-agent', operatorVersion: '0.1.0' };
const KINDS = 'serviceaccounts,rolebindings,services,statefulsets,poddisruptionbudgets';

// JSON, not YAML: kubectl reads YAML 1.1, where an env value such as `on` would be a boolean.
const asList = (objs: KubernetesObject[]): string => JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objs });

describeE2E('builders against a real API server', () => {
  const cluster = useDevCluster({ nodes: 1 });

  beforeAll(async () => {
    const c = cluster();
    await c.kubectl(['apply', '--server-side', '-f', path.join(ROOT, 'crds')]);
    await c.kubectl(['wait', '--for=condition=Established', 'crd/hotstandbyclusters.hotstandby.dev', '--timeout=60s']);
    await c.kubectl(['create', 'namespace', NS]);
  }, 120_000);

  const files = fs.readdirSync(path.join(ROOT, 'examples')).filter((f) => f.endsWith('.yaml'));
  for (const file of files) {
    it(`${file}: every child is accepted, re-applying changes nothing, pods get the sidecar, deletion collects every child`, async () => {
      const c = cluster();
      await c.kubectl(['apply', '-n', NS, '-f', path.join(ROOT, 'examples', file)]);
      const name = (parse(fs.readFileSync(path.join(ROOT, 'examples', file), 'utf8')) as HotStandbyCluster).metadata.name;
      const hsc = JSON.parse(await c.kubectl(['get', 'hsc', name, '-n', NS, '-o', 'json'])) as HotStandbyCluster;
      const children = desiredChildren(hsc, CTX);
      const manifest = asList(children);

      await c.kubectl(['apply', '--server-side', `--field-manager=${FIELD_MANAGER}`, '-f', '-'], { input: manifest });
      // kubectl diff exits 1 (and prints the difference) when an apply would change anything.
      const diff = await c.kubectl(['diff', '--server-side', `--field-manager=${FIELD_MANAGER}`, '-f', '-'], { input: manifest }).then(
        () => '',
        (e: Error) => String((e.cause as { stdout?: string } | undefined)?.stdout ?? e.message),
      );
      expect(diff, 'a second apply of the same children would change them').toBe('');

      const listed = (await c.kubectl(['get', KINDS, '-n', NS, '-l', `hotstandby.dev/cluster=${name}`, '-o', 'jsonpath={range .items[*]}{.kind}/{.metadata.name} {.metadata.ownerReferences[0].uid}{"\\n"}{end}']))
        .trim()
        .split('\n')
        .sort();
      expect(listed).toEqual(children.map((o) => `${o.kind}/${o.metadata!.name} ${hsc.metadata.uid as string}`).sort());

      // The StatefulSet controller makes the master pods with the agent as a sidecar.
      const replicas = hsc.spec.replicas ?? 3;
      await waitFor(
        async () => (await c.kubectl(['get', 'pods', '-n', NS, '-l', `hotstandby.dev/cluster=${name},app.kubernetes.io/component=master`, '-o', 'name'])).trim().split('\n').filter(Boolean).length === replicas,
        { timeoutMs: 60_000, intervalMs: 500, what: `${replicas} master pods of ${name}` },
      );
      const pod = JSON.parse(await c.kubectl(['get', 'pod', `${name}-0`, '-n', NS, '-o', 'json'])) as {
        metadata: { annotations: Record<string, string> };
        spec: { initContainers: Array<{ name: string; restartPolicy?: string }> };
      };
      expect(pod.spec.initContainers.map((x) => [x.name, x.restartPolicy])).toEqual([['agent', 'Always']]);
      const stsHash = await c.kubectl(['get', 'statefulset', name, '-n', NS, '-o', 'jsonpath={.spec.template.metadata.annotations.hotstandby\\.dev/template-hash}']);
      expect(pod.metadata.annotations['hotstandby.dev/template-hash']).toBe(stsHash);

      await c.kubectl(['delete', 'hsc', name, '-n', NS, '--wait=true']);
      await waitFor(async () => (await c.kubectl(['get', KINDS, '-n', NS, '-l', `hotstandby.dev/cluster=${name}`, '-o', 'name'])).trim() === '', {
        timeoutMs: 90_000,
        intervalMs: 1000,
        what: `the children of ${name} garbage-collected`,
      });
    });
  }
});

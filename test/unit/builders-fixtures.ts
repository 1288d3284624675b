// Shared by the builders' tests: the examples as the API server would hand
// them to the operator (namespace and uid set), and a builder context.
import fs from 'node:fs';
import path from 'node:path';
import { parse } from 'yaml';
import type { KubernetesObject } from '@kubernetes/client-node';
import type { HotStandbyCluster } from '../../src/api/v1alpha1.ts';
import type { BuildContext } from '../../src/operator/builders/index.ts';

const EXAMPLES = path.resolve(import.meta.dirname, '../../examples');

export const NS = 'shop';
export const UID = '3f1c2a6e-0000-4000-8000-00000000abcd';
export const CTX: BuildContext = { agentImage: 'ghcr.io/hotstandby-dev/hotstandby-operator:0.1.0', agentClusterRole: 'hotstandby-agent' };

export const exampleFiles = (): string[] => fs.readdirSync(EXAMPLES).filter((f) => f.endsWith('.yaml')).sort();

export function example(file: string): HotStandbyCluster {
  const hsc = parse(fs.readFileSync(path.join(EXAMPLES, file), 'utf8')) as HotStandbyCluster;
  hsc.metadata = { ...hsc.metadata, namespace: NS, uid: UID };
  return hsc;
}

/** A cluster from a literal spec (no defaults applied: the builders apply them). */
export function cluster(name: string, spec: Record<string, unknown>): HotStandbyCluster {
  return { apiVersion: 'hotstandby.dev/v1alpha1', kind: 'HotStandbyCluster', metadata: { name, namespace: NS, uid: UID }, spec: spec as HotStandbyCluster['spec'] };
}

export function find<T extends KubernetesObject>(objects: KubernetesObject[], kind: string, name: string): T {
  const found = objects.filter((o) => o.kind === kind && o.metadata?.name === name);
  if (found.length !== 1) throw new Error(`expected one ${kind} ${name}, found ${found.length} among ${objects.map((o) => `${o.kind}/${o.metadata?.name}`).join(', ')}`);
  return found[0] as T;
}

export function labelsFor(cluster: string, component: string): Record<string, string> {
  return {
    'app.kubernetes.io/name': 'hotstandby',
    'app.kubernetes.io/instance': cluster,
    'app.kubernetes.io/component': component,
    'app.kubernetes.io/managed-by': 'hotstandby-operator',
    'hotstandby.dev/cluster': cluster,
  };
}

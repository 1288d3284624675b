// `hotstandby status|switchover <cluster>` against a Kubernetes cluster: the
// HotStandbyCluster is found by name (kubeconfig, context and namespace as
// kubectl takes them) and read or annotated; the operator does the rest.
// Loaded only in that mode, so the store-only commands never load client-node.
import { CustomObjectsApi, KubeConfig, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { GROUP, PLURAL, VERSION, type HotStandbyCluster } from '../api/v1alpha1.ts';
import { SWITCHOVER_ANNOTATION } from '../lib/labels.ts';
import { withTimeout } from '../lib/time.ts';
import { UsageError } from './command.ts';
import { formatAge, formatTable } from './commands/status.ts';

const API_TIMEOUT_MS = 10_000;

export interface KubeTarget {
  name: string;
  namespace?: string;
  kubeconfig?: string;
  context?: string;
}

export interface KubeClusterClient {
  namespace: string;
  get(): Promise<HotStandbyCluster>;
  annotate(annotations: Record<string, string | null>): Promise<void>;
}

export function openKubeCluster(target: KubeTarget): KubeClusterClient {
  const kc = new KubeConfig();
  try {
    if (target.kubeconfig) kc.loadFromFile(target.kubeconfig);
    else kc.loadFromDefault();
  } catch (err) {
    throw new UsageError(`cannot load the kubeconfig${target.kubeconfig ? ` ${target.kubeconfig} (--kubeconfig)` : ''}: ${(err as Error).message}`);
  }
  if (target.context) {
    if (!kc.getContexts().some((c) => c.name === target.context)) {
      throw new UsageError(`--context ${target.context} is not in the kubeconfig; it has: ${kc.getContexts().map((c) => c.name).join(', ') || 'no contexts'}`);
    }
    kc.setCurrentContext(target.context);
  }
  const namespace = target.namespace ?? kc.getContextObject(kc.getCurrentContext())?.namespace ?? 'default';
  const api = kc.makeApiClient(CustomObjectsApi);
  const ref = { group: GROUP, version: VERSION, plural: PLURAL, namespace, name: target.name };
  return {
    namespace,
    get: async () => (await withTimeout(api.getNamespacedCustomObject(ref), API_TIMEOUT_MS, `the API server to return HotStandbyCluster ${namespace}/${target.name}`)) as HotStandbyCluster,
    annotate: async (annotations) => {
      await withTimeout(
        api.patchNamespacedCustomObject({ ...ref, body: { metadata: { annotations } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch)),
        API_TIMEOUT_MS,
        `the API server to annotate ${namespace}/${target.name}`,
      );
    },
  };
}

/** Why a Kubernetes call failed, in a line a person can act on. */
export function describeKubeError(err: unknown, target: { name: string; namespace: string }): string {
  const code = (err as { code?: number }).code;
  if (code === 404) return `HotStandbyCluster ${target.namespace}/${target.name} not found; list them with kubectl get hsc -n ${target.namespace}`;
  if (code === 403) return `not allowed to read HotStandbyCluster ${target.namespace}/${target.name} (${(err as Error).message.split('\n')[0]}); check your kubeconfig's user and RBAC`;
  return `cannot reach the Kubernetes API: ${(err as Error).message.split('\n')[0]}`;
}

/** The operator's view of a cluster (its status) as a person reads it. */
export function renderHscStatus(hsc: HotStandbyCluster, now = Date.now()): string {
  const s = hsc.status ?? {};
  const age = (iso: string | undefined): string => (iso ? formatAge(now - Date.parse(iso)) : '?');
  const summary: Array<[string, string]> = [
    ['CLUSTER', `${hsc.metadata.namespace}/${hsc.metadata.name}  phase ${s.phase ?? 'unknown'}  ready ${s.ready ?? '?'}`],
    ['LEADER', s.leader?.pod ? `${s.leader.pod}  epoch ${s.leader.epoch ?? '?'}  since ${s.leader.since ?? '?'} (${age(s.leader.since)} ago)` : 'none reported'],
    ['LOG', s.oplog?.headSeq !== undefined ? `head ${s.oplog.headSeq}  max standby lag ${s.maxLag ?? 0}` : 'unknown'],
    ['SNAPSHOT', s.snapshot?.lastSeq !== undefined ? `seq ${s.snapshot.lastSeq}  age ${age(s.snapshot.lastTime)}` : (s.snapshot?.state ?? 'unknown')],
    [
      'FAILOVERS',
      `${s.failoverCount ?? 0}` +
        (s.lastFailover ? `  last: ${s.lastFailover.from ?? '?'} -> ${s.lastFailover.to ?? '?'} ${age(s.lastFailover.time)} ago` + (s.lastFailover.durationMs !== undefined ? ` in ${s.lastFailover.durationMs} ms` : '') : ''),
    ],
  ];
  const width = Math.max(...summary.map(([k]) => k.length));
  const lines = summary.map(([k, v]) => `${k.padEnd(width)}  ${v}`);
  lines.push('');
  const members = s.members ?? [];
  if (members.length === 0) lines.push('No members reported yet.');
  else {
    lines.push(
      formatTable(
        [' ', 'MEMBER', 'ROLE', 'APPLIED', 'LAG', 'READY'],
        members.map((m) => [m.pod === s.leader?.pod ? '*' : ' ', m.pod, m.role ?? '?', String(m.appliedSeq ?? '?'), String(m.lag ?? '?'), m.ready ? 'yes' : 'no']),
      ),
    );
    lines.push('(* = leader)');
  }
  const conditions = s.conditions ?? [];
  if (conditions.length) {
    lines.push('');
    lines.push(formatTable(['CONDITION', 'STATUS', 'REASON', 'MESSAGE'], conditions.map((c) => [c.type, c.status, c.reason, c.message])));
  }
  const pending = hsc.metadata.annotations as Record<string, string> | undefined;
  if (pending?.[SWITCHOVER_ANNOTATION]) lines.push(`\nswitchover to ${pending[SWITCHOVER_ANNOTATION]} requested; the operator has not picked it up yet`);
  return lines.join('\n');
}

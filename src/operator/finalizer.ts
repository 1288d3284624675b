// spec.deletionPolicy: what deleting a HotStandbyCluster removes outside
// Kubernetes' own cascade.
// - Retain (default): no finalizer; deleting the cluster deletes its children
//   through ownerReferences and touches nothing else (the data in external
//   stores and the managed stores' volumes stay).
// - Delete: the cluster carries the finalizer hotstandby.dev/cleanup; on
//   deletion the cleanup runs (etcd prefix, stream keys, managed stores'
//   PVCs), and only when it succeeded is the finalizer removed, so the
//   cluster disappears. A failing cleanup keeps the cluster in Terminating
//   and is retried; removing the finalizer by hand skips it.
// Switching Delete back to Retain removes the finalizer.
import type { Logger } from '../lib/log.ts';
import { isConflict, type KubeClient, type KubeObject } from './kube/client.ts';

export const CLEANUP_FINALIZER = 'hotstandby.dev/cleanup';

export type DeletionPolicy = 'Retain' | 'Delete';

/** The cluster's spec.deletionPolicy; Retain when unset. */
export function deletionPolicyOf(obj: object): DeletionPolicy {
  const p = ((obj as { spec?: unknown }).spec as { deletionPolicy?: unknown } | undefined)?.deletionPolicy;
  return p === 'Delete' ? 'Delete' : 'Retain';
}

export type FinalizerState =
  /** The object lives: reconcile it. */
  | 'active'
  /** The object is being deleted (cleanup done or not needed): reconcile nothing more. */
  | 'deleting';

export interface FinalizerOptions {
  client: KubeClient;
  /** The object as the cache has it. */
  obj: KubeObject;
  policy: DeletionPolicy;
  /** Removes the data outside Kubernetes; throws when it could not (the finalizer stays). */
  cleanup: () => Promise<void>;
  log: Logger;
  finalizer?: string;
}

export async function handleFinalizer(opts: FinalizerOptions): Promise<FinalizerState> {
  const finalizer = opts.finalizer ?? CLEANUP_FINALIZER;
  const current = opts.obj.metadata.finalizers ?? [];
  const has = current.includes(finalizer);
  const id = `${opts.obj.metadata.namespace}/${opts.obj.metadata.name}`;
  if (opts.obj.metadata.deletionTimestamp) {
    if (!has) return 'deleting';
    if (opts.policy === 'Delete') {
      opts.log.info({ object: id }, 'deletionPolicy Delete: removing the cluster data before the cluster goes');
      await opts.cleanup();
      opts.log.info({ object: id }, 'cluster data removed');
    }
    await setFinalizers(opts.client, opts.obj, current.filter((f) => f !== finalizer));
    return 'deleting';
  }
  const want = opts.policy === 'Delete';
  if (want && !has) await setFinalizers(opts.client, opts.obj, [...current, finalizer]);
  if (!want && has) await setFinalizers(opts.client, opts.obj, current.filter((f) => f !== finalizer));
  return 'active';
}

/**
 * Replaces metadata.finalizers with a JSON patch that first tests the list it
 * was computed from, so a finalizer another controller added meanwhile is
 * never lost (the test fails, the reconcile is retried on fresh data).
 */
async function setFinalizers(client: KubeClient, obj: KubeObject, next: string[]): Promise<void> {
  const current = obj.metadata.finalizers;
  const ops = current
    ? [
        { op: 'test', path: '/metadata/finalizers', value: current },
        { op: 'replace', path: '/metadata/finalizers', value: next },
      ]
    : [
        { op: 'test', path: '/metadata/resourceVersion', value: obj.metadata.resourceVersion },
        { op: 'add', path: '/metadata/finalizers', value: next },
      ];
  try {
    await client.request('PATCH', await client.objectPath(obj), { body: ops, contentType: 'application/json-patch+json' });
  } catch (err) {
    if (isConflict(err)) throw new Error(`the finalizers of ${obj.kind} ${obj.metadata.namespace}/${obj.metadata.name} changed meanwhile; retrying on fresh data`, { cause: err });
    throw err;
  }
}

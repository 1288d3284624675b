// Deletes a cluster's children that it no longer wants (PDB disabled, a
// Service whose ports were removed, replicas of a store scaled to none...).
// Only objects whose controller ownerReference is this very cluster (uid) are
// candidates, so a same-named object someone else made is never touched, and
// the delete carries a uid precondition, so an object recreated meanwhile is
// never deleted by mistake.
import { describeObject, isNotFound, type KubeClient, type KubeObject } from './client.ts';

export interface PruneOptions {
  client: KubeClient;
  owner: { metadata: { uid?: unknown } };
  /** Every object of the owned kinds in the cluster's namespace (one namespace) that may be a child (from the informer caches). */
  candidates: KubeObject[];
  /** What the cluster wants now. */
  desired: Array<{ apiVersion: string; kind: string; metadata: { name: string; namespace?: string } }>;
  onDelete?: (obj: KubeObject) => void;
}

/** Returns the children it deleted. */
export async function pruneChildren(opts: PruneOptions): Promise<KubeObject[]> {
  const ownerUid = String(opts.owner.metadata.uid ?? '');
  if (!ownerUid) throw new Error('prune needs the owner uid');
  const wanted = new Set(opts.desired.map(identity));
  const deleted: KubeObject[] = [];
  for (const obj of opts.candidates) {
    if (wanted.has(identity(obj))) continue;
    if (!isControlledBy(obj, ownerUid)) continue;
    if (obj.metadata.deletionTimestamp) continue;
    try {
      await opts.client.request('DELETE', await opts.client.objectPath(obj), {
        body: { apiVersion: 'v1', kind: 'DeleteOptions', propagationPolicy: 'Background', preconditions: { uid: obj.metadata.uid } },
      });
      deleted.push(obj);
      opts.onDelete?.(obj);
    } catch (err) {
      if (isNotFound(err)) continue;
      throw new Error(`pruning ${describeObject(obj)}: ${(err as Error).message}`, { cause: err });
    }
  }
  return deleted;
}

export function isControlledBy(obj: KubeObject, ownerUid: string): boolean {
  return (obj.metadata.ownerReferences ?? []).some((r) => r.controller === true && r.uid === ownerUid);
}

function identity(o: { apiVersion: string; kind: string; metadata: { name: string } }): string {
  // The group, not the version: apps/v1 and apps/v1beta2 name the same object.
  // No namespace: every candidate is in the cluster's, and a desired object may leave it unset.
  const group = o.apiVersion.includes('/') ? o.apiVersion.split('/')[0] : '';
  return `${group}|${o.kind}|${o.metadata.name}`;
}

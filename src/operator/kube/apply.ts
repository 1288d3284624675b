// Server-side apply of one child, writing only when something would change.
//
// Each child is applied with PatchStrategy.ServerSideApply under one field
// manager (FIELD_MANAGER) with force, so the operator owns exactly the fields
// it sets, takes them back from anyone who changed them, and leaves fields set
// by others (an HPA, a user's annotation) alone.
//
// "Nothing to change writes nothing", decided from the informer cache:
// - We remember per object (uid) the hash of the desired object we last
//   applied and our manager's managedFields entry as the server returned it.
//   Same desired hash and the same entry on the live object: skip. A hand edit
//   of one of our fields moves that field to the editor's manager, which
//   changes our entry, so the next reconcile applies and reverts the edit.
// - With no memory (a restart, another replica applied) a dry run
//   (dryRun=All: the server computes the result, stores nothing) is compared
//   with the live object, managedFields, resourceVersion, generation and status
//   aside; only a difference is applied.
import { createHash } from 'node:crypto';
import { PatchStrategy } from '@kubernetes/client-node';
import { FIELD_MANAGER } from '../../lib/labels.ts';
import { describeObject, type KubeClient, type KubeObject, type ManagedFieldsEntry } from './client.ts';

export type ApplyOutcome = 'created' | 'updated' | 'unchanged';

export interface ApplyResult {
  outcome: ApplyOutcome;
  /** The object as the server has it after this call (the live one when unchanged). */
  object: KubeObject;
  /** How "unchanged" was decided, for logs and tests. */
  decidedBy?: 'memory' | 'dry-run';
}

export interface ApplierOptions {
  client: KubeClient;
  /** The live object from the informer cache, or undefined when there is none. */
  live: (desired: KubeObject) => KubeObject | undefined;
  /** Called for every request that may write (not for dry runs). */
  onWrite?: (kind: string) => void;
  fieldManager?: string;
}

interface Memory {
  hash: string;
  fields: string;
}

export class Applier {
  private readonly o: ApplierOptions & { fieldManager: string };
  private readonly memory = new Map<string, Memory>();

  constructor(opts: ApplierOptions) {
    this.o = { fieldManager: FIELD_MANAGER, ...opts };
  }

  async apply(desired: KubeObject): Promise<ApplyResult> {
    const hash = hashOf(desired);
    const live = this.o.live(desired);
    if (live) {
      const uid = live.metadata.uid ?? '';
      const ours = ownEntry(live, this.o.fieldManager);
      const mem = this.memory.get(uid);
      if (mem && mem.hash === hash && ours === mem.fields) return { outcome: 'unchanged', object: live, decidedBy: 'memory' };
      const dry = await this.patch(desired, true);
      if (comparable(dry) === comparable(live)) {
        this.memory.set(uid, { hash, fields: ours });
        return { outcome: 'unchanged', object: live, decidedBy: 'dry-run' };
      }
    }
    const applied = await this.patch(desired, false);
    if (applied.metadata.uid) this.memory.set(applied.metadata.uid, { hash, fields: ownEntry(applied, this.o.fieldManager) });
    const outcome: ApplyOutcome = live && live.metadata.uid === applied.metadata.uid ? 'updated' : 'created';
    return { outcome, object: applied };
  }

  /** Forgets what was applied to an object (it was deleted). */
  forget(uid: string): void {
    this.memory.delete(uid);
  }

  private async patch(desired: KubeObject, dryRun: boolean): Promise<KubeObject> {
    if (!dryRun) this.o.onWrite?.(desired.kind);
    try {
      return await this.o.client.request<KubeObject>('PATCH', await this.o.client.objectPath(desired), {
        query: { fieldManager: this.o.fieldManager, force: 'true', ...(dryRun ? { dryRun: 'All' } : {}) },
        body: desired,
        contentType: PatchStrategy.ServerSideApply,
      });
    } catch (err) {
      throw new Error(`applying ${describeObject(desired)}${dryRun ? ' (dry run)' : ''}: ${(err as Error).message}`, { cause: err });
    }
  }
}

/** Our manager's Apply entry (fieldsV1), as a canonical string; '' when we own nothing. */
function ownEntry(obj: KubeObject, manager: string): string {
  const entries = (obj.metadata.managedFields ?? []).filter(
    (e: ManagedFieldsEntry) => e.manager === manager && e.operation === 'Apply' && !e.subresource,
  );
  return stableStringify(entries.map((e) => ({ apiVersion: e.apiVersion, fieldsV1: e.fieldsV1 })));
}

/** The object without what an apply that changes nothing may still report differently. */
function comparable(obj: KubeObject): string {
  const { managedFields: _m, resourceVersion: _r, generation: _g, ...metadata } = obj.metadata;
  const { status: _s, ...rest } = obj;
  return stableStringify({ ...rest, metadata });
}

function hashOf(obj: unknown): string {
  return createHash('sha256').update(stableStringify(obj)).digest('hex');
}

/** JSON with object keys sorted, so equal objects give equal strings. */
export function stableStringify(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map((v) => stableStringify(v === undefined ? null : v)).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${stableStringify(v)}`).join(',')}}`;
}

// Pure helpers of the controller: the controller ownerReference added to
// children, and stable JSON for the apply hash.
import { describe, expect, it } from 'vitest';
import { keyOf, withOwner } from '../../src/operator/controller.ts';
import { stableStringify } from '../../src/operator/kube/apply.ts';
import { isControlledBy } from '../../src/operator/kube/prune.ts';
import type { KubeObject } from '../../src/operator/kube/client.ts';

const owner: KubeObject = { apiVersion: 'hotstandby.dev/v1alpha1', kind: 'HotStandbyCluster', metadata: { name: 'kv', namespace: 'ns', uid: 'u-1' } };
const child: KubeObject = { apiVersion: 'v1', kind: 'Service', metadata: { name: 'kv', namespace: 'ns' } };

describe('controller helpers', () => {
  it('withOwner adds a controller ownerReference that blocks owner deletion until the child is gone', () => {
    const owned = withOwner(child, owner);
    expect(owned.metadata.ownerReferences).toEqual([
      { apiVersion: 'hotstandby.dev/v1alpha1', kind: 'HotStandbyCluster', name: 'kv', uid: 'u-1', controller: true, blockOwnerDeletion: true },
    ]);
    expect(isControlledBy(owned, 'u-1')).toBe(true);
    expect(isControlledBy(owned, 'u-2')).toBe(false);
    expect(child.metadata.ownerReferences).toBeUndefined(); // not mutated
  });

  it('withOwner keeps a controller reference the builder set, and refuses an owner without uid', () => {
    const preset = { ...child, metadata: { ...child.metadata, ownerReferences: [{ apiVersion: 'apps/v1', kind: 'StatefulSet', name: 'x', uid: 'u-9', controller: true }] } };
    expect(withOwner(preset, owner)).toBe(preset);
    expect(() => withOwner(child, { ...owner, metadata: { name: 'kv', namespace: 'ns' } })).toThrow(/no uid/);
  });

  it('keyOf is namespace/name', () => {
    expect(keyOf(owner)).toBe('ns/kv');
  });

  it('stableStringify ignores key order and undefined fields, keeps array order', () => {
    expect(stableStringify({ b: 1, a: { d: [2, 1], c: undefined } })).toBe(stableStringify({ a: { d: [2, 1] }, b: 1 }));
    expect(stableStringify({ a: [1, 2] })).not.toBe(stableStringify({ a: [2, 1] }));
  });
});

// Metadata every child carries: name, namespace, labels and a controller
// owner reference to its HotStandbyCluster (so Kubernetes garbage-collects
// the children with it, and the operator's informers map a child to it).
import type { V1ObjectMeta, V1OwnerReference } from '@kubernetes/client-node';
import { GROUP, KIND, VERSION, type HotStandbyCluster } from '../../api/v1alpha1.ts';
import { childLabels, type Component } from './labels.ts';
import { namespaceOf } from './names.ts';

export function ownerReference(hsc: HotStandbyCluster): V1OwnerReference {
  const uid = hsc.metadata.uid;
  if (typeof uid !== 'string' || uid === '') {
    throw new Error(`HotStandbyCluster ${hsc.metadata.name}: metadata.uid is missing; builders need the object as read from the API server`);
  }
  return { apiVersion: `${GROUP}/${VERSION}`, kind: KIND, name: hsc.metadata.name, uid, controller: true, blockOwnerDeletion: true };
}

export function childMeta(hsc: HotStandbyCluster, name: string, component: Component, annotations?: Record<string, string>): V1ObjectMeta {
  return {
    name,
    namespace: namespaceOf(hsc),
    labels: childLabels(hsc.metadata.name, component),
    ...(annotations && Object.keys(annotations).length > 0 ? { annotations } : {}),
    ownerReferences: [ownerReference(hsc)],
  };
}

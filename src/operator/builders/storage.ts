// Where managed stores keep their data: a PersistentVolumeClaim template when
// spec.<store>.managed.storage is set, else an emptyDir (lost with the pod;
// status.storage says so). Also what the status reports for each store.
import type { V1PersistentVolumeClaim, V1Volume } from '@kubernetes/client-node';
import type { HotStandbyCluster, HotStandbyClusterSpec, HotStandbyClusterStatus } from '../../api/v1alpha1.ts';
import { childLabels, type Component } from './labels.ts';

type Storage = NonNullable<NonNullable<NonNullable<HotStandbyClusterSpec['etcd']>['managed']>['storage']>;

/** The data volume's name in the pod (and the claim template's, so claims are `data-<pod>`). */
export const DATA_VOLUME = 'data';

export interface DataVolume {
  /** For spec.template.spec.volumes: the emptyDir, when there is no claim. */
  volumes: V1Volume[];
  /** For spec.volumeClaimTemplates (left out when empty). */
  claimTemplates: V1PersistentVolumeClaim[];
}

export function dataVolume(cluster: string, component: Component, storage: Storage | undefined): DataVolume {
  if (!storage) return { volumes: [{ name: DATA_VOLUME, emptyDir: {} }], claimTemplates: [] };
  return {
    volumes: [],
    claimTemplates: [
      {
        apiVersion: 'v1',
        kind: 'PersistentVolumeClaim',
        metadata: { name: DATA_VOLUME, labels: childLabels(cluster, component) },
        spec: {
          accessModes: ['ReadWriteOnce'],
          ...(storage.storageClassName ? { storageClassName: storage.storageClassName } : {}),
          resources: { requests: { storage: String(storage.size) } },
        },
      },
    ],
  };
}

export type StorageKind = NonNullable<NonNullable<HotStandbyClusterStatus['storage']>['etcd']>;

/** status.storage for a spec: where each store's data lives. EmptyDir means not durable. */
export function storageStatus(hsc: HotStandbyCluster): { etcd: StorageKind; dragonfly: StorageKind } {
  const kind = (managed: { storage?: Storage } | undefined): StorageKind => (!managed ? 'External' : managed.storage ? 'PersistentVolumeClaim' : 'EmptyDir');
  return { etcd: kind(hsc.spec.etcd?.managed ?? (hsc.spec.etcd?.external ? undefined : {})), dragonfly: kind(hsc.spec.dragonfly?.managed ?? (hsc.spec.dragonfly?.external ? undefined : {})) };
}

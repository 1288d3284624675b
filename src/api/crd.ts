// The HotStandbyCluster CustomResourceDefinition, built from src/api/v1alpha1.ts.
import { GROUP, KIND, PLURAL, PRINTER_COLUMNS, ROOT_VALIDATIONS, SHORT_NAMES, VERSION, hotStandbyClusterSpec, hotStandbyClusterStatus } from './v1alpha1.ts';

export const CRD_NAME = `${PLURAL}.${GROUP}`;

export function buildCrd(): Record<string, unknown> {
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: {
      name: CRD_NAME,
      labels: { 'app.kubernetes.io/part-of': 'hotstandby-operator' },
    },
    spec: {
      group: GROUP,
      names: { kind: KIND, listKind: `${KIND}List`, plural: PLURAL, singular: KIND.toLowerCase(), shortNames: SHORT_NAMES, categories: ['all'] },
      scope: 'Namespaced',
      versions: [
        {
          name: VERSION,
          served: true,
          storage: true,
          subresources: {
            status: {},
            scale: { specReplicasPath: '.spec.replicas', statusReplicasPath: '.status.replicas', labelSelectorPath: '.status.selector' },
          },
          additionalPrinterColumns: PRINTER_COLUMNS,
          schema: {
            openAPIV3Schema: {
              type: 'object',
              description: 'A stateful master run as one leader plus hot standbys, replicated through a fenced operation log.',
              properties: {
                apiVersion: { type: 'string' },
                kind: { type: 'string' },
                metadata: { type: 'object' },
                spec: hotStandbyClusterSpec.json,
                status: hotStandbyClusterStatus.json,
              },
              required: ['spec'],
              'x-kubernetes-validations': ROOT_VALIDATIONS,
            },
          },
        },
      ],
    },
  };
}

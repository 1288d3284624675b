// The masters' Services. Selectors never change: traffic follows the leader
// because agents move the role label, and EndpointSlices follow the labels.
import type { V1Service, V1ServicePort } from '@kubernetes/client-node';
import type { HotStandbyCluster } from '../../api/v1alpha1.ts';
import { leaderSelector, podSelector, standbySelector } from './labels.ts';
import { childMeta } from './meta.ts';
import { mastersName, membersServiceName, standbyServiceName } from './names.ts';
import { defaultedSpec, type DefaultedSpec } from './spec.ts';

/** The master's container ports as Service ports (named, so several may coexist). */
function masterServicePorts(spec: DefaultedSpec): V1ServicePort[] {
  return spec.master.ports.map((p) => ({
    name: p.name ?? `port-${p.containerPort}`,
    port: p.containerPort,
    targetPort: p.containerPort,
    protocol: p.protocol ?? 'TCP',
  }));
}

/** spec.service.ports, else the master's ports. */
function clientPorts(spec: DefaultedSpec): V1ServicePort[] {
  const ports = spec.service.ports;
  if (!ports || ports.length === 0) return masterServicePorts(spec);
  return ports.map((p) => ({ name: p.name ?? `port-${p.port}`, port: p.port, targetPort: p.targetPort ?? p.port, protocol: 'TCP' }));
}

/** `<name>`: the leader, for reads and writes. Type, ports and annotations from spec.service. */
export function leaderService(hsc: HotStandbyCluster): V1Service {
  const spec = defaultedSpec(hsc);
  const name = hsc.metadata.name;
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: childMeta(hsc, mastersName(name), 'master', spec.service.annotations),
    spec: { type: spec.service.type, selector: leaderSelector(name), ports: clientPorts(spec) },
  };
}

/** `<name>-standby`: the standbys, for reads that tolerate lag. */
export function standbyService(hsc: HotStandbyCluster): V1Service {
  const spec = defaultedSpec(hsc);
  const name = hsc.metadata.name;
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: childMeta(hsc, standbyServiceName(name), 'master'),
    spec: { type: 'ClusterIP', selector: standbySelector(name), ports: clientPorts(spec) },
  };
}

/** `<name>-members`: headless, every master pod whether ready or not (stable DNS, the StatefulSet's serviceName). */
export function membersService(hsc: HotStandbyCluster): V1Service {
  const spec = defaultedSpec(hsc);
  const name = hsc.metadata.name;
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: childMeta(hsc, membersServiceName(name), 'master'),
    spec: { clusterIP: 'None', publishNotReadyAddresses: true, selector: podSelector(name, 'master'), ports: masterServicePorts(spec) },
  };
}

// The masters: StatefulSet with the agent as a native sidecar, its env and
// probes, TLS and password mounts for external stores, the master container's
// env, the template hash, the leader/standby/members Services, the PDB rules,
// and the agents' ServiceAccount and RoleBinding.
import { describe, expect, it } from 'vitest';
import type { V1EnvVar, V1PodDisruptionBudget, V1RoleBinding, V1Service, V1StatefulSet } from '@kubernetes/client-node';
import { localApiFromEnv } from '../../src/cli/commands/kvmaster.ts';
import { masterPodSelector } from '../../src/lib/labels.ts';
import { desiredChildren, mastersPodTemplate, TEMPLATE_HASH_ANNOTATION } from '../../src/operator/builders/index.ts';
import { CTX, cluster, example, find } from './builders-fixtures.ts';

const sts = (file: string, name: string): V1StatefulSet => find<V1StatefulSet>(desiredChildren(example(file), CTX), 'StatefulSet', name);
const envMap = (env: V1EnvVar[] | undefined): Record<string, unknown> => Object.fromEntries((env ?? []).map((e) => [e.name, e.value ?? e.valueFrom]));
const downward = [
  { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
  { name: 'POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
  { name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
];

describe('masters StatefulSet', () => {
  it('OnDelete updates, parallel start, the members Service as serviceName, a selector equal to masterPodSelector()', () => {
    const s = sts('minimal.yaml', 'mooncake-master');
    expect(s.spec!.replicas).toBe(3);
    expect(s.spec!.updateStrategy).toEqual({ type: 'OnDelete' });
    expect(s.spec!.podManagementPolicy).toBe('Parallel');
    expect(s.spec!.serviceName).toBe('mooncake-master-members');
    const selector = Object.entries(s.spec!.selector.matchLabels!).map(([k, v]) => `${k}=${v}`);
    expect(selector.sort()).toEqual(masterPodSelector('mooncake-master').split(',').sort());
    expect(s.spec!.template.spec!.serviceAccountName).toBe('mooncake-master-agent');
    expect(s.spec!.volumeClaimTemplates).toBeUndefined();
  });

  it('runs the agent as a native sidecar: an init container with restartPolicy Always, the operator image, `hotstandby agent`', () => {
    const pod = sts('minimal.yaml', 'mooncake-master').spec!.template.spec!;
    expect(pod.initContainers).toHaveLength(1);
    const agent = pod.initContainers![0]!;
    expect(agent.name).toBe('agent');
    expect(agent.restartPolicy).toBe('Always');
    expect(agent.image).toBe(CTX.agentImage);
    expect(agent.command).toBeUndefined(); // the image's ENTRYPOINT is bin/hotstandby.js
    expect(agent.args).toEqual(['agent']);
    expect(agent.ports).toEqual([{ name: 'agent-health', containerPort: 7071, protocol: 'TCP' }]);
    expect(agent.readinessProbe!.httpGet).toEqual({ path: '/readyz', port: 7071 });
    expect(agent.livenessProbe!.httpGet).toEqual({ path: '/healthz', port: 7071 });
    expect(agent.startupProbe!.httpGet).toEqual({ path: '/healthz', port: 7071 });
    expect(agent.resources).toEqual({ requests: { cpu: '250m', memory: '128Mi' }, limits: { memory: '256Mi' } });
    expect(agent.securityContext).toMatchObject({ runAsNonRoot: true, allowPrivilegeEscalation: false });
    expect(agent.volumeMounts).toBeUndefined();
    expect(pod.volumes).toBeUndefined();
  });

  it('configures the agent from the spec and the managed stores (minimal example, all defaults)', () => {
    const agent = sts('minimal.yaml', 'mooncake-master').spec!.template.spec!.initContainers![0]!;
    expect(agent.env).toEqual([
      ...downward,
      { name: 'HOTSTANDBY_CLUSTER', value: '$(POD_NAMESPACE)/mooncake-master' },
      { name: 'HOTSTANDBY_MEMBER', value: '$(POD_NAME)' },
      { name: 'HOTSTANDBY_ADDRESS', value: '$(POD_IP):8080' },
      { name: 'HOTSTANDBY_ETCD', value: 'http://mooncake-master-etcd.shop.svc:2379' },
      { name: 'HOTSTANDBY_REDIS', value: 'redis://mooncake-master-dragonfly.shop.svc:6379' },
      { name: 'HOTSTANDBY_API_LISTEN', value: '127.0.0.1:7070' },
      { name: 'HOTSTANDBY_HEALTH_LISTEN', value: '0.0.0.0:7071' },
      { name: 'HOTSTANDBY_POD_LABELS', value: 'on' },
      { name: 'HOTSTANDBY_LEASE_TTL', value: '5' },
      { name: 'HOTSTANDBY_MAX_LAG_ON_FAILOVER', value: '1000' },
      { name: 'HOTSTANDBY_OPLOG_MAX_LENGTH', value: '1000000' },
      { name: 'HOTSTANDBY_SNAPSHOT_EVERY_ENTRIES', value: '100000' },
      { name: 'HOTSTANDBY_SNAPSHOT_INTERVAL_SECONDS', value: '300' },
      { name: 'HOTSTANDBY_SNAPSHOT_KEEP', value: '2' },
      { name: 'HOTSTANDBY_MASTER_LIVENESS_TIMEOUT_MS', value: '500' },
      { name: 'HOTSTANDBY_LOG_LEVEL', value: 'info' },
    ]);
  });

  it('takes the agent image, resources, first master port and tuning from the full example', () => {
    const pod = sts('full.yaml', 'mooncake-master-full').spec!.template.spec!;
    const agent = pod.initContainers![0]!;
    expect(agent.image).toBe('ghcr.io/example/hotstandby-operator:0.1.0');
    expect(agent.resources).toEqual({ requests: { cpu: '200m', memory: '128Mi' } });
    const env = envMap(agent.env);
    expect(env.HOTSTANDBY_ADDRESS).toBe('$(POD_IP):50051');
    expect(env.HOTSTANDBY_CLUSTER).toBe('$(POD_NAMESPACE)/mooncake-master-full');
    expect(env.HOTSTANDBY_OPLOG_MAX_LENGTH).toBe('2000000');
    expect(env.HOTSTANDBY_SNAPSHOT_KEEP).toBe('2');
  });

  it('sync replication: the agent gets the four settings; an async cluster gets none of them (its pod template is unchanged)', () => {
    const agentEnv = (oplog: Record<string, unknown>) => envMap(mastersPodTemplate(cluster('c1', { master: { image: 'm' }, oplog }), CTX).spec!.initContainers![0]!.env);
    const sync = agentEnv({ replication: 'sync', minSyncStandbys: 2, syncTimeoutMs: 750, onSyncTimeout: 'async' });
    expect([sync.HOTSTANDBY_REPLICATION, sync.HOTSTANDBY_MIN_SYNC_STANDBYS, sync.HOTSTANDBY_SYNC_TIMEOUT_MS, sync.HOTSTANDBY_ON_SYNC_TIMEOUT]).toEqual(['sync', '2', '750', 'async']);
    const defaults = agentEnv({ replication: 'sync' });
    expect([defaults.HOTSTANDBY_MIN_SYNC_STANDBYS, defaults.HOTSTANDBY_SYNC_TIMEOUT_MS, defaults.HOTSTANDBY_ON_SYNC_TIMEOUT]).toEqual(['1', '2000', 'fail']);
    const async = agentEnv({ replication: 'async', minSyncStandbys: 2 });
    expect(Object.keys(async).filter((k) => /REPLICATION|SYNC/.test(k))).toEqual([]);
  });

  it('the master container: the user image, command, args, ports, probes, resources, and the local API address beside the downward API', () => {
    const s = sts('full.yaml', 'mooncake-master-full');
    expect(s.spec!.replicas).toBe(5);
    const pod = s.spec!.template.spec!;
    expect(pod.containers).toHaveLength(1);
    const m = pod.containers[0]!;
    expect(m.name).toBe('master');
    expect(m.image).toBe('ghcr.io/example/mooncake-master:v1.2.0');
    expect(m.command).toEqual(['/usr/local/bin/mooncake_master']);
    expect(m.args).toEqual(['--rpc-port=50051', '--agent-api=127.0.0.1:7070']);
    expect(m.env).toEqual([...downward, { name: 'HOTSTANDBY_LOCAL_API', value: 'http://127.0.0.1:7070' }, { name: 'MC_LOG_LEVEL', value: 'info' }]);
    expect(m.ports).toEqual([{ name: 'rpc', containerPort: 50051, protocol: 'TCP' }]);
    expect(m.resources).toEqual({ requests: { cpu: '2', memory: '4Gi' }, limits: { memory: '8Gi' } });
    expect(m.readinessProbe).toEqual({ tcpSocket: { port: 50051 }, periodSeconds: 2 });
    expect(m.livenessProbe).toEqual({ tcpSocket: { port: 50051 }, periodSeconds: 10 });
    expect(pod.priorityClassName).toBe('system-cluster-critical');
    expect(pod.nodeSelector).toEqual({ 'node-pool': 'metadata' });
    expect(pod.tolerations).toEqual([{ key: 'dedicated', operator: 'Equal', value: 'metadata', effect: 'NoSchedule' }]);
    expect(pod.affinity).toEqual({
      podAntiAffinity: {
        requiredDuringSchedulingIgnoredDuringExecution: [{ topologyKey: 'kubernetes.io/hostname', labelSelector: { matchLabels: { 'hotstandby.dev/cluster': 'mooncake-master-full' } } }],
      },
    });
  });

  it("the user's env wins over ours for the same name (a duplicate would fail the apply)", () => {
    const hsc = cluster('c1', { master: { image: 'm', env: [{ name: 'HOTSTANDBY_LOCAL_API', value: 'unix:/run/agent.sock' }, { name: 'X', value: '1' }] } });
    const m = mastersPodTemplate(hsc, CTX).spec!.containers[0]!;
    expect(m.env).toEqual([...downward, { name: 'HOTSTANDBY_LOCAL_API', value: 'unix:/run/agent.sock' }, { name: 'X', value: '1' }]);
  });

  it('kvmaster reads HOTSTANDBY_LOCAL_API as the same address the agent listens on', () => {
    const pod = mastersPodTemplate(cluster('c1', { master: { image: 'm' }, agent: { localApiPort: 9090 } }), CTX).spec!;
    const local = envMap(pod.containers[0]!.env).HOTSTANDBY_LOCAL_API as string;
    expect(localApiFromEnv(local)).toBe(envMap(pod.initContainers![0]!.env).HOTSTANDBY_API_LISTEN);
    expect(localApiFromEnv(local)).toBe('127.0.0.1:9090');
    expect(localApiFromEnv(undefined)).toBeUndefined();
  });

  it('spreads masters over nodes by default (preferred, never blocking)', () => {
    expect(sts('minimal.yaml', 'mooncake-master').spec!.template.spec!.affinity).toEqual({
      podAntiAffinity: {
        preferredDuringSchedulingIgnoredDuringExecution: [
          {
            weight: 100,
            podAffinityTerm: { topologyKey: 'kubernetes.io/hostname', labelSelector: { matchLabels: { 'hotstandby.dev/cluster': 'mooncake-master', 'app.kubernetes.io/component': 'master' } } },
          },
        ],
      },
    });
  });
});

describe('external stores: endpoints, TLS files and the password Secret', () => {
  const pod = sts('external-stores.yaml', 'mooncake-master-ext').spec!.template.spec!;
  const agent = pod.initContainers![0]!;
  const env = envMap(agent.env);

  it('points the agent at the external endpoints and URL', () => {
    expect(env.HOTSTANDBY_ETCD).toBe('https://etcd-0.etcd.infra.svc:2379,https://etcd-1.etcd.infra.svc:2379,https://etcd-2.etcd.infra.svc:2379');
    expect(env.HOTSTANDBY_REDIS).toBe('redis://dragonfly.infra.svc:6379');
    expect(env.HOTSTANDBY_ADDRESS).toBe('$(POD_IP):50051');
  });

  it('mounts the TLS Secret read-only at /etc/hotstandby/etcd-tls and names its three files', () => {
    expect(pod.volumes).toEqual([{ name: 'etcd-tls', secret: { secretName: 'etcd-client-tls' } }]);
    expect(agent.volumeMounts).toEqual([{ name: 'etcd-tls', mountPath: '/etc/hotstandby/etcd-tls', readOnly: true }]);
    expect(env.HOTSTANDBY_ETCD_CA_FILE).toBe('/etc/hotstandby/etcd-tls/ca.crt');
    expect(env.HOTSTANDBY_ETCD_CERT_FILE).toBe('/etc/hotstandby/etcd-tls/tls.crt');
    expect(env.HOTSTANDBY_ETCD_KEY_FILE).toBe('/etc/hotstandby/etcd-tls/tls.key');
    // Only the agent talks to etcd.
    expect(pod.containers[0]!.volumeMounts).toBeUndefined();
  });

  it('takes the Redis password from the Secret, never as a literal', () => {
    expect(env.HOTSTANDBY_REDIS_PASSWORD).toEqual({ secretKeyRef: { name: 'dragonfly-auth', key: 'password' } });
  });

  it('without a TLS Secret or password: neither mount nor env', () => {
    const p = mastersPodTemplate(cluster('c1', { master: { image: 'm' }, etcd: { external: { endpoints: ['http://e:2379'] } }, dragonfly: { external: { url: 'redis://r:6379' } } }), CTX).spec!;
    const e = envMap(p.initContainers![0]!.env);
    expect(Object.keys(e).filter((k) => k.includes('_FILE') || k.includes('PASSWORD'))).toEqual([]);
    expect(p.volumes).toBeUndefined();
    expect(e.HOTSTANDBY_ETCD).toBe('http://e:2379');
  });

  it("a password Secret without a key uses the CRD's default key, password", () => {
    const p = mastersPodTemplate(cluster('c1', { master: { image: 'm' }, dragonfly: { external: { url: 'redis://r:6379', passwordSecret: { name: 's' } } } }), CTX).spec!;
    expect(envMap(p.initContainers![0]!.env).HOTSTANDBY_REDIS_PASSWORD).toEqual({ secretKeyRef: { name: 's', key: 'password' } });
  });
});

describe('template hash', () => {
  const base = { master: { image: 'm:1' } };
  const hashOf = (spec: Record<string, unknown>, ctx = CTX): string => mastersPodTemplate(cluster('c1', spec), ctx).metadata!.annotations![TEMPLATE_HASH_ANNOTATION]!;

  it('is the same for the same spec, whether or not defaults were written out', () => {
    expect(hashOf(base)).toMatch(/^[0-9a-f]{16}$/);
    expect(hashOf({ ...base, agent: { localApiPort: 7070, logLevel: 'info' }, replicas: 3 })).toBe(hashOf(base));
  });

  it('changes when the pod would change: master image, agent image, an agent setting', () => {
    const h = hashOf(base);
    expect(hashOf({ master: { image: 'm:2' } })).not.toBe(h);
    expect(hashOf(base, { ...CTX, agentImage: 'op:2' })).not.toBe(h);
    expect(hashOf({ ...base, election: { leaseTTLSeconds: 7 } })).not.toBe(h);
  });

  it('does not change with the replica count or the operator version (neither changes a pod)', () => {
    const h = hashOf(base);
    expect(hashOf({ ...base, replicas: 5 })).toBe(h);
    expect(hashOf(base, { ...CTX, operatorVersion: '9.9.9' })).toBe(h);
  });

  it('the operator version is recorded on the StatefulSet, not its pods', () => {
    const s = find<V1StatefulSet>(desiredChildren(cluster('c1', base), { ...CTX, operatorVersion: '0.2.0' }), 'StatefulSet', 'c1');
    expect(s.metadata!.annotations).toEqual({ 'hotstandby.dev/operator-version': '0.2.0' });
    expect(Object.keys(s.spec!.template.metadata!.annotations!)).toEqual([TEMPLATE_HASH_ANNOTATION]);
  });
});

describe('master Services', () => {
  it('leader: spec.service type, ports and annotations; selects cluster + role=leader', () => {
    const svc = find<V1Service>(desiredChildren(example('full.yaml'), CTX), 'Service', 'mooncake-master-full');
    expect(svc.metadata!.annotations).toEqual({ 'example.com/owner': 'storage-team' });
    expect(svc.spec).toEqual({
      type: 'ClusterIP',
      selector: { 'hotstandby.dev/cluster': 'mooncake-master-full', 'hotstandby.dev/role': 'leader' },
      ports: [{ name: 'rpc', port: 50051, targetPort: 'rpc', protocol: 'TCP' }],
    });
  });

  it('leader without spec.service.ports: the master ports, named', () => {
    const children = desiredChildren(cluster('c1', { master: { image: 'm', ports: [{ containerPort: 9000 }, { name: 'admin', containerPort: 9001 }] }, service: { type: 'LoadBalancer' } }), CTX);
    expect(find<V1Service>(children, 'Service', 'c1').spec).toEqual({
      type: 'LoadBalancer',
      selector: { 'hotstandby.dev/cluster': 'c1', 'hotstandby.dev/role': 'leader' },
      ports: [
        { name: 'port-9000', port: 9000, targetPort: 9000, protocol: 'TCP' },
        { name: 'admin', port: 9001, targetPort: 9001, protocol: 'TCP' },
      ],
    });
  });

  it('standby: ClusterIP, role=standby, same ports as the leader, no user annotations', () => {
    const svc = find<V1Service>(desiredChildren(example('full.yaml'), CTX), 'Service', 'mooncake-master-full-standby');
    expect(svc.metadata!.annotations).toBeUndefined();
    expect(svc.spec).toEqual({
      type: 'ClusterIP',
      selector: { 'hotstandby.dev/cluster': 'mooncake-master-full', 'hotstandby.dev/role': 'standby' },
      ports: [{ name: 'rpc', port: 50051, targetPort: 'rpc', protocol: 'TCP' }],
    });
  });

  it('members: headless, not-ready pods published, every master pod, the master ports', () => {
    const svc = find<V1Service>(desiredChildren(example('minimal.yaml'), CTX), 'Service', 'mooncake-master-members');
    expect(svc.spec).toEqual({
      clusterIP: 'None',
      publishNotReadyAddresses: true,
      selector: { 'hotstandby.dev/cluster': 'mooncake-master', 'app.kubernetes.io/component': 'master' },
      ports: [{ name: 'main', port: 8080, targetPort: 8080, protocol: 'TCP' }],
    });
  });
});

describe('masters PodDisruptionBudget', () => {
  const pdb = (spec: Record<string, unknown>): V1PodDisruptionBudget | undefined =>
    desiredChildren(cluster('c1', spec), CTX).find((o) => o.kind === 'PodDisruptionBudget' && o.metadata!.name === 'c1') as V1PodDisruptionBudget | undefined;
  const master = { image: 'm' };

  it('from spec when enabled, over the master pods; unhealthy masters may always be evicted', () => {
    expect(pdb({ master, replicas: 5, podDisruptionBudget: { maxUnavailable: 2 } })!.spec).toEqual({
      maxUnavailable: 2,
      selector: { matchLabels: { 'hotstandby.dev/cluster': 'c1', 'app.kubernetes.io/component': 'master' } },
      unhealthyPodEvictionPolicy: 'AlwaysAllow',
    });
  });

  it('none when disabled', () => {
    expect(pdb({ master, podDisruptionBudget: { enabled: false } })).toBeUndefined();
  });

  it('none for a single master (a budget cannot protect it without blocking drains)', () => {
    expect(pdb({ master, replicas: 1 })).toBeUndefined();
    expect(pdb({ master, replicas: 2 })!.spec!.maxUnavailable).toBe(1);
  });
});

describe('agent RBAC', () => {
  it("binds the chart's agent ClusterRole to the cluster's ServiceAccount, in the cluster's namespace only", () => {
    const rb = find<V1RoleBinding>(desiredChildren(example('minimal.yaml'), CTX), 'RoleBinding', 'mooncake-master-agent');
    expect(rb.roleRef).toEqual({ apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'hotstandby-agent' });
    expect(rb.subjects).toEqual([{ kind: 'ServiceAccount', name: 'mooncake-master-agent', namespace: 'shop' }]);
  });
});

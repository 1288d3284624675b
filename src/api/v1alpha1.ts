// HotStandbyCluster, hotstandby.dev/v1alpha1: the one definition of the API.
// The CRD (crds/, the chart's crds/) is generated from these schemas by
// scripts/gen-crd.ts, and the TypeScript types below are inferred from them.
// Every CEL rule's message names the field and says what to do.
import { AGENT_DEFAULT_RESOURCES, DRAGONFLY_DEFAULT_IMAGE, DRAGONFLY_DEFAULT_MEMORY, ETCD_DEFAULT_IMAGE, MASTER_DEFAULT_PORTS } from './defaults.ts';
import { arr, bool, defaultsOf, int, intOrString, loose, obj, str, stringMap, type CelRule, type Infer } from './schema.ts';

export const GROUP = 'hotstandby.dev';
export const VERSION = 'v1alpha1';
export const KIND = 'HotStandbyCluster';
export const PLURAL = 'hotstandbyclusters';
export const SHORT_NAMES = ['hsc'];

/**
 * Longest HotStandbyCluster name: the managed Dragonfly StatefulSet is
 * `<name>-dragonfly`, and a StatefulSet's pods carry the label
 * `controller-revision-hash: <statefulset>-<10 chars>`, which must fit in 63.
 */
export const MAX_CLUSTER_NAME_LENGTH = 42;
/** Rules on the whole object (metadata.name), checked by the API server; generated into the CRD's root schema. */
export const ROOT_VALIDATIONS: CelRule[] = [
  {
    rule: `self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= ${MAX_CLUSTER_NAME_LENGTH}`,
    message: `metadata.name must be at most ${MAX_CLUSTER_NAME_LENGTH} characters of lowercase letters, digits and '-', starting with a letter (the StatefulSets and Services are named after it); choose a shorter name`,
  },
];

const quantity = (description: string) => intOrString({ description, pattern: '^[0-9]+(\\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$' });
const image = (description: string) => str({ description, minLength: 1, maxLength: 512 });
const resources = loose({ description: 'Kubernetes ResourceRequirements (requests, limits).' });
const storage = obj(
  {
    size: quantity('Size of the PersistentVolumeClaim, e.g. 10Gi.'),
    storageClassName: str({ description: 'StorageClass of the claim; the cluster default when omitted.', maxLength: 253 }),
  },
  { required: ['size'], description: 'Persistent storage; without it data lives in an emptyDir and does not survive the pod (status.storage says so).' },
);
const secretKeyRef = obj(
  {
    name: str({ description: 'Secret name, in the cluster namespace.', minLength: 1, maxLength: 253 }),
    key: str({ description: 'Key within the Secret.', minLength: 1, maxLength: 253, default: 'password' }),
  },
  { required: ['name'] },
);

const containerPort = obj(
  {
    name: str({ maxLength: 15 }),
    containerPort: int({ minimum: 1, maximum: 65535 }),
    protocol: str({ enum: ['TCP', 'UDP', 'SCTP'] as const, default: 'TCP' }),
  },
  { required: ['containerPort'] },
);

export const masterSpec = obj(
  {
    image: image('Image of the master (the stateful service made highly available).'),
    command: arr(str(), { description: 'Entrypoint override.', maxItems: 64 }),
    args: arr(str(), { description: 'Arguments to the entrypoint.', maxItems: 256 }),
    env: arr(loose(), { description: 'Kubernetes EnvVar list for the master container.', maxItems: 256 }),
    ports: arr(containerPort, {
      description: 'Ports the master serves; the first is the address the agent publishes for its member. Default: one port 8080 named main.',
      minItems: 1,
      maxItems: 16,
      default: MASTER_DEFAULT_PORTS,
    }),
    resources,
    readinessProbe: loose({ description: 'Kubernetes Probe for the master container.' }),
    livenessProbe: loose({ description: 'Kubernetes Probe for the master container.' }),
  },
  { required: ['image'], description: 'The master container, one per replica. It talks to its agent through the local API.' },
);

export const agentSpec = obj(
  {
    image: image('Image of the agent; the operator image when omitted (one image serves both roles).'),
    logLevel: str({ enum: ['fatal', 'error', 'warn', 'info', 'debug', 'trace'] as const, default: 'info' }),
    resources: loose({
      description: `Kubernetes ResourceRequirements of the agent container. When omitted: requests cpu ${AGENT_DEFAULT_RESOURCES.requests.cpu}, memory ${AGENT_DEFAULT_RESOURCES.requests.memory}; limits memory ${AGENT_DEFAULT_RESOURCES.limits.memory}, no CPU limit (measured, see docs/footprint.md).`,
    }),
    localApiPort: int({ description: 'Loopback port of the local API in the pod.', minimum: 1024, maximum: 65535, default: 7070 }),
    masterLivenessTimeoutMs: int({
      description:
        'The master counts as gone after this many ms with no request open to its agent (a dropped role long-poll: a fifth of it); ' +
        'a leader then resigns so a caught-up standby takes over, and a standby does not campaign. ' +
        'The agent reads it as HOTSTANDBY_MASTER_LIVENESS_TIMEOUT_MS.',
      minimum: 100,
      maximum: 600_000,
      default: 500,
    }),
  },
  { defaulted: true, description: 'The agent container beside every master.' },
);

export const electionSpec = obj(
  {
    leaseTTLSeconds: int({ description: 'Leader lease TTL: a dead leader is replaced after about this long.', minimum: 2, maximum: 60, default: 5 }),
    maxLagOnFailover: int({
      description: 'A standby further behind the leader than this many log entries does not campaign.',
      minimum: 0,
      maximum: 1_000_000_000,
      default: 1000,
    }),
  },
  { defaulted: true },
);

export const oplogSpec = obj(
  {
    maxLength: int({ description: 'Approximate bound on entries kept in the stream (XADD MAXLEN ~).', minimum: 1000, maximum: 1_000_000_000, default: 1_000_000 }),
    replication: str({
      description:
        'async: a write is acknowledged once it is in the stream server. ' +
        'sync: also only after minSyncStandbys standbys hold it, and only those standbys may take over, so losing the leader and the stream server together loses no acknowledged write (docs/replication.md). ' +
        'The agent reads it as HOTSTANDBY_REPLICATION.',
      enum: ['async', 'sync'] as const,
      default: 'async',
    }),
    minSyncStandbys: int({
      description: 'sync replication: standbys that must hold each write before it is acknowledged; below replicas. HOTSTANDBY_MIN_SYNC_STANDBYS.',
      minimum: 1,
      maximum: 8,
      default: 1,
    }),
    syncTimeoutMs: int({
      description: 'sync replication: how long a write waits for the sync standbys before onSyncTimeout applies. HOTSTANDBY_SYNC_TIMEOUT_MS.',
      minimum: 10,
      maximum: 60_000,
      default: 2000,
    }),
    onSyncTimeout: str({
      description:
        'sync replication, when a write waited syncTimeoutMs: fail answers 503 sync_timeout (strict); async acknowledges it, records the fallback (condition SyncReplication False, reason FellBackToAsync, and an Event) and returns to sync when standbys catch up. HOTSTANDBY_ON_SYNC_TIMEOUT.',
      enum: ['fail', 'async'] as const,
      default: 'fail',
    }),
  },
  { defaulted: true },
);

export const snapshotSpec = obj(
  {
    interval: str({
      description: 'Take a snapshot at least this often while writes arrive, as a duration such as 30s, 5m or 1h.',
      pattern: '^([0-9]+(ms|s|m|h))+$',
      maxLength: 32,
      default: '5m',
    }),
    everyEntries: int({ description: 'Take a snapshot after this many entries.', minimum: 100, maximum: 1_000_000_000, default: 100_000 }),
    keep: int({ description: 'Snapshots kept; the log is trimmed before the oldest one.', minimum: 1, maximum: 10, default: 2 }),
  },
  {
    defaulted: true,
    'x-kubernetes-validations': [
      { rule: "duration(self.interval) >= duration('10s')", message: 'spec.snapshot.interval must be at least 10s (e.g. 30s or 5m)' },
    ],
  },
);

const etcdManaged = obj(
  {
    replicas: int({ description: 'etcd members: 1 (no fault tolerance), 3 or 5. Fixed at creation.', enum: [1, 3, 5] as const, default: 3 }),
    image: image(`etcd image; the operator's pinned ${ETCD_DEFAULT_IMAGE} when omitted.`),
    storage,
    resources,
  },
  {
    description: 'The operator runs etcd for this cluster.',
    'x-kubernetes-validations': [
      {
        rule: 'self.replicas == oldSelf.replicas',
        message: 'spec.etcd.managed.replicas cannot change after creation (the members were bootstrapped as one fixed cluster); create a new cluster with the size you need',
      },
    ],
  },
);

export const etcdSpec = obj(
  {
    managed: etcdManaged,
    external: obj(
      {
        endpoints: arr(str({ pattern: '^https?://[^\\s]+$', maxLength: 253 }), {
          description: 'Client URLs of an etcd you run, e.g. https://etcd-0.etcd:2379.',
          minItems: 1,
          maxItems: 9,
        }),
        tlsSecret: obj({ name: str({ minLength: 1, maxLength: 253 }) }, { required: ['name'], description: 'Secret with ca.crt, tls.crt, tls.key.' }),
      },
      { required: ['endpoints'], description: 'An etcd you run.' },
    ),
  },
  {
    default: { managed: defaultsOf(etcdManaged.json.properties!) },
    description: 'Where leader election, membership, delete events and metadata live.',
    'x-kubernetes-validations': [
      {
        rule: 'has(self.managed) != has(self.external)',
        message: 'spec.etcd: set exactly one of managed (the operator runs etcd) or external (endpoints of an etcd you run)',
      },
      {
        rule: 'has(self.managed) == has(oldSelf.managed)',
        message: 'spec.etcd: cannot switch between managed and external etcd after creation; create a new cluster and move the data',
      },
    ],
  },
);

export const dragonflySpec = obj(
  {
    managed: obj(
      {
        image: image(`Dragonfly image; the operator's pinned ${DRAGONFLY_DEFAULT_IMAGE} when omitted.`),
        memory: quantity(
          `Memory of the Dragonfly container (its request and limit), at least 320Mi; --maxmemory is 80% of it. Default: the memory limit in resources, else ${DRAGONFLY_DEFAULT_MEMORY}.`,
        ),
        storage,
        resources,
      },
      {
        description: 'The operator runs Dragonfly for this cluster.',
        'x-kubernetes-validations': [
          {
            rule: "!has(self.memory) || quantity(string(self.memory)).compareTo(quantity('320Mi')) >= 0",
            message: 'spec.dragonfly.managed.memory must be at least 320Mi (Dragonfly needs 256Mi of --maxmemory per thread, and --maxmemory is 80% of memory); raise it or omit it',
          },
        ],
      },
    ),
    external: obj(
      {
        url: str({ description: 'redis://host:port or rediss://host:port of a Redis-protocol server you run.', pattern: '^rediss?://[^\\s]+$', maxLength: 512 }),
        passwordSecret: secretKeyRef,
      },
      { required: ['url'], description: 'A Dragonfly (or other Redis-protocol server) you run.' },
    ),
  },
  {
    default: { managed: {} },
    description: 'Where the operation log and snapshots live.',
    'x-kubernetes-validations': [
      {
        rule: 'has(self.managed) != has(self.external)',
        message: 'spec.dragonfly: set exactly one of managed (the operator runs Dragonfly) or external (the URL of a server you run)',
      },
      {
        rule: 'has(self.managed) == has(oldSelf.managed)',
        message: 'spec.dragonfly: cannot switch between managed and external after creation; create a new cluster',
      },
    ],
  },
);

export const serviceSpec = obj(
  {
    type: str({ enum: ['ClusterIP', 'NodePort', 'LoadBalancer'] as const, default: 'ClusterIP' }),
    ports: arr(
      obj(
        {
          name: str({ maxLength: 15 }),
          port: int({ minimum: 1, maximum: 65535 }),
          targetPort: intOrString(),
        },
        { required: ['port'] },
      ),
      { maxItems: 16, description: 'Ports of the leader Service; the master ports when omitted.' },
    ),
    annotations: stringMap({ maxProperties: 64 }),
  },
  { defaulted: true, description: 'The Service that always points at the leader.' },
);

export const podSpec = obj(
  {
    affinity: loose({ description: 'Kubernetes Affinity.' }),
    tolerations: arr(loose(), { maxItems: 64 }),
    nodeSelector: stringMap({ maxProperties: 64 }),
    priorityClassName: str({ maxLength: 253 }),
  },
  { defaulted: true, description: 'Scheduling of the master pods.' },
);

export const pdbSpec = obj(
  {
    enabled: bool({ default: true }),
    maxUnavailable: int({ description: 'Master pods that may be disrupted at once.', minimum: 1, maximum: 8, default: 1 }),
  },
  { defaulted: true },
);

export const hotStandbyClusterSpec = obj(
  {
    replicas: int({ description: 'Masters: one leader plus hot standbys.', minimum: 1, maximum: 9, default: 3 }),
    master: masterSpec,
    agent: agentSpec,
    election: electionSpec,
    oplog: oplogSpec,
    snapshot: snapshotSpec,
    etcd: etcdSpec,
    dragonfly: dragonflySpec,
    service: serviceSpec,
    pod: podSpec,
    podDisruptionBudget: pdbSpec,
    deletionPolicy: str({
      description:
        'What happens to the data volumes (PersistentVolumeClaims of managed etcd and Dragonfly) when the cluster is deleted: Retain keeps them, Delete removes them.',
      enum: ['Retain', 'Delete'] as const,
      default: 'Retain',
    }),
  },
  {
    required: ['master'],
    'x-kubernetes-validations': [
      {
        rule: '!self.podDisruptionBudget.enabled || self.replicas < 2 || self.podDisruptionBudget.maxUnavailable < self.replicas',
        message: 'spec.podDisruptionBudget.maxUnavailable must be below spec.replicas, or a drain could take every master down; lower it or add replicas',
      },
      {
        rule: "self.oplog.replication != 'sync' || self.oplog.minSyncStandbys < self.replicas",
        message:
          'spec.oplog.minSyncStandbys must be below spec.replicas when spec.oplog.replication is sync (the leader is not its own standby, so no write could ever be acknowledged); lower minSyncStandbys or raise replicas',
      },
      {
        rule: 'self.oplog.maxLength >= 2 * self.snapshot.everyEntries',
        message:
          'spec.oplog.maxLength must be at least twice spec.snapshot.everyEntries, so entries after the newest snapshot are never trimmed; raise maxLength or lower everyEntries',
      },
    ],
  },
);

const condition = obj(
  {
    type: str({ maxLength: 316 }),
    status: str({ enum: ['True', 'False', 'Unknown'] as const }),
    observedGeneration: int({ minimum: 0 }),
    lastTransitionTime: str({ format: 'date-time' }),
    reason: str({ maxLength: 1024 }),
    message: str({ maxLength: 32768 }),
  },
  { required: ['type', 'status', 'lastTransitionTime', 'reason', 'message'] },
);

const storageKinds = ['PersistentVolumeClaim', 'EmptyDir', 'External'] as const;

export const hotStandbyClusterStatus = obj({
  phase: str({ enum: ['Pending', 'Provisioning', 'Running', 'Degraded', 'Failed'] as const }),
  observedGeneration: int({ minimum: 0 }),
  replicas: int({ minimum: 0 }),
  readyReplicas: int({ minimum: 0 }),
  ready: str({ description: 'readyReplicas/replicas, for the READY column.' }),
  selector: str({ description: 'Label selector of the master pods (scale subresource).' }),
  leader: obj({ pod: str(), epoch: int({ minimum: 0 }), since: str({ format: 'date-time' }) }),
  members: arr(
    obj(
      {
        pod: str(),
        role: str(),
        appliedSeq: int({ minimum: 0 }),
        lag: int({ minimum: 0 }),
        ready: bool(),
      },
      { required: ['pod'] },
    ),
    { 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': ['pod'] },
  ),
  maxLag: int({ minimum: 0, description: 'Largest lag of a standby behind the leader, in log entries.' }),
  oplog: obj({ headSeq: int({ minimum: 0 }), length: int({ minimum: 0 }) }),
  snapshot: obj({
    lastSeq: int({ minimum: 0 }),
    lastTime: str({ format: 'date-time' }),
    sizeBytes: int({ minimum: 0 }),
    state: str({ enum: ['None', 'Taking', 'Stored', 'Failed'] as const }),
  }),
  lastFailover: obj({ time: str({ format: 'date-time' }), from: str(), to: str(), durationMs: int({ minimum: 0 }) }),
  failoverCount: int({ minimum: 0 }),
  updatedReplicas: int({ minimum: 0, description: 'Master pods running the current pod template.' }),
  storage: obj(
    {
      etcd: str({ enum: storageKinds, description: 'Where etcd keeps its data.' }),
      dragonfly: str({ enum: storageKinds, description: 'Where Dragonfly keeps its snapshots.' }),
    },
    { description: 'PersistentVolumeClaim: survives pod restarts. EmptyDir: lost with the pod, not durable. External: a store you run.' },
  ),
  switchover: obj(
    {
      target: str({ description: 'The pod asked to lead, or any.' }),
      requestedAt: str({ format: 'date-time' }),
      result: str({ enum: ['Pending', 'Succeeded', 'Failed'] as const }),
      message: str({ maxLength: 32768 }),
      completedAt: str({ format: 'date-time' }),
    },
    { description: 'The latest planned switchover and how it ended.' },
  ),
  conditions: arr(condition, { 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': ['type'] }),
});

export type HotStandbyClusterSpec = Infer<typeof hotStandbyClusterSpec>;
export type HotStandbyClusterStatus = Infer<typeof hotStandbyClusterStatus>;

export interface HotStandbyCluster {
  apiVersion: `${typeof GROUP}/${typeof VERSION}`;
  kind: typeof KIND;
  metadata: { name: string; namespace?: string; [k: string]: unknown };
  spec: HotStandbyClusterSpec;
  status?: HotStandbyClusterStatus;
}

/** `kubectl get hsc` columns; priority 1 shows under -o wide. */
export const PRINTER_COLUMNS = [
  { name: 'Leader', type: 'string', jsonPath: '.status.leader.pod', description: 'The pod that leads now' },
  { name: 'Ready', type: 'string', jsonPath: '.status.ready', description: 'Ready masters / desired' },
  { name: 'Max-Lag', type: 'integer', jsonPath: '.status.maxLag', description: 'Largest standby lag, in log entries' },
  { name: 'Snapshot', type: 'date', jsonPath: '.status.snapshot.lastTime', description: 'When the newest snapshot was stored' },
  { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' },
  { name: 'Epoch', type: 'integer', jsonPath: '.status.leader.epoch', priority: 1, description: 'Fencing epoch of the leader' },
  { name: 'Head-Seq', type: 'integer', jsonPath: '.status.oplog.headSeq', priority: 1, description: 'Last sequence in the operation log' },
  { name: 'Failovers', type: 'integer', jsonPath: '.status.failoverCount', priority: 1 },
  { name: 'Phase', type: 'string', jsonPath: '.status.phase', priority: 1 },
] as const;

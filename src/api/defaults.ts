// Values the operator uses when a HotStandbyCluster leaves a field out and the
// CRD carries no default for it (images and resources, which should follow the
// operator's version rather than be frozen into each stored object at creation).
// docs/crd.md lists them; the builders in src/operator/builders use only these.

/** etcd for managed clusters: the current 3.6 patch release (CHANGELOG-3.6, 2026-10-22). */
export const ETCD_DEFAULT_IMAGE = 'gcr.io/etcd-development/etcd:v3.6.16';
/** Dragonfly for managed clusters: the newest release tag (v1.40.1, 2026-08). */
export const DRAGONFLY_DEFAULT_IMAGE = 'docker.dragonflydb.io/dragonflydb/dragonfly:v1.40.1';

/**
 * The agent container's resources when spec.agent.resources is omitted.
 * From bench/footprint.ts (compiled build with the image's `node
 * --optimize-for-size` and MALLOC_ARENA_MAX=2, 2-core test machine, seventh
 * round): an idle agent holds 69-72 MB RSS and uses 0.3-0.4% of a core; under
 * 10,000 entries/s the leader held 83-84 MB and used 11-16% of a core, the
 * standby 77-78 MB and 14-19% (docs/footprint.md). Memory: the request is
 * the loaded peak with about 50% headroom; the limit leaves room for a
 * snapshot in flight (the agent holds one whole snapshot while storing or
 * loading it), so raise it for masters whose state is larger than about
 * 100 MB. CPU: a request for the leader at 10,000
 * entries/s, and no limit, because a throttled agent can miss its lease
 * keepalives and cause a needless failover.
 */
export const AGENT_DEFAULT_RESOURCES = { requests: { cpu: '250m', memory: '128Mi' }, limits: { memory: '256Mi' } };
/** A managed etcd member's resources when spec.etcd.managed.resources is omitted (a best-effort pod is evicted first). */
export const ETCD_DEFAULT_RESOURCES = { requests: { cpu: '100m', memory: '128Mi' }, limits: { memory: '512Mi' } };
/** Managed Dragonfly's resources when spec.dragonfly.managed.resources is omitted; memory comes from DRAGONFLY_DEFAULT_MEMORY. */
export const DRAGONFLY_DEFAULT_RESOURCES = { requests: { cpu: '100m' } };
/** Managed Dragonfly's memory (container limit) when neither spec.dragonfly.managed.memory nor a memory limit in its resources is given. */
export const DRAGONFLY_DEFAULT_MEMORY = '1Gi';
/** Dragonfly refuses to start with less than this much --maxmemory per thread. */
export const DRAGONFLY_MIN_MEMORY_PER_THREAD_BYTES = 256 * 1024 * 1024;

/** The master's ports when spec.master.ports is omitted (also the CRD default, so the stored object shows it). */
export const MASTER_DEFAULT_PORTS = [{ name: 'main', containerPort: 8080, protocol: 'TCP' as const }];

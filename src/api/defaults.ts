// Defaults the operator applies where a HotStandbyCluster leaves a field out,
// kept apart from the schema so the operator's builders and the docs read the
// same values.

/**
 * The agent container's resources when spec.agent.resources is omitted.
 * From bench/footprint.ts (compiled build with the image's `node
 * --optimize-for-size` and MALLOC_ARENA_MAX=2, 2-core test machine): an idle
 * agent holds 83 MB RSS and uses 1.4% of a core; under 10,000 entries/s the
 * leader held 94 MB and used 24% of a core, the standby 89 MB and 17-39%
 * (docs/footprint.md). Memory: the request is the loaded peak with about 35%
 * headroom; the limit leaves room for a snapshot in flight (the agent holds one
 * whole snapshot while storing or loading it), so raise it for masters whose
 * state is larger than about 100 MB. CPU: a request for the leader at 10,000
 * entries/s, and no limit, because a throttled agent can miss its lease
 * keepalives and cause a needless failover.
 */
export const AGENT_DEFAULT_RESOURCES = {
  requests: { cpu: '250m', memory: '128Mi' },
  limits: { memory: '256Mi' },
} as const;

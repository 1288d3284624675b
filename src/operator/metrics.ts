// The operator's Prometheus metrics, on prom-client: one registry per process
// (tests make their own), served on /metrics. Cluster series are dropped when
// their cluster goes away, so a deleted cluster leaves no stale lines.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export class OperatorMetrics {
  readonly registry = new Registry();

  readonly operatorLeader = this.gauge('hotstandby_operator_leader', 'Whether this replica is the active controller (1) or stands by (0)');
  readonly reconcileDuration = new Histogram({
    name: 'hotstandby_reconcile_duration_seconds',
    help: 'Time one reconcile of a HotStandbyCluster took, by result (ok, error)',
    labelNames: ['result'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });
  readonly reconcileErrors = new Counter({
    name: 'hotstandby_reconcile_errors_total',
    help: 'Reconciles that failed, by reason (the API status reason, e.g. Conflict, Forbidden, or Timeout, Error)',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  /** Read when /metrics is scraped; the controller points it at its work queue. */
  workqueueDepthSource: () => number = () => 0;
  readonly workqueueDepth: Gauge = new Gauge({
    name: 'hotstandby_workqueue_depth',
    help: 'HotStandbyClusters waiting for a reconcile worker',
    registers: [this.registry],
    collect: (): void => this.workqueueDepth.set(this.workqueueDepthSource()),
  });
  readonly applyWrites = new Counter({
    name: 'hotstandby_apply_writes_total',
    help: 'Server-side apply requests that could write (not dry runs), by kind; 0 per interval in steady state',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });
  readonly kubeRequests = new Counter({
    name: 'hotstandby_kube_requests_total',
    help: 'Requests the controller sent to the Kubernetes API (watches aside), by verb; dry runs counted apart',
    labelNames: ['verb'] as const,
    registers: [this.registry],
  });
  readonly watchEvents = new Counter({
    name: 'hotstandby_watch_events_total',
    help: 'Watch events the controller received, by kind',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });
  readonly prunes = new Counter({
    name: 'hotstandby_prune_deletes_total',
    help: 'Children deleted because the cluster no longer wants them, by kind',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });
  readonly leaderChanges = new Counter({
    name: 'hotstandby_leader_changes_total',
    help: 'Leader changes (failovers and switchovers) the operator observed, per cluster',
    labelNames: ['cluster'] as const,
    registers: [this.registry],
  });
  readonly failoverDuration = new Histogram({
    name: 'hotstandby_failover_duration_seconds',
    help: "Time from the old leader's last heartbeat to the new leader taking over, per cluster",
    labelNames: ['cluster'] as const,
    buckets: [0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 60],
    registers: [this.registry],
  });
  readonly memberLag = new Gauge({
    name: 'hotstandby_member_lag',
    help: 'Log entries a member is behind the leader',
    labelNames: ['cluster', 'member'] as const,
    registers: [this.registry],
  });
  readonly clusterReadyMembers = this.clusterGauge('hotstandby_cluster_ready_members', 'Members whose heartbeat is fresh and state ok');
  readonly clusterMaxLag = this.clusterGauge('hotstandby_cluster_max_lag', 'Largest standby lag behind the leader, in log entries');
  readonly clusterHeadSeq = this.clusterGauge('hotstandby_cluster_head_seq', 'Last sequence number in the operation log');
  readonly clusterFailovers = this.clusterGauge('hotstandby_cluster_failovers', 'Failovers observed by the operator');
  readonly clusterLeaderEpoch = this.clusterGauge('hotstandby_cluster_leader_epoch', 'Fencing epoch of the current leader');

  /** Members with a lag series, per cluster, so a member that left loses its series. */
  private readonly lagMembers = new Map<string, Set<string>>();

  constructor(opts: { processMetrics?: boolean } = {}) {
    if (opts.processMetrics ?? true) collectDefaultMetrics({ register: this.registry });
  }

  /** Sets each member's lag; members no longer listed lose their series. */
  setMemberLags(cluster: string, lags: Array<{ member: string; lag: number }>): void {
    const before = this.lagMembers.get(cluster) ?? new Set<string>();
    const now = new Set(lags.map((l) => l.member));
    for (const m of before) if (!now.has(m)) this.memberLag.remove({ cluster, member: m });
    for (const l of lags) this.memberLag.set({ cluster, member: l.member }, l.lag);
    this.lagMembers.set(cluster, now);
  }

  /** Forgets every series of a cluster (it was deleted or is no longer watched). */
  dropCluster(cluster: string): void {
    for (const g of [this.clusterReadyMembers, this.clusterMaxLag, this.clusterHeadSeq, this.clusterFailovers, this.clusterLeaderEpoch]) g.remove({ cluster });
    this.leaderChanges.remove({ cluster });
    this.failoverDuration.remove({ cluster });
    this.setMemberLags(cluster, []);
    this.lagMembers.delete(cluster);
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  render(): Promise<string> {
    return this.registry.metrics();
  }

  private gauge(name: string, help: string): Gauge {
    return new Gauge({ name, help, registers: [this.registry] });
  }

  private clusterGauge(name: string, help: string): Gauge<'cluster'> {
    return new Gauge({ name, help, labelNames: ['cluster'] as const, registers: [this.registry] });
  }
}

// The operator's prom-client metrics: names and labels as documented, a
// member that left and a deleted cluster leave no stale series, and the queue
// depth is read at scrape time.
import { describe, expect, it } from 'vitest';
import { OperatorMetrics } from '../../src/operator/metrics.ts';
import { microTime } from '../../src/operator/kube/events.ts';
import { errorReason } from '../../src/operator/controller.ts';
import { KubeApiError } from '../../src/operator/kube/client.ts';

describe('OperatorMetrics', () => {
  it('exposes the gauges, counters and histograms by name, with process metrics', async () => {
    const m = new OperatorMetrics();
    m.operatorLeader.set(1);
    m.clusterReadyMembers.set({ cluster: 'ns/kv' }, 3);
    m.reconcileDuration.observe({ result: 'ok' }, 0.02);
    m.reconcileErrors.inc({ reason: 'Conflict' });
    m.applyWrites.inc({ kind: 'StatefulSet' });
    m.leaderChanges.inc({ cluster: 'ns/kv' });
    m.failoverDuration.observe({ cluster: 'ns/kv' }, 2.5);
    m.setMemberLags('ns/kv', [{ member: 'kv-1', lag: 4 }]);
    let depth = 7;
    m.workqueueDepthSource = () => depth;
    const text = await m.render();
    expect(text).toContain('hotstandby_operator_leader 1');
    expect(text).toMatch(/hotstandby_cluster_ready_members\{cluster="ns\/kv"\} 3/);
    expect(text).toContain('hotstandby_reconcile_duration_seconds_bucket{le="0.025",result="ok"} 1');
    expect(text).toContain('hotstandby_reconcile_errors_total{reason="Conflict"} 1');
    expect(text).toContain('hotstandby_apply_writes_total{kind="StatefulSet"} 1');
    expect(text).toContain('hotstandby_leader_changes_total{cluster="ns/kv"} 1');
    expect(text).toContain('hotstandby_failover_duration_seconds_bucket{le="3",cluster="ns/kv"} 1');
    expect(text).toContain('hotstandby_member_lag{cluster="ns/kv",member="kv-1"} 4');
    expect(text).toContain('hotstandby_workqueue_depth 7');
    expect(text).toContain('process_cpu_user_seconds_total');
    depth = 0;
    expect(await m.render()).toContain('hotstandby_workqueue_depth 0');
  });

  it('a member that left and a deleted cluster lose their series', async () => {
    const m = new OperatorMetrics({ processMetrics: false });
    m.setMemberLags('ns/kv', [{ member: 'kv-1', lag: 4 }, { member: 'kv-2', lag: 1 }]);
    m.setMemberLags('ns/kv', [{ member: 'kv-2', lag: 0 }]);
    m.setMemberLags('ns/other', [{ member: 'o-1', lag: 9 }]);
    m.clusterMaxLag.set({ cluster: 'ns/kv' }, 4);
    m.leaderChanges.inc({ cluster: 'ns/kv' });
    let text = await m.render();
    expect(text).not.toContain('member="kv-1"');
    expect(text).toContain('hotstandby_member_lag{cluster="ns/kv",member="kv-2"} 0');
    m.dropCluster('ns/kv');
    text = await m.render();
    expect(text).not.toContain('cluster="ns/kv"');
    expect(text).toContain('hotstandby_member_lag{cluster="ns/other",member="o-1"} 9');
  });
});

describe('small operator helpers', () => {
  it('MicroTime has six fractional digits, as the API server requires', () => {
    expect(microTime(new Date('2026-11-27T06:50:00.123Z'))).toBe('2026-11-27T06:50:00.123000Z');
  });

  it('the errors metric reason comes from the API status reason, through causes', () => {
    const api = new KubeApiError(409, 'Conflict', 'PATCH x: 409 Conflict');
    expect(errorReason(new Error('applying StatefulSet ns/kv', { cause: api }))).toBe('Conflict');
    expect(errorReason(new Error('plain'))).toBe('Error');
    const timeout = new Error('slow');
    timeout.name = 'TimeoutError';
    expect(errorReason(timeout)).toBe('Timeout');
  });
});

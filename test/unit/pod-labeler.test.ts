// PodLabeler's ordering and retry logic against an in-memory API (pure logic;
// the real API server path is test/e2e/agent-labels.test.ts).
import { describe, expect, it } from 'vitest';
import { PodLabeler } from '../../src/agent/pod-labeler.ts';
import { KubeApiError, type PodLabels } from '../../src/agent/kube-client.ts';
import { CLUSTER_LABEL, ROLE_LABEL } from '../../src/lib/labels.ts';
import { silentLogger } from '../../src/lib/log.ts';
import { waitFor } from '../../src/lib/time.ts';

class FakeApi {
  pods = new Map<string, { rv: number; labels: Record<string, string> }>();
  calls: string[] = [];
  /** Makes the next n calls fail with this error. */
  failNext = 0;
  failWith: Error = new KubeApiError(503, 'ServiceUnavailable', 'down');
  closed = false;

  constructor(pods: Record<string, Record<string, string>>) {
    for (const [name, labels] of Object.entries(pods)) this.pods.set(name, { rv: 1, labels: { ...labels } });
  }

  private maybeFail(): void {
    if (this.failNext > 0) {
      this.failNext--;
      throw this.failWith;
    }
  }

  listPods(selector: string): Promise<PodLabels[]> {
    this.calls.push(`list ${selector}`);
    this.maybeFail();
    const want = Object.fromEntries(selector.split(',').map((kv) => kv.split('=') as [string, string]));
    const out = [...this.pods.entries()]
      .filter(([, p]) => Object.entries(want).every(([k, v]) => p.labels[k] === v))
      .map(([name, p]) => ({ name, resourceVersion: String(p.rv), labels: { ...p.labels } }));
    return Promise.resolve(out);
  }

  patchPodLabels(pod: string, labels: Record<string, string | null>, opts: { resourceVersion?: string } = {}): Promise<void> {
    this.calls.push(`patch ${pod} ${JSON.stringify(labels)}${opts.resourceVersion ? ` rv=${opts.resourceVersion}` : ''}`);
    this.maybeFail();
    const p = this.pods.get(pod);
    if (!p) return Promise.reject(new KubeApiError(404, 'NotFound', `pods "${pod}" not found`));
    if (opts.resourceVersion && opts.resourceVersion !== String(p.rv)) return Promise.reject(new KubeApiError(409, 'Conflict', 'modified'));
    for (const [k, v] of Object.entries(labels)) {
      if (v === null) delete p.labels[k];
      else p.labels[k] = v;
    }
    p.rv++;
    return Promise.resolve();
  }

  close(): void {
    this.closed = true;
  }

  role(pod: string): string | undefined {
    return this.pods.get(pod)?.labels[ROLE_LABEL];
  }
}

const member = (role?: string, cluster = 'kv'): Record<string, string> => ({ [CLUSTER_LABEL]: cluster, ...(role ? { [ROLE_LABEL]: role } : {}) });

function labeler(api: FakeApi, pod = 'kv-1'): PodLabeler {
  return new PodLabeler({ client: api, clusterName: 'kv', pod, log: silentLogger(), backoffInitialMs: 10, backoffMaxMs: 40, leaderRecheckMs: 50 });
}

describe('PodLabeler', () => {
  it('strips every other leader label of its cluster before labelling its own pod', async () => {
    const api = new FakeApi({ 'kv-0': member('leader'), 'kv-1': member('standby'), 'kv-2': member('leader'), 'other-0': member('leader', 'other') });
    const l = labeler(api);
    expect(await l.lead(() => true, 2000)).toBe(true);
    const patches = api.calls.filter((c) => c.startsWith('patch'));
    expect(patches).toEqual([
      `patch kv-0 {"${ROLE_LABEL}":null} rv=1`,
      `patch kv-2 {"${ROLE_LABEL}":null} rv=1`,
      `patch kv-1 {"${ROLE_LABEL}":"leader"}`,
    ]);
    expect(api.role('other-0')).toBe('leader');
    await l.close();
    expect(api.closed).toBe(true);
  });

  it('gives up waiting after the bound but keeps retrying in the background until done', async () => {
    const api = new FakeApi({ 'kv-0': member('leader'), 'kv-1': member() });
    api.failNext = 1000;
    const l = labeler(api);
    expect(await l.lead(() => true, 100)).toBe(false);
    expect(api.role('kv-1')).toBeUndefined();
    const attempts = api.calls.length;
    expect(attempts).toBeGreaterThan(1);
    api.failNext = 0;
    await waitFor(() => api.role('kv-1') === 'leader' && api.role('kv-0') === undefined, { timeoutMs: 2000, what: 'labels after the API recovers' });
    await l.close();
  });

  it('a conflict (the pod changed since the list) is retried from a fresh list, keeping a standby label', async () => {
    const api = new FakeApi({ 'kv-0': member('leader'), 'kv-1': member() });
    const realList = api.listPods.bind(api);
    let first = true;
    api.listPods = async (selector: string) => {
      const out = await realList(selector);
      if (first) {
        first = false;
        // kv-0's own agent demotes itself between our list and our patch.
        await api.patchPodLabels('kv-0', { [ROLE_LABEL]: 'standby' });
      }
      return out;
    };
    const l = labeler(api);
    expect(await l.lead(() => true, 2000)).toBe(true);
    expect(api.role('kv-0')).toBe('standby');
    expect(api.role('kv-1')).toBe('leader');
    await l.close();
  });

  it('stops touching other pods once leadership has ended', async () => {
    const api = new FakeApi({ 'kv-0': member('leader'), 'kv-1': member() });
    const l = labeler(api);
    expect(await l.lead(() => false, 200)).toBe(false);
    expect(api.calls.filter((c) => c.startsWith('patch'))).toEqual([]);
    expect(api.role('kv-0')).toBe('leader');
    await l.close();
  });

  it('as leader checks again and removes a leader label that reappears; standby takes over on demotion', async () => {
    const api = new FakeApi({ 'kv-0': member(), 'kv-1': member() });
    const l = labeler(api);
    expect(await l.lead(() => true, 2000)).toBe(true);
    // A deposed leader's late write puts its label back.
    await api.patchPodLabels('kv-0', { [ROLE_LABEL]: 'leader' });
    await waitFor(() => api.role('kv-0') === undefined, { timeoutMs: 2000, what: 'the recheck to remove the second leader label' });
    l.standby();
    await waitFor(() => api.role('kv-1') === 'standby', { timeoutMs: 2000, what: 'our pod labelled standby' });
    await l.close();
  });

  it('a promotion starts with the shortest backoff, not the standby target\'s long one', async () => {
    const api = new FakeApi({ 'kv-1': member() });
    api.failNext = 1_000_000;
    const l = new PodLabeler({ client: api, clusterName: 'kv', pod: 'kv-1', log: silentLogger(), backoffInitialMs: 10, backoffMaxMs: 60_000 });
    l.standby();
    await waitFor(() => api.calls.length >= 8, { timeoutMs: 5000, what: 'the standby backoff to grow' }); // next wait: >= 1.28 s
    api.failNext = 1; // the API recovers after one more failure
    expect(await l.lead(() => true, 500)).toBe(true);
    expect(api.role('kv-1')).toBe('leader');
    await l.close();
  });

  it('close() ends retries: no call after it', async () => {
    const api = new FakeApi({ 'kv-1': member() });
    api.failNext = 1_000_000;
    const l = labeler(api);
    l.standby();
    await waitFor(() => api.calls.length >= 2, { timeoutMs: 2000, what: 'a few attempts' });
    await l.close();
    const n = api.calls.length;
    await new Promise((r) => setTimeout(r, 150));
    expect(api.calls.length).toBe(n);
  });
});

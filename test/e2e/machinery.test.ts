// The controller machinery against a real kube-apiserver, generic over child
// kinds: a test CRD (Widget) stands in for HotStandbyCluster and a tiny
// builder stands in for the real ones (a ConfigMap, and a Service while the
// widget lists ports). Checked: children are created with server-side apply;
// a reconcile with nothing to change writes nothing (resourceVersions kept,
// write counter unchanged), also for a fresh controller with no memory; a
// hand edit is reverted; a hand-deleted child comes back; an unwanted child is
// pruned; deletionPolicy Delete runs the cleanup through a finalizer and the
// object goes, Retain adds no finalizer; events are deduplicated into a
// series; an informer recovers from an API server restart and, after etcd was
// compacted past its resourceVersion, relists and reports what vanished.
import { Etcd3 } from 'etcd3';
import { KubeConfig } from '@kubernetes/client-node';
import { stringify } from 'yaml';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeE2E, useDevCluster } from '../harness/kube.ts';
import { ManagedProcess } from '../../src/lib/childproc.ts';
import { CLUSTER_LABEL } from '../../src/lib/labels.ts';
import { silentLogger } from '../../src/lib/log.ts';
import { waitFor } from '../../src/lib/time.ts';
import { Controller, type ReconcileContext } from '../../src/operator/controller.ts';
import { cleanupClusterData } from '../../src/operator/cleanup.ts';
import { deletionPolicyOf, handleFinalizer, CLEANUP_FINALIZER } from '../../src/operator/finalizer.ts';
import { KubeClient, type KindRef, type KubeObject } from '../../src/operator/kube/client.ts';
import { EventRecorder } from '../../src/operator/kube/events.ts';
import { Informer, type InformerEvent } from '../../src/operator/kube/informer.ts';
import { OperatorMetrics } from '../../src/operator/metrics.ts';

const WIDGET: KindRef = { apiVersion: 'machinery.hotstandby.dev/v1', kind: 'Widget' };
const CONFIGMAP: KindRef = { apiVersion: 'v1', kind: 'ConfigMap' };
const SERVICE: KindRef = { apiVersion: 'v1', kind: 'Service' };
const NS = 'default';

const widgetCrd = {
  apiVersion: 'apiextensions.k8s.io/v1',
  kind: 'CustomResourceDefinition',
  metadata: { name: 'widgets.machinery.hotstandby.dev' },
  spec: {
    group: 'machinery.hotstandby.dev',
    names: { kind: 'Widget', plural: 'widgets', singular: 'widget', listKind: 'WidgetList' },
    scope: 'Namespaced',
    versions: [
      {
        name: 'v1',
        served: true,
        storage: true,
        subresources: { status: {} },
        schema: { openAPIV3Schema: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true } },
      },
    ],
  },
};

/** The builder stand-in: pure, from the widget alone. */
function desiredFor(w: KubeObject): KubeObject[] {
  const spec = (w.spec ?? {}) as { greeting?: string; ports?: number[] };
  const labels = { [CLUSTER_LABEL]: w.metadata.name };
  const out: KubeObject[] = [
    { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: `${w.metadata.name}-config`, namespace: NS, labels }, data: { greeting: spec.greeting ?? 'hello' } },
  ];
  if (spec.ports?.length) {
    out.push({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: w.metadata.name, namespace: NS, labels },
      spec: { selector: labels, ports: spec.ports.map((p) => ({ name: `p${p}`, port: p, targetPort: p })) },
    });
  }
  return out;
}

describeE2E('controller machinery', () => {
  const kube = useDevCluster({ nodes: 1 });
  let kc: KubeConfig;
  let controller: Controller;
  const metrics = new OperatorMetrics({ processMetrics: true });
  let reconciles = 0;
  const cleanups: string[] = [];

  const reconcile = async (key: string, ctx: ReconcileContext): Promise<void> => {
    reconciles++;
    const w = ctx.cache.primary(key);
    if (!w) return;
    const state = await handleFinalizer({
      client: ctx.client,
      obj: w,
      policy: deletionPolicyOf(w),
      cleanup: async () => void cleanups.push(key),
      log: ctx.log,
    });
    if (state === 'deleting') return;
    await ctx.syncChildren(w, desiredFor(w));
  };

  const kubectl = (args: string[], input?: string): Promise<string> => kube().kubectl(args, input !== undefined ? { input } : {});
  const jsonpath = async (what: string[], path: string): Promise<string> => (await kubectl(['get', ...what, '-n', NS, '-o', `jsonpath={${path}}`])).trim();
  const exists = async (what: string[]): Promise<boolean> => (await kubectl(['get', ...what, '-n', NS, '--ignore-not-found', '-o', 'name'])).trim() !== '';
  const writes = async (m: OperatorMetrics = metrics): Promise<number> => (await m.applyWrites.get()).values.reduce((a, v) => a + v.value, 0);

  /** Waits until the controller has run at least one more reconcile and has nothing queued, running or waiting. */
  const settle = async (c: Controller = controller, since = reconciles): Promise<void> => {
    let idleSince = 0;
    await waitFor(
      () => {
        const idle = c.queue.depth === 0 && c.queue.active === 0 && c.queue.waiting === 0 && reconciles > since;
        if (!idle) idleSince = 0;
        else if (!idleSince) idleSince = Date.now();
        return idle && Date.now() - idleSince > 500;
      },
      { timeoutMs: 30_000, intervalMs: 50, what: 'the controller to go idle' },
    );
  };

  let events: EventRecorder | undefined;
  const newController = (m: OperatorMetrics, withEvents?: EventRecorder): Controller =>
    new Controller({ kc, namespaces: [NS], primary: WIDGET, kinds: [CONFIGMAP, SERVICE], reconcile, log: silentLogger(), metrics: m, events: withEvents, retryBaseMs: 200, retryMaxMs: 2000 });

  beforeAll(async () => {
    kc = new KubeConfig();
    kc.loadFromFile(kube().kubeconfig);
    await kubectl(['apply', '-f', '-'], stringify(widgetCrd));
    await kubectl(['wait', '--for=condition=Established', 'crd/widgets.machinery.hotstandby.dev', '--timeout=60s']);
    events = new EventRecorder({ client: new KubeClient(kc), instance: 'machinery-test', log: silentLogger() });
    controller = newController(metrics, events);
    await controller.start();
  }, 120_000);

  afterAll(async () => {
    await controller?.stop();
    await events?.stop();
  });

  it('creates the children with server-side apply under our field manager, owned by the widget', async () => {
    const since = reconciles;
    await kubectl(['apply', '-f', '-'], stringify({ apiVersion: WIDGET.apiVersion, kind: 'Widget', metadata: { name: 'w1', namespace: NS }, spec: { greeting: 'hi', ports: [80, 81] } }));
    await waitFor(async () => (await exists(['configmap', 'w1-config'])) && (await exists(['service', 'w1'])), { timeoutMs: 30_000, intervalMs: 200, what: 'the children of w1' });
    await settle(controller, since);
    expect(await jsonpath(['configmap', 'w1-config'], '.data.greeting')).toBe('hi');
    expect(await jsonpath(['configmap', 'w1-config'], '.metadata.managedFields[?(@.operation=="Apply")].manager')).toBe('hotstandby-operator');
    expect(await jsonpath(['configmap', 'w1-config'], '.metadata.ownerReferences[0].kind')).toBe('Widget');
    expect(await jsonpath(['configmap', 'w1-config'], '.metadata.ownerReferences[0].controller')).toBe('true');
    expect(await jsonpath(['service', 'w1'], '.spec.ports[*].port')).toBe('80 81');
    expect(await jsonpath(['widget', 'w1'], '.metadata.finalizers')).toBe(''); // Retain: no finalizer
  });

  it('a reconcile that finds nothing to change writes nothing, also from a fresh controller with no memory', async () => {
    await settle(controller, 0);
    const rvs = async () => [await jsonpath(['configmap', 'w1-config'], '.metadata.resourceVersion'), await jsonpath(['service', 'w1'], '.metadata.resourceVersion')];
    const before = await rvs();
    const w0 = await writes();
    const since = reconciles;
    controller.resyncNow();
    await settle(controller, since);
    expect(await writes()).toBe(w0);
    expect(await rvs()).toEqual(before);

    // A second controller (a restart: nothing remembered) decides by dry run.
    const freshMetrics = new OperatorMetrics({ processMetrics: false });
    const fresh = newController(freshMetrics);
    const since2 = reconciles;
    await fresh.start();
    try {
      await settle(fresh, since2);
      expect(await writes(freshMetrics)).toBe(0);
      expect(await rvs()).toEqual(before);
    } finally {
      await fresh.stop();
    }
  });

  it('a hand edit of an applied field is reverted by the next reconcile', async () => {
    const w0 = await writes();
    await kubectl(['patch', 'configmap', 'w1-config', '-n', NS, '--type', 'merge', '-p', '{"data":{"greeting":"hacked"}}']);
    await waitFor(async () => (await jsonpath(['configmap', 'w1-config'], '.data.greeting')) === 'hi', { timeoutMs: 30_000, intervalMs: 200, what: 'the edit to be reverted' });
    await settle(controller, 0);
    expect(await writes()).toBe(w0 + 1);
  });

  it('a child deleted by hand comes back', async () => {
    const uid = await jsonpath(['configmap', 'w1-config'], '.metadata.uid');
    await kubectl(['delete', 'configmap', 'w1-config', '-n', NS]);
    await waitFor(async () => (await exists(['configmap', 'w1-config'])) && (await jsonpath(['configmap', 'w1-config'], '.metadata.uid')) !== uid, {
      timeoutMs: 30_000,
      intervalMs: 200,
      what: 'the ConfigMap to be recreated',
    });
  });

  it('a child no longer wanted is pruned; a same-kind object it does not control is left alone', async () => {
    await kubectl(['apply', '-f', '-'], stringify({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'w1-foreign', namespace: NS, labels: { [CLUSTER_LABEL]: 'w1' } }, spec: { ports: [{ port: 1 }] } }));
    await kubectl(['patch', 'widget', 'w1', '-n', NS, '--type', 'merge', '-p', '{"spec":{"ports":[]}}']);
    await waitFor(async () => !(await exists(['service', 'w1'])), { timeoutMs: 30_000, intervalMs: 200, what: 'the Service to be pruned' });
    await settle(controller, 0);
    expect(await exists(['service', 'w1-foreign'])).toBe(true);
    expect(await exists(['configmap', 'w1-config'])).toBe(true);
    expect((await metrics.prunes.get()).values.find((v) => v.labels.kind === 'Service')?.value).toBe(1);
  });

  it('records ChildCreated and ChildDeleted events on the widget', async () => {
    await waitFor(
      async () => {
        const events = JSON.parse(await kubectl(['get', 'events.events.k8s.io', '-n', NS, '-o', 'json'])) as { items: Array<{ reason: string; regarding: { name: string } }> };
        const reasons = events.items.filter((e) => e.regarding.name === 'w1').map((e) => e.reason);
        return reasons.includes('ChildCreated') && reasons.includes('ChildDeleted');
      },
      { timeoutMs: 15_000, intervalMs: 300, what: 'ChildCreated and ChildDeleted events on w1' },
    );
  });

  it('the same event repeated is one Event with a series count', async () => {
    const recorder = new EventRecorder({ client: new KubeClient(kc), instance: 'test', log: silentLogger(), minPatchIntervalMs: 200 });
    const w1 = controller.readCache.primary(`${NS}/w1`)!;
    for (let i = 0; i < 5; i++) {
      recorder.record(w1, { type: 'Warning', reason: 'TestRepeat', action: 'Test', note: 'the same thing again' });
      await new Promise((r) => setTimeout(r, 100));
    }
    recorder.record(w1, { type: 'Warning', reason: 'TestRepeat', action: 'Test', note: 'something else' });
    await recorder.stop();
    const events = JSON.parse(await kubectl(['get', 'events.events.k8s.io', '-n', NS, '-o', 'json'])) as { items: Array<{ reason: string; note: string; series?: { count: number }; reportingController: string; eventTime: string }> };
    const same = events.items.filter((e) => e.reason === 'TestRepeat' && e.note === 'the same thing again');
    expect(same).toHaveLength(1);
    expect(same[0]!.series?.count).toBe(5);
    expect(same[0]!.reportingController).toBe('hotstandby.dev/operator');
    expect(same[0]!.eventTime).toMatch(/\.\d{6}Z$/);
    expect(events.items.filter((e) => e.reason === 'TestRepeat')).toHaveLength(2);
  });

  it('deletionPolicy Delete: a finalizer, removed with Retain; on deletion the cleanup runs and the widget goes', async () => {
    await kubectl(['apply', '-f', '-'], stringify({ apiVersion: WIDGET.apiVersion, kind: 'Widget', metadata: { name: 'w2', namespace: NS }, spec: { deletionPolicy: 'Delete' } }));
    await waitFor(async () => (await jsonpath(['widget', 'w2'], '.metadata.finalizers')).includes(CLEANUP_FINALIZER), { timeoutMs: 30_000, intervalMs: 200, what: 'the finalizer on w2' });
    await kubectl(['patch', 'widget', 'w2', '-n', NS, '--type', 'merge', '-p', '{"spec":{"deletionPolicy":"Retain"}}']);
    await waitFor(async () => (await jsonpath(['widget', 'w2'], '.metadata.finalizers')) === '', { timeoutMs: 30_000, intervalMs: 200, what: 'the finalizer to go with Retain' });
    await kubectl(['patch', 'widget', 'w2', '-n', NS, '--type', 'merge', '-p', '{"spec":{"deletionPolicy":"Delete"}}']);
    await waitFor(async () => (await jsonpath(['widget', 'w2'], '.metadata.finalizers')).includes(CLEANUP_FINALIZER), { timeoutMs: 30_000, intervalMs: 200, what: 'the finalizer back' });
    await kubectl(['delete', 'widget', 'w2', '-n', NS, '--wait=false']);
    await waitFor(async () => !(await exists(['widget', 'w2'])), { timeoutMs: 30_000, intervalMs: 200, what: 'w2 to be gone' });
    expect(cleanups).toEqual([`${NS}/w2`]);
  });

  it('deletionPolicy Retain: deleting runs no cleanup, and the children go by the ownerReference cascade', async () => {
    await kubectl(['delete', 'widget', 'w1', '-n', NS, '--wait=false']);
    await waitFor(async () => !(await exists(['widget', 'w1'])), { timeoutMs: 30_000, intervalMs: 200, what: 'w1 to be gone' });
    await waitFor(async () => !(await exists(['configmap', 'w1-config'])), { timeoutMs: 60_000, intervalMs: 300, what: 'the garbage collector to delete w1-config' });
    expect(cleanups).toEqual([`${NS}/w2`]);
  });

  it("the cleanup of a cluster with managed stores deletes its stores' PVCs and nothing else", async () => {
    const pvc = (name: string) => ({ apiVersion: 'v1', kind: 'PersistentVolumeClaim', metadata: { name, namespace: NS }, spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '1Gi' } } } });
    const names = ['data-kv-etcd-0', 'data-kv-etcd-2', 'snap-kv-dragonfly-0', 'data-kv-0', 'data-kv2-etcd-0', 'data-kv-etcd-x'];
    await kubectl(['apply', '-f', '-'], names.map((n) => stringify(pvc(n))).join('---\n'));
    const report = await cleanupClusterData({ client: new KubeClient(kc), cluster: { namespace: NS, name: 'kv' }, spec: { etcd: { managed: {} }, dragonfly: { managed: {} } } as never, log: silentLogger() });
    expect(report.pvcsDeleted.sort()).toEqual(['data-kv-etcd-0', 'data-kv-etcd-2', 'snap-kv-dragonfly-0']);
    const left = async (n: string) => (await exists(['pvc', n])) && (await jsonpath(['pvc', n], '.metadata.deletionTimestamp')) === '';
    for (const n of ['data-kv-0', 'data-kv2-etcd-0', 'data-kv-etcd-x']) expect(await left(n)).toBe(true);
    for (const n of report.pvcsDeleted) expect(await left(n)).toBe(false);
  });

  it('serves the metrics: reconcile histogram, errors, queue depth, apply writes, process metrics', async () => {
    const text = await metrics.render();
    for (const name of ['hotstandby_reconcile_duration_seconds_bucket', 'hotstandby_workqueue_depth 0', 'hotstandby_apply_writes_total{kind="ConfigMap"}', 'process_cpu_user_seconds_total', 'nodejs_heap_size_used_bytes']) {
      expect(text).toContain(name);
    }
  });

  it('an informer recovers from an API server restart, and relists after a 410 when etcd was compacted past it', async () => {
    const client = new KubeClient(kc);
    const seen: Array<[InformerEvent, string]> = [];
    const informer = new Informer({ client, kind: CONFIGMAP, namespaces: [NS], labelSelector: 'machinery-test=410', log: silentLogger(), restartBaseMs: 200, restartMaxMs: 1000 });
    informer.on((ev, obj) => seen.push([ev, obj.metadata.name]));
    const cm = (name: string) => stringify({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name, namespace: NS, labels: { 'machinery-test': '410' } }, data: { a: '1' } });
    try {
      await kubectl(['apply', '-f', '-'], cm('keep'));
      await kubectl(['apply', '-f', '-'], cm('vanish'));
      await informer.start();
      await informer.waitForSync(30_000);
      expect(informer.list(NS).map((o) => o.metadata.name).sort()).toEqual(['keep', 'vanish']);
      // Updates and deletes arrive through the watch.
      await kubectl(['patch', 'configmap', 'keep', '-n', NS, '--type', 'merge', '-p', '{"data":{"a":"2"}}']);
      await waitFor(() => seen.some(([e, n]) => e === 'update' && n === 'keep'), { timeoutMs: 15_000, what: 'the update event' });

      const apiserverIndex = kube().processes.findIndex((p) => p.name === 'kube-apiserver');
      const apiserver = kube().processes[apiserverIndex]!;
      const [command, ...args] = apiserver.child.spawnargs;
      const etcdEndpoint = args.find((a) => a.startsWith('--etcd-servers='))!.split('=')[1]!;
      await apiserver.stop();
      // While the API server is down: the object vanishes behind its back, and
      // etcd's history is compacted past every resourceVersion the informer saw.
      const etcd = new Etcd3({ hosts: etcdEndpoint });
      try {
        const deleted = await etcd.delete().key(`/registry/configmaps/${NS}/vanish`).exec();
        expect(Number(deleted.deleted)).toBe(1);
        for (let i = 0; i < 20; i++) await etcd.put('/machinery-test/filler').value(String(i));
        const status = await etcd.maintenance.status();
        await etcd.kv.compact({ revision: status.header.revision, physical: true });
      } finally {
        etcd.close();
      }
      const restarted = new ManagedProcess({ name: 'kube-apiserver', command: command!, args, logFile: apiserver.logFile });
      kube().processes[apiserverIndex] = restarted;
      await waitFor(async () => (await kubectl(['get', '--raw', '/readyz'])).trim() === 'ok', { timeoutMs: 60_000, intervalMs: 500, what: 'the API server back' });

      await waitFor(() => seen.some(([e, n]) => e === 'delete' && n === 'vanish'), { timeoutMs: 60_000, intervalMs: 100, what: 'the relist to report the vanished ConfigMap deleted' });
      expect(informer.restarts).toBeGreaterThan(0);
      await kubectl(['apply', '-f', '-'], cm('after'));
      await waitFor(() => seen.some(([e, n]) => e === 'add' && n === 'after'), { timeoutMs: 30_000, what: 'a new object after the restart' });
      expect(informer.list(NS).map((o) => o.metadata.name).sort()).toEqual(['after', 'keep']);
    } finally {
      await informer.stop();
    }
  }, 180_000);
});

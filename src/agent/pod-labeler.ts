// Moves the `hotstandby.dev/role` label of this member's pod, so the leader
// Service follows failover without the operator.
//
// The order, on promotion (called by the agent after the epoch is raised and
// the master has applied the log to its end, before the master may write):
//   1. list the pods of this cluster labelled role=leader, and remove the
//      label from every one that is not ours (a deposed leader that is
//      partitioned away or frozen stops receiving traffic: it cannot be
//      trusted to remove its own label);
//   2. label our own pod role=leader;
//   3. (the agent) tell the master it may write.
// The step is bounded (leadBoundMs): when the API server is slow or down the
// agent goes on to accept writes, and this keeps trying in the background
// with capped backoff until it is done or the role changes. Correctness never
// depends on labels: a deposed leader's appends are refused by epoch. While
// leading it checks again every LEADER_RECHECK_MS, which removes a label a
// late write of a deposed leader may have put back.
//
// On demotion and at start our own pod is labelled role=standby. Removing
// another pod's label is conditional on the resourceVersion just listed, so
// a `standby` label its own agent wrote meanwhile is never removed.
import { CLUSTER_LABEL, ROLE_LABEL, ROLE_LEADER, ROLE_STANDBY } from '../lib/labels.ts';
import type { Logger } from '../lib/log.ts';
import { sleep } from '../lib/time.ts';
import { KubeApiError, type KubeClient } from './kube-client.ts';

/** Retry delays: start here, double on each failure, never above the cap. */
export const LABEL_BACKOFF_INITIAL_MS = 100;
export const LABEL_BACKOFF_MAX_MS = 5000;
/** While leading, look for other pods labelled leader this often. */
export const LEADER_RECHECK_MS = 10_000;

export interface PodLabelerOptions {
  client: Pick<KubeClient, 'listPods' | 'patchPodLabels' | 'close'>;
  /** The HotStandbyCluster's name (the value of hotstandby.dev/cluster). */
  clusterName: string;
  /** This member's pod. */
  pod: string;
  log: Logger;
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  leaderRecheckMs?: number;
}

type Target = { role: 'leader'; stillLeading: () => boolean } | { role: 'standby' };

export class PodLabeler {
  private readonly opts: PodLabelerOptions;
  private readonly log: Logger;
  private target: Target | undefined;
  /** Bumped on every change of target; an attempt for an old generation is void. */
  private generation = 0;
  private doneGeneration = -1;
  private readonly doneWaiters = new Set<() => void>();
  /** Aborted when the target changes or on close: ends the attempt or wait in progress. */
  private change = new AbortController();
  private closed = false;
  private loop: Promise<void> | undefined;

  constructor(opts: PodLabelerOptions) {
    this.opts = opts;
    this.log = opts.log.child({ pod: opts.pod });
  }

  /**
   * We lead: remove the leader label from every other pod of the cluster,
   * then label ours leader. Resolves true once done, or false after boundMs
   * (work goes on in the background while `stillLeading()` holds).
   */
  async lead(stillLeading: () => boolean, boundMs: number): Promise<boolean> {
    const generation = this.setTarget({ role: 'leader', stillLeading });
    return this.waitDone(generation, boundMs);
  }

  /** We do not lead: label our pod standby (in the background, retried). */
  standby(): void {
    if (this.target?.role === 'standby') return;
    this.setTarget({ role: 'standby' });
  }

  /** Stops every retry and releases the client. Bounded: the attempt in progress is aborted. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.change.abort(new Error('pod labeler closed'));
    await this.loop?.catch(() => undefined);
    for (const wake of this.doneWaiters) wake();
    this.doneWaiters.clear();
    this.opts.client.close();
  }

  private setTarget(target: Target): number {
    if (this.closed) return this.generation;
    this.target = target;
    this.generation++;
    const previous = this.change;
    this.change = new AbortController();
    previous.abort(new Error('label target changed'));
    this.loop ??= this.run().finally(() => (this.loop = undefined));
    return this.generation;
  }

  private waitDone(generation: number, boundMs: number): Promise<boolean> {
    if (this.doneGeneration >= generation) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => finish(false), boundMs);
      // Woken when some generation is done (or on close): ours, or a later one that replaced it.
      const wake = (): void => finish(this.doneGeneration === generation);
      const finish = (ok: boolean): void => {
        clearTimeout(timer);
        this.doneWaiters.delete(wake);
        resolve(ok);
      };
      this.doneWaiters.add(wake);
    });
  }

  /** One worker: converges on the current target, retrying with capped backoff. */
  private async run(): Promise<void> {
    let failures = 0;
    let failuresOf = -1;
    let lastError = '';
    while (!this.closed) {
      const generation = this.generation;
      const target = this.target;
      const signal = this.change.signal;
      if (!target || signal.aborted) break; // only close() aborts the current signal here
      // A new target starts with the shortest backoff: a promotion must not wait out a standby's long retry.
      if (failuresOf !== generation) [failures, failuresOf] = [0, generation];
      try {
        if (target.role === 'leader' && !target.stillLeading()) {
          // Leadership ended; the agent sets the next target. Nothing to do till then.
          await sleepUntil(signal, Number.POSITIVE_INFINITY);
          continue;
        }
        const changed = target.role === 'leader' ? await this.applyLeader(target.stillLeading, signal) : await this.applyStandby(signal);
        if (generation === this.generation) {
          if (failures > 0 || changed.length > 0 || this.doneGeneration !== generation) {
            this.log[failures > 0 ? 'info' : 'debug']({ role: target.role, changed, afterFailures: failures }, 'pod labels set');
          }
          failures = 0;
          lastError = '';
          this.markDone(generation);
        }
        // A leader checks again now and then; a standby's label is set once.
        await sleepUntil(signal, target.role === 'leader' ? (this.opts.leaderRecheckMs ?? LEADER_RECHECK_MS) : Number.POSITIVE_INFINITY);
      } catch (err) {
        if (signal.aborted) continue;
        failures++;
        const message = (err as Error).message;
        const delay = Math.min(this.opts.backoffMaxMs ?? LABEL_BACKOFF_MAX_MS, (this.opts.backoffInitialMs ?? LABEL_BACKOFF_INITIAL_MS) * 2 ** Math.min(failures - 1, 20));
        // Warn when the failure is new; repeats of the same one go to debug.
        this.log[message === lastError ? 'debug' : 'warn'](
          { role: target.role, err: message, attempt: failures, retryInMs: delay },
          'could not set the pod role label; retrying (writes stay fenced: correctness does not depend on labels)',
        );
        lastError = message;
        await sleepUntil(signal, delay);
      }
    }
  }

  private markDone(generation: number): void {
    this.doneGeneration = generation;
    for (const wake of [...this.doneWaiters]) wake();
  }

  /** Returns what it changed, e.g. ['-kv-0', '+kv-1']. */
  private async applyLeader(stillLeading: () => boolean, signal: AbortSignal): Promise<string[]> {
    const { client, clusterName, pod } = this.opts;
    const changed: string[] = [];
    const labelled = await client.listPods(`${CLUSTER_LABEL}=${clusterName},${ROLE_LABEL}=${ROLE_LEADER}`, signal);
    for (const other of labelled) {
      if (other.name === pod) continue;
      if (!stillLeading()) throw new Error('leadership ended while removing leader labels');
      try {
        await client.patchPodLabels(other.name, { [ROLE_LABEL]: null }, { resourceVersion: other.resourceVersion, signal });
        this.log.info({ from: other.name }, 'removed the leader label from another pod');
        changed.push(`-${other.name}`);
      } catch (err) {
        if (err instanceof KubeApiError && err.status === 404) continue; // the pod is gone: nothing to remove
        throw err;
      }
    }
    if (!labelled.some((p) => p.name === pod)) {
      if (!stillLeading()) throw new Error('leadership ended before labelling our pod leader');
      await client.patchPodLabels(pod, { [ROLE_LABEL]: ROLE_LEADER }, { signal });
      changed.push(`+${pod}`);
    }
    return changed;
  }

  private async applyStandby(signal: AbortSignal): Promise<string[]> {
    await this.opts.client.patchPodLabels(this.opts.pod, { [ROLE_LABEL]: ROLE_STANDBY }, { signal });
    return [];
  }
}

/** Sleeps ms (Infinity: until aborted); resolves, never rejects, when the signal aborts. */
async function sleepUntil(signal: AbortSignal, ms: number): Promise<void> {
  if (signal.aborted) return;
  if (ms === Number.POSITIVE_INFINITY) {
    await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
    return;
  }
  await sleep(ms, signal).catch(() => undefined);
}

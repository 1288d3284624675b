// The operator's own leader election: replicas of the operator Deployment take
// turns holding a coordination.k8s.io Lease; only the holder acts. A holder
// that cannot renew stops acting at its local deadline (last renewal + lease
// duration - margin), before anyone else may take the Lease over.
// This is the operator's election only; masters elect their leader in etcd.
import { V1MicroTime, type CoordinationV1Api, type V1Lease } from '@kubernetes/client-node';
import type { Logger } from '../lib/log.ts';
import { withTimeout } from '../lib/time.ts';

export interface LeaseElectorOptions {
  api: CoordinationV1Api;
  namespace: string;
  name: string;
  identity: string;
  leaseDurationSeconds?: number;
  renewEveryMs?: number;
  log: Logger;
  onChange?: (leading: boolean) => void;
}

const CALL_TIMEOUT_MS = 5000;

export class LeaseElector {
  private readonly o: Required<Omit<LeaseElectorOptions, 'onChange'>> & Pick<LeaseElectorOptions, 'onChange'>;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** performance.now() of the last successful acquire or renew while leading. */
  private renewedAt = 0;
  private leading = false;
  private tickRunning: Promise<void> | undefined;

  constructor(opts: LeaseElectorOptions) {
    this.o = { leaseDurationSeconds: 15, renewEveryMs: 2000, ...opts };
  }

  /** True while this replica holds the Lease and is within its local deadline. */
  isLeader(): boolean {
    const deadlineMs = this.o.leaseDurationSeconds * 1000 - Math.min(2000, this.o.leaseDurationSeconds * 200);
    if (this.leading && performance.now() - this.renewedAt > deadlineMs) this.setLeading(false, 'local deadline passed without a renewal');
    return this.leading;
  }

  start(): void {
    const loop = (): void => {
      if (this.stopped) return;
      this.tickRunning = this.tick().finally(() => {
        this.tickRunning = undefined;
        if (!this.stopped) this.timer = setTimeout(loop, this.o.renewEveryMs);
      });
    };
    loop();
  }

  /** Stops, and releases the Lease when held so another replica takes over at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.tickRunning;
    if (!this.leading) return;
    this.setLeading(false, 'stopping');
    try {
      const lease = await withTimeout(this.o.api.readNamespacedLease({ name: this.o.name, namespace: this.o.namespace }), CALL_TIMEOUT_MS, 'reading the Lease');
      if (lease.spec?.holderIdentity !== this.o.identity) return;
      lease.spec.holderIdentity = '';
      lease.spec.leaseDurationSeconds = 1;
      if (lease.spec.acquireTime) lease.spec.acquireTime = new V1MicroTime(lease.spec.acquireTime);
      if (lease.spec.renewTime) lease.spec.renewTime = new V1MicroTime(lease.spec.renewTime);
      await withTimeout(this.o.api.replaceNamespacedLease({ name: this.o.name, namespace: this.o.namespace, body: lease }), CALL_TIMEOUT_MS, 'releasing the Lease');
    } catch (err) {
      this.o.log.warn({ err: (err as Error).message }, 'could not release the Lease; another replica takes over when it expires');
    }
  }

  private async tick(): Promise<void> {
    try {
      await withTimeout(this.acquireOrRenew(), CALL_TIMEOUT_MS, 'the Lease');
    } catch (err) {
      this.o.log.debug({ err: (err as Error).message }, 'Lease call failed');
    }
    this.isLeader(); // applies the local deadline
  }

  private async acquireOrRenew(): Promise<void> {
    const { api, namespace, name, identity, leaseDurationSeconds } = this.o;
    // Lease times are MicroTime: the API server refuses millisecond precision.
    const now = new V1MicroTime();
    let lease: V1Lease;
    try {
      lease = await api.readNamespacedLease({ name, namespace });
    } catch (err) {
      if ((err as { code?: number }).code !== 404) throw err;
      await api.createNamespacedLease({
        namespace,
        body: {
          metadata: { name, namespace },
          spec: { holderIdentity: identity, leaseDurationSeconds, acquireTime: now, renewTime: now, leaseTransitions: 0 },
        },
      });
      this.renewed('created the Lease');
      return;
    }
    const spec = lease.spec ?? {};
    const holder = spec.holderIdentity ?? '';
    const renewMs = spec.renewTime ? new Date(spec.renewTime).getTime() : 0;
    const expired = !holder || renewMs + (spec.leaseDurationSeconds ?? leaseDurationSeconds) * 1000 < now.getTime();
    if (holder !== identity && !expired) {
      if (this.leading) this.setLeading(false, `the Lease is held by ${holder}`);
      return;
    }
    const takingOver = holder !== identity;
    lease.spec = {
      ...spec,
      ...(spec.acquireTime ? { acquireTime: new V1MicroTime(spec.acquireTime) } : {}),
      holderIdentity: identity,
      leaseDurationSeconds,
      renewTime: now,
      ...(takingOver ? { acquireTime: now, leaseTransitions: (spec.leaseTransitions ?? 0) + 1 } : {}),
    };
    // resourceVersion from the read makes this a compare-and-swap: a racing replica gets a conflict.
    await api.replaceNamespacedLease({ name, namespace, body: lease });
    this.renewed(takingOver ? `took the Lease over from ${holder || 'nobody'}` : 'renewed');
  }

  private renewed(what: string): void {
    this.renewedAt = performance.now();
    if (!this.leading) this.setLeading(true, what);
  }

  private setLeading(leading: boolean, why: string): void {
    if (this.leading === leading) return;
    this.leading = leading;
    this.o.log.info({ lease: `${this.o.namespace}/${this.o.name}`, identity: this.o.identity, why }, leading ? 'leading: this replica acts' : 'not leading: standing by');
    this.o.onChange?.(leading);
  }
}

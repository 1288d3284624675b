// The member registry: every member publishes its status under members/<pod>
// with a lease of its own (not the election lease, so resigning leadership
// does not drop membership), and keeps a live view of everyone's status from a
// prefix watch. A member that dies vanishes from the view when its lease
// expires; one that stops cleanly revokes its lease and vanishes at once.
//
// Writes are prompt but coalesced: a change is written at most
// minWriteIntervalMs after the previous write, and the status is rewritten at
// least every heartbeatMs (lastHeartbeat advances) even without a change.
import { EtcdLeaseNotFoundError, type EtcdHttpClient } from '../lib/etcd-http/client.ts';
import type { KeyValue } from '../lib/etcd-http/types.ts';
import type { EtcdKeys } from '../lib/keys.ts';
import type { Logger } from '../lib/log.ts';
import { sleep } from '../lib/time.ts';
import { EtcdMirror, grantLease, monotonicMs, revokeLease } from './election.ts';
import { LeaseKeepAlive } from './lease-keepalive.ts';
import type { MemberStatus } from './types.ts';

export interface RegistryOptions {
  etcd: EtcdHttpClient;
  keys: EtcdKeys;
  member: string;
  /** Agent version, published in the status. */
  version: string;
  /** TTL of the member's own lease. Default 5. */
  leaseTtlSeconds?: number;
  log: Logger;
  /** Rewrite the status at least this often. Default 1000. */
  heartbeatMs?: number;
  /** Coalesce bursts of updates into at most one write per this interval. Default 100. */
  minWriteIntervalMs?: number;
  /** Re-read the whole prefix this often as a backstop to the watch. Default 2000. */
  resyncMs?: number;
  /** Bound on each etcd call. Default 2000. */
  callTimeoutMs?: number;
  /** start() keeps trying the first registration this long before it gives up. Default 15000. */
  registerTimeoutMs?: number;
}

/** What the caller sets; member, version and lastHeartbeat are the registry's. */
export type MemberFields = Omit<MemberStatus, 'member' | 'version' | 'lastHeartbeat'>;

export class MemberRegistry {
  private readonly opts: RegistryOptions;
  private readonly log: Logger;
  private readonly key: string;
  private readonly ttlSeconds: number;
  private readonly heartbeatMs: number;
  private readonly minWriteIntervalMs: number;
  private readonly callTimeoutMs: number;
  private readonly mirror: EtcdMirror;
  private readonly listeners = new Set<(members: MemberStatus[]) => void>();
  private status: MemberStatus | undefined;
  private lease: { id: string; ttlMs: number; keepalive: LeaseKeepAlive; lastRenewSent: number; lastRenewAttempt: number } | undefined;
  private dirty = false;
  private lastWriteAt = Number.NEGATIVE_INFINITY;
  private writeTimer: NodeJS.Timeout | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private pumping: Promise<boolean> | undefined;
  private stopped = false;
  private lastError = '';

  constructor(opts: RegistryOptions) {
    this.opts = opts;
    this.log = opts.log;
    this.key = opts.keys.member(opts.member);
    this.ttlSeconds = opts.leaseTtlSeconds ?? 5;
    this.heartbeatMs = opts.heartbeatMs ?? 1000;
    this.minWriteIntervalMs = opts.minWriteIntervalMs ?? 100;
    this.callTimeoutMs = opts.callTimeoutMs ?? 2000;
    if (this.heartbeatMs >= this.ttlSeconds * 1000) {
      throw new RangeError(`heartbeatMs (${this.heartbeatMs}) must be below the lease TTL (${this.ttlSeconds * 1000} ms)`);
    }
    this.mirror = new EtcdMirror({
      etcd: opts.etcd,
      range: { prefix: opts.keys.membersPrefix },
      resyncMs: opts.resyncMs ?? 2000,
      // Heartbeats and leaves arrive as watch events; see EtcdMirror.
      quietWhileWatched: () => true,
      callTimeoutMs: this.callTimeoutMs,
      log: this.log,
      onChange: (_view, changed) => {
        if (changed) this.notify();
      },
    });
  }

  /**
   * Registers: grants the lease, writes the status, starts watching everyone.
   * A first attempt that fails is retried (a slow etcd can let a fresh lease
   * expire before the write under it lands: "Lease NOT_FOUND"); throws when
   * no write lands within registerTimeoutMs.
   */
  async start(initial: MemberFields): Promise<void> {
    if (this.status) throw new Error('MemberRegistry.start() may be called once');
    this.status = { ...initial, member: this.opts.member, version: this.opts.version, lastHeartbeat: new Date().toISOString() };
    this.dirty = true;
    await this.mirror.start();
    const deadline = monotonicMs() + (this.opts.registerTimeoutMs ?? 15_000);
    let written = await this.pump();
    for (let attempt = 1; !written && !this.stopped && monotonicMs() < deadline; attempt++) {
      await sleep(Math.min(this.heartbeatMs, Math.max(0, deadline - monotonicMs())));
      this.dirty = true;
      written = await this.pump();
      if (written) this.log.info({ attempts: attempt + 1 }, 'registered after retrying');
    }
    if (!written) {
      const cause = this.lastError;
      await this.stop();
      throw new Error(`could not register ${this.opts.member} in etcd: ${cause}`);
    }
    this.heartbeatTimer = setInterval(() => {
      this.dirty = true;
      this.scheduleWrite();
    }, this.heartbeatMs);
    this.log.info({ key: this.key, leaseTtlSeconds: this.ttlSeconds }, 'registered as a member');
  }

  /** Changes this member's status; written promptly (coalesced). */
  update(partial: Partial<MemberFields>): void {
    if (!this.status || this.stopped) return;
    let changed = false;
    const next: MemberStatus = { ...this.status };
    for (const [field, value] of Object.entries(partial) as Array<[keyof MemberFields, unknown]>) {
      if (value === undefined || next[field] === value) continue;
      (next as unknown as Record<string, unknown>)[field] = value;
      changed = true;
    }
    if (!changed) return;
    this.status = next;
    this.dirty = true;
    this.scheduleWrite();
  }

  /** This member's status as it is being published. */
  self(): MemberStatus | undefined {
    return this.status ? { ...this.status } : undefined;
  }

  /**
   * Live members sorted by name: everyone whose key exists, and always this
   * member itself with its freshest local status (it is alive by definition,
   * even while its key is being re-created). Empty after stop(): the view
   * is no longer kept current.
   */
  members(): MemberStatus[] {
    if (this.stopped) return [];
    const byName = new Map<string, MemberStatus>();
    for (const kv of this.mirror.current.values()) {
      const status = parseMemberStatus(kv, this.opts.keys.membersPrefix);
      if (status) byName.set(status.member, status);
    }
    if (this.status) byName.set(this.status.member, { ...this.status });
    return [...byName.values()].sort((a, b) => (a.member < b.member ? -1 : a.member > b.member ? 1 : 0));
  }

  /** Called with members() whenever someone's key changes (including heartbeats). */
  onChange(listener: (members: MemberStatus[]) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Revokes the lease (the key vanishes at once), closes the watch and every timer. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    if (this.writeTimer) clearTimeout(this.writeTimer);
    this.heartbeatTimer = this.writeTimer = undefined;
    await this.pumping?.catch(() => false);
    const lease = this.lease;
    this.lease = undefined;
    if (lease) {
      lease.keepalive.close();
      try {
        await revokeLease(this.opts.etcd, lease.id, this.callTimeoutMs);
        this.log.info('left the member registry');
      } catch (err) {
        this.log.warn({ err: (err as Error).message }, 'could not revoke the member lease; the key expires by TTL');
      }
    }
    await this.mirror.stop();
    this.listeners.clear();
  }

  // ---------------------------------------------------------- writing

  private scheduleWrite(): void {
    if (this.stopped || this.writeTimer || this.pumping) return; // a running pump re-checks dirty
    const wait = Math.max(0, this.lastWriteAt + this.minWriteIntervalMs - monotonicMs());
    this.writeTimer = setTimeout(() => {
      this.writeTimer = undefined;
      void this.pump();
    }, wait);
  }

  /**
   * One serialized round: make sure a lease exists and is renewed, then
   * write. Changes made meanwhile are written by a follow-up round; after a
   * failure the next heartbeat retries (no tight loop while etcd is away).
   */
  private pump(): Promise<boolean> {
    this.pumping ??= this.pumpOnce().then((ok) => {
      this.pumping = undefined;
      if (ok && this.dirty) this.scheduleWrite();
      return ok;
    });
    return this.pumping;
  }

  private async pumpOnce(): Promise<boolean> {
    if (this.stopped || !this.status) return false;
    try {
      await this.renewLease();
      if (this.stopped) return false;
      const lease = await this.ensureLease();
      if (!this.dirty || this.stopped) return true;
      this.dirty = false;
      this.status = { ...this.status, lastHeartbeat: new Date().toISOString() };
      const startedAt = monotonicMs();
      try {
        await this.opts.etcd.put({ key: this.key, value: JSON.stringify(this.status), lease: lease.id }, this.callTimeoutMs);
      } catch (err) {
        this.dirty = true;
        if (err instanceof EtcdLeaseNotFoundError) this.dropLease('etcd no longer knows the member lease');
        throw err;
      }
      this.lastWriteAt = startedAt;
      if (this.lastError) this.log.info('member status written again');
      this.lastError = '';
      return true;
    } catch (err) {
      const message = (err as Error).message;
      if (message !== this.lastError) this.log.warn({ err: message }, 'member status not written; retrying with the next heartbeat');
      this.lastError = message;
      return false;
    }
  }

  private async ensureLease(): Promise<{ id: string; ttlMs: number }> {
    if (this.lease) return this.lease;
    const sentAt = monotonicMs();
    const granted = await grantLease(this.opts.etcd, this.ttlSeconds, this.callTimeoutMs);
    if (this.stopped) {
      await revokeLease(this.opts.etcd, granted.id, this.callTimeoutMs).catch(() => undefined);
      throw new Error('registry stopped');
    }
    this.lease = { ...granted, keepalive: new LeaseKeepAlive(this.opts.etcd, granted.id), lastRenewSent: sentAt, lastRenewAttempt: sentAt };
    this.dirty = true; // a new lease needs the key written under it
    return this.lease;
  }

  /** Keepalive when a third of the TTL has passed; notices a lost lease. */
  private async renewLease(): Promise<void> {
    const lease = this.lease;
    if (!lease) return;
    const now = monotonicMs();
    if (now - lease.lastRenewAttempt < lease.ttlMs / 3) return;
    lease.lastRenewAttempt = now;
    try {
      const ttl = await lease.keepalive.renew(Math.min(this.callTimeoutMs, lease.ttlMs / 2));
      if (ttl <= 0) {
        this.dropLease('the member lease expired');
        return;
      }
      lease.lastRenewSent = now;
    } catch (err) {
      if (err instanceof EtcdLeaseNotFoundError) {
        this.dropLease('etcd no longer knows the member lease');
        return;
      }
      // Past the TTL without a renewal the server has expired it (or will):
      // start over with a new lease once etcd answers.
      if (monotonicMs() - lease.lastRenewSent >= lease.ttlMs) this.dropLease('no renewal for a whole TTL');
      throw err;
    }
  }

  private dropLease(reason: string): void {
    if (!this.lease) return;
    this.log.warn({ reason }, 'member lease lost; registering again with a new lease');
    this.lease.keepalive.close();
    this.lease = undefined;
    this.dirty = true;
  }

  private notify(): void {
    if (this.listeners.size === 0) return;
    const members = this.members();
    for (const listener of this.listeners) {
      try {
        listener(members);
      } catch (err) {
        this.log.error({ err: (err as Error).message }, 'member registry listener failed');
      }
    }
  }
}

/** A member's published status, or undefined for a key that does not parse. */
export function parseMemberStatus(kv: KeyValue, membersPrefix: string): MemberStatus | undefined {
  try {
    const raw = JSON.parse(kv.value.toString()) as Partial<MemberStatus>;
    const member = typeof raw.member === 'string' && raw.member ? raw.member : kv.key.toString().slice(membersPrefix.length);
    if (!member || typeof raw.appliedSeq !== 'number' || typeof raw.role !== 'string') return undefined;
    return {
      member,
      role: raw.role,
      address: typeof raw.address === 'string' ? raw.address : '',
      receivedSeq: typeof raw.receivedSeq === 'number' ? raw.receivedSeq : raw.appliedSeq,
      appliedSeq: raw.appliedSeq,
      state: typeof raw.state === 'string' ? raw.state : '',
      lastHeartbeat: typeof raw.lastHeartbeat === 'string' ? raw.lastHeartbeat : '',
      version: typeof raw.version === 'string' ? raw.version : '',
    };
  } catch {
    return undefined;
  }
}

// The agent's current RoleStatus and the long-polls waiting on it. Masters
// long-poll GET /v1/role; this is what wakes them. The version moves only when
// something a master must act on changes (role, writability, epoch, leader,
// snapshot request), not on every sequence-number tick.
import type { RoleStatus } from './types.ts';

type Waiter = { after: number; resolve: (s: RoleStatus) => void };

export class StatusBoard {
  private status: RoleStatus;
  private readonly waiters = new Set<Waiter>();

  constructor(member: string) {
    this.status = {
      version: 1,
      member,
      role: 'starting',
      writable: false,
      epoch: 0,
      leader: null,
      headSeq: 0,
      receivedSeq: 0,
      appliedSeq: 0,
      snapshotWanted: null,
    };
  }

  get(): RoleStatus {
    return { ...this.status };
  }

  /** Applies a change; wakes long-polls when it is one a master must act on. */
  update(patch: Partial<Omit<RoleStatus, 'version' | 'member'>>): void {
    const before = this.status;
    const next = { ...before, ...patch };
    const significant =
      next.role !== before.role ||
      next.writable !== before.writable ||
      next.epoch !== before.epoch ||
      JSON.stringify(next.leader) !== JSON.stringify(before.leader) ||
      JSON.stringify(next.snapshotWanted) !== JSON.stringify(before.snapshotWanted);
    if (significant) next.version = before.version + 1;
    this.status = next;
    if (significant) this.wake();
  }

  /**
   * Resolves with the status once its version differs from `after`, or with
   * the current status when `timeoutMs` passes or the signal aborts.
   */
  waitForChange(after: number, timeoutMs: number, signal?: AbortSignal): Promise<RoleStatus> {
    if (this.status.version !== after || timeoutMs <= 0 || signal?.aborted) return Promise.resolve(this.get());
    return new Promise((resolve) => {
      const finish = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', finish);
        this.waiters.delete(waiter);
        resolve(this.get());
      };
      const waiter: Waiter = { after, resolve: finish };
      const timer = setTimeout(finish, timeoutMs);
      signal?.addEventListener('abort', finish, { once: true });
      this.waiters.add(waiter);
    });
  }

  /** Releases every long-poll (shutdown). */
  releaseAll(): void {
    for (const waiter of [...this.waiters]) waiter.resolve(this.get());
  }

  private wake(): void {
    for (const waiter of [...this.waiters]) {
      if (waiter.after !== this.status.version) waiter.resolve(this.get());
    }
  }
}

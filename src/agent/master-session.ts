// What the agent knows about the master beside it: is it alive, and which
// instance (process) is it? In a pod the master and the agent are separate
// containers; either can crash and be restarted alone, so both questions
// change while the agent runs (docs/local-api.md, "Master liveness").
//
// Alive: the master has a request open to the local API (its role long-poll,
// its log stream, any call in flight), or its last request ended less than
// `timeoutMs` ago. A master that crashes loses its connections at once (the
// kernel closes them), so the end of its last open request starts the clock:
// detection takes `timeoutMs`, not a heartbeat period plus a timeout. A
// dropped role long-poll (the master's side closed it before the answer) is
// the crash signal itself: a live master never abandons its poll, so with
// nothing else open the master is gone after timeoutMs / 5 (the grace covers
// a master that re-opens a poll its connection lost).
//
// Instance: the master names itself on every request with the header
// X-Master-Instance (any token, new each time the process starts). A new name
// means a new process whose state is unknown until it acknowledges what it
// applied. Requests still arriving from a replaced instance are refused
// (SupersededError). A master that sends no name is taken for a new instance
// when it comes back after having been declared gone.

/** Monotonic: a wall-clock step must not make a live master look gone. */
const monotonicMs = (): number => performance.now();

/** The header a master sends on every request to name its instance. */
export const MASTER_INSTANCE_HEADER = 'x-master-instance';
/** What an instance name may look like: a UUID, a pod UID, a boot id... */
export const MASTER_INSTANCE_PATTERN = /^[A-Za-z0-9._:-]{1,128}$/;
/** Replaced instances remembered so their late requests can be refused. */
const RETIRED_KEPT = 32;

/** A request from a master instance that a newer one has replaced. Maps to 409 `superseded`. */
export class SupersededError extends Error {
  readonly instance: string;
  constructor(instance: string, current: string | undefined) {
    super(`master instance ${instance} was replaced by ${current ?? 'a newer instance'}; this process must stop talking to the agent`);
    this.name = 'SupersededError';
    this.instance = instance;
  }
}

export interface MasterSessionOptions {
  /** Declared gone after this long with no request open and none started. */
  timeoutMs: number;
  /** The master was declared gone (once per absence). */
  onGone(silentForMs: number): void;
  /** A master instance other than the last one started talking (also the first one ever). */
  onNewInstance(instance: string | undefined, previous: string | undefined): void;
  /** The master talks again after it was declared gone (after onNewInstance when it is one). */
  onBack(): void;
}

export class MasterSession {
  private readonly opts: MasterSessionOptions;
  private open = 0;
  /** Monotonic ms of the last request start or end; -Infinity before the first. */
  private lastContact = Number.NEGATIVE_INFINITY;
  private current: string | undefined;
  /** Monotonic ms a role long-poll was dropped by the master since its last request began; undefined if none. */
  private droppedPollAt: number | undefined;
  private seenAny = false;
  private gone = true;
  private readonly retired: string[] = [];
  private timer: NodeJS.Timeout | undefined;
  private checkPending: NodeJS.Immediate | undefined;
  private closed = false;

  constructor(opts: MasterSessionOptions) {
    if (!Number.isFinite(opts.timeoutMs) || opts.timeoutMs <= 0) throw new RangeError(`timeoutMs must be > 0, got ${opts.timeoutMs}`);
    this.opts = opts;
  }

  /** The instance name the current master sent (undefined when it sends none, or before the first request). */
  get instance(): string | undefined {
    return this.current;
  }

  /** True while the master has a request open or ended its last one less than timeoutMs ago. */
  alive(): boolean {
    return !this.gone && (this.open > 0 || monotonicMs() < this.goneAt());
  }

  /** How long the master has been silent (0 while a request is open). */
  silentForMs(): number {
    if (this.open > 0) return 0;
    return Math.round(monotonicMs() - Math.max(this.lastContact, this.droppedPollAt ?? Number.NEGATIVE_INFINITY));
  }

  /**
   * A request from the master begins. Returns the function to call when it
   * ends (exactly once), telling whether it was a role long-poll the master
   * dropped before the answer. Throws SupersededError, counting nothing, for
   * an instance that was replaced.
   */
  begin(instance: string | undefined): (droppedPoll?: boolean) => void {
    if (instance !== undefined && this.retired.includes(instance)) throw new SupersededError(instance, this.current);
    const wasGone = this.gone;
    const isNew = !this.seenAny || (instance !== undefined ? instance !== this.current : wasGone && this.current === undefined);
    if (isNew && this.seenAny && this.current !== undefined) {
      this.retired.push(this.current);
      if (this.retired.length > RETIRED_KEPT) this.retired.shift();
    }
    const previous = this.current;
    if (instance !== undefined) this.current = instance;
    this.seenAny = true;
    this.open++;
    this.lastContact = monotonicMs();
    this.droppedPollAt = undefined;
    this.gone = false;
    if (isNew) this.opts.onNewInstance(instance, previous);
    if (wasGone) this.opts.onBack();
    let ended = false;
    return (droppedPoll = false) => {
      if (ended) return;
      ended = true;
      this.open--;
      const now = monotonicMs();
      if (droppedPoll) this.droppedPollAt = now;
      else this.lastContact = now;
      if (this.open === 0) this.arm();
    };
  }

  /** Stops the timer; no callback runs after this. */
  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.checkPending) clearImmediate(this.checkPending);
    this.timer = this.checkPending = undefined;
  }

  /** After a dropped poll: gone this long after the drop, with nothing open. */
  private get dropGraceMs(): number {
    return Math.max(1, Math.floor(this.opts.timeoutMs / 5));
  }

  /** When, with nothing open, the master counts as gone (monotonic ms). */
  private goneAt(): number {
    const bySilence = this.lastContact + this.opts.timeoutMs;
    return this.droppedPollAt === undefined ? bySilence : Math.min(bySilence, this.droppedPollAt + this.dropGraceMs);
  }

  private arm(): void {
    if (this.closed) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      // Decide in the check phase, after pending I/O: when the agent's own
      // event loop stalled, the master's next request may be waiting in a
      // socket, and timers run before I/O is read.
      this.checkPending = setImmediate(() => {
        this.checkPending = undefined;
        this.check();
      });
    }, Math.max(1, Math.ceil(this.goneAt() - monotonicMs())));
  }

  private check(): void {
    if (this.closed || this.gone || this.open > 0) return;
    const now = monotonicMs();
    if (now < this.goneAt()) {
      this.arm();
      return;
    }
    this.gone = true;
    this.opts.onGone(Math.round(now - Math.max(this.lastContact, this.droppedPollAt ?? Number.NEGATIVE_INFINITY)));
  }
}

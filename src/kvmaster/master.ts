// The reference master: a key-value service that is highly available only
// through its agent's local API. It never touches etcd or the stream server.
//
// Leader: a client write is appended through the agent BEFORE it is
// acknowledged (group commit: writes that arrive while one append is in
// flight go together in the next), applied locally in sequence order, then
// acknowledged with its sequence number. A write whose append failed is never
// acknowledged and never applied.
// Standby: follows the agent's log stream from the entry after the last one
// applied, acks what it applied, reloads the latest snapshot on a resync.
// Exactly one of the two modes touches the state at any moment: the follower
// runs only while the master is not writable and no append is in flight.
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { RoleStatus } from '../agent/types.ts';
import { createLogger, type Logger } from '../lib/log.ts';
import { sleep, withTimeout } from '../lib/time.ts';
import { AgentClient, type AgentApiError } from './agent-client.ts';
import { KvStore } from './store.ts';

// Not `import http from 'node:http'`: an ES import of a built-in reads every
// export, and node:http's include WebSocket & co., which load undici, http2,
// tls and worker_threads (~12 MB RSS) that nothing here uses (issue 10).
const http = process.getBuiltinModule('node:http');

/** Entries per append at most (the local API takes 1-1000). */
const MAX_BATCH_ENTRIES = 1000;
/** Bytes of payload per append at most (the local API takes 8 MiB bodies). */
const MAX_BATCH_BYTES = 4 * 1024 * 1024;
const MAX_KEY_CHARS = 1024;
const MAX_VALUE_BYTES = 1024 * 1024;
/** Applied sequence is reported to the agent at most this often while entries flow. */
const ACK_DELAY_MS = 5;

export interface KvMasterOptions {
  /** host:port for clients; port 0 picks a free one. */
  listen: string;
  /** The agent's local API: host:port or unix:/path. */
  agentApi: string;
  log?: Logger;
}

interface PendingWrite {
  op: 'put' | 'delete';
  key: string;
  payload: string;
  resolve(result: { seq: number; epoch: number }): void;
  reject(err: Error): void;
}

/**
 * A read as leader is served only when the agent confirmed, in a round trip
 * begun after the read arrived and shorter than this, that this master still
 * leads: the agent answers from its local lease deadline, which falls the
 * demote margin (100 ms at least) before the lease can expire on the server,
 * so no newer leader can have acknowledged a write by then.
 */
const READ_CONFIRM_MAX_MS = 100;

/** How long a client should wait before retrying a 503 (Retry-After, seconds). */
const RETRY_AFTER_SECONDS = 1;

/**
 * A client request refused without being applied; `status` is the HTTP answer.
 * 409 `not_leader` names the leader when one is known; 503 (`catching_up`,
 * `unavailable`) means "retry shortly" (Retry-After).
 */
class WriteRefused extends Error {
  readonly status: number;
  readonly leader: string | undefined;
  readonly code: string;
  constructor(status: number, message: string, leader?: string, code?: string) {
    super(message);
    this.status = status;
    this.leader = leader;
    this.code = code ?? (status === 409 ? 'not_leader' : 'unavailable');
  }
}

export class KvMaster {
  address = '';
  private readonly opts: KvMasterOptions;
  private readonly log: Logger;
  private readonly client: AgentClient;
  private readonly store = new KvStore();
  private readonly server: Server;
  private readonly lifetime = new AbortController();
  private status: RoleStatus | undefined;
  /** True only while the agent says writable and no append was refused since. */
  private writable = false;
  private closed = false;
  private queue: PendingWrite[] = [];
  private appendInFlight: Promise<void> | undefined;
  private follower: { abort: AbortController; done: Promise<void> } | undefined;
  private ackTimer: NodeJS.Timeout | undefined;
  private ackedSeq = 0;
  private snapshotting = false;
  /** Between the agent saying writable and this master being ready to write (stop following, catch up). */
  private enteringWriteMode = false;
  private roleLoopDone: Promise<void> = Promise.resolve();
  /** The leadership confirmation in flight for reads, and the one queued after it (see confirmLeading). */
  private confirming: Promise<void> | undefined;
  private nextConfirm: Promise<void> | undefined;
  /**
   * New for every process: the agent tells a restarted master from the one
   * before (X-Master-Instance). It only has to differ from the previous
   * process's, so pid, start time and a random part do; not randomUUID(),
   * whose node:crypto costs this small process ~1.5 MB (docs/footprint.md).
   */
  readonly instance = `${process.pid.toString(36)}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;

  constructor(opts: KvMasterOptions) {
    this.opts = opts;
    this.log = (opts.log ?? createLogger({ component: 'kvmaster' })).child({ instance: this.instance });
    this.client = new AgentClient(opts.agentApi, { instance: this.instance });
    this.server = http.createServer((req, res) => void this.handle(req, res));
  }

  async start(): Promise<void> {
    const i = this.opts.listen.lastIndexOf(':');
    const host = this.opts.listen.slice(0, i);
    const port = Number(this.opts.listen.slice(i + 1));
    if (i <= 0 || !Number.isInteger(port) || port < 0 || port > 65535) {
      throw new Error(`--listen ${this.opts.listen}: expected host:port, e.g. 127.0.0.1:8080`);
    }
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => resolve());
    });
    const addr = this.server.address() as AddressInfo;
    this.address = `${addr.address}:${addr.port}`;
    this.roleLoopDone = this.roleLoop();
    this.log.info({ address: this.address, agentApi: this.opts.agentApi }, 'kvmaster listening');
  }

  // ---------------------------------------------------------------- role

  /**
   * Long-polls the agent's role and switches modes on every change. The poll
   * is re-issued at once after every answer: while it is open the agent knows
   * this master is alive (docs/local-api.md, "Master liveness"), so nothing
   * slow runs between two polls.
   */
  private async roleLoop(): Promise<void> {
    let version: number | undefined;
    let lastError = '';
    let failures = 0;
    while (!this.closed) {
      let s: RoleStatus;
      try {
        s = await this.client.role(version, 30_000);
      } catch (err) {
        if (this.closed) return;
        const message = (err as Error).message;
        if (message !== lastError) this.log.warn({ err: message }, 'cannot reach the agent; not writable until it answers');
        lastError = message;
        this.stopWrites('the agent cannot be reached');
        // At once the first time (a lost connection), then briefly: the agent
        // counts a master without a poll open as gone after its liveness timeout.
        if (failures++ > 0) await sleep(100, this.lifetime.signal).catch(() => undefined);
        version = undefined;
        continue;
      }
      lastError = '';
      failures = 0;
      version = s.version;
      await this.onStatus(s);
    }
  }

  private async onStatus(s: RoleStatus): Promise<void> {
    const was = this.status;
    this.status = s;
    if (was?.role !== s.role || was?.epoch !== s.epoch) {
      this.log.info({ role: s.role, epoch: s.epoch, appliedSeq: this.store.appliedSeq, headSeq: s.headSeq }, 'agent role');
    }
    if (s.writable && !this.writable && !this.enteringWriteMode) {
      // Promotion: the agent made us writable only after we acked its head.
      this.enteringWriteMode = true;
      try {
        await this.enterWriteMode(s);
      } finally {
        this.enteringWriteMode = false;
      }
    } else if (!s.writable) {
      this.stopWrites(`this member is ${s.role}`);
    }
    if (!this.writable && !this.follower && s.role !== 'stopping') this.startFollower();
    if (this.writable && s.snapshotWanted && !this.snapshotting) {
      // After the next role poll is sent: serializing a big map blocks this process.
      this.snapshotting = true;
      setImmediate(() => void this.takeSnapshot());
    }
  }

  /** Stops following, makes sure the state reaches the head the agent named, then takes writes. */
  private async enterWriteMode(s: RoleStatus): Promise<void> {
    await this.stopFollower();
    if (this.closed || !this.status?.writable) return;
    if (this.store.appliedSeq < s.headSeq) {
      // Never serve as leader from behind the head, whatever the agent says.
      try {
        await this.fillFromLog(s.headSeq);
      } catch (err) {
        this.log.error({ err: (err as Error).message, appliedSeq: this.store.appliedSeq, headSeq: s.headSeq }, 'told to write while behind the head and could not catch up; not writable');
        return;
      }
      this.flushAck();
      if (this.closed || !this.status?.writable) return;
    }
    this.writable = true;
    this.log.info({ epoch: s.epoch, appliedSeq: this.store.appliedSeq }, 'leading: accepting writes');
  }

  /** Leaves write mode at once; queued writes are refused, none is applied. */
  private stopWrites(why: string): void {
    if (this.writable) this.log.warn({ why }, 'no longer accepting writes');
    this.writable = false;
    const leader = this.leaderAddress();
    for (const w of this.queue.splice(0)) w.reject(new WriteRefused(409, `not the leader (${why})`, leader));
    // Clients reach the leader through a Service; their kept-alive connections
    // would stay pinned to this pod. Dropping the idle ones makes them connect
    // again and be routed to whoever leads now.
    this.server.closeIdleConnections();
  }

  private leaderAddress(): string | undefined {
    const l = this.status?.leader;
    return l && l.member !== this.status?.member ? l.address : undefined;
  }

  // ---------------------------------------------------------------- standby

  private startFollower(): void {
    const abort = new AbortController();
    const done = this.follow(abort.signal).finally(() => {
      if (this.follower?.abort === abort) this.follower = undefined;
    });
    this.follower = { abort, done };
  }

  private async stopFollower(): Promise<void> {
    const f = this.follower;
    if (!f) return;
    f.abort.abort();
    await f.done;
    this.flushAck();
  }

  /** Applies the log from the entry after the last applied one, until aborted. */
  private async follow(signal: AbortSignal): Promise<void> {
    // An append still in flight from our time as leader applies before we follow.
    await this.appendInFlight;
    // A fault the newest snapshot does not cover (say, a corrupt entry after
    // it) repeats until the leader stores a newer snapshot: back off meanwhile.
    // Only an entry past where the last resync struck counts as progress: the
    // replay up to the fault applies entries every round, and resetting the
    // backoff on those made the master reload and replay in a tight loop.
    let resyncs = 0;
    let resyncedAt = 0;
    while (!signal.aborted && !this.closed) {
      try {
        for await (const line of this.client.stream(this.store.appliedSeq + 1, signal)) {
          if (line.type === 'entry') {
            this.store.apply(line);
            this.scheduleAck();
            if (line.seq > resyncedAt) resyncs = 0;
          } else if (line.type === 'heartbeat') {
            this.flushAck();
          } else {
            this.log.warn({ reason: line.reason, snapshot: line.snapshot, resyncs }, 'resync: reloading from the latest snapshot');
            resyncedAt = Math.max(resyncedAt, this.store.appliedSeq);
            if (resyncs > 0) await sleep(Math.min(100 * 2 ** resyncs, 2000), signal).catch(() => undefined);
            resyncs++;
            await this.loadSnapshot();
          }
        }
      } catch (err) {
        if (signal.aborted || this.closed) return;
        this.log.warn({ err: (err as Error).message }, 'log stream failed; reopening');
        await sleep(300, signal).catch(() => undefined);
      }
    }
  }

  private async loadSnapshot(): Promise<void> {
    const snap = await this.client.getSnapshot();
    if (snap) this.store.restore(snap.data, snap.seq);
    else if (this.store.appliedSeq > 0 && !(await this.logStartsAtOne())) {
      // No snapshot, and the log cannot rebuild this state (a stream server
      // restarted empty): clearing would throw away acknowledged writes that
      // may exist nowhere else, and leave nothing to replay. Keep the state;
      // the follower retries (backing off) until the new leader continues the
      // sequence after it or stores a snapshot.
      this.log.warn({ seq: this.store.appliedSeq }, 'no snapshot to resync from and the log does not start at 1: keeping the applied state');
      return;
    } else this.store.clear();
    this.ackedSeq = Math.min(this.ackedSeq, this.store.appliedSeq);
    this.log.info({ seq: this.store.appliedSeq, keys: this.store.size }, snap ? 'state restored from snapshot' : 'no snapshot: state cleared');
    this.flushAck();
  }

  /** Whether the log holds entry 1 (then a replay from nothing rebuilds the whole state). Bounded. */
  private async logStartsAtOne(): Promise<boolean> {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), 2000);
    try {
      for await (const line of this.client.stream(1, abort.signal)) return line.type === 'entry' && line.seq === 1;
      return false;
    } catch {
      return false;
    } finally {
      clearTimeout(timer);
      abort.abort();
    }
  }

  private scheduleAck(): void {
    this.ackTimer ??= setTimeout(() => {
      this.ackTimer = undefined;
      this.flushAck();
    }, ACK_DELAY_MS);
  }

  private flushAck(): void {
    if (this.ackTimer) clearTimeout(this.ackTimer);
    this.ackTimer = undefined;
    const seq = this.store.appliedSeq;
    if (seq <= this.ackedSeq || this.closed) return;
    this.client.ackApplied(seq).then(
      () => {
        this.ackedSeq = Math.max(this.ackedSeq, seq);
      },
      (err: Error) => this.log.debug({ err: err.message, seq }, 'applied ack failed; the next one carries it'),
    );
  }

  // ---------------------------------------------------------------- leader

  /**
   * Why this master does not serve a request as leader right now. A member
   * that is becoming leader but has not applied the log to its head answers
   * 503 `catching_up`, never from its partial state (a read would say 404 for
   * an acknowledged key); otherwise 409 `not_leader` naming the leader when
   * one is known (X-Leader).
   */
  private notServing(): WriteRefused {
    const s = this.status;
    if (s && (s.role === 'promoting' || this.enteringWriteMode)) {
      return new WriteRefused(503, `catching up before leading: applied ${this.store.appliedSeq} of ${s.headSeq}; retry shortly`, undefined, 'catching_up');
    }
    return new WriteRefused(409, `not the leader (this member is ${s?.role ?? 'starting'})`, this.leaderAddress());
  }

  /**
   * Resolves once the agent confirmed that this master still leads, in a
   * round trip that began after the call: a deposed leader whose agent is
   * frozen (SIGSTOP, a long GC pause) still believes it leads and would serve
   * reads older than writes a new leader has acknowledged. Reads that arrive
   * while a confirmation is in flight share the next one.
   */
  private confirmLeading(): Promise<void> {
    if (this.nextConfirm) return this.nextConfirm;
    const start = (): Promise<void> => {
      const p: Promise<void> = this.confirmOnce().finally(() => {
        if (this.confirming === p) this.confirming = undefined;
      });
      this.confirming = p;
      return p;
    };
    if (!this.confirming) return start();
    const next = this.confirming
      .then(
        () => undefined,
        () => undefined,
      )
      .then(() => {
        this.nextConfirm = undefined;
        return start();
      });
    this.nextConfirm = next;
    return next;
  }

  private async confirmOnce(): Promise<void> {
    const epoch = this.status?.epoch;
    const sent = performance.now();
    let s: RoleStatus;
    try {
      s = await this.client.roleNow(1000);
    } catch (err) {
      throw new WriteRefused(503, `cannot confirm with the agent that this member still leads (${(err as Error).message}); retry shortly`);
    }
    const tookMs = performance.now() - sent;
    if (!s.writable || s.epoch !== epoch || !this.writable) throw this.notServing();
    if (tookMs > READ_CONFIRM_MAX_MS) {
      throw new WriteRefused(503, `the agent confirmed leadership too slowly (${Math.round(tookMs)} ms) to vouch for a read; retry shortly`);
    }
  }

  private write(op: 'put' | 'delete', key: string, payload: string): Promise<{ seq: number; epoch: number }> {
    if (!this.writable || this.closed) return Promise.reject(this.notServing());
    return new Promise((resolve, reject) => {
      this.queue.push({ op, key, payload, resolve, reject });
      this.pump();
    });
  }

  /** One append in flight at a time; what queued meanwhile goes in the next. */
  private pump(): void {
    if (this.appendInFlight || this.queue.length === 0 || !this.writable) return;
    let bytes = 0;
    let n = 0;
    while (n < this.queue.length && n < MAX_BATCH_ENTRIES && (n === 0 || bytes + this.queue[n]!.payload.length < MAX_BATCH_BYTES)) {
      bytes += this.queue[n]!.payload.length + this.queue[n]!.key.length;
      n++;
    }
    const batch = this.queue.splice(0, n);
    this.appendInFlight = this.appendBatch(batch).finally(() => {
      this.appendInFlight = undefined;
      this.pump();
    });
  }

  private async appendBatch(batch: PendingWrite[]): Promise<void> {
    let result: { epoch: number; firstSeq: number; lastSeq: number };
    try {
      result = await this.client.append(batch.map(({ op, key, payload }) => ({ op, key, payload })));
    } catch (err) {
      const e = err as AgentApiError;
      if (e.code === 'not_leader' || e.code === 'fenced') {
        this.stopWrites(e.code === 'fenced' ? 'fenced by a newer epoch' : 'the agent no longer leads');
        const leader = e.leader?.address ?? this.leaderAddress();
        for (const w of batch) w.reject(new WriteRefused(409, `not the leader: ${e.message}`, leader));
      } else {
        for (const w of batch) w.reject(new WriteRefused(503, `the write was not acknowledged: ${e.message}`));
      }
      return;
    }
    try {
      // A gap means an earlier append's outcome was unknown and it did land:
      // take those entries from the log before applying ours, in order.
      if (result.firstSeq !== this.store.appliedSeq + 1) await this.fillFromLog(result.firstSeq - 1);
      batch.forEach((_, i) => {
        const w = batch[i]!;
        this.store.apply({ seq: result.firstSeq + i, op: w.op, key: w.key, payload: w.payload });
      });
    } catch (err) {
      // Durable in the log but not applied here: stop leading from a state we
      // cannot vouch for; the client retries (puts are idempotent).
      this.log.error({ err: (err as Error).message }, 'cannot apply an appended batch in order; leaving write mode');
      this.stopWrites('local state out of step with the log');
      for (const w of batch) w.reject(new WriteRefused(503, 'the write is in the log but this master could not apply it; retry'));
      return;
    }
    for (let i = 0; i < batch.length; i++) batch[i]!.resolve({ seq: result.firstSeq + i, epoch: result.epoch });
  }

  /** Applies entries from the log up to `lastSeq` (bounded in time). */
  private async fillFromLog(lastSeq: number): Promise<void> {
    if (lastSeq <= this.store.appliedSeq) throw new Error(`the agent assigned seq ${lastSeq + 1} but ${this.store.appliedSeq} is already applied`);
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), 10_000);
    try {
      for await (const line of this.client.stream(this.store.appliedSeq + 1, abort.signal)) {
        if (line.type === 'entry') this.store.apply(line);
        if (line.type === 'resync') throw new Error(`log resync (${line.reason}) while filling a gap`);
        if (this.store.appliedSeq >= lastSeq) return;
      }
      throw new Error(`log stream ended at ${this.store.appliedSeq} before ${lastSeq}`);
    } finally {
      clearTimeout(timer);
      abort.abort();
    }
  }

  private async takeSnapshot(): Promise<void> {
    this.snapshotting = true;
    try {
      if (this.closed || !this.writable) return;
      // The state and its sequence are read in one synchronous step: consistent.
      const seq = this.store.appliedSeq;
      const data = this.store.snapshot();
      const d = await this.client.putSnapshot(seq, data);
      this.log.info({ seq, sizeBytes: d.sizeBytes, id: d.id }, 'snapshot handed to the agent');
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'snapshot failed; the agent asks again');
    } finally {
      this.snapshotting = false;
    }
  }

  // ---------------------------------------------------------------- HTTP

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      const url = new URL(req.url ?? '/', 'http://kvmaster');
      if (url.pathname === '/healthz') return send(res, 200, { status: 'ok' });
      if (url.pathname === '/status') return send(res, 200, this.describe());
      if (!url.pathname.startsWith('/kv/')) return send(res, 404, { error: { code: 'not_found', message: 'paths: /kv/{key}, /status, /healthz' } });
      const key = decodeURIComponent(url.pathname.slice('/kv/'.length));
      if (key.length < 1 || key.length > MAX_KEY_CHARS) {
        return send(res, 400, { error: { code: 'bad_request', field: 'key', message: `key must be 1-${MAX_KEY_CHARS} characters` } });
      }
      if (req.method === 'GET') {
        if (!this.writable && url.searchParams.get('stale') !== '1') {
          const refusal = this.notServing();
          if (refusal.status === 409) throw new WriteRefused(409, `${refusal.message}; add ?stale=1 to read this standby`, refusal.leader);
          throw refusal;
        }
        if (url.searchParams.get('stale') !== '1') await this.confirmLeading();
        const value = this.store.get(key);
        return value === undefined
          ? send(res, 404, { error: { code: 'not_found', message: `no key ${JSON.stringify(key)}` } })
          : send(res, 200, { key, value, appliedSeq: this.store.appliedSeq });
      }
      if (req.method === 'PUT') {
        const value = await readValue(req);
        return send(res, 200, { key, ...(await this.write('put', key, value)) });
      }
      if (req.method === 'DELETE') return send(res, 200, { key, ...(await this.write('delete', key, '')) });
      return send(res, 405, { error: { code: 'method_not_allowed', message: 'use GET, PUT or DELETE on /kv/{key}' } });
    } catch (err) {
      if (err instanceof WriteRefused) {
        if (err.leader) res.setHeader('X-Leader', err.leader);
        // A refusal because this member does not lead closes the connection: a
        // client that came through the leader Service (possibly while the
        // routing still pointed here) reconnects and is routed anew, instead of
        // being refused on this kept-alive connection forever.
        if (!this.writable) res.setHeader('Connection', 'close');
        if (err.status === 503) res.setHeader('Retry-After', String(RETRY_AFTER_SECONDS));
        return send(res, err.status, { error: { code: err.code, message: err.message, leader: err.leader ?? null } });
      }
      const e = err as Error & { status?: number; field?: string };
      return send(res, e.status ?? 500, { error: { code: e.status ? 'bad_request' : 'internal', message: e.message, ...(e.field ? { field: e.field } : {}) } });
    }
  }

  describe(): Record<string, unknown> {
    return {
      member: this.status?.member ?? null,
      role: this.status?.role ?? 'starting',
      writable: this.writable,
      epoch: this.status?.epoch ?? 0,
      leader: this.status?.leader ?? null,
      appliedSeq: this.store.appliedSeq,
      keys: this.store.size,
    };
  }

  /** Stops taking writes, lets the append in flight finish, releases everything. Bounded. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.stopWrites('shutting down');
    this.lifetime.abort();
    this.follower?.abort.abort();
    this.server.close();
    this.server.closeIdleConnections();
    await withTimeout(Promise.allSettled([this.appendInFlight, this.follower?.done, this.roleLoopDone]), 5000, 'kvmaster shutdown').catch(
      (err: Error) => this.log.warn({ err: err.message }, 'shutdown did not finish in time'),
    );
    if (this.ackTimer) clearTimeout(this.ackTimer);
    this.server.closeAllConnections();
    this.client.close();
    this.log.info('kvmaster stopped');
  }
}

export async function startKvMaster(opts: KvMasterOptions): Promise<KvMaster> {
  const master = new KvMaster(opts);
  await master.start();
  return master;
}

function send(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) return;
  const data = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) });
  res.end(data);
}

function readValue(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_VALUE_BYTES) {
        reject(Object.assign(new Error(`value over ${MAX_VALUE_BYTES} bytes`), { status: 413, field: 'body' }));
        req.destroy();
      } else chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

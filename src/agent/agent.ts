// The agent beside one master: it wires election, member registry, oplog,
// snapshots, delete events and metadata to the local API, and runs the
// failover sequence of DESIGN.md:
//   standby --(leader key gone, candidacy allows)--> candidate --(won)--> promoting
//   promoting --(epoch raised, master applied the log to its end)--> leader
//   leader --(lease lost, local deadline, fenced, resign)--> standby
// It never imports the operator: it works while the operator is down.
import type { AgentConfig } from './config.ts';
import { EtcdMirror, LeaderElection, type ElectionEvent } from './election.ts';
import { MemberRegistry } from './registry.ts';
import { decideCandidacy, MASTER_DOWN_STATE } from './candidacy.ts';
import { OpLog } from './oplog.ts';
import { OpLogTailer } from './tailer.ts';
import { SnapshotStore } from './snapshots.ts';
import { DeleteEvents } from './deletes.ts';
import { MetadataStore } from './metadata.ts';
import { StatusBoard } from './status-board.ts';
import { MasterSession } from './master-session.ts';
import { snapshotWanted } from './snapshot-policy.ts';
import { SyncStandby } from './sync-standby.ts';
import { SyncReplicator } from './sync-replication.ts';
import { parseSyncRecord, syncCandidacy } from './sync-record.ts';
import { startLocalApi, type LocalApiServer } from './localapi/server.ts';
import { startHealthServer, type HealthServer, type ProbeResult } from './health-server.ts';
import { KubeClient } from './kube-client.ts';
import { PodLabeler } from './pod-labeler.ts';
import { BadRequestError, StoreUnavailableError, type LocalApiBackend, type StreamLine, type DeleteLine } from './localapi/backend.ts';
import {
  FencedError,
  NotLeaderError,
  type LeaderRecord,
  type OpInput,
  type RoleStatus,
  type SnapshotDescriptor,
} from './types.ts';
import { clusterId, etcdKeys, streamKeys, type EtcdKeys } from '../lib/keys.ts';
import { EtcdError, EtcdHttpClient } from '../lib/etcd-http/client.ts';
import { RespClient } from '../lib/resp/client.ts';
import { createLogger, type Logger } from '../lib/log.ts';
import { sleep, waitFor, withTimeout } from '../lib/time.ts';
import { credentialProblem, loadStoreCredentials, redactUrl, redisCredentialOptions, urlHasPassword } from '../lib/storeclients.ts';

const { randomUUID } = process.getBuiltinModule('node:crypto');

export const AGENT_VERSION = '0.1.0';

/**
 * How often the agent's periodic loop runs: it refreshes the log head (lag,
 * snapshot policy), publishes the lag state and, on a leader, notices a stream
 * server that stopped answering (it resigns after a lease TTL of silence, so a
 * period well under the TTL is enough). Each round is a wake-up and two stream
 * server commands; at 250 ms they were most of an idle agent's CPU (bench/footprint,
 * docs/footprint.md), and a standby's member status is written once a second anyway.
 */
const HEAD_POLL_MS = 1000;
/**
 * Bound on the loop's head read: a read not answered by the next round is
 * late. A leader finds out that the stream server went silent when a read
 * fails, so with a longer bound it would resign well past its last answer +
 * TTL whenever the TTL is short (at a 2 s TTL, half a second later on average).
 */
const HEAD_READ_TIMEOUT_MS = HEAD_POLL_MS;
/** Bound on every single call to a store made outside a request. */
const STORE_CALL_TIMEOUT_MS = 2000;
/** While the switchover watch is broken, re-read the key this often (while it runs, every 30 s). */
const SWITCHOVER_RESYNC_MS = 2000;
/** A leader waits this long for a switchover target to catch up before giving up. */
const SWITCHOVER_CATCHUP_TIMEOUT_MS = 10_000;
/** How long a resolved-after-error append may take to find out whether it landed. */
const AMBIGUOUS_APPEND_RESOLVE_MS = 3000;
/** A new leader waits at most this long for the pod labels before accepting writes (they are fenced anyway). */
const LEADER_LABEL_BOUND_MS = 2000;
/** /healthz fails when the agent's periodic loop has not run for this long. */
const LOOP_STALL_MS = 10_000;

export interface SwitchoverRequest {
  target: string;
  requestedAt: string;
}

export class Agent implements LocalApiBackend {
  readonly member: string;
  readonly config: AgentConfig;
  private readonly log: Logger;
  private readonly etcd: EtcdHttpClient;
  private readonly redis: RespClient;
  private readonly keys: EtcdKeys;
  private readonly board: StatusBoard;
  private readonly oplog: OpLog;
  private readonly snapshots: SnapshotStore;
  private readonly deletes: DeleteEvents;
  private readonly metadata: MetadataStore;
  private readonly registry: MemberRegistry;
  private readonly election: LeaderElection;
  private api: LocalApiServer | undefined;
  private switchoverMirror: EtcdMirror | undefined;
  private headTimer: NodeJS.Timeout | undefined;
  /** Armed by a failed head read while the last answer is younger than a TTL: checks again when it is a TTL old. */
  private streamSilenceTimer: NodeJS.Timeout | undefined;
  /** Aborted on close: ends streams, promotion waits and loops. */
  private readonly lifetime = new AbortController();
  private closing = false;
  /** Whether the master beside us is alive, and which process it is. */
  private readonly master: MasterSession;
  private leaderLog: Logger;
  /** Appends in flight; a switchover waits for them before resigning. */
  private inflightAppends = 0;
  /** Set while a planned switchover drains writes away from this leader. */
  private draining = false;
  private switchoverInProgress = false;
  private lastSnapshot: { seq: number; at: number } = { seq: 0, at: Date.now() };
  private logLength = 0;
  /** head - length from one reading: the log covers the entries after it. */
  private logStartSeq: number | undefined;
  /** Moves this pod's role label; undefined when pod labelling is off. */
  private readonly labeler: PodLabeler | undefined;
  private probes: HealthServer | undefined;
  private lastTickAt = Date.now();
  /** When the tailer last read the stream's true head (an idle round); a standby then skips its own head read. */
  private tailerHeadAt = Number.NEGATIVE_INFINITY;
  /** Monotonic ms of the last call the stream server answered (head read, append): a leader cut off from it resigns. */
  private streamOkAt = performance.now();
  /** The stream server client reports why a connection failed (a refused password) only as an event. */
  private lastRedisError = '';
  /** Sync replication (--replication sync): the standby side always, the leader side while leading. */
  private readonly syncStandby: SyncStandby | undefined;
  private syncLeader: SyncReplicator | undefined;

  private constructor(config: AgentConfig, log: Logger) {
    this.config = config;
    this.member = config.member;
    this.log = log;
    this.leaderLog = log;
    this.keys = etcdKeys(config.cluster);
    const sKeys = streamKeys(config.cluster);
    this.board = new StatusBoard(config.member);
    const credentials = loadStoreCredentials(config, config.redisPassword);
    this.etcd = new EtcdHttpClient({ endpoints: config.etcdEndpoints, ...(credentials.etcdTls ? { tls: credentials.etcdTls } : {}) });
    this.redis = RespClient.fromUrl(config.redisUrl, {
      ...redisCredentialOptions(config.redisUrl, credentials),
      connectTimeoutMs: 3000,
      // Every command answers within its bound, so an append's caller (the
      // master) can decide what to do; nothing waits for ever on a reconnect.
      commandTimeoutMs: 5000,
      retryDelayMs: (attempt) => Math.min(attempt * 100, 1000),
    });
    this.redis.on('error', (err: Error) => {
      this.lastRedisError = err.message;
      this.log.debug({ err: err.message }, 'stream server connection error');
    });
    this.oplog = new OpLog({ redis: this.redis, keys: sKeys, maxLength: config.oplogMaxLength, log });
    if (config.replication === 'sync') this.syncStandby = new SyncStandby({ redis: this.redis, channel: sKeys.acks, member: config.member, log });
    this.snapshots = new SnapshotStore({
      redis: this.redis,
      etcd: this.etcd,
      streamKeys: sKeys,
      etcdKeys: this.keys,
      keep: config.snapshotKeep,
      log,
    });
    this.deletes = new DeleteEvents({ etcd: this.etcd, keys: this.keys, log });
    this.metadata = new MetadataStore({ etcd: this.etcd, keys: this.keys, log });
    this.registry = new MemberRegistry({
      etcd: this.etcd,
      keys: this.keys,
      member: config.member,
      version: AGENT_VERSION,
      leaseTtlSeconds: config.leaseTtlSeconds,
      log,
    });
    this.election = new LeaderElection({
      etcd: this.etcd,
      keys: this.keys,
      member: config.member,
      address: config.address,
      leaseTtlSeconds: config.leaseTtlSeconds,
      demoteMarginMs: config.demoteMarginMs,
      log,
      candidacy: () => this.candidacy(),
    });
    if (config.kube) {
      this.labeler = new PodLabeler({ client: new KubeClient(config.kube), clusterName: config.cluster.name, pod: config.member, log });
    }
    this.master = new MasterSession({
      timeoutMs: config.masterLivenessTimeoutMs,
      onGone: (silentForMs) => this.onMasterGone(silentForMs),
      onNewInstance: (instance, previous) => this.onNewMasterInstance(instance, previous),
      onBack: () => this.log.info({ instance: this.master.instance }, 'the master talks to the agent again'),
    });
  }

  /** Connects to both stores (bounded), registers, serves the local API and joins the election. */
  static async start(config: AgentConfig, opts: { log?: Logger } = {}): Promise<Agent> {
    const log =
      opts.log ?? createLogger({ component: 'agent', cluster: clusterId(config.cluster), member: config.member, level: config.logLevel });
    const agent = new Agent(config, log);
    try {
      await agent.connectStores();
      await agent.registry.start({
        role: 'starting',
        address: config.address,
        receivedSeq: 0,
        appliedSeq: 0,
        state: 'ok',
      });
      agent.api = await startLocalApi({ listen: config.apiListen, backend: agent, log });
      if (config.healthListen) {
        agent.probes = await startHealthServer({ listen: config.healthListen, log, checks: { live: () => agent.liveness(), ready: () => agent.readiness() } });
      }
      agent.election.onEvent((event) => agent.onElectionEvent(event));
      await agent.refreshHead(STORE_CALL_TIMEOUT_MS);
      const latest = await agent.snapshots.latest();
      if (latest) agent.lastSnapshot = { seq: latest.seq, at: Date.parse(latest.createdAt) || Date.now() };
      agent.setRole('standby');
      agent.labeler?.standby();
      await agent.election.start();
      agent.watchSwitchover();
      agent.headTimer = setInterval(() => void agent.tick(), HEAD_POLL_MS);
      log.info(
        { api: agent.api.address, address: config.address, leaseTtlSeconds: config.leaseTtlSeconds, health: agent.probes?.address, podLabels: config.kube ? config.kube.server : 'off' },
        'agent started',
      );
      return agent;
    } catch (err) {
      await agent.close().catch(() => undefined);
      throw err;
    }
  }

  private async connectStores(): Promise<void> {
    const deadline = 30_000;
    const etcdWhere = `etcd at ${this.config.etcdEndpoints.join(',')} (--etcd)`;
    let tlsFailure = '';
    let lastError: unknown;
    const gatewayHint = (): string => (isGatewayLoopbackFailure(lastError, this.config.etcdEndpoints) ? `; ${ETCD_GATEWAY_TLS_HINT}` : '');
    try {
      await waitFor(
        async () => {
          if (tlsFailure) return true; // stop polling; reported below
          try {
            await this.etcd.getString(this.keys.leader, STORE_CALL_TIMEOUT_MS);
            return true;
          } catch (err) {
            lastError = err;
            // Wrong certificates do not heal by waiting: stop and say which settings to fix.
            if (credentialProblem(err) === 'tls') tlsFailure = (err as Error).message;
            throw err;
          }
        },
        { timeoutMs: deadline, intervalMs: 500, what: etcdWhere },
      );
    } catch (err) {
      const hint = gatewayHint();
      if (hint) throw new StoreCredentialsError(`${etcdWhere}: ${(lastError as Error).message}${hint}`);
      throw err;
    }
    if (tlsFailure) {
      throw new StoreCredentialsError(`${etcdWhere}: TLS failed (${tlsFailure}); check --etcd-ca-file, --etcd-cert-file and --etcd-key-file${gatewayHint()}`);
    }
    const redisWhere = `the stream server at ${redactUrl(this.config.redisUrl)} (--redis)`;
    try {
      await withTimeout(this.redis.connect(), deadline, redisWhere);
      await withTimeout(this.redis.ping(), STORE_CALL_TIMEOUT_MS, redisWhere);
    } catch (err) {
      const cause = credentialProblem(err) ? (err as Error).message : this.lastRedisError || (err as Error).message;
      const problem = credentialProblem({ message: cause });
      if (problem === 'password') {
        const what = this.config.redisPassword === undefined && !urlHasPassword(this.config.redisUrl) ? 'requires a password' : 'refused the password';
        throw new StoreCredentialsError(`${redisWhere} ${what} (${cause}); set it with --redis-password-file or HOTSTANDBY_REDIS_PASSWORD`);
      }
      if (problem === 'tls') throw new StoreCredentialsError(`${redisWhere}: TLS failed (${cause}); check --redis-ca-file and the rediss:// URL`);
      throw new Error(`${redisWhere}: ${cause}`, { cause: err });
    }
  }

  // ---------------------------------------------------------------- status

  status(): RoleStatus {
    const s = this.board.get();
    // Past the local lease deadline the answer is "not writable" even if the
    // demotion has not run yet (say, just after a SIGCONT): the master's reads rely on it.
    return s.writable && !this.election.holdsLeadership() ? { ...s, writable: false } : s;
  }

  waitForStatusChange(afterVersion: number, timeoutMs: number, signal: AbortSignal): Promise<RoleStatus> {
    const combined = AbortSignal.any([signal, this.lifetime.signal]);
    return this.board.waitForChange(afterVersion, timeoutMs, combined);
  }

  /** The local API calls this for every request from the master (see MasterSession). */
  masterRequest(instance: string | undefined): (droppedPoll?: boolean) => void {
    return this.master.begin(instance);
  }

  private setRole(role: RoleStatus['role'], extra: Partial<RoleStatus> = {}): void {
    this.board.update({ role, writable: role === 'leader', ...extra });
    this.registry.update({ role });
  }

  async health(): Promise<{ etcd: 'ok' | 'down'; stream: 'ok' | 'down' }> {
    const [etcd, stream] = await Promise.all([
      this.etcd.getString(this.keys.leader, 1000).then(
        () => 'ok' as const,
        () => 'down' as const,
      ),
      withTimeout(this.redis.ping(), 1000, 'stream server').then(
        () => 'ok' as const,
        () => 'down' as const,
      ),
    ]);
    return { etcd, stream };
  }

  // ---------------------------------------------------------------- election

  private async candidacy(): Promise<{ eligible: boolean; delayMs: number; reason: string }> {
    if (this.closing) return { eligible: false, delayMs: 0, reason: 'shutting down' };
    if (!this.master.alive()) {
      // An agent whose master is gone must not lead: nobody would apply the log.
      return { eligible: false, delayMs: 0, reason: `the master is gone (no request from it for ${this.master.silentForMs()} ms)` };
    }
    // Side by side: each is a round trip on the failover path.
    const switchoverRead = this.readSwitchover().catch(() => undefined);
    // Settled into a value: an early return below must not leave a rejection unhandled.
    const syncRead =
      this.config.replication === 'sync'
        ? this.etcd.getString(this.keys.sync, STORE_CALL_TIMEOUT_MS).then(
            (raw) => ({ raw }),
            (err: Error) => ({ err }),
          )
        : undefined;
    let headSeq: number;
    try {
      headSeq = await withTimeout(this.oplog.headSeq(), STORE_CALL_TIMEOUT_MS, 'the log head');
    } catch (err) {
      return { eligible: false, delayMs: 0, reason: `cannot read the log head: ${(err as Error).message}` };
    }
    this.board.update({ headSeq });
    const switchover = await switchoverRead;
    // Sync mode: only members of the published sync set hold every acknowledged entry.
    let sync: ReturnType<typeof syncCandidacy> = { restricted: false };
    if (syncRead) {
      const read = await syncRead;
      if ('err' in read) return { eligible: false, delayMs: 0, reason: `cannot read the sync record: ${read.err.message}` };
      sync = syncCandidacy(parseSyncRecord(read.raw), this.member);
      if (sync.restricted && !sync.eligible) return { eligible: false, delayMs: 0, reason: sync.reason };
    }
    const syncSet = sync.restricted ? sync.members : undefined;
    return decideCandidacy({
      self: this.member,
      selfAppliedSeq: this.board.get().appliedSeq,
      headSeq,
      // A sync set member holds every acknowledged entry (its master or its received buffer): lag does not bar it.
      maxLagOnFailover: syncSet ? Number.MAX_SAFE_INTEGER : this.config.maxLagOnFailover,
      members: syncSet ? this.registry.members().filter((m) => syncSet.includes(m.member)) : this.registry.members(),
      stepMs: this.config.candidacyStepMs,
      // A pending switchover holds the other standbys back one TTL, long
      // enough for the target to win.
      switchoverHoldOffMs: this.config.leaseTtlSeconds * 1000,
      ...(switchover ? { switchoverTarget: switchover.target } : {}),
    });
  }

  private onElectionEvent(event: ElectionEvent): void {
    switch (event.type) {
      case 'leader-changed':
        this.onLeaderChanged(event.leader);
        break;
      case 'elected':
        // The master may have gone during the rank delay: never promote for nobody.
        if (!this.master.alive()) this.resignForMaster('elected while the master is gone');
        else void this.promote(event.epoch, event.record);
        break;
      case 'deposed':
        this.onDeposed(event.epoch, event.reason);
        break;
    }
  }

  private onLeaderChanged(leader: LeaderRecord | undefined): void {
    const mine = leader?.member === this.member;
    this.board.update({
      leader: leader ? { member: leader.member, address: leader.address, epoch: leader.epoch } : null,
      ...(mine ? {} : { epoch: leader?.epoch ?? 0 }),
    });
    if (!leader && !mine && this.board.get().role === 'standby') this.setRole('candidate');
    if (leader && !mine && this.board.get().role === 'candidate') this.setRole('standby');
  }

  /**
   * Won the election: raise the epoch in the stream server (from here on the
   * old leader's appends are refused), let the master apply the log to its end,
   * then accept writes. No acknowledged entry is lost: every acknowledged entry
   * is in the stream before the epoch moves, and we apply up to the head.
   */
  private async promote(epoch: number, record: LeaderRecord): Promise<void> {
    const started = Date.now();
    this.leaderLog = this.log.child({ epoch });
    this.setRole('promoting', { epoch, leader: { member: record.member, address: record.address, epoch } });
    this.leaderLog.info('elected; raising the epoch and draining the log');
    try {
      const raised = await withTimeout(
        this.oplog.raiseEpoch(epoch, this.board.get().appliedSeq),
        STORE_CALL_TIMEOUT_MS,
        'raising the epoch in the stream server',
      );
      const headSeq = await this.restoreLostEntries(epoch, raised.headSeq);
      this.board.update({ headSeq });
      if (this.config.replication === 'sync') await this.startSyncLeader(epoch, raised.headSeq);
      await waitFor(
        () => {
          if (!this.election.holdsLeadership() || this.board.get().role !== 'promoting') throw new Error('lost leadership while promoting');
          return this.board.get().appliedSeq >= headSeq;
        },
        { timeoutMs: this.config.promotionTimeoutMs, intervalMs: 5, what: `the master to apply the log up to ${headSeq}`, signal: this.lifetime.signal },
      );
      if (this.labeler) {
        // Strip the leader label from every other pod, label ours; bounded, as writes are fenced anyway.
        const labelled = await this.labeler.lead(() => this.election.holdsLeadership() && !this.closing, LEADER_LABEL_BOUND_MS);
        if (!labelled) this.leaderLog.warn({ boundMs: LEADER_LABEL_BOUND_MS }, 'pod labels not set yet; accepting writes anyway and retrying in the background');
      }
      if (!this.election.holdsLeadership() || this.board.get().role !== 'promoting') throw new Error('lost leadership while promoting');
      this.lastSnapshot = { seq: this.lastSnapshot.seq, at: Math.max(this.lastSnapshot.at, Date.now() - 1) };
      this.streamOkAt = performance.now();
      this.setRole('leader', { headSeq, appliedSeq: Math.max(this.board.get().appliedSeq, headSeq) });
      this.leaderLog.info({ headSeq, promotionMs: Date.now() - started }, 'now leading: accepting writes');
      await this.clearSwitchoverIfTarget();
    } catch (err) {
      this.syncLeader?.stop(new NotLeaderError(undefined));
      this.syncLeader = undefined;
      if (this.closing) return;
      this.leaderLog.error({ err: (err as Error).message }, 'promotion failed; resigning');
      if (err instanceof FencedError) this.onDeposed(epoch, 'key-changed');
      // Hold off only after a promotion of our own that failed; a term already
      // given up (the master went away, a new master instance) must not delay
      // this member's next campaign: candidacy() decides when it may.
      const holdOffMs = this.election.holdsLeadership() ? this.config.leaseTtlSeconds * 1000 : 0;
      await this.election.resign({ holdOffMs }).catch(() => undefined);
    }
  }

  /**
   * Sync mode: entries this member received but the stream server no longer
   * holds (it came back empty, or from an older copy) are appended again under
   * the new epoch, at the same sequence numbers, before the master drains the
   * log: an acknowledged entry may live only in a standby's buffer. Returns the
   * head after that. Then the master is asked for a snapshot at once, so the
   * other standbys, whose log position the server lost, can resync.
   */
  private async restoreLostEntries(epoch: number, headSeq: number): Promise<number> {
    if (!this.syncStandby) return headSeq;
    const lost = this.syncStandby.buffer.after(headSeq);
    if (lost === undefined) {
      this.leaderLog.error({ headSeq }, 'sync replication: the received buffer does not continue the stream head; cannot restore what the stream server lost');
      return headSeq;
    }
    const lossy = headSeq < this.board.get().headSeq || lost.length > 0;
    let head = headSeq;
    for (let i = 0; i < lost.length; i += 1000) {
      const part = lost.slice(i, i + 1000);
      const r = await this.appendOnce(epoch, part.map(({ op, key, payload }) => ({ op, key, payload })), randomUUID());
      if (r.firstSeq !== head + 1) throw new Error(`restoring lost entries: appended at ${r.firstSeq}, expected ${head + 1}`);
      head = r.lastSeq;
    }
    if (lost.length > 0) this.leaderLog.warn({ from: headSeq + 1, to: head }, 'the stream server had lost entries this member held; appended them again');
    if (lossy) this.board.update({ snapshotWanted: { reason: 'the stream server lost entries; standbys need a snapshot to resync', minSeq: head } });
    return head;
  }

  private async startSyncLeader(epoch: number, startHead: number): Promise<void> {
    this.syncLeader?.stop(new NotLeaderError(undefined));
    const leader = new SyncReplicator({
      etcd: this.etcd,
      redis: this.redis,
      keys: this.keys,
      channel: streamKeys(this.config.cluster).acks,
      member: this.member,
      epoch,
      startHead,
      minSyncStandbys: this.config.minSyncStandbys,
      syncTimeoutMs: this.config.syncTimeoutMs,
      onSyncTimeout: this.config.onSyncTimeout,
      members: () => this.registry.members(),
      headSeq: () => this.board.get().headSeq,
      log: this.leaderLog,
    });
    this.syncLeader = leader;
    await leader.start();
  }

  private onDeposed(epoch: number, reason: string): void {
    this.syncLeader?.stop(new NotLeaderError(this.election.leader));
    this.syncLeader = undefined;
    const role = this.board.get().role;
    if (role === 'leader' || role === 'promoting') {
      this.leaderLog.warn({ reason, epoch }, 'no longer leading: writes stop now');
    }
    if (!this.closing) this.setRole('standby', { snapshotWanted: null, epoch: this.board.get().leader?.epoch === epoch ? 0 : this.board.get().epoch });
    if (!this.closing) this.labeler?.standby();
    this.leaderLog = this.log;
  }

  // ---------------------------------------------------------------- the master's health

  /**
   * The master crashed or hangs without a request open: nobody applies the
   * log here, so this member must not lead. A leader resigns at once (its
   * lease is revoked, a caught-up standby takes over without waiting for the
   * TTL); candidacy() keeps it from campaigning until the master is back.
   */
  private onMasterGone(silentForMs: number): void {
    const role = this.board.get().role;
    this.log.warn({ silentForMs, role, instance: this.master.instance, timeoutMs: this.config.masterLivenessTimeoutMs }, 'the master is gone');
    this.registry.update({ state: MASTER_DOWN_STATE });
    if (role === 'leader' || role === 'promoting') this.resignForMaster('the master is gone');
  }

  /**
   * A new master process: its state is unknown until it acknowledges what it
   * applied, so what the previous one applied no longer counts. When this
   * member leads, it resigns rather than holding writes until the new master
   * catches up: a standby is already caught up and takes over in
   * milliseconds, while the new master may need a snapshot and a long replay;
   * and no path can then tell the new master it is writable before it caught
   * up (it follows the log as a standby, and promotion waits for its ack).
   */
  private onNewMasterInstance(instance: string | undefined, previous: string | undefined): void {
    const s = this.board.get();
    if (previous !== undefined || s.appliedSeq > 0) {
      this.log.info({ instance: instance ?? null, previous: previous ?? null, role: s.role }, 'a new master instance: its applied sequence is unknown until it acknowledges');
    }
    this.board.update({ appliedSeq: 0, receivedSeq: 0 });
    this.registry.update({ appliedSeq: 0, receivedSeq: 0 });
    this.syncStandby?.reset();
    if (s.role === 'leader' || s.role === 'promoting') this.resignForMaster('a new master instance has not caught up');
  }

  /**
   * A leader that cannot reach the stream server cannot append, yet keeps its
   * etcd lease: left alone, it would hold the cluster without writes for as
   * long as the partition lasts, while a standby that reaches both stores
   * could lead. After one lease TTL without an answer it resigns (no hold-off:
   * candidacy() refuses while it cannot read the log head).
   */
  private resignIfStreamLost(): void {
    if (this.board.get().role !== 'leader' || this.closing) return;
    const silentMs = performance.now() - this.streamOkAt;
    const ttlMs = this.config.leaseTtlSeconds * 1000;
    if (silentMs < ttlMs) {
      // A read failed, but the last answer is younger than a TTL. Look again
      // when it is a TTL old, not at the next failed read, which may end up to
      // a round plus a read bound later.
      if (!this.streamSilenceTimer) {
        const lastAnswerAt = this.streamOkAt;
        this.streamSilenceTimer = setTimeout(() => {
          this.streamSilenceTimer = undefined;
          // After the I/O already waiting (the poll phase runs before setImmediate's):
          // a loop that was itself stalled must not take its own delay for the server's silence.
          setImmediate(() => {
            if (this.streamOkAt === lastAnswerAt) this.resignIfStreamLost();
          });
        }, ttlMs - silentMs);
      }
      return;
    }
    this.leaderLog.warn({ silentMs: Math.round(silentMs) }, 'resigning: the stream server has not answered for a lease TTL');
    this.streamOkAt = performance.now(); // once per outage, not on every tick
    void this.election.resign({ holdOffMs: 0 }).catch(() => undefined);
  }

  private resignForMaster(why: string): void {
    this.leaderLog.warn({ why }, 'resigning: the master cannot lead');
    // No hold-off: candidacy() refuses while the master is absent or behind.
    void this.election.resign({ holdOffMs: 0 }).catch(() => undefined);
  }

  // ---------------------------------------------------------------- log

  async append(entries: OpInput[]): Promise<{ epoch: number; firstSeq: number; lastSeq: number }> {
    const status = this.board.get();
    if (status.role !== 'leader' || this.draining || !this.election.holdsLeadership()) {
      throw new NotLeaderError(status.role === 'leader' ? undefined : this.election.leader);
    }
    const epoch = status.epoch;
    const batchId = randomUUID();
    this.inflightAppends++;
    try {
      const result = await this.appendOnce(epoch, entries, batchId);
      this.streamOkAt = performance.now();
      this.board.update({
        headSeq: Math.max(this.board.get().headSeq, result.lastSeq),
        appliedSeq: Math.max(this.board.get().appliedSeq, result.lastSeq),
        receivedSeq: Math.max(this.board.get().receivedSeq, result.lastSeq),
      });
      this.registry.update({ appliedSeq: this.board.get().appliedSeq, receivedSeq: this.board.get().receivedSeq });
      // Sync mode: acknowledged only once the sync standbys hold it (or the fallback says otherwise).
      if (this.syncLeader) {
        await this.syncLeader.awaitReplicated(result.lastSeq).catch((err: unknown) => {
          // The entry is in the log: leadership ending now does not undo it (the next
          // leader may serve it), so the outcome is unknown, never a refusal (409).
          if (err instanceof NotLeaderError) {
            throw new StoreUnavailableError(`the write is in the log, but leadership ended before the sync standbys confirmed it: outcome unknown (${err.message})`);
          }
          throw err;
        });
      }
      return { epoch, ...result };
    } catch (err) {
      if (err instanceof FencedError) {
        this.leaderLog.warn({ currentEpoch: err.currentEpoch }, 'append fenced: a newer leader exists');
        this.onDeposed(epoch, 'fenced');
        void this.election.resign({ holdOffMs: 0 }).catch(() => undefined);
      }
      throw err;
    } finally {
      this.inflightAppends--;
    }
  }

  /**
   * One append; when the connection fails mid-call the outcome is unknown, so
   * look the batch up by its id before answering. Only a definite answer is
   * returned; otherwise StoreUnavailableError tells the master the outcome is
   * unknown.
   */
  private async appendOnce(epoch: number, entries: OpInput[], batchId: string): Promise<{ firstSeq: number; lastSeq: number }> {
    try {
      return await this.oplog.append(epoch, entries, batchId);
    } catch (err) {
      if (err instanceof FencedError) throw err;
      if (!isConnectionError(err)) throw err;
      const deadline = Date.now() + AMBIGUOUS_APPEND_RESOLVE_MS;
      while (Date.now() < deadline) {
        try {
          const found = await withTimeout(this.oplog.findBatch(batchId), 1000, 'looking up the batch');
          if (found) return found;
          throw new StoreUnavailableError(`append failed (${(err as Error).message}); nothing was appended`);
        } catch (lookupErr) {
          if (lookupErr instanceof StoreUnavailableError) throw lookupErr;
          await sleep(100);
        }
      }
      throw new StoreUnavailableError(`append outcome unknown: the stream server did not answer (${(err as Error).message})`);
    }
  }

  async *streamEntries(fromSeq: number, signal: AbortSignal): AsyncIterable<StreamLine> {
    const combined = AbortSignal.any([signal, this.lifetime.signal]);
    const tailer = new OpLogTailer({ redis: this.redis, keys: streamKeys(this.config.cluster), fromSeq, log: this.log });
    try {
      while (!combined.aborted) {
        let event;
        try {
          event = await tailer.next(combined);
        } catch (err) {
          if (combined.aborted) return;
          throw new StoreUnavailableError(`reading the log failed: ${(err as Error).message}`);
        }
        if (event.type === 'entries') {
          // Held, and acknowledged to the leader, before the master sees them.
          if (this.board.get().role !== 'leader') this.syncStandby?.received(event.entries);
          for (const e of event.entries) {
            yield { type: 'entry', seq: e.seq, epoch: e.epoch, op: e.op, key: e.key, payload: e.payload };
          }
          const last = event.entries.at(-1);
          if (last) {
            const s = this.board.get();
            this.board.update({ receivedSeq: Math.max(s.receivedSeq, last.seq), headSeq: Math.max(s.headSeq, last.seq) });
          }
        } else if (event.type === 'idle') {
          this.board.update({ headSeq: Math.max(this.board.get().headSeq, event.headSeq) });
          if (event.exact) this.tailerHeadAt = performance.now();
          if (this.board.get().role !== 'leader') this.syncStandby?.heartbeat();
          yield { type: 'heartbeat', headSeq: event.headSeq };
        } else {
          const latest = await this.snapshots.latest().catch(() => undefined);
          this.log.warn({ reason: event.reason, fromSeq, snapshotSeq: latest?.seq }, 'standby must resync from the latest snapshot');
          this.registry.update({ state: 'resyncing' });
          this.syncStandby?.reset();
          yield { type: 'resync', reason: event.reason, snapshot: latest ? { id: latest.id, seq: latest.seq } : null };
          return;
        }
      }
    } finally {
      await tailer.close().catch(() => undefined);
    }
  }

  ackApplied(seq: number): void {
    const s = this.board.get();
    const ceiling = Math.max(s.headSeq, s.receivedSeq);
    if (seq > ceiling) {
      throw new BadRequestError('seq', `seq ${seq} is above the log head ${ceiling}; acknowledge only entries you received`);
    }
    this.syncStandby?.applied(seq);
    if (seq > s.appliedSeq) {
      this.board.update({ appliedSeq: seq });
      this.registry.update({ appliedSeq: seq, receivedSeq: Math.max(s.receivedSeq, seq), state: 'ok' });
    }
  }

  // ---------------------------------------------------------------- snapshots

  async putSnapshot(seq: number, data: Buffer): Promise<SnapshotDescriptor> {
    const s = this.board.get();
    if (s.role !== 'leader' || !this.election.holdsLeadership()) throw new NotLeaderError(this.election.leader);
    if (seq > s.headSeq) throw new BadRequestError('seq', `seq ${seq} is above the log head ${s.headSeq}`);
    const { descriptor, kept } = await this.snapshots.put(seq, s.epoch, data);
    this.lastSnapshot = { seq: descriptor.seq, at: Date.now() };
    this.board.update({ snapshotWanted: null });
    // Entries at or below the oldest kept snapshot are in every kept snapshot.
    const trimmed = await this.oplog.trimBefore(kept[0]!.seq + 1).catch((err: Error) => {
      this.leaderLog.warn({ err: err.message }, 'could not trim the log after a snapshot; MAXLEN still bounds it');
      return 0;
    });
    this.leaderLog.info({ seq, sizeBytes: descriptor.sizeBytes, id: descriptor.id, kept: kept.length, trimmed }, 'snapshot stored');
    return descriptor;
  }

  async getSnapshot(): Promise<{ descriptor: SnapshotDescriptor; data: Buffer } | undefined> {
    const descriptor = await this.snapshots.latest();
    if (!descriptor) return undefined;
    return { descriptor, data: await this.snapshots.read(descriptor) };
  }

  // ---------------------------------------------------------------- deletes and metadata

  publishDelete(key: string, payload: string): Promise<{ revision: number }> {
    return this.deletes.publish(key, payload);
  }

  subscribeDeletes(fromRevision: number | undefined, signal: AbortSignal): AsyncIterable<DeleteLine> {
    const combined = AbortSignal.any([signal, this.lifetime.signal]);
    return this.deletes.subscribe({ ...(fromRevision !== undefined ? { fromRevision } : {}), signal: combined }) as AsyncIterable<DeleteLine>;
  }

  metaGet(key: string): ReturnType<MetadataStore['get']> {
    return this.metadata.get(key);
  }

  metaPut(key: string, value: string, expectedModRevision?: number): ReturnType<MetadataStore['put']> {
    return this.metadata.put(key, value, expectedModRevision);
  }

  metaDelete(key: string, expectedModRevision?: number): ReturnType<MetadataStore['delete']> {
    return this.metadata.delete(key, expectedModRevision);
  }

  // ---------------------------------------------------------------- background

  /** Refreshes the head (lag) and, on the leader, the snapshot request. */
  private async tick(): Promise<void> {
    if (this.closing) return;
    this.lastTickAt = Date.now();
    try {
      // A standby whose tailer has just read the head (it does on every idle
      // round, every 500 ms) needs no read of its own: the log length is the
      // leader's business (snapshot policy), and a head the tailer reads after
      // entries it has not applied yet is a lower bound, which does not count.
      const tailerFresh = this.board.get().role === 'standby' && performance.now() - this.tailerHeadAt < HEAD_POLL_MS;
      if (!tailerFresh) await this.refreshHead(HEAD_READ_TIMEOUT_MS);
      this.streamOkAt = performance.now();
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, 'head refresh failed');
      this.resignIfStreamLost();
      return;
    }
    const s = this.board.get();
    this.registry.update({
      receivedSeq: s.receivedSeq,
      appliedSeq: s.appliedSeq,
      state: !this.master.alive()
        ? MASTER_DOWN_STATE
        : s.role === 'leader' || s.headSeq - s.appliedSeq <= this.config.maxLagOnFailover
          ? 'ok'
          : 'lagging',
    });
    if (s.role === 'leader' && !s.snapshotWanted) {
      const wanted = snapshotWanted({
        headSeq: s.headSeq,
        lastSnapshotSeq: this.lastSnapshot.seq,
        lastSnapshotAt: this.lastSnapshot.at,
        now: Date.now(),
        everyEntries: this.config.snapshotEveryEntries,
        intervalSeconds: this.config.snapshotIntervalSeconds,
        logLength: this.logLength,
        maxLength: this.config.oplogMaxLength,
        ...(this.logStartSeq !== undefined ? { logStartSeq: this.logStartSeq } : {}),
      });
      if (wanted) {
        this.leaderLog.info(wanted, 'asking the master for a snapshot');
        this.board.update({ snapshotWanted: wanted });
      }
    }
  }

  private async refreshHead(timeoutMs: number): Promise<void> {
    const [headSeq, length] = await withTimeout(
      Promise.all([this.oplog.headSeq(), this.oplog.length()]),
      timeoutMs,
      'the log head',
    );
    this.logLength = length;
    this.logStartSeq = headSeq - length;
    this.board.update({ headSeq: Math.max(headSeq, this.board.get().role === 'leader' ? this.board.get().headSeq : 0) });
  }

  // ---------------------------------------------------------------- planned switchover

  private async readSwitchover(): Promise<SwitchoverRequest | undefined> {
    const raw = await this.etcd.getString(this.keys.switchover, STORE_CALL_TIMEOUT_MS);
    if (!raw) return undefined;
    try {
      const parsed = JSON.parse(raw) as SwitchoverRequest;
      return typeof parsed.target === 'string' ? parsed : undefined;
    } catch {
      return undefined;
    }
  }

  /**
   * Follows the switchover key: a request written before we started is found
   * by the first read, later ones by the watch (re-opened by the mirror when
   * it breaks). Only a change is acted on, never a re-read of the same request.
   */
  private watchSwitchover(): void {
    const mirror = new EtcdMirror({
      etcd: this.etcd,
      range: { key: this.keys.switchover },
      resyncMs: SWITCHOVER_RESYNC_MS,
      quietWhileWatched: () => true,
      callTimeoutMs: STORE_CALL_TIMEOUT_MS,
      log: this.log,
      onChange: (view, changed) => {
        const kv = view.get(this.keys.switchover);
        if (!changed || !kv) return;
        try {
          const request = JSON.parse(kv.value.toString()) as SwitchoverRequest;
          if (typeof request.target !== 'string') throw new Error('no target');
          void this.onSwitchoverRequest(request);
        } catch {
          this.log.warn({ value: kv.value.toString() }, 'ignoring a malformed switchover request');
        }
      },
    });
    this.switchoverMirror = mirror;
    void mirror.start();
  }

  /**
   * Leader side of a planned switchover: stop taking writes, let the target
   * apply everything, then resign so the target (which campaigns first) wins.
   * Gives up, and keeps leading, when the target does not catch up in time.
   */
  private async onSwitchoverRequest(request: SwitchoverRequest): Promise<void> {
    if (request.target === this.member && this.board.get().role !== 'leader') {
      // Named as the target: campaign as soon as the leader resigns, even
      // within the hold-off of an earlier resignation of our own.
      this.election.endHoldOff();
      return;
    }
    if (this.board.get().role !== 'leader' || request.target === this.member || this.switchoverInProgress) return;
    this.switchoverInProgress = true;
    const log = this.leaderLog.child({ target: request.target });
    const started = Date.now();
    try {
      const target = this.registry.members().find((m) => m.member === request.target);
      if (!target || target.role === 'leader') {
        log.warn({ members: this.registry.members().map((m) => m.member) }, 'switchover target is not a live standby; ignoring the request');
        await this.etcd.delete({ key: this.keys.switchover }, STORE_CALL_TIMEOUT_MS).catch(() => undefined);
        return;
      }
      log.info('planned switchover: draining writes');
      this.draining = true;
      await waitFor(() => this.inflightAppends === 0, { timeoutMs: 5000, intervalMs: 2, what: 'in-flight appends to finish' });
      const headSeq = await withTimeout(this.oplog.headSeq(), STORE_CALL_TIMEOUT_MS, 'the log head');
      await waitFor(
        () => (this.registry.members().find((m) => m.member === request.target)?.appliedSeq ?? -1) >= headSeq,
        { timeoutMs: SWITCHOVER_CATCHUP_TIMEOUT_MS, intervalMs: 5, what: `${request.target} to apply up to ${headSeq}` },
      );
      await this.election.resign({ holdOffMs: this.config.leaseTtlSeconds * 2000 });
      log.info({ headSeq, drainMs: Date.now() - started }, 'resigned for the planned switchover');
    } catch (err) {
      log.error({ err: (err as Error).message }, 'planned switchover aborted; still leading');
      await this.etcd.delete({ key: this.keys.switchover }, STORE_CALL_TIMEOUT_MS).catch(() => undefined);
    } finally {
      this.draining = false;
      this.switchoverInProgress = false;
    }
  }

  /**
   * The new leader removes a switchover request that named it: it is done. A
   * request naming another member (it came while nobody led) is carried out now.
   */
  private async clearSwitchoverIfTarget(): Promise<void> {
    const request = await this.readSwitchover().catch(() => undefined);
    if (!request) return;
    if (request.target !== this.member) {
      void this.onSwitchoverRequest(request);
      return;
    }
    await this.etcd
      .txn(
        {
          compare: [{ key: this.keys.switchover, target: 'VALUE', result: 'EQUAL', value: Buffer.from(JSON.stringify(request)) }],
          success: [{ delete: { key: this.keys.switchover } }],
        },
        STORE_CALL_TIMEOUT_MS,
      )
      .catch(() => undefined);
  }

  // ---------------------------------------------------------------- kubelet probes (--health-listen)

  /** /healthz: the process answers and its periodic loop runs. */
  private liveness(): ProbeResult {
    if (this.closing) return { ok: false, detail: 'stopping' };
    const stalled = Date.now() - this.lastTickAt;
    if (stalled > LOOP_STALL_MS) return { ok: false, detail: `the agent loop has not run for ${stalled} ms` };
    return { ok: true, detail: `role ${this.board.get().role}` };
  }

  /** /readyz: our member key is in etcd (registered, lease alive) and the stream server answers. */
  private async readiness(): Promise<ProbeResult> {
    if (this.closing) return { ok: false, detail: 'stopping' };
    const [member, stream] = await Promise.all([
      this.etcd.getString(this.keys.member(this.member), 800).then(
        (v) => (v ? 'ok' : 'not registered'),
        (err: Error) => `etcd: ${err.message}`,
      ),
      withTimeout(this.redis.ping(), 800, 'the stream server').then(
        () => 'ok',
        (err: Error) => `stream server: ${err.message}`,
      ),
    ]);
    if (member !== 'ok' || stream !== 'ok') return { ok: false, detail: [member, stream].filter((s) => s !== 'ok').join('; ') };
    return { ok: true, detail: `member ${this.member} registered; stores reachable` };
  }

  // ---------------------------------------------------------------- shutdown

  /**
   * Resigns when leading (so a standby takes over at once instead of after
   * the TTL), then releases every resource. Bounded: each step has a timeout.
   */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    const wasLeading = this.board.get().role === 'leader' || this.board.get().role === 'promoting';
    this.board.update({ role: 'stopping', writable: false });
    this.lifetime.abort(new Error('agent stopping'));
    this.board.releaseAll();
    this.syncLeader?.stop(new Error('agent stopping'));
    if (this.headTimer) clearInterval(this.headTimer);
    if (this.streamSilenceTimer) clearTimeout(this.streamSilenceTimer);
    this.master.close();
    const step = async (what: string, fn: () => Promise<unknown> | undefined): Promise<void> => {
      try {
        await withTimeout(Promise.resolve(fn()), 5000, what);
      } catch (err) {
        this.log.warn({ err: (err as Error).message }, `shutdown: ${what} failed`);
      }
    };
    await step('stopping the pod labeler', () => this.labeler?.close());
    await step('stopping the election', () => this.election.stop());
    if (wasLeading) this.log.info('resigned leadership on shutdown');
    await step('closing the local API', () => this.api?.close());
    await step('closing the health endpoint', () => this.probes?.close());
    await step('cancelling the switchover watch', () => this.switchoverMirror?.stop());
    await step('leaving the member registry', () => this.registry.stop());
    await step('closing delete-event subscriptions', () => this.deletes.close());
    await step('closing the oplog', () => this.oplog.close());
    this.redis.disconnect();
    this.etcd.close();
    this.log.info('agent stopped');
  }
}

/**
 * etcd answered over TLS that it could not serve the call (gRPC UNAVAILABLE)
 * on every try while the agent waited for it at start: on a healthy etcd
 * that is its JSON gateway failing to reach etcd's own gRPC server.
 */
function isGatewayLoopbackFailure(err: unknown, endpoints: string[]): boolean {
  return err instanceof EtcdError && err.code === 14 && endpoints.every((e) => e.startsWith('https://'));
}

const ETCD_GATEWAY_TLS_HINT =
  "etcd answered, but its JSON gateway (which the agent uses) could not reach etcd's own gRPC server. With --trusted-ca-file or --client-cert-auth, " +
  "etcd presents its serving certificate to itself as a client certificate, so that certificate must allow client authentication too " +
  '(extendedKeyUsage serverAuth,clientAuth, as kubeadm makes them); see docs/election.md';

/** The stores refused our credentials: retrying will not help. */
class StoreCredentialsError extends Error {
  override name = 'StoreCredentialsError';
}

/**
 * The stream server may have run the command: the agent's RespClient says so with
 * "Connection is closed. (...)" or "Command timed out". The socket-level codes
 * are kept although that client wraps them: a wrong "no" here would answer a
 * possibly appended batch as failed, a wrong "yes" only costs a lookup.
 */
function isConnectionError(err: unknown): boolean {
  const message = (err as Error | undefined)?.message ?? '';
  return /Connection is closed|ECONNRESET|ECONNREFUSED|EPIPE|ETIMEDOUT|Command timed out|Stream isn't writeable|MaxRetriesPerRequest/i.test(message);
}

// A whole hot-standby cluster on this machine, as real processes: etcd, a
// Redis-protocol server (Dragonfly or redis-server), and N members, each an `hotstandby agent` plus an
// `hotstandby kvmaster` child process on free loopback ports. The demo, the
// failover tests and bench/failover.ts drive it.
//
//   const c = await LocalCluster.start({ members: 3, leaseTtlSeconds: 2 });
//   const leader = await c.waitForLeader();      // a member whose master accepts writes
//   c.kill(leader);                              // kill -9 agent and master
//   await c.restart(leader);                     // comes back as a standby
//   c.killMaster(leader);                        // kill -9 the master only; its agent runs on
//   await c.restartMaster(leader);               // a new master process alone, as a kubelet would
//   c.pauseAgent(m) / c.resumeAgent(m);          // SIGSTOP / SIGCONT the agent
//   c.killRedis(); await c.restartRedisEmpty();  // kill -9 the stream server; a new, empty one on the same port
//   await c.requestSwitchover(target);
//   await c.stop();                              // everything gone, bounded
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Etcd3 } from 'etcd3';
import { ManagedProcess } from '../lib/childproc.ts';
import { etcdKeys, type ClusterRef } from '../lib/keys.ts';
import { startEtcd, startStreamServer, type LocalEtcd, type LocalStreamServer, type StartEtcdOptions, type StartStreamServerOptions, type StreamServerKind } from '../lib/localstores.ts';
import { freePort, waitForPort } from '../lib/ports.ts';
import { waitFor } from '../lib/time.ts';

const BIN = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'hotstandby.js');

export interface LocalClusterOptions {
  members?: number;
  leaseTtlSeconds?: number;
  cluster?: ClusterRef;
  /** Log level of the agents and masters (their logs go to files in workDir). */
  logLevel?: string;
  /** Extra `hotstandby agent` flags, e.g. ['--snapshot-every-entries', '500']. */
  agentArgs?: string[];
  /** The stream server to run; default: chooseStreamServer() (Dragonfly when built). */
  streamServer?: StreamServerKind;
  /** Member names (default kv-0, kv-1, ...); in Kubernetes tests, the pod names. Sets the count when given. */
  memberNames?: string[];
  /** Extra flags and environment for one member's agent, after agentArgs. */
  memberAgent?: (name: string) => { args?: string[]; env?: Record<string, string> };
  /** How to start the stores, e.g. etcd over TLS or Redis with a password (give the agents the credentials through agentArgs/memberAgent). */
  stores?: { etcd?: Omit<StartEtcdOptions, 'workDir'>; redis?: Omit<StartStreamServerOptions, 'workDir' | 'kind'> };
  /**
   * Where a member runs (the network fault tests give each its own network
   * namespace): `host` is the address its master and agent API listen on
   * (default 127.0.0.1), `wrap` turns a command into one that runs there
   * (e.g. `ip netns exec <ns> ...`, which execs: the pid stays the process's).
   */
  placement?: (name: string) => MemberPlacement;
  /** The etcd endpoints the agents dial (comma-separated) instead of the cluster's own etcd, e.g. a 3-member etcd cluster. */
  etcdEndpoints?: string;
}

export interface MemberPlacement {
  host: string;
  wrap?: (command: string, args: string[]) => { command: string; args: string[] };
}

export interface Member {
  readonly name: string;
  /** Where clients reach its master. */
  readonly kvAddress: string;
  readonly agentApi: string;
  agent: ManagedProcess;
  master: ManagedProcess;
}

export interface MasterStatus {
  member: string | null;
  role: string;
  writable: boolean;
  epoch: number;
  appliedSeq: number;
  keys: number;
}

export class LocalCluster {
  readonly etcd: LocalEtcd;
  /** The Redis-protocol stream server (Dragonfly or redis-server); replaced by restartRedisEmpty(). */
  redis: LocalStreamServer;
  readonly members: Member[] = [];
  readonly workDir: string;
  readonly ref: ClusterRef;
  private readonly opts: Required<Omit<LocalClusterOptions, 'cluster' | 'streamServer' | 'memberNames' | 'memberAgent' | 'stores' | 'placement' | 'etcdEndpoints'>> &
    Pick<LocalClusterOptions, 'memberAgent' | 'placement' | 'etcdEndpoints'>;

  private readonly storeOptions: NonNullable<LocalClusterOptions['stores']>;
  private redisRestarts = 0;

  private constructor(etcd: LocalEtcd, redis: LocalStreamServer, workDir: string, ref: ClusterRef, opts: LocalCluster['opts'], storeOptions: LocalClusterOptions['stores']) {
    this.storeOptions = storeOptions ?? {};
    this.etcd = etcd;
    this.redis = redis;
    this.workDir = workDir;
    this.ref = ref;
    this.opts = opts;
  }

  static async start(options: LocalClusterOptions = {}): Promise<LocalCluster> {
    const opts = {
      members: options.members ?? 3,
      leaseTtlSeconds: options.leaseTtlSeconds ?? 5,
      logLevel: options.logLevel ?? 'info',
      agentArgs: options.agentArgs ?? [],
      ...(options.memberAgent ? { memberAgent: options.memberAgent } : {}),
      ...(options.placement ? { placement: options.placement } : {}),
      ...(options.etcdEndpoints ? { etcdEndpoints: options.etcdEndpoints } : {}),
    };
    const names = options.memberNames ?? Array.from({ length: opts.members }, (_, i) => `kv-${i}`);
    const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hs-cluster-'));
    const etcd = await startEtcd({ ...options.stores?.etcd, workDir });
    let redis: LocalStreamServer;
    try {
      redis = await startStreamServer({ ...options.stores?.redis, workDir, ...(options.streamServer ? { kind: options.streamServer } : {}) });
    } catch (err) {
      await etcd.stop();
      throw err;
    }
    const cluster = new LocalCluster(etcd, redis, workDir, options.cluster ?? { namespace: 'demo', name: 'kv' }, opts, options.stores);
    try {
      for (const name of names) cluster.members.push(await cluster.startMember(name));
      await Promise.all(cluster.members.map((m) => cluster.waitUntilServing(m)));
    } catch (err) {
      await cluster.stop();
      throw err;
    }
    return cluster;
  }

  /** node <args>, wrapped to run where the member is placed. */
  private command(name: string, args: string[]): { command: string; args: string[] } {
    const wrap = this.opts.placement?.(name).wrap;
    return wrap ? wrap(process.execPath, args) : { command: process.execPath, args };
  }

  private masterProcess(name: string, kvAddress: string, agentApi: string): ManagedProcess {
    return new ManagedProcess({
      name: `${name}-kvmaster`,
      ...this.command(name, [BIN, 'kvmaster', '--listen', kvAddress, '--agent-api', agentApi, '--log-level', this.opts.logLevel]),
      // Appended to across restarts, so a test can read the whole story.
      logFile: path.join(this.workDir, `${name}-kvmaster.log`),
      env: { ...process.env, HOTSTANDBY_LOG_LEVEL: this.opts.logLevel },
    });
  }

  private async startMember(name: string, ports?: { kv: number; api: number }): Promise<Member> {
    const kv = ports?.kv ?? (await freePort());
    const api = ports?.api ?? (await freePort());
    const host = this.opts.placement?.(name).host ?? '127.0.0.1';
    const kvAddress = `${host}:${kv}`;
    const agentApi = `${host}:${api}`;
    const env = { ...process.env, HOTSTANDBY_LOG_LEVEL: this.opts.logLevel };
    const own = this.opts.memberAgent?.(name) ?? {};
    const agent = new ManagedProcess({
      name: `${name}-agent`,
      ...this.command(name, [
        BIN, 'agent',
        '--cluster', `${this.ref.namespace}/${this.ref.name}`,
        '--member', name,
        '--address', kvAddress,
        '--etcd', this.opts.etcdEndpoints ?? this.etcd.endpoint,
        '--redis', this.redis.url,
        '--api-listen', agentApi,
        '--lease-ttl', String(this.opts.leaseTtlSeconds),
        '--log-level', this.opts.logLevel,
        ...this.opts.agentArgs,
        ...(own.args ?? []),
      ]),
      logFile: path.join(this.workDir, `${name}-agent.log`),
      env: { ...env, ...own.env },
    });
    const master = this.masterProcess(name, kvAddress, agentApi);
    return { name, kvAddress, agentApi, agent, master };
  }

  private async waitUntilServing(m: Member): Promise<void> {
    for (const [proc, address] of [
      [m.agent, m.agentApi],
      [m.master, m.kvAddress],
    ] as const) {
      const { host, port } = hostPort(address);
      if (!(await waitForPort(port, 30_000, host).catch(() => false))) {
        throw new Error(`${proc.name} did not start listening on ${address} within 30 s. Its log (${proc.logFile}) ends with:\n${proc.tail(30)}`);
      }
    }
  }

  /** The master's own view (GET /status); undefined when it does not answer within timeoutMs. */
  async masterStatus(m: Member, timeoutMs = 1000): Promise<MasterStatus | undefined> {
    if (!m.master.running) return undefined;
    try {
      const res = await fetch(`http://${m.kvAddress}/status`, { signal: AbortSignal.timeout(timeoutMs) });
      return (await res.json()) as MasterStatus;
    } catch {
      return undefined;
    }
  }

  /**
   * The member whose master accepts writes under the newest epoch. A deposed
   * master whose agent is frozen may still believe it leads (it cannot hear
   * otherwise), but its appends are fenced: the newest epoch is the leader.
   */
  async leader(): Promise<Member | undefined> {
    const statuses = await Promise.all(this.members.map((m) => this.masterStatus(m)));
    let best: { m: Member; epoch: number } | undefined;
    statuses.forEach((s, i) => {
      if (s?.writable && (!best || s.epoch > best.epoch)) best = { m: this.members[i]!, epoch: s.epoch };
    });
    return best?.m;
  }

  /** Waits for a member (other than `not`) whose master accepts writes. */
  async waitForLeader(opts: { timeoutMs?: number; not?: Member } = {}): Promise<Member> {
    return waitFor(
      async () => {
        const l = await this.leader();
        return l && l !== opts.not ? l : undefined;
      },
      { timeoutMs: opts.timeoutMs ?? 30_000, intervalMs: 20, what: 'a leader whose master accepts writes' },
    );
  }

  /** kill -9 of the member's agent and master. */
  kill(m: Member): void {
    m.agent.killNow('SIGKILL');
    m.master.killNow('SIGKILL');
  }

  /** Starts a stopped or killed member again on the same ports; it rejoins as a standby. */
  async restart(m: Member): Promise<void> {
    await Promise.all([m.agent.stop(), m.master.stop()]);
    const port = (a: string): number => Number(a.slice(a.lastIndexOf(':') + 1));
    const fresh = await this.startMember(m.name, { kv: port(m.kvAddress), api: port(m.agentApi) });
    m.agent = fresh.agent;
    m.master = fresh.master;
    await this.waitUntilServing(m);
  }

  /** kill -9 of the member's master only; its agent keeps running (a container crash in a pod). */
  killMaster(m: Member): void {
    m.master.killNow('SIGKILL');
  }

  /** Starts a new master process beside the running agent, on the same port (a kubelet restarting the container). */
  async restartMaster(m: Member): Promise<void> {
    await m.master.stop();
    m.master = this.masterProcess(m.name, m.kvAddress, m.agentApi);
    const { host, port } = hostPort(m.kvAddress);
    if (!(await waitForPort(port, 30_000, host).catch(() => false))) {
      throw new Error(`${m.master.name} did not start listening on ${m.kvAddress} within 30 s. Its log (${m.master.logFile}) ends with:\n${m.master.tail(30)}`);
    }
  }

  /** kill -9 of the stream server. */
  killRedis(): void {
    this.redis.process.killNow('SIGKILL');
  }

  /**
   * A new stream server on the same port, holding nothing: each restart gets
   * a data directory of its own. (One shared directory made the second
   * restart load the snapshot the first one saved, Dragonfly's every-minute
   * cron: a server back from an older copy, not an empty one.)
   */
  async restartRedisEmpty(): Promise<void> {
    await this.redis.stop();
    this.redisRestarts++;
    this.redis = await startStreamServer({
      ...this.storeOptions.redis,
      kind: this.redis.kind,
      workDir: this.workDir,
      name: `${this.redis.kind}-restarted-${this.redisRestarts}`,
      port: this.redis.port,
    });
  }

  /**
   * kill -9 of the stream server, then a new one on the same port and data
   * directory: it loads what it last saved (SAVE, or Dragonfly's snapshot
   * cron), a server back from an older copy, as a restarted pod of the
   * managed Dragonfly comes back.
   */
  async restartRedisFromLastSave(): Promise<void> {
    const { port, dir } = this.redis;
    this.redis.process.killNow('SIGKILL');
    await this.redis.stop();
    this.redis = await startStreamServer({ ...this.storeOptions.redis, kind: this.redis.kind, workDir: this.workDir, reuse: { port, dir } });
  }

  pauseAgent(m: Member): void {
    m.agent.killNow('SIGSTOP');
  }

  resumeAgent(m: Member): void {
    m.agent.killNow('SIGCONT');
  }

  /** Asks the leader to hand over to `target`, as `hotstandby switchover` does. */
  async requestSwitchover(target: Member): Promise<void> {
    const etcd = new Etcd3({ hosts: this.etcd.endpoint });
    try {
      await etcd.put(etcdKeys(this.ref).switchover).value(JSON.stringify({ target: target.name, requestedAt: new Date().toISOString() }));
    } finally {
      etcd.close();
    }
  }

  /** Stops every process (bounded) and removes the work directory. */
  async stop(): Promise<void> {
    await Promise.allSettled(this.members.flatMap((m) => [m.master.stop(3000), m.agent.stop(3000)]));
    await Promise.allSettled([this.etcd.stop(), this.redis.stop()]);
    fs.rmSync(this.workDir, { recursive: true, force: true });
  }
}

function hostPort(address: string): { host: string; port: number } {
  const i = address.lastIndexOf(':');
  return { host: address.slice(0, i), port: Number(address.slice(i + 1)) };
}

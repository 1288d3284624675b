// A 3-member (or N-member) etcd cluster as local processes on one address,
// with members that can be killed -9 and restarted on their own data: the
// quorum-loss fault. Single-member etcd for everything else is localstores.
import fs from 'node:fs';
import path from 'node:path';
import { ManagedProcess, findOnPath } from '../lib/childproc.ts';
import { freePort, isPortOpen } from '../lib/ports.ts';
import { waitFor } from '../lib/time.ts';

interface EtcdMember {
  name: string;
  clientPort: number;
  peerPort: number;
  dataDir: string;
  process: ManagedProcess | undefined;
}

export class LocalEtcdCluster {
  readonly host: string;
  readonly members: EtcdMember[];
  private readonly workDir: string;
  private readonly initialCluster: string;

  private constructor(host: string, workDir: string, members: EtcdMember[]) {
    this.host = host;
    this.workDir = workDir;
    this.members = members;
    this.initialCluster = members.map((m) => `${m.name}=http://${host}:${m.peerPort}`).join(',');
  }

  static async start(opts: { host: string; workDir: string; size?: number }): Promise<LocalEtcdCluster> {
    if (!findOnPath('etcd')) throw new Error('etcd was not found on PATH (Debian: apt-get install etcd-server)');
    const size = opts.size ?? 3;
    const members: EtcdMember[] = [];
    for (let i = 0; i < size; i++) {
      members.push({ name: `etcd${i}`, clientPort: await freePort(), peerPort: await freePort(), dataDir: path.join(opts.workDir, `etcd${i}-data`), process: undefined });
    }
    const cluster = new LocalEtcdCluster(opts.host, opts.workDir, members);
    try {
      for (let i = 0; i < size; i++) cluster.startMember(i);
      await cluster.waitHealthy(members.map((_, i) => i), 30_000);
    } catch (err) {
      await cluster.stop();
      throw err;
    }
    return cluster;
  }

  /** Comma-separated client URLs, as `hotstandby agent --etcd` takes them. */
  get endpoints(): string {
    return this.members.map((m) => `http://${this.host}:${m.clientPort}`).join(',');
  }

  private startMember(i: number): void {
    const m = this.members[i]!;
    m.process = new ManagedProcess({
      name: m.name,
      command: 'etcd',
      args: [
        '--name', m.name,
        '--data-dir', m.dataDir,
        '--listen-client-urls', `http://${this.host}:${m.clientPort}`,
        '--advertise-client-urls', `http://${this.host}:${m.clientPort}`,
        '--listen-peer-urls', `http://${this.host}:${m.peerPort}`,
        '--initial-advertise-peer-urls', `http://${this.host}:${m.peerPort}`,
        '--initial-cluster', this.initialCluster,
        '--initial-cluster-state', 'new',
        '--logger', 'zap',
        '--log-level', 'warn',
      ],
      logFile: path.join(this.workDir, `${m.name}.log`),
      env: { ...process.env, ETCD_UNSUPPORTED_ARCH: process.env.ETCD_UNSUPPORTED_ARCH ?? '' },
    });
  }

  /** kill -9 of member i. */
  kill(i: number): void {
    this.members[i]!.process?.killNow('SIGKILL');
  }

  /** Starts member i again on its ports and data, and waits until the given members report healthy. */
  async restart(i: number): Promise<void> {
    await this.members[i]!.process?.stop(1000);
    this.startMember(i);
  }

  async waitHealthy(indexes: number[], timeoutMs: number): Promise<void> {
    await waitFor(
      async () => {
        for (const i of indexes) {
          const m = this.members[i]!;
          if (!(await isPortOpen(m.clientPort, this.host))) return false;
          try {
            const res = await fetch(`http://${this.host}:${m.clientPort}/health`, { signal: AbortSignal.timeout(1000) });
            if (((await res.json()) as { health?: string }).health !== 'true') return false;
          } catch {
            return false;
          }
        }
        return true;
      },
      { timeoutMs, intervalMs: 100, what: `etcd members ${indexes.join(',')} to be healthy` },
    );
  }

  async stop(): Promise<void> {
    await Promise.allSettled(this.members.map((m) => m.process?.stop(2000)));
    for (const m of this.members) fs.rmSync(m.dataDir, { recursive: true, force: true });
  }
}

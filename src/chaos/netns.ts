// A private network on this machine for real network faults: a Linux bridge
// with a /24 of its own, one network namespace per member joined to it by a
// veth pair, and the stores listening on the bridge's host address. Links are
// cut with iptables *inside a member's namespace*, so cuts are scoped to that
// member and vanish with it; nothing is added to the host's own iptables.
//
// Delay: tc netem is the usual tool, but kernels built without
// CONFIG_NET_SCH_NETEM (this machine's) have no netem and no prio qdisc. A
// delayable target is therefore reached through a delaying TCP proxy per
// member (DelayProxy), spliced in by a DNAT rule in the member's namespace
// from the start, so setting a delay later breaks no connection.
//
//   const lab = await NetLab.create(['kv-0', 'kv-1', 'kv-2']);
//   lab.addTarget('etcd', 2379);                 // a service on lab.hostAddress
//   LocalCluster.start({ placement: (m) => lab.placement(m), ... });
//   await lab.cut('kv-0', ['etcd']);  await lab.heal('kv-0');
//   lab.addTarget('etcd', 2379, { delayable: true }); // before members start
//   await lab.delay('kv-1', 'etcd', 200);
//   const stop = lab.flap('kv-0', 'all', 500); ... await stop();
//   await lab.destroy();                         // also runs on process exit
//
// Clients in the host namespace always reach every member's ports: a cut
// leader's master is still asked to write, so a test sees whether it refuses.
// Needs root (CAP_NET_ADMIN), iproute2 (ip, tc) and iptables. The agent never
// imports this; tests and the chaos command do.
import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import type { MemberPlacement } from '../demo/localcluster.ts';
import { DelayProxy } from './delayproxy.ts';

const run = promisify(execFile);
const FAULT_CHAIN = 'HSFAULT';
const INNER_IF = 'eth0';

export interface NetTarget {
  name: string;
  host: string;
  port: number;
}

interface MemberNet {
  name: string;
  netns: string;
  address: string;
  hostVeth: string;
}

const liveLabs = new Set<NetLab>();
let exitHookInstalled = false;

/** Why network namespaces cannot be used here, or undefined when they can. */
export async function netnsUnavailable(): Promise<string | undefined> {
  if (process.platform !== 'linux') return `network namespaces need Linux (this is ${process.platform})`;
  if (process.getuid?.() !== 0) return 'network namespaces need root (CAP_NET_ADMIN); run as root';
  for (const [bin, pkg] of [['ip', 'iproute2'], ['tc', 'iproute2'], ['iptables', 'iptables']] as const) {
    try {
      await run(bin, ['-V']);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return `${bin} is not installed (Debian: apt-get install -y ${pkg})`;
    }
  }
  const probe = `hsprobe${randomBytes(3).toString('hex')}`;
  try {
    await run('ip', ['netns', 'add', probe]);
    await run('ip', ['netns', 'exec', probe, 'iptables', '-w', '-L', 'OUTPUT', '-n']);
  } catch (err) {
    return `cannot create a network namespace with iptables in it: ${(err as Error).message.trim()}`;
  } finally {
    await run('ip', ['netns', 'del', probe]).catch(() => undefined);
  }
  return undefined;
}

export class NetLab {
  /** Unique per lab; every namespace and link it makes carries it. */
  readonly tag: string;
  readonly bridge: string;
  /** The bridge's address: stores listen here, clients connect from here. */
  readonly hostAddress: string;
  private readonly members = new Map<string, MemberNet>();
  private readonly targets = new Map<string, NetTarget>();
  private readonly flaps = new Set<() => Promise<void>>();
  /** member → target → the proxy its traffic to that target passes through. */
  private readonly proxies = new Map<string, Map<string, DelayProxy>>();
  private destroyed = false;

  private constructor(tag: string, subnet: string) {
    this.tag = tag;
    this.bridge = `hsbr${tag}`;
    this.hostAddress = `${subnet}.1`;
  }

  /** Makes the bridge and one namespace per member (names are the cluster's member names). */
  static async create(memberNames: readonly string[]): Promise<NetLab> {
    if (memberNames.length > 200) throw new Error(`at most 200 members per lab, got ${memberNames.length}`);
    const tag = randomBytes(3).toString('hex');
    const lab = new NetLab(tag, await freeSubnet());
    liveLabs.add(lab);
    installExitHook();
    try {
      await run('ip', ['link', 'add', lab.bridge, 'type', 'bridge']);
      await run('ip', ['addr', 'add', `${lab.hostAddress}/24`, 'dev', lab.bridge]);
      await run('ip', ['link', 'set', lab.bridge, 'up']);
      let i = 0;
      for (const name of memberNames) await lab.addMember(name, i++);
    } catch (err) {
      await lab.destroy();
      throw err;
    }
    return lab;
  }

  private async addMember(name: string, index: number): Promise<void> {
    const subnet = this.hostAddress.slice(0, this.hostAddress.lastIndexOf('.'));
    const m: MemberNet = { name, netns: `hs${this.tag}-${index}`, address: `${subnet}.${10 + index}`, hostVeth: `hv${this.tag}${index}` };
    const peer = `hp${this.tag}${index}`;
    this.members.set(name, m);
    await run('ip', ['netns', 'add', m.netns]);
    await run('ip', ['link', 'add', m.hostVeth, 'type', 'veth', 'peer', 'name', peer]);
    await run('ip', ['link', 'set', peer, 'netns', m.netns]);
    await run('ip', ['link', 'set', m.hostVeth, 'master', this.bridge]);
    await run('ip', ['link', 'set', m.hostVeth, 'up']);
    const inNs = (...args: string[]): Promise<unknown> => run('ip', ['netns', 'exec', m.netns, ...args]);
    await inNs('ip', 'link', 'set', peer, 'name', INNER_IF);
    await inNs('ip', 'addr', 'add', `${m.address}/24`, 'dev', INNER_IF);
    await inNs('ip', 'link', 'set', INNER_IF, 'up');
    await inNs('ip', 'link', 'set', 'lo', 'up');
    // One chain holds every cut of this member: heal is one flush.
    await inNs('iptables', '-w', '-N', FAULT_CHAIN);
    await inNs('iptables', '-w', '-A', 'INPUT', '-j', FAULT_CHAIN);
    await inNs('iptables', '-w', '-A', 'OUTPUT', '-j', FAULT_CHAIN);
  }

  private member(name: string): MemberNet {
    const m = this.members.get(name);
    if (!m) throw new Error(`no member ${JSON.stringify(name)} in this lab (members: ${[...this.members.keys()].join(', ')})`);
    return m;
  }

  /** The namespace a member runs in. */
  netns(member: string): string {
    return this.member(member).netns;
  }

  /** The member's own address on the bridge. */
  address(member: string): string {
    return this.member(member).address;
  }

  /** For LocalCluster's `placement`: listen on the member's address, run inside its namespace. */
  placement(member: string): MemberPlacement {
    const netns = this.netns(member);
    return { host: this.address(member), wrap: (command, args) => ({ command: 'ip', args: ['netns', 'exec', netns, command, ...args] }) };
  }

  /**
   * Names a TCP service on the host address (a store), so faults can single
   * it out. `delayable`: every member reaches it through its own DelayProxy
   * (add before the members connect).
   */
  async addTarget(name: string, port: number, opts: { delayable?: boolean } = {}): Promise<NetTarget> {
    const t = { name, host: this.hostAddress, port };
    this.targets.set(name, t);
    if (opts.delayable) {
      for (const m of this.members.values()) {
        const proxy = await DelayProxy.start({ listenHost: this.hostAddress, target: { host: t.host, port: t.port } });
        const own = this.proxies.get(m.name) ?? new Map<string, DelayProxy>();
        own.set(name, proxy);
        this.proxies.set(m.name, own);
        await this.inNs(m.name, 'iptables', '-w', '-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', '-d', t.host, '--dport', String(t.port),
          '-j', 'DNAT', '--to-destination', `${t.host}:${proxy.port}`);
      }
    }
    return t;
  }

  private resolve(targets: readonly string[] | 'all'): NetTarget[] {
    if (targets === 'all') return [...this.targets.values()];
    return targets.map((n) => {
      const t = this.targets.get(n);
      if (!t) throw new Error(`no target ${JSON.stringify(n)} (targets: ${[...this.targets.keys()].join(', ')})`);
      return t;
    });
  }

  private async inNs(member: string, ...args: string[]): Promise<void> {
    await run('ip', ['netns', 'exec', this.netns(member), ...args]);
  }

  /**
   * Drops every packet between the member and the targets, both ways
   * (silently, as a partition does: connections hang, nothing is refused).
   */
  async cut(member: string, targets: readonly string[] | 'all'): Promise<void> {
    // Built first, applied in one iptables-restore: the cut starts at one instant.
    // A delayable target's packets carry the proxy's port after DNAT: cut both.
    const ports = this.resolve(targets).flatMap((t) => [t.port, ...(this.proxies.get(member)?.has(t.name) ? [this.proxies.get(member)!.get(t.name)!.port] : [])]);
    const rules = ports.flatMap((port) => [
      `-A ${FAULT_CHAIN} -p tcp -d ${this.hostAddress} --dport ${port} -j DROP`,
      `-A ${FAULT_CHAIN} -p tcp -s ${this.hostAddress} --sport ${port} -j DROP`,
    ]);
    await this.restore(member, rules, false);
  }

  private async restore(member: string, rules: string[], flush: boolean): Promise<void> {
    const input = ['*filter', ...(flush ? [`-F ${FAULT_CHAIN}`] : []), ...rules, 'COMMIT', ''].join('\n');
    await new Promise<void>((resolve, reject) => {
      const child = execFile('ip', ['netns', 'exec', this.netns(member), 'iptables-restore', '-w', '--noflush'], (err) => (err ? reject(err) : resolve()));
      child.stdin?.end(input);
    });
  }

  /** Removes every cut and delay of the member (or of all members). */
  async heal(member?: string): Promise<void> {
    const names = member === undefined ? [...this.members.keys()] : [member];
    for (const name of names) {
      await this.restore(name, [], true);
      for (const proxy of this.proxies.get(name)?.values() ?? []) proxy.delayMs = 0;
    }
  }

  /**
   * Delays the member's traffic with a delayable target by `ms` each way
   * (round trips take 2 x ms longer); other members and targets untouched.
   */
  delay(member: string, target: string, ms: number): void {
    if (!Number.isFinite(ms) || ms < 0 || ms > 60_000) throw new Error(`delay: ms must be 0-60000, got ${ms}`);
    this.resolve([target]);
    const proxy = this.proxies.get(this.member(member).name)?.get(target);
    if (!proxy) throw new Error(`delay: target ${target} was not added with { delayable: true }`);
    proxy.delayMs = ms;
  }

  /**
   * Where the member's DelayProxy for a delayable target listens (on the host
   * address), so a probe from the host can cross the same delayed link.
   */
  proxyAddress(member: string, target: string): { host: string; port: number } {
    const proxy = this.proxies.get(this.member(member).name)?.get(target);
    if (!proxy) throw new Error(`proxyAddress: target ${target} was not added with { delayable: true }`);
    return { host: this.hostAddress, port: proxy.port };
  }

  /**
   * Cuts and heals the member's link to the targets every `periodMs`
   * (cut for one period, up for the next) until the returned stop() is
   * awaited; stop() leaves the link healed.
   */
  flap(member: string, targets: readonly string[] | 'all', periodMs: number): () => Promise<void> {
    if (!(periodMs >= 50)) throw new Error(`flap: periodMs must be at least 50, got ${periodMs}`);
    let stopped = false;
    let timer: NodeJS.Timeout | undefined;
    let wake: (() => void) | undefined;
    const loop = (async () => {
      let down = false;
      while (!stopped) {
        down = !down;
        if (down) await this.cut(member, targets);
        else await this.heal(member);
        await new Promise<void>((r) => {
          wake = r;
          timer = setTimeout(r, periodMs);
        });
      }
    })();
    const stop = async (): Promise<void> => {
      stopped = true;
      if (timer) clearTimeout(timer);
      wake?.();
      this.flaps.delete(stop);
      await loop.catch(() => undefined);
      await this.heal(member);
    };
    this.flaps.add(stop);
    return stop;
  }

  /**
   * Removes every namespace, veth and the bridge (iptables rules and qdiscs
   * live inside the namespaces and go with them). Idempotent; call after the
   * processes in the namespaces are stopped.
   */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    await Promise.allSettled([...this.flaps].map((stop) => stop()));
    await Promise.allSettled([...this.proxies.values()].flatMap((own) => [...own.values()].map((p) => p.close())));
    for (const m of this.members.values()) {
      await run('ip', ['netns', 'del', m.netns]).catch(() => undefined);
      await run('ip', ['link', 'del', m.hostVeth]).catch(() => undefined); // gone with its peer, normally
    }
    await run('ip', ['link', 'del', this.bridge]).catch(() => undefined);
    liveLabs.delete(this);
  }

  /** Synchronous teardown for process exit. */
  destroySync(): void {
    this.destroyed = true;
    for (const m of this.members.values()) {
      for (const args of [['netns', 'del', m.netns], ['link', 'del', m.hostVeth]]) {
        try {
          execFileSync('ip', args, { stdio: 'ignore' });
        } catch {
          // already gone
        }
      }
    }
    try {
      execFileSync('ip', ['link', 'del', this.bridge], { stdio: 'ignore' });
    } catch {
      // already gone
    }
    liveLabs.delete(this);
  }

  /** What of this lab still exists on the machine (namespaces, links): empty after destroy(). */
  async leftovers(): Promise<string[]> {
    const [netns, links] = await Promise.all([run('ip', ['netns', 'list']), run('ip', ['-o', 'link', 'show'])]);
    const found: string[] = [];
    for (const line of netns.stdout.split('\n')) if (line.includes(`hs${this.tag}-`)) found.push(`netns ${line.split(' ')[0]}`);
    for (const line of links.stdout.split('\n')) {
      const name = line.split(':')[1]?.trim().split('@')[0];
      if (name && name.includes(this.tag)) found.push(`link ${name}`);
    }
    return found;
  }
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // A failed or interrupted test still leaves nothing behind.
  process.on('exit', () => {
    for (const lab of liveLabs) lab.destroySync();
  });
}

/** A 10.213.X.0/24 not used by any address on this machine. */
async function freeSubnet(): Promise<string> {
  const { stdout } = await run('ip', ['-o', '-4', 'addr', 'show']);
  for (let i = 0; i < 64; i++) {
    const subnet = `10.213.${Math.floor(Math.random() * 254) + 1}`;
    if (!stdout.includes(` ${subnet}.`)) return subnet;
  }
  throw new Error('no free 10.213.X.0/24 subnet for the test bridge');
}

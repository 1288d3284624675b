// Undoes what the real node made (made.ts): its processes and containers,
// mounts, network namespaces, iptables chains, bridge, cgroups, sysctls and
// pod logs. Every step runs even when an earlier one fails; the errors are
// returned together. Safe to run twice and on a half-made node.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { isProcessAlive } from '../lib/childproc.ts';
import { sleep } from '../lib/time.ts';
import { Made, type MadeRecord } from './made.ts';

const run = promisify(execFile);
export const NETNS_DIR = '/run/netns';
export const POD_LOGS_DIR = '/var/log/pods';
export const CGROUP_FS = '/sys/fs/cgroup';
export const IPTABLES = ['iptables', 'ip6tables'] as const;
/** Where the node's programs write regardless of their configuration; see MadeRecord.entriesBefore. */
export const MACHINE_DIRS = ['/var/lib/kubelet', '/var/log/containers', '/var/lib/cni/results', '/run/containerd/runc/k8s.io', '/run/containerd/s', '/run/containerd/fifo'] as const;

/** The entries of MACHINE_DIRS now (null: no such directory). */
export function machineDirEntries(): Record<string, string[] | null> {
  const out: Record<string, string[] | null> = {};
  for (const d of MACHINE_DIRS) out[d] = fs.existsSync(d) ? fs.readdirSync(d) : null;
  return out;
}
export const IPTABLES_TABLES = ['filter', 'nat', 'mangle', 'raw'] as const;

/** Reads the record in `file` and undoes it; removes the file when everything was undone. */
export async function cleanupRealNode(file: string, log: (line: string) => void = () => undefined): Promise<string[]> {
  const record = Made.read(file);
  if (!record) return [];
  const errors = await undo(record, log);
  if (errors.length === 0) fs.rmSync(file, { force: true });
  return errors;
}

async function undo(r: MadeRecord, log: (line: string) => void): Promise<string[]> {
  const errors: string[] = [];
  const step = async (what: string, fn: () => Promise<void>): Promise<void> => {
    try {
      await fn();
    } catch (err) {
      errors.push(`${what}: ${(err as Error).message}`);
    }
  };
  // The kubelet first, so it does not restart the containers removed next.
  for (const name of ['kubelet', 'kube-proxy', 'coredns']) {
    const p = r.processes[name];
    if (p) await step(`stopping ${name}`, () => stopPid(p.pid, p.command, 10_000));
  }
  if (r.containerdAddress) {
    const address = r.containerdAddress;
    log('removing the node\'s containers');
    await step('removing containers', () => removeContainers(address));
  }
  const containerd = r.processes.containerd;
  if (containerd) await step('stopping containerd', () => stopPid(containerd.pid, containerd.command, 15_000));
  if (r.containerdAddress) {
    const address = r.containerdAddress;
    await step('stopping containerd shims', () => killShims(address));
  }
  if (r.cgroupRoot) {
    const root = r.cgroupRoot;
    await step('killing processes left in the node\'s cgroups', () => killCgroupProcesses(root));
  }
  log('unmounting');
  await step('unmounting', () => unmountUnder(r.mountRoots));
  if (r.netnsBefore) {
    const before = new Set(r.netnsBefore);
    await step('removing network namespaces', () => removeNetns(before));
  }
  if (r.cgroupRoot) {
    const root = r.cgroupRoot;
    await step('removing cgroups', () => removeCgroups(root));
  }
  if (r.chainsBefore) {
    const before = r.chainsBefore;
    log('removing iptables rules');
    await step('removing iptables chains', () => removeNewChains(before));
  }
  if (r.bridge) {
    const bridge = r.bridge;
    await step(`deleting the bridge ${bridge}`, async () => {
      if (fs.existsSync(`/sys/class/net/${bridge}`)) await run('ip', ['link', 'delete', bridge]);
    });
  }
  for (const [file, value] of Object.entries(r.sysctls)) {
    await step(`restoring ${file}`, async () => {
      if (fs.existsSync(file)) fs.writeFileSync(file, value);
    });
  }
  if (r.podLogsBefore) {
    const before = new Set(r.podLogsBefore);
    await step('removing pod logs', async () => {
      if (!fs.existsSync(POD_LOGS_DIR)) return;
      for (const d of fs.readdirSync(POD_LOGS_DIR)) if (!before.has(d)) fs.rmSync(path.join(POD_LOGS_DIR, d), { recursive: true, force: true });
    });
  }
  if (r.entriesBefore) {
    const before = r.entriesBefore;
    await step('removing the files the node left in machine-wide directories', async () => {
      for (const [dir, entries] of Object.entries(before)) {
        if (!fs.existsSync(dir)) continue;
        if (entries === null) {
          if (mountsUnder([dir]).length === 0) fs.rmSync(dir, { recursive: true, force: true });
          continue;
        }
        const keep = new Set(entries);
        for (const e of fs.readdirSync(dir)) if (!keep.has(e)) fs.rmSync(path.join(dir, e), { recursive: true, force: true });
      }
    });
  }
  if (r.lock && errors.length === 0) fs.rmSync(r.lock, { force: true });
  return errors;
}

/** SIGTERM, then SIGKILL after `graceMs`; only when `pid` still runs `command` (pids are reused). */
export async function stopPid(pid: number, command: string, graceMs: number): Promise<void> {
  const runs = (): boolean => isProcessAlive(pid) && cmdline(pid)[0] === command;
  if (!runs()) return;
  process.kill(pid, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  while (runs() && Date.now() < deadline) await sleep(100);
  if (runs()) process.kill(pid, 'SIGKILL');
  const killDeadline = Date.now() + 5000;
  while (runs() && Date.now() < killDeadline) await sleep(100);
  if (runs()) throw new Error(`pid ${pid} (${command}) did not exit after SIGKILL`);
}

function cmdline(pid: number): string[] {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  } catch {
    return [];
  }
}

async function ctr(address: string, args: string[]): Promise<string> {
  return (await run('ctr', ['--address', address, '--namespace', 'k8s.io', ...args], { timeout: 60_000 })).stdout;
}

/** Kills and deletes every task and container of containerd's k8s.io namespace, when containerd still answers. */
async function removeContainers(address: string): Promise<void> {
  if (!fs.existsSync(address)) return;
  // In parallel: each ctr call takes a second or more on a loaded machine.
  const tasks = (await ctr(address, ['tasks', 'ls', '-q']).catch(() => '')).split('\n').filter(Boolean);
  await Promise.all(tasks.map((t) => ctr(address, ['tasks', 'kill', '--signal', 'SIGKILL', t]).catch(() => '')));
  await Promise.all(
    tasks.map(async (t) => {
      for (let i = 0; i < 50; i++) {
        if (await ctr(address, ['tasks', 'delete', '--force', t]).then(() => true, () => false)) return;
        await sleep(100);
      }
    }),
  );
  const containers = (await ctr(address, ['containers', 'ls', '-q']).catch(() => '')).split('\n').filter(Boolean);
  await Promise.all(containers.map((c) => ctr(address, ['containers', 'delete', c]).catch(() => '')));
}

/** containerd-shim processes serving our containerd (they outlive a killed containerd). */
async function killShims(address: string): Promise<void> {
  for (const pid of pidsWhere((args) => (args[0] ?? '').includes('containerd-shim') && args.includes(address))) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone already
    }
  }
  await sleep(200);
}

function pidsWhere(test: (args: string[]) => boolean): number[] {
  return fs
    .readdirSync('/proc')
    .filter((d) => /^[0-9]+$/.test(d))
    .map(Number)
    .filter((pid) => pid !== process.pid && test(cmdline(pid)));
}

/** The cgroup directories of `root` in every mounted hierarchy (v1 controllers and the unified one). */
export function cgroupDirs(root: string): string[] {
  if (!fs.existsSync(CGROUP_FS)) return [];
  const dirs: string[] = [];
  for (const h of fs.readdirSync(CGROUP_FS)) {
    const d = path.join(CGROUP_FS, h, root);
    if (fs.existsSync(d)) dirs.push(d);
  }
  return dirs;
}

function walkCgroups(dir: string): string[] {
  const out: string[] = [dir];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) out.push(...walkCgroups(path.join(dir, e.name)));
  return out;
}

async function killCgroupProcesses(root: string): Promise<void> {
  for (let round = 0; round < 50; round++) {
    const pids = new Set<number>();
    for (const top of cgroupDirs(root)) {
      for (const d of walkCgroups(top)) {
        const procs = path.join(d, 'cgroup.procs');
        if (!fs.existsSync(procs)) continue;
        for (const l of fs.readFileSync(procs, 'utf8').split('\n')) if (l.trim()) pids.add(Number(l));
      }
    }
    pids.delete(process.pid);
    if (pids.size === 0) return;
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
    await sleep(100);
  }
  throw new Error(`processes are still running in the cgroup ${root}`);
}

async function removeCgroups(root: string): Promise<void> {
  for (let round = 0; round < 30; round++) {
    let left = 0;
    for (const top of cgroupDirs(root)) {
      for (const d of walkCgroups(top).reverse()) {
        try {
          fs.rmdirSync(d);
        } catch {
          left++;
        }
      }
    }
    if (left === 0) return;
    await sleep(200);
  }
  throw new Error(`cgroups left: ${cgroupDirs(root).join(', ')}`);
}

/** Mount points (from /proc/self/mountinfo) under any of `roots`, deepest first. */
export function mountsUnder(roots: readonly string[]): string[] {
  if (roots.length === 0) return [];
  const points = fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((p): p is string => !!p)
    .map((p) => p.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))));
  const under = points.filter((p) => roots.some((r) => p === r || p.startsWith(`${r}/`)));
  return [...new Set(under)].sort((a, b) => b.length - a.length);
}

async function unmountUnder(roots: readonly string[]): Promise<void> {
  for (let round = 0; round < 5; round++) {
    const points = mountsUnder(roots);
    if (points.length === 0) return;
    for (const p of points) {
      await run('umount', [p]).catch(() => run('umount', ['-l', p]).catch(() => undefined));
    }
  }
  const left = mountsUnder(roots);
  if (left.length > 0) throw new Error(`still mounted: ${left.join(', ')}`);
}

async function removeNetns(before: Set<string>): Promise<void> {
  if (!fs.existsSync(NETNS_DIR)) return;
  for (const ns of fs.readdirSync(NETNS_DIR)) {
    if (before.has(ns) || !ns.startsWith('cni-')) continue;
    const p = path.join(NETNS_DIR, ns);
    await run('umount', [p]).catch(() => undefined);
    fs.rmSync(p, { force: true });
  }
}

/** Chain names per table, from `<cmd>-save`. */
export async function listChains(cmd: string): Promise<Record<string, string[]>> {
  const out: Record<string, string[]> = {};
  for (const table of IPTABLES_TABLES) {
    const save = await run(`${cmd}-save`, ['-t', table]).then((r) => r.stdout, () => '');
    out[table] = save
      .split('\n')
      .filter((l) => l.startsWith(':'))
      .map((l) => l.slice(1).split(' ')[0]!);
  }
  return out;
}

/** Deletes the chains that did not exist before, after the rules that jump to them. */
async function removeNewChains(before: Record<string, Record<string, string[]>>): Promise<void> {
  for (const cmd of IPTABLES) {
    const old = before[cmd];
    if (!old) continue;
    for (const table of IPTABLES_TABLES) {
      const existed = new Set(old[table] ?? []);
      const save = await run(`${cmd}-save`, ['-t', table]).then((r) => r.stdout, () => '');
      const chains = save.split('\n').filter((l) => l.startsWith(':')).map((l) => l.slice(1).split(' ')[0]!);
      const added = chains.filter((c) => !existed.has(c));
      if (added.length === 0) continue;
      const addedSet = new Set(added);
      // Rules in chains that stay and jump to a chain that goes.
      for (const line of save.split('\n')) {
        const m = /^-A (\S+) (.*)$/.exec(line);
        if (!m || addedSet.has(m[1]!)) continue;
        const target = / -[jg] (\S+)/.exec(` ${m[2]}`)?.[1];
        if (target && addedSet.has(target)) {
          await run(cmd, ['-w', '5', '-t', table, '-D', m[1]!, ...splitRule(m[2]!)]);
        }
      }
      for (const c of added) await run(cmd, ['-w', '5', '-t', table, '-F', c]);
      for (const c of added) await run(cmd, ['-w', '5', '-t', table, '-X', c]);
    }
  }
}

/** Splits an iptables-save rule into arguments, honouring double quotes. */
export function splitRule(rule: string): string[] {
  const args: string[] = [];
  for (const m of rule.matchAll(/"((?:[^"\\]|\\.)*)"|(\S+)/g)) args.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : m[2]!);
  return args;
}

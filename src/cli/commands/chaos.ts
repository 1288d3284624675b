// `hotstandby chaos`: seeded random faults under load, with lost-write and
// linearizability checks (see src/chaos/run.ts, docs/chaos.md).
import type { Command } from '../command.ts';
import { UsageError, intFlag, parseFlags } from '../command.ts';

const help = `Usage: hotstandby chaos --minutes M [--seed S] [--members 3] [--json]
                        [--lease-ttl 2] [--interval 2] [--rate 100] [--read-rate 100]
                        [--faults kind,...] [--replication async|sync]
                        [--out DIR] [--keep-history]

Starts etcd and redis-server (found on PATH) as child processes and N
kvmaster+agent pairs, runs a steady write + read load whose every operation
is recorded, and injects seeded random faults for M minutes:
  kill-leader          kill -9 the leader's agent and master, restart them
  kill-leader-master   kill -9 the leader's master only, start a new one
  kill-standby         kill -9 a standby, restart it
  pause-leader         SIGSTOP the leader's agent for the lease TTL + 1.5 s, SIGCONT
  kill-etcd-member     kill -9 one member of a 3-member etcd (quorum kept), restart it
  kill-etcd-quorum     kill -9 two of the 3 etcd members for the TTL + 3.5 s: writes
                       must stop within the TTL + 2 etcd election timeouts (2 s);
                       restart both, writes resume
  restart-stream-server  kill -9 the stream server under load, start an empty one
                       1 s later (only with --replication sync)
(Selecting kill-etcd-member or kill-etcd-quorum makes the agents use a 3-member
etcd for the whole run.)
Network kinds (root only; every member then runs in a network namespace of
its own on a private bridge, the stores on the bridge's address, and links are
cut with iptables inside the namespaces; all of it is removed at the end,
Ctrl-C included):
  partition-leader         cut the leader off from etcd and the stream server
  partition-leader-stream  cut the leader off from the stream server only
  partition-standby        cut a standby off for the lease TTL + 1.5 s
  flap-leader              the leader's links down/up every 500 ms for 4 s
  delay-etcd               200 ms more each way on the links to etcd, for the
                           leader or every member, for the lease TTL + 1.5 s
At the end every acknowledged write is read back and the history is checked
for linearizability with Porcupine (tools/linearizability; built on first use,
Go needed). The live table shows faults by kind, the failover time per kind
(from the fault to the first write acknowledged by a new leader; for
kill-etcd-quorum from the repair), writes
acknowledged and lost, and the linearizability result. Ctrl-C stops early,
still checks, and prints the summary; no child process is left behind.

Options:
  --minutes M        how long to inject faults, 0.1-1440 (required)
  --seed S           seed of the fault sequence, 0-4294967295 (default: random, printed)
  --members N        member pairs, 2-7 (default 3)
  --lease-ttl S      leader lease TTL in seconds, 2-60 (default 2)
  --interval S       mean seconds of load between a recovery and the next fault, 0-3600 (default 2)
  --rate N           writes per second (default 100)
  --read-rate N      reads per second (default 100)
  --faults LIST      comma-separated kinds (default: all of the above as root;
                     otherwise the process kinds, and the summary's skippedKinds
                     says why the network kinds were left out; restart-stream-server
                     only with --replication sync, skipped otherwise)
  --replication M    async or sync, the agents' --replication (default async;
                     docs/replication.md)
  --out DIR          where the history goes (default: a new directory in $TMPDIR);
                     kept when a check failed, with Porcupine's visualization
                     (history.html) when the history is not linearizable
  --keep-history     keep the history, and the agents', masters' and stores' logs
                     (DIR/logs), even when every check passed; the logs are also
                     kept when the run stopped, lost a write or recorded a violation
  --json             no live table: progress on stderr, one JSON summary on stdout
                     {faults, byKind, ackedWrites, lostWrites, linearizable,
                      failoverMs {p50,p99,max}, violations, slowestFaults,
                      skippedKinds, logs, ...}

Exit code: 0 when no acknowledged write was lost, the history is
linearizable and no fault showed a guarantee broken (violations); 1
otherwise; 2 for bad flags.

Examples:
  hotstandby chaos --minutes 5
  hotstandby chaos --minutes 1 --seed 42 --json
  hotstandby chaos --minutes 5 --replication sync --faults restart-stream-server,kill-leader`;

function replicationFlag(raw: string | undefined): 'async' | 'sync' {
  if (raw === undefined || raw === 'async' || raw === 'sync') return raw ?? 'async';
  throw new UsageError(`--replication must be async or sync, got ${JSON.stringify(raw)}`);
}

function minutesFlag(value: string | undefined): number {
  if (value === undefined) throw new UsageError('--minutes is required: how long to inject faults, e.g. --minutes 5');
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0.1 || n > 1440) throw new UsageError(`--minutes must be a number from 0.1 to 1440, got ${JSON.stringify(value)}`);
  return n;
}

/** Why a sync-only kind cannot run in async mode (the reason in skippedKinds and in the refusal). */
export const SYNC_ONLY_REASON =
  'needs --replication sync: in async mode the log lives only in the stream server, and the cluster does not claim to survive an empty restart';

/**
 * The kinds to run: those named by --faults, or the default set (every
 * byDefault kind, plus the network kinds when network namespaces are usable,
 * minus the sync-only kinds in async mode). `netnsUnavailable`: why network
 * namespaces are not usable (undefined when they are). A network kind named
 * by --faults is then refused, a default one skipped with the reason; likewise
 * a sync-only kind in async mode.
 */
export function selectKinds<K extends { name: string; byDefault: boolean; network?: boolean; syncOnly?: boolean }>(
  value: string | undefined,
  all: readonly K[],
  netnsUnavailable: string | undefined,
  replication: 'async' | 'sync' = 'async',
): { kinds: K[]; skipped: Record<string, string> } {
  if (value === undefined) {
    const skipped: Record<string, string> = {};
    const kinds = all.filter((k) => {
      if (k.network && netnsUnavailable !== undefined) skipped[k.name] = netnsUnavailable;
      else if (k.syncOnly && replication !== 'sync') skipped[k.name] = SYNC_ONLY_REASON;
      else return k.byDefault || k.network;
      return false;
    });
    return { kinds, skipped };
  }
  const names = [...new Set(value.split(',').map((s) => s.trim()).filter(Boolean))];
  const unknown = names.filter((n) => !all.some((k) => k.name === n));
  if (names.length === 0 || unknown.length > 0) {
    throw new UsageError(`--faults: unknown kind ${JSON.stringify(unknown[0] ?? value)}; choose from ${all.map((k) => k.name).join(', ')}`);
  }
  const kinds = names.map((n) => all.find((k) => k.name === n)!);
  const network = kinds.filter((k) => k.network);
  if (network.length > 0 && netnsUnavailable !== undefined) {
    throw new UsageError(
      `--faults: ${network.map((k) => k.name).join(', ')} ${network.length === 1 ? 'is a network kind' : 'are network kinds'} and cannot run here (${netnsUnavailable}); ` +
        `fix that, or leave ${network.length === 1 ? 'it' : 'them'} out of --faults (process kinds: ${all.filter((k) => !k.network).map((k) => k.name).join(', ')})`,
    );
  }
  const syncOnly = kinds.filter((k) => k.syncOnly);
  if (syncOnly.length > 0 && replication !== 'sync') {
    throw new UsageError(
      `--faults: ${syncOnly.map((k) => k.name).join(', ')} ${syncOnly.length === 1 ? 'runs' : 'run'} only with --replication sync ` +
        `(in async mode the log lives only in the stream server, so an empty restart loses entries the standbys had not read, and the cluster does not claim to survive it); ` +
        `add --replication sync, or leave ${syncOnly.length === 1 ? 'it' : 'them'} out of --faults`,
    );
  }
  return { kinds, skipped: {} };
}

export const chaosCommand: Command = {
  name: 'chaos',
  help,
  async run(argv) {
    const values: Record<string, string | boolean | undefined> = parseFlags(argv, {
      minutes: { type: 'string' },
      seed: { type: 'string' },
      members: { type: 'string' },
      'lease-ttl': { type: 'string' },
      interval: { type: 'string' },
      rate: { type: 'string' },
      'read-rate': { type: 'string' },
      faults: { type: 'string' },
      replication: { type: 'string' },
      out: { type: 'string' },
      'keep-history': { type: 'boolean' },
      json: { type: 'boolean' },
    });
    const str = (k: string): string | undefined => values[k] as string | undefined;
    const json = values.json === true;
    const minutes = minutesFlag(str('minutes'));
    const seed = intFlag(str('seed'), 'seed', 0, 0xffffffff, Math.floor(Math.random() * 0xffffffff));
    const members = intFlag(str('members'), 'members', 2, 7, 3);
    const leaseTtlSeconds = intFlag(str('lease-ttl'), 'lease-ttl', 2, 60, 2);
    const intervalSeconds = intFlag(str('interval'), 'interval', 0, 3600, 2);
    const rate = intFlag(str('rate'), 'rate', 1, 20_000, 100);
    const readRate = intFlag(str('read-rate'), 'read-rate', 0, 20_000, 100);
    const replication = replicationFlag(str('replication'));
    const { FAULT_KINDS } = await import('../../chaos/faults.ts');
    const out = str('out');
    if (out !== undefined && out.trim() === '') throw new UsageError('--out must name a directory');
    const { netnsUnavailable } = await import('../../chaos/netns.ts');
    const faults = str('faults');
    // Probed only when a network kind could be selected (it makes a throw-away namespace as root).
    const mayNeedNetns = faults === undefined || FAULT_KINDS.some((k) => k.network && faults.split(',').map((x) => x.trim()).includes(k.name));
    const { kinds, skipped } = selectKinds(faults, FAULT_KINDS, mayNeedNetns ? await netnsUnavailable() : undefined, replication);

    const { runChaos, defaultOutDir } = await import('../../chaos/run.ts');
    const { MissingBinaryError } = await import('../../lib/localstores.ts');
    const stop = new AbortController();
    const onSignal = (): void => stop.abort();
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    const live = !json && process.stdout.isTTY;
    process.stderr.write(`hotstandby chaos: seed ${seed} (repeat with --seed ${seed})\n`);
    try {
      const summary = await runChaos({
        minutes,
        seed,
        members,
        leaseTtlSeconds,
        replication,
        intervalSeconds,
        rate,
        readRate,
        kinds,
        skippedKinds: skipped,
        outDir: out ?? defaultOutDir(seed),
        keepHistory: values['keep-history'] === true,
        ...(live ? { screen: process.stdout } : {}),
        progress: (line) => process.stderr.write(`${line}\n`),
        signal: stop.signal,
      });
      if (json) process.stdout.write(`${JSON.stringify(summary)}\n`);
      else {
        process.stdout.write(
          `\nsummary: ${summary.faults} faults, failover p50 ${summary.failoverMs?.p50 ?? '-'} ms, p99 ${summary.failoverMs?.p99 ?? '-'} ms, ` +
            `max ${summary.failoverMs?.max ?? '-'} ms; ${summary.ackedWrites} writes acknowledged, ${summary.lostWrites} lost; ` +
            `linearizable: ${String(summary.linearizable)}${summary.violations.length > 0 ? `; VIOLATIONS: ${summary.violations.join('; ')}` : ''}${summary.history ? `; history kept in ${summary.history}` : ''}` +
            `${summary.visualization ? `, visualization ${summary.visualization}` : ''}${summary.error ? `\nerror: ${summary.error}` : ''}\n`,
        );
      }
      return summary.lostWrites === 0 && summary.linearizable === true && summary.error === null && summary.violations.length === 0 ? 0 : 1;
    } catch (err) {
      if (err instanceof MissingBinaryError) throw new UsageError(err.message);
      throw err;
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  },
};

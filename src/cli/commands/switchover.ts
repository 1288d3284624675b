// `hotstandby switchover`: a planned change of leader. It asks (by writing the
// `switchover` key) and watches; the leader's agent does the work: it stops
// taking writes, waits for the target to apply everything, and resigns so the
// target (which campaigns first) wins. No acknowledged write is lost, and
// writes pause only for the drain.
import { parseArgs } from 'node:util';
import type { Etcd3 } from 'etcd3';
import type { Command } from '../command.ts';
import { UsageError } from '../command.ts';
import { readClusterView, type ClusterView } from '../../lib/clusterview.ts';
import { etcdKeys, type EtcdKeys } from '../../lib/keys.ts';
import type { LeaderRecord } from '../../agent/types.ts';
import { requestSwitchover, withdrawSwitchover } from '../../lib/switchover.ts';
import { sleep, withTimeout } from '../../lib/time.ts';
import { CREDENTIAL_FLAGS, etcdUnreachable, formatAge, openStores, parseStoreFlags, renderClusterView, type CommandIo, type CredentialFlagValues } from './status.ts';

const DEFAULT_TIMEOUT_MS = 30_000;
const POLL_MS = 200;
const CALL_TIMEOUT_MS = 3000;

const help = `Usage: hotstandby switchover --cluster NS/NAME --etcd URL[,URL...] --to MEMBER [--timeout 30s] [--force]
       hotstandby switchover NAME --to POD|any [-n NS] [--kubeconfig FILE] [--context CTX] [--timeout 30s]
       kubectl hotstandby switchover NAME --to POD|any [-n NS]

Moves leadership to MEMBER, a live standby, without losing acknowledged
writes: the leader's agent stops taking writes, waits until MEMBER has applied
the whole log, and resigns; MEMBER campaigns first and takes over. Writes pause
for about the time the target needs to catch up.

Options:
  --cluster NS/NAME   the HotStandbyCluster (namespace/name)
  --etcd URLS         etcd endpoints, comma-separated http://host:port
  --etcd-ca-file, --etcd-cert-file, --etcd-key-file PATH
                      etcd over TLS (https:// endpoints): its CA, a client certificate and key
  --to MEMBER         the standby that should lead (see \`hotstandby status\`)
  --timeout DURATION  how long to wait for MEMBER to lead: 500ms, 30s, 2m (default 30s, 1s-1h)
  --force             replace a pending switchover request instead of refusing

Prints progress and how long the switchover took. When MEMBER already leads,
there is nothing to do (exit 0). On timeout the request is withdrawn, the
cluster's state is printed, and the exit status is 1; bad flags or a target
that is not a standby exit 2 and change nothing.

With a cluster NAME instead of --cluster/--etcd, it asks the operator: it sets
the HotStandbyCluster's hotstandby.dev/switchover-to annotation (a pod, or any
for the most caught-up healthy standby) and waits for status.switchover to say
how it ended. The stores need not be reachable from here.

Example:
  hotstandby switchover --cluster default/mooncake --etcd http://etcd:2379 --to mooncake-1`;

/** Parses 500ms / 30s / 2m / 1h / a plain number of seconds into milliseconds (1 s to 1 h). */
export function parseDuration(value: string, flag: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(value.trim());
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as const;
  const ms = m ? Math.round(Number(m[1]) * unit[(m[2] ?? 's') as keyof typeof unit]) : Number.NaN;
  if (!Number.isFinite(ms) || ms < 1000 || ms > 3_600_000) {
    throw new UsageError(`${flag} must be a duration from 1s to 1h such as 30s, 1500ms or 2m, got ${JSON.stringify(value)}`);
  }
  return ms;
}

function describeMembers(view: ClusterView): string {
  if (view.members.length === 0) return 'no members are registered';
  return 'members: ' + view.members.map((m) => `${m.member} (${m.isLeader ? 'leader' : m.role})`).join(', ');
}

export async function runSwitchover(argv: string[], io: CommandIo): Promise<number> {
  let values: { cluster?: string; etcd?: string; to?: string; timeout?: string; force?: boolean; namespace?: string; kubeconfig?: string; context?: string } & CredentialFlagValues;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: argv,
      options: {
        cluster: { type: 'string' },
        etcd: { type: 'string' },
        'etcd-ca-file': CREDENTIAL_FLAGS['etcd-ca-file'],
        'etcd-cert-file': CREDENTIAL_FLAGS['etcd-cert-file'],
        'etcd-key-file': CREDENTIAL_FLAGS['etcd-key-file'],
        to: { type: 'string' },
        timeout: { type: 'string' },
        force: { type: 'boolean' },
        namespace: { type: 'string', short: 'n' },
        kubeconfig: { type: 'string' },
        context: { type: 'string' },
      },
      allowPositionals: true,
      strict: true,
    }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const { to: _to, timeout: _timeout, force: _force, ...storeValues } = values;
  if (positionals.length > 1) throw new UsageError(`give one cluster name, got ${positionals.join(' ')}`);
  if (positionals.length === 1) {
    if (values.cluster || values.etcd || values.force) throw new UsageError('give either a cluster NAME (asks the operator) or --cluster/--etcd (asks the stores directly), not both; --force goes with --cluster');
    const target = values.to?.trim();
    if (!target) throw new UsageError('--to is required: a pod of the cluster, or any, e.g. --to mooncake-1');
    const timeoutMs = values.timeout === undefined ? DEFAULT_TIMEOUT_MS : parseDuration(values.timeout, '--timeout');
    const { runKubeSwitchover } = await import('../kube-switchover.ts');
    return runKubeSwitchover({ name: positionals[0]!, namespace: values.namespace, kubeconfig: values.kubeconfig, context: values.context, target, timeoutMs }, io);
  }
  if (values.namespace || values.kubeconfig || values.context) throw new UsageError('-n, --kubeconfig and --context go with a cluster NAME, e.g. hotstandby switchover mooncake -n prod --to mooncake-1');
  const flags = parseStoreFlags(storeValues);
  const target = values.to?.trim();
  if (!target) throw new UsageError('--to is required: the member that should lead, e.g. --to mooncake-1 (see `hotstandby status`)');
  const timeoutMs = values.timeout === undefined ? DEFAULT_TIMEOUT_MS : parseDuration(values.timeout, '--timeout');

  const stores = await openStores({ ...flags, redisUrl: undefined });
  const keys = etcdKeys(flags.cluster);
  try {
    let view: ClusterView;
    try {
      view = await readClusterView({ etcd: stores.etcd, cluster: flags.cluster });
    } catch (err) {
      io.err(etcdUnreachable(flags.etcdEndpoints, err));
      return 1;
    }

    // ---- validate: nothing is written unless all of this holds
    const member = view.members.find((m) => m.member === target);
    if (view.leader?.member === target) {
      io.out(`${target} already leads ${view.cluster} (epoch ${view.leader.epoch}); nothing to do.`);
      return 0;
    }
    if (!member) {
      io.err(`member ${JSON.stringify(target)} is not in cluster ${view.cluster}; ${describeMembers(view)}. Pass one of the standbys to --to.`);
      return 2;
    }
    if (member.role !== 'standby') {
      io.err(`${target} is ${member.role}, not a standby; only a live standby can take over. ${capitalize(describeMembers(view))}.`);
      return 2;
    }
    const leader = view.leader;
    if (!leader) {
      io.err(`${view.cluster} has no leader right now, so there is nothing to hand over (a failover may be under way); ${describeMembers(view)}.`);
      return 1;
    }
    if (view.switchover && !values.force) {
      io.err(
        `a switchover to ${view.switchover.target} requested ${formatAge(view.switchover.ageMs)} ago is still pending; ` +
          'wait for it to finish, or pass --force to replace it.',
      );
      return 1;
    }

    // ---- request: only if the leader, the target's registration and the
    // pending request are as just validated (one etcd transaction).
    let requestJson: string | undefined;
    try {
      requestJson = await requestSwitchover({ etcd: stores.etcd, keys, leaderEpoch: leader.epoch, target, replace: Boolean(view.switchover) });
    } catch (err) {
      io.err(etcdUnreachable(flags.etcdEndpoints, err));
      return 1;
    }
    if (requestJson === undefined) {
      io.err('the cluster changed while the request was being written (a new leader, the target left, or another switchover was requested); nothing was written. Run the command again.');
      return 1;
    }
    const started = Date.now();
    io.out(`requested switchover of ${view.cluster}: ${leader.member} (epoch ${leader.epoch}) -> ${target}; waiting up to ${formatAge(timeoutMs)}`);
    if (member.lag) io.out(`${target} is ${member.lag} entries behind; the leader pauses writes until it has applied them`);

    const outcome = await waitForSwitchover({ etcd: stores.etcd, keys, leader, target, requestJson, timeoutMs, io });
    const took = formatAge(Date.now() - started);
    switch (outcome.kind) {
      case 'done':
        io.out(`switchover complete: ${target} leads ${view.cluster} (epoch ${outcome.leader.epoch}) after ${took}`);
        return 0;
      case 'other-leader':
        io.err(`switchover failed after ${took}: ${outcome.leader.member} took over instead of ${target} (epoch ${outcome.leader.epoch})`);
        return 1;
      case 'declined':
        io.err(`the leader ${leader.member} declined or abandoned the switchover after ${took} (its agent's log says why, e.g. ${target} did not catch up in time); ${leader.member} still leads`);
        return 1;
      case 'replaced':
        io.err(`another switchover request (to ${outcome.by}) replaced this one after ${took}; not waiting for it`);
        return 1;
      case 'timeout':
      case 'interrupted': {
        const withdrawn = await withdrawSwitchover(stores.etcd, keys, requestJson);
        const why = outcome.kind === 'timeout' ? `timed out after ${formatAge(timeoutMs)} waiting for ${target} to lead` : 'interrupted';
        io.err(`${why}; the request was ${withdrawn ? 'withdrawn' : 'already gone'}. Current state:`);
        try {
          io.err(renderClusterView(await readClusterView({ etcd: stores.etcd, cluster: flags.cluster })));
        } catch (err) {
          io.err(etcdUnreachable(flags.etcdEndpoints, err));
        }
        return outcome.kind === 'timeout' ? 1 : 130;
      }
    }
  } finally {
    stores.close();
  }
}

type WaitOutcome =
  | { kind: 'done'; leader: LeaderRecord }
  | { kind: 'other-leader'; leader: LeaderRecord }
  | { kind: 'declined' }
  | { kind: 'replaced'; by: string }
  | { kind: 'timeout' }
  | { kind: 'interrupted' };

/** Polls the request and the leader key until one of the outcomes; prints each change once. */
async function waitForSwitchover(opts: {
  etcd: Etcd3;
  keys: EtcdKeys;
  leader: LeaderRecord;
  target: string;
  requestJson: string;
  timeoutMs: number;
  io: CommandIo;
}): Promise<WaitOutcome> {
  const { etcd, keys, io } = opts;
  const started = Date.now();
  const deadline = started + opts.timeoutMs;
  let lastNote = '';
  const note = (text: string): void => {
    if (text === lastNote) return;
    lastNote = text;
    io.out(`  ${formatAge(Date.now() - started).padStart(6)}  ${text}`);
  };
  while (Date.now() < deadline) {
    if (io.signal.aborted) return { kind: 'interrupted' };
    try {
      // The request first, then the leader: the target removes the request
      // only after its leader key exists, so "request gone, old leader still
      // there" can only mean the old leader gave up.
      const request = await withTimeout(etcd.get(keys.switchover).string(), CALL_TIMEOUT_MS, 'etcd to answer');
      const res = await withTimeout(etcd.get(keys.leader).exec(), CALL_TIMEOUT_MS, 'etcd to answer');
      const kv = res.kvs[0];
      // The epoch is the key's create revision (the record's field may still be 0).
      const current = kv ? { ...(JSON.parse(kv.value.toString('utf8')) as LeaderRecord), epoch: Number(kv.create_revision) } : undefined;
      if (current?.member === opts.target) return { kind: 'done', leader: current };
      if (current && current.member !== opts.leader.member) return { kind: 'other-leader', leader: current };
      if (request !== null && request !== opts.requestJson) {
        const by = (JSON.parse(request) as { target?: string }).target ?? '?';
        return { kind: 'replaced', by };
      }
      if (request === null && current?.member === opts.leader.member) return { kind: 'declined' };
      if (!current) note(`${opts.leader.member} resigned; waiting for ${opts.target} to take over`);
      else if (current.epoch !== opts.leader.epoch) note(`${current.member} leads again (epoch ${current.epoch}); waiting`);
      else note(`${opts.leader.member} is draining writes while ${opts.target} catches up`);
    } catch (err) {
      note(`cannot read etcd (${(err as Error).message}); retrying`);
    }
    await sleep(Math.min(POLL_MS, Math.max(0, deadline - Date.now())), io.signal).catch(() => undefined);
  }
  return { kind: 'timeout' };
}

function capitalize(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

export const switchoverCommand: Command = {
  name: 'switchover',
  help,
  async run(argv) {
    const controller = new AbortController();
    const onInt = (): void => controller.abort(new Error('interrupted'));
    process.once('SIGINT', onInt);
    try {
      return await runSwitchover(argv, {
        out: (t) => console.log(t),
        err: (t) => console.error(`hotstandby switchover: ${t}`),
        signal: controller.signal,
      });
    } finally {
      process.off('SIGINT', onInt);
    }
  },
};

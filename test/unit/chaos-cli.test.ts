// `hotstandby chaos` flag handling: bad flags are refused naming the flag,
// before anything starts; the --help list of fault kinds matches the registry.
import { describe, expect, it } from 'vitest';
import { SYNC_ONLY_REASON, chaosCommand, selectKinds } from '../../src/cli/commands/chaos.ts';
import { UsageError } from '../../src/cli/command.ts';
import { FAULT_KINDS } from '../../src/chaos/faults.ts';
import { seededRandom, stats } from '../../src/chaos/run.ts';

describe('hotstandby chaos flags', () => {
  it.each([
    [[], /--minutes is required/],
    [['--minutes', 'ten'], /--minutes must be a number from 0.1 to 1440, got "ten"/],
    [['--minutes', '0'], /--minutes must be/],
    [['--minutes', '1', '--seed', '1.5'], /--seed must be an integer from 0 to 4294967295/],
    [['--minutes', '1', '--members', '1'], /--members must be an integer from 2 to 7/],
    [['--minutes', '1', '--lease-ttl', '1'], /--lease-ttl must be an integer from 2 to 60/],
    [['--minutes', '1', '--faults', 'kill-leader,partition'], /--faults: unknown kind "partition"; choose from kill-leader, kill-leader-master, kill-standby, pause-leader, partition-leader, partition-leader-stream, partition-standby, flap-leader, delay-etcd, kill-etcd-member, kill-etcd-quorum, restart-stream-server$/],
    [['--minutes', '1', '--faults', ','], /--faults: unknown kind/],
    [['--minutes', '1', '--out', ''], /--out must name a directory/],
    [['--minutes', '1', '--replication', 'semi'], /--replication must be async or sync, got "semi"/],
    [['--minutes', '1', '--faults', 'kill-leader,restart-stream-server'], /--faults: restart-stream-server runs only with --replication sync .*; add --replication sync, or leave it out of --faults/],
    [['--minutes', '1', '--replication', 'async', '--faults', 'restart-stream-server'], /--faults: restart-stream-server runs only with --replication sync/],
    [['--minutes', '1', '--bogus'], /bogus/],
  ])('%j is refused naming the flag', async (argv, message) => {
    const err = await chaosCommand.run([...argv]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UsageError);
    expect((err as Error).message).toMatch(message);
  });

  it('names every fault kind of the registry in --help', () => {
    for (const k of FAULT_KINDS) expect(chaosCommand.help).toContain(k.name);
  });

  const names = (ks: readonly { name: string }[]): string[] => ks.map((k) => k.name);
  const networkKinds = names(FAULT_KINDS.filter((k) => k.network));
  const processKinds = names(FAULT_KINDS.filter((k) => !k.network));
  const syncOnlyKinds = names(FAULT_KINDS.filter((k) => k.syncOnly));

  it('has network kinds, none of them in the always-on default set', () => {
    expect(networkKinds).toEqual(['partition-leader', 'partition-leader-stream', 'partition-standby', 'flap-leader', 'delay-etcd']);
    for (const k of FAULT_KINDS.filter((x) => x.network)) expect(k.byDefault, k.name).toBe(false);
  });

  it('restarting the stream server empty is the one sync-only kind; the etcd kinds need the 3-member etcd; only delay-etcd needs a delayable etcd', () => {
    expect(syncOnlyKinds).toEqual(['restart-stream-server']);
    expect(names(FAULT_KINDS.filter((k) => k.etcdCluster))).toEqual(['kill-etcd-member', 'kill-etcd-quorum']);
    expect(names(FAULT_KINDS.filter((k) => k.delaysEtcd))).toEqual(['delay-etcd']);
  });

  it('the default set is every kind where network namespaces work (restart-stream-server only in sync mode), else the process kinds with the others skipped and why', () => {
    expect(selectKinds(undefined, FAULT_KINDS, undefined, 'sync')).toEqual({ kinds: [...FAULT_KINDS], skipped: {} });
    const rootAsync = selectKinds(undefined, FAULT_KINDS, undefined);
    expect(names(rootAsync.kinds)).toEqual(names(FAULT_KINDS).filter((n) => !syncOnlyKinds.includes(n)));
    expect(rootAsync.skipped).toEqual({ 'restart-stream-server': SYNC_ONLY_REASON });
    const why = 'network namespaces need root (CAP_NET_ADMIN); run as root';
    const nonRoot = selectKinds(undefined, FAULT_KINDS, why);
    expect(names(nonRoot.kinds)).toEqual(processKinds.filter((n) => !syncOnlyKinds.includes(n)));
    expect(nonRoot.skipped).toEqual({ ...Object.fromEntries(networkKinds.map((n) => [n, why])), 'restart-stream-server': SYNC_ONLY_REASON });
    expect(names(selectKinds(undefined, FAULT_KINDS, why, 'sync').kinds)).toEqual(processKinds);
  });

  it('restart-stream-server named in --faults is refused in async mode naming --replication and the fix, accepted in sync mode', () => {
    expect(() => selectKinds('restart-stream-server', FAULT_KINDS, undefined, 'async')).toThrow(UsageError);
    expect(() => selectKinds('kill-leader,restart-stream-server', FAULT_KINDS, undefined)).toThrow(/add --replication sync, or leave it out of --faults/);
    expect(names(selectKinds('kill-leader,restart-stream-server', FAULT_KINDS, undefined, 'sync').kinds)).toEqual(['kill-leader', 'restart-stream-server']);
  });

  it('a network kind named in --faults without network namespaces is refused naming --faults and the fix', () => {
    const why = 'network namespaces need root (CAP_NET_ADMIN); run as root';
    expect(() => selectKinds('kill-leader,partition-leader', FAULT_KINDS, why)).toThrow(UsageError);
    expect(() => selectKinds('kill-leader,partition-leader', FAULT_KINDS, why)).toThrow(/--faults: partition-leader is a network kind and cannot run here \(network namespaces need root.*\); fix that, or leave it out of --faults/);
    expect(names(selectKinds('kill-leader,pause-leader', FAULT_KINDS, why).kinds)).toEqual(['kill-leader', 'pause-leader']);
    expect(names(selectKinds('flap-leader', FAULT_KINDS, undefined).kinds)).toEqual(['flap-leader']);
    expect(() => selectKinds('delay-etcd', FAULT_KINDS, why)).toThrow(/--faults: delay-etcd is a network kind and cannot run here/);
    expect(names(selectKinds('kill-etcd-member,kill-etcd-quorum', FAULT_KINDS, why).kinds)).toEqual(['kill-etcd-member', 'kill-etcd-quorum']);
  });
});

describe('chaos helpers', () => {
  it('the same seed gives the same sequence, another seed another', () => {
    const a = seededRandom(42);
    const b = seededRandom(42);
    const c = seededRandom(43);
    const xs = Array.from({ length: 5 }, () => a());
    expect(Array.from({ length: 5 }, () => b())).toEqual(xs);
    expect(Array.from({ length: 5 }, () => c())).not.toEqual(xs);
    for (const x of xs) expect(x >= 0 && x < 1).toBe(true);
  });

  it('stats gives p50/p99/max, null for no values', () => {
    expect(stats([])).toBeNull();
    expect(stats([100, 200, 300])).toMatchObject({ max: 300 });
  });
});

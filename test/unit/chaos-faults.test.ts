// A chaos kind that silently did nothing must stop the run, not count as a
// pass: each kind checks its fault took effect. Here with stand-ins for the
// processes (the kinds' real effect is exercised by
// test/integration/chaos.test.ts).
import { describe, expect, it } from 'vitest';
import type { LocalCluster, Member } from '../../src/demo/localcluster.ts';
import type { LocalEtcdCluster } from '../../src/chaos/etcdcluster.ts';
import { FAULT_KINDS, type FaultContext } from '../../src/chaos/faults.ts';

const kind = (name: string) => FAULT_KINDS.find((k) => k.name === name)!;
/** A process that is not running: kill does nothing. */
const notRunning = { killNow: () => false, exited: Promise.resolve({ code: 0, signal: null }), running: false };

function context(parts: { cluster?: unknown; etcd?: unknown }): FaultContext {
  const leader = { name: 'kv-0' } as Member;
  return {
    cluster: (parts.cluster ?? { members: [leader] }) as LocalCluster,
    leader,
    leaseTtlSeconds: 2,
    random: () => 0.1,
    signal: new AbortController().signal,
    etcdTargets: ['etcd'],
    load: { onAck: () => () => undefined },
    note: () => undefined,
    violation: () => undefined,
    ...(parts.etcd ? { etcd: parts.etcd as LocalEtcdCluster } : {}),
  };
}

describe('chaos kinds refuse to count a fault that did nothing', () => {
  it('restart-stream-server: a stream server that was not running', async () => {
    const cluster = { members: [], redis: { port: 1, url: 'redis://127.0.0.1:1', kind: 'redis', process: notRunning } };
    await expect(kind('restart-stream-server').inject(context({ cluster }))).rejects.toThrow(/the stream server was not running, so killing it did nothing/);
  });

  it('kill-etcd-member and kill-etcd-quorum: an etcd member that was not running', async () => {
    const etcd = { members: [0, 1, 2].map((i) => ({ name: `etcd${i}`, process: notRunning })) };
    await expect(kind('kill-etcd-member').inject(context({ etcd }))).rejects.toThrow(/kill-etcd-member: etcd member etcd0 was not running, so killing it did nothing/);
    await expect(kind('kill-etcd-quorum').inject(context({ etcd }))).rejects.toThrow(/kill-etcd-quorum: etcd member etcd\d was not running/);
  });

  it('the etcd kinds need the 3-member etcd and delay-etcd the network lab: refused, not skipped, without them', async () => {
    await expect(kind('kill-etcd-member').inject(context({}))).rejects.toThrow(/needs the run's 3-member etcd/);
    await expect(kind('delay-etcd').inject(context({}))).rejects.toThrow(/needs the members in network namespaces/);
  });
});

// Leader election against a real etcd: who leads, when they stop, and that two
// members never both believe they lead. Lease TTLs are 2-3 s to keep the file short.
import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Etcd3 } from 'etcd3';
import { EtcdHttpClient } from '../../src/lib/etcd-http/client.ts';
import { useStores } from '../harness/stores.ts';
import { EtcdMirror, LeaderElection, type CandidacyAnswer, type ElectionEvent } from '../../src/agent/election.ts';
import { decideCandidacy } from '../../src/agent/candidacy.ts';
import { etcdKeys, type EtcdKeys } from '../../src/lib/keys.ts';
import { createLogger } from '../../src/lib/log.ts';
import { sleep, waitFor } from '../../src/lib/time.ts';

const stores = useStores();

interface Member {
  name: string;
  etcd: EtcdHttpClient;
  election: LeaderElection;
  /** Every event with the wall-clock time it arrived and whether the member held leadership then. */
  events: Array<ElectionEvent & { at: number; holding: boolean }>;
  candidacyCalls: number;
}

let live: Member[] = [];
let clusterSeq = 0;

afterEach(async () => {
  const members = live;
  live = [];
  await Promise.all(members.map((m) => m.election.stop()));
  for (const m of members) m.etcd.close();
});

function newCluster(): EtcdKeys {
  clusterSeq++;
  return etcdKeys({ namespace: 'election-test', name: `c${clusterSeq}` });
}

function addMember(
  keys: EtcdKeys,
  name: string,
  opts: { ttl?: number; marginMs?: number; candidacy?: () => CandidacyAnswer | Promise<CandidacyAnswer>; endpoint?: string } = {},
): Member {
  const etcd = new EtcdHttpClient({ endpoints: [opts.endpoint ?? stores().etcd.endpoint] });
  const member: Member = { name, etcd, events: [], candidacyCalls: 0, election: undefined as unknown as LeaderElection };
  member.election = new LeaderElection({
    etcd,
    keys,
    member: name,
    address: `${name}.test:7000`,
    leaseTtlSeconds: opts.ttl ?? 3,
    demoteMarginMs: opts.marginMs ?? 500,
    log: createLogger({ component: 'election-test', member: name, level: process.env.TEST_LOG_LEVEL ?? 'silent' }),
    candidacy: async () => {
      member.candidacyCalls++;
      return (await opts.candidacy?.()) ?? { eligible: true, delayMs: 0, reason: 'test' };
    },
  });
  member.election.onEvent((e) => member.events.push({ ...e, at: Date.now(), holding: member.election.holdsLeadership() }));
  live.push(member);
  return member;
}

function leaders(members: Member[]): Member[] {
  return members.filter((m) => m.election.holdsLeadership());
}

async function waitForLeader(members: Member[], timeoutMs = 15_000): Promise<Member> {
  return waitFor(
    () => {
      const holding = leaders(members);
      return holding.length === 1 ? holding[0] : undefined;
    },
    { timeoutMs, intervalMs: 20, what: 'exactly one leader' },
  );
}

function electedEvents(m: Member): Array<Extract<ElectionEvent, { type: 'elected' }> & { at: number; holding: boolean }> {
  return m.events.filter((e): e is Extract<ElectionEvent, { type: 'elected' }> & { at: number; holding: boolean } => e.type === 'elected');
}

function deposedEvents(m: Member): Array<Extract<ElectionEvent, { type: 'deposed' }> & { at: number; holding: boolean }> {
  return m.events.filter((e): e is Extract<ElectionEvent, { type: 'deposed' }> & { at: number; holding: boolean } => e.type === 'deposed');
}

/** Samples every few ms for `ms`, failing at once if two members hold leadership together. */
async function assertNeverTwoLeaders(members: Member[], ms: number): Promise<void> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    const holding = leaders(members).map((m) => m.name);
    expect(holding.length, `leaders at once: ${holding.join(', ')}`).toBeLessThanOrEqual(1);
    await sleep(5);
  }
}

describe('leader election', () => {
  it('a single member is elected with epoch = the leader key create revision', async () => {
    const keys = newCluster();
    const a = addMember(keys, 'a');
    const before = Date.now();
    await a.election.start();
    await waitForLeader([a]);
    const [elected] = electedEvents(a);
    expect(elected).toBeDefined();
    const res = await a.etcd.range({ key: keys.leader });
    const kv = res.kvs[0]!;
    expect(elected!.epoch).toBe(Number(kv.create_revision));
    expect(a.election.epoch).toBe(elected!.epoch);
    expect(elected!.record).toMatchObject({ member: 'a', address: 'a.test:7000', epoch: elected!.epoch });
    // The key carries the leader's lease, not an immortal one.
    expect(kv.lease).not.toBe('0');
    // The record's epoch is filled in right after the election.
    await waitFor(async () => JSON.parse((await a.etcd.getString(keys.leader)) ?? '{}').epoch === elected!.epoch, {
      timeoutMs: 5000,
      what: 'the epoch in the stored record',
    });
    // leader-changed (ours) came before elected; the getter agrees.
    expect(a.events.findIndex((e) => e.type === 'leader-changed' && e.leader?.member === 'a')).toBeLessThan(
      a.events.findIndex((e) => e.type === 'elected'),
    );
    expect(a.election.leader).toMatchObject({ member: 'a', epoch: elected!.epoch });
    // Local deadline: at most TTL - margin after now, and renewed by keepalives.
    const deadline = a.election.localDeadline()!;
    expect(deadline).toBeGreaterThan(Date.now());
    expect(deadline).toBeLessThanOrEqual(Date.now() + 3000 - 500 + 50);
    // Past the whole TTL: still leading only because keepalives moved the deadline on.
    await sleep(3500);
    expect(a.election.holdsLeadership()).toBe(true);
    expect(deposedEvents(a)).toEqual([]);
    expect(a.election.localDeadline()!).toBeGreaterThan(deadline + 2500);
    expect(a.election.localDeadline()!).toBeGreaterThan(before + 3500);
  });

  it('three members: exactly one leads, all agree on who; resign hands over quickly with a larger epoch', async () => {
    const keys = newCluster();
    const members = ['a', 'b', 'c'].map((n) => addMember(keys, n));
    await Promise.all(members.map((m) => m.election.start()));
    const first = await waitForLeader(members);
    await assertNeverTwoLeaders(members, 1500);
    await waitFor(() => members.every((m) => m.election.leader?.member === first.name), { timeoutMs: 5000, what: 'everyone to see the leader' });
    const firstEpoch = first.election.epoch;
    expect(members.filter((m) => m !== first).every((m) => m.election.epoch === 0)).toBe(true);

    const resignedAt = Date.now();
    const sampling = assertNeverTwoLeaders(members, 3000);
    await first.election.resign({ holdOffMs: 10_000 });
    expect(first.election.holdsLeadership()).toBe(false);
    expect(deposedEvents(first).at(-1)).toMatchObject({ reason: 'resigned', epoch: firstEpoch, holding: false });
    expect(electedEvents(first)[0]).toMatchObject({ holding: true });
    const second = await waitForLeader(members, 5000);
    const handover = Date.now() - resignedAt;
    expect(second).not.toBe(first);
    expect(handover).toBeLessThan(2000); // no TTL wait: the key vanished with the revoked lease
    expect(second.election.epoch).toBeGreaterThan(firstEpoch);
    await sampling;
    // The resigned member held off: it never campaigned again.
    expect(electedEvents(first)).toHaveLength(1);
  });

  it('under churn (repeated resigns, everyone racing to campaign) there is never more than one leader and epochs only grow', async () => {
    const keys = newCluster();
    const members = ['a', 'b', 'c'].map((n) => addMember(keys, n, { ttl: 2, marginMs: 400 }));
    await Promise.all(members.map((m) => m.election.start()));
    await waitForLeader(members);
    let stopSampling = false;
    const sampler = (async () => {
      while (!stopSampling) {
        const holding = leaders(members).map((m) => m.name);
        expect(holding.length, `leaders at once: ${holding.join(', ')}`).toBeLessThanOrEqual(1);
        await sleep(2);
      }
    })();
    try {
      for (let round = 0; round < 8; round++) {
        const current = await waitForLeader(members, 8000);
        // No hold-off: the resigner races the others for the key.
        await current.election.resign({ holdOffMs: round % 2 === 0 ? 0 : 200 });
        await sleep(50 + round * 20);
      }
      await waitForLeader(members, 8000);
    } finally {
      stopSampling = true;
      await sampler;
    }
    const elections = members.flatMap((m) => electedEvents(m).map((e) => ({ at: e.at, epoch: e.epoch, member: m.name })));
    elections.sort((x, y) => x.epoch - y.epoch);
    expect(elections.length).toBeGreaterThanOrEqual(9);
    // Distinct epochs, and in the order the elections happened.
    expect(new Set(elections.map((e) => e.epoch)).size).toBe(elections.length);
    for (let i = 1; i < elections.length; i++) expect(elections[i]!.at).toBeGreaterThanOrEqual(elections[i - 1]!.at);
    // Everyone ends up agreeing on the last one.
    const last = elections.at(-1)!;
    await waitFor(() => members.every((m) => m.election.leader?.epoch === last.epoch), { timeoutMs: 5000, what: 'agreement on the last leader' });
  });

  it('a leader that stops renewing (killed) loses to another after about the TTL, and never overlaps', async () => {
    const keys = newCluster();
    const ttl = 3;
    const a = addMember(keys, 'a', { ttl });
    await a.election.start();
    await waitForLeader([a]);
    const b = addMember(keys, 'b', { ttl });
    await b.election.start();
    await sleep(500);
    expect(b.election.leader?.member).toBe('a');

    // Kill-like: the leader's connection to etcd goes away without a revoke.
    const killedAt = Date.now();
    a.etcd.close();
    const winner = await waitForLeader([b], ttl * 1000 + 4000);
    const takeover = Date.now() - killedAt;
    expect(winner).toBe(b);
    expect(takeover).toBeLessThan(ttl * 1000 + 4000);
    // Not before the old lease could have expired: the last renewal was at most
    // one keepalive interval (TTL/5) before the kill.
    expect(takeover).toBeGreaterThan(ttl * 1000 - (ttl * 1000) / 5 - 200);
    // The old leader demoted itself on its own, before the new one was elected.
    const aDeposed = deposedEvents(a).at(-1);
    expect(aDeposed?.reason).toBe('local-deadline');
    expect(a.election.holdsLeadership()).toBe(false);
    expect(aDeposed!.at).toBeLessThanOrEqual(electedEvents(b)[0]!.at);
  });

  it('the leader demotes itself at its local deadline when etcd stops answering, before the TTL passes', async () => {
    const keys = newCluster();
    const ttl = 3;
    const a = addMember(keys, 'a', { ttl, marginMs: 500 });
    await a.election.start();
    await waitForLeader([a]);
    await sleep(700); // a keepalive or two
    const etcdProcess = stores().etcd.process;
    const deadlineBefore = a.election.localDeadline()!;
    const stoppedAt = Date.now();
    etcdProcess.killNow('SIGSTOP');
    try {
      await waitFor(() => deposedEvents(a).length > 0, { timeoutMs: ttl * 1000, intervalMs: 10, what: 'the local-deadline demotion' });
      const demotedAfter = Date.now() - stoppedAt;
      expect(deposedEvents(a)[0]!.reason).toBe('local-deadline');
      expect(a.election.holdsLeadership()).toBe(false);
      expect(a.election.epoch).toBe(0);
      expect(a.election.localDeadline()).toBeUndefined();
      // Within TTL - margin of the last renewal, so strictly before the server could expire the lease.
      expect(demotedAfter).toBeLessThan(ttl * 1000 - 500 + 100);
      expect(deposedEvents(a)[0]!.at).toBeGreaterThanOrEqual(deadlineBefore - 50);
    } finally {
      etcdProcess.killNow('SIGCONT');
    }
    // Once etcd answers again, the cluster gets a leader again (re-checking candidacy first).
    const callsBefore = a.candidacyCalls;
    await waitForLeader([a], 30_000);
    expect(a.candidacyCalls).toBeGreaterThan(callsBefore);
    expect(electedEvents(a).at(-1)!.epoch).toBeGreaterThan(electedEvents(a)[0]!.epoch);
  });

  it('a leader rides out an etcd freeze shorter than its deadline (no client circuit breaker in the way)', async () => {
    const keys = newCluster();
    const a = addMember(keys, 'a', { ttl: 8, marginMs: 1000 });
    await a.election.start();
    await waitForLeader([a]);
    const epoch = a.election.epoch;
    await sleep(2000);
    const etcdProcess = stores().etcd.process;
    etcdProcess.killNow('SIGSTOP');
    try {
      // Long enough for several failed calls (reads, keepalives); well inside
      // the deadline, which is at least TTL - TTL/5 - margin = 5.4 s away.
      await sleep(3500);
      expect(a.election.holdsLeadership()).toBe(true);
    } finally {
      etcdProcess.killNow('SIGCONT');
    }
    await sleep(3000);
    expect(deposedEvents(a)).toEqual([]);
    expect(a.election.holdsLeadership()).toBe(true);
    expect(a.election.epoch).toBe(epoch);
    expect(a.election.localDeadline()!).toBeGreaterThan(Date.now() + 3000);
  });

  it('a leader renews every TTL/5 over one kept-alive connection for its whole term, not one connection per renewal', async () => {
    const keys = newCluster();
    const proxy = await startProxy(new URL(stores().etcd.endpoint).port);
    try {
      const a = addMember(keys, 'a', { ttl: 2, marginMs: 500, endpoint: proxy.endpoint });
      await a.election.start();
      await waitForLeader([a]);
      const epoch = a.election.epoch;
      await sleep(500); // the watch and the first renewals have their connections
      const renewalsBefore = await keepAliveStreamsStarted();
      const connectionsBefore = proxy.connections();
      const deadlineBefore = a.election.localDeadline()!;
      await sleep(3000); // about 7 renewals at TTL/5 = 400 ms
      expect(a.election.epoch).toBe(epoch);
      expect(a.election.localDeadline()!, 'the deadline moved with the renewals').toBeGreaterThan(deadlineBefore + 2000);
      // etcd counts every keepalive the gateway passed on; only this member runs.
      expect((await keepAliveStreamsStarted()) - renewalsBefore, 'keepalives answered in 3 s').toBeGreaterThanOrEqual(5);
      expect(proxy.connections() - connectionsBefore, 'connections opened while leading').toBeLessThanOrEqual(1);
    } finally {
      await proxy.close();
    }
  });

  it('a keepalive connection that breaks mid-term is replaced and the lease holds (same term, no demotion)', async () => {
    const keys = newCluster();
    const proxy = await startProxy(new URL(stores().etcd.endpoint).port);
    try {
      const a = addMember(keys, 'a', { ttl: 3, marginMs: 500, endpoint: proxy.endpoint });
      await a.election.start();
      await waitForLeader([a]);
      const epoch = a.election.epoch;
      await sleep(800); // renewals on the first stream
      const streamsBefore = await keepAliveStreamsStarted();
      proxy.cut(); // every connection through the proxy, the keepalives' included, breaks
      await sleep(300);
      proxy.restore();
      await sleep(2500); // past the deadline of the last renewal before the cut: only new renewals keep it
      expect(deposedEvents(a)).toEqual([]);
      expect(a.election.holdsLeadership()).toBe(true);
      expect(a.election.epoch).toBe(epoch);
      expect(a.election.localDeadline()!).toBeGreaterThan(Date.now() + 1000);
      expect(await keepAliveStreamsStarted(), 'renewals after the break').toBeGreaterThan(streamsBefore);
    } finally {
      await proxy.close();
    }
  });

  it('an ineligible member never campaigns, and is asked again while the key stays absent', async () => {
    const keys = newCluster();
    const a = addMember(keys, 'a');
    const b = addMember(keys, 'b', { candidacy: () => ({ eligible: false, delayMs: 0, reason: 'lag 5000 exceeds 1000' }) });
    await a.election.start();
    await waitForLeader([a]);
    await b.election.start();
    await a.election.resign({ holdOffMs: 3000 });
    await waitFor(() => b.election.leader === undefined, { timeoutMs: 3000, what: 'b to see the key gone' });
    const callsAtGone = b.candidacyCalls;
    await sleep(2000);
    expect(electedEvents(b)).toHaveLength(0);
    expect(b.election.holdsLeadership()).toBe(false);
    expect((await a.etcd.getString(keys.leader)) ?? null).toBeNull();
    expect(b.candidacyCalls).toBeGreaterThan(callsAtGone); // re-asked, not given up on
    // After its hold-off, a campaigns again and wins.
    await waitForLeader([a, b], 10_000);
    expect(leaders([a, b])[0]).toBe(a);
  });

  it('the most caught-up standby campaigns first', async () => {
    const keys = newCluster();
    const applied: Record<string, number> = { old: 100, 'pod-0': 90, 'pod-1': 95, 'pod-2': 99 };
    const everyone = Object.entries(applied).map(([member, appliedSeq]) => ({ member, appliedSeq, role: 'standby' as const }));
    const rule = (self: string) => () =>
      decideCandidacy({ self, selfAppliedSeq: applied[self]!, headSeq: 100, maxLagOnFailover: 50, members: everyone.filter((m) => m.member !== 'old'), stepMs: 400 });
    const old = addMember(keys, 'old');
    await old.election.start();
    await waitForLeader([old]);
    const standbys = ['pod-0', 'pod-1', 'pod-2'].map((n) => addMember(keys, n, { candidacy: rule(n) }));
    await Promise.all(standbys.map((m) => m.election.start()));
    await sleep(300);
    await old.election.resign({ holdOffMs: 60_000 });
    const winner = await waitForLeader([...standbys, old], 5000);
    expect(winner.name).toBe('pod-2');
    await sleep(1500); // past every rank delay: the others stood down
    expect(standbys.filter((m) => electedEvents(m).length > 0).map((m) => m.name)).toEqual(['pod-2']);
  });

  it('a member cut off from etcd demotes itself; once reconnected its watch catches up and it follows', async () => {
    const keys = newCluster();
    const ttl = 3;
    const proxy = await startProxy(new URL(stores().etcd.endpoint).port);
    try {
      const a = addMember(keys, 'a', { ttl, endpoint: proxy.endpoint });
      await a.election.start();
      await waitForLeader([a]);
      const b = addMember(keys, 'b', { ttl });
      await b.election.start();
      await sleep(300);
      const cutAt = Date.now();
      proxy.cut(); // connections reset, new ones refused: a network partition for a
      const sampling = assertNeverTwoLeaders([a, b], ttl * 1000 + 3000);
      await waitForLeader([b], ttl * 1000 + 4000);
      expect(deposedEvents(a).at(-1)?.reason).toBe('local-deadline');
      expect(deposedEvents(a).at(-1)!.at - cutAt).toBeLessThan(ttl * 1000);
      await sampling;
      // While a is away the leader changes again; a must learn it from its re-established watch or re-read.
      await b.election.resign({ holdOffMs: 60_000 });
      const c = addMember(keys, 'c', { ttl });
      await c.election.start();
      await waitForLeader([c], 10_000);
      proxy.restore();
      await waitFor(() => a.election.leader?.member === 'c', { timeoutMs: 20_000, what: 'a to see c lead after reconnecting' });
      expect(a.election.leader?.epoch).toBe(c.election.epoch);
      expect(a.election.holdsLeadership()).toBe(false);
      await assertNeverTwoLeaders([a, b, c], 1000);
      expect(leaders([a, b, c])).toEqual([c]);
    } finally {
      await proxy.close();
    }
  });

  it('a planned switchover target wins even though others are more caught up', async () => {
    const keys = newCluster();
    const applied: Record<string, number> = { 'pod-0': 100, 'pod-1': 100, 'pod-2': 97 };
    const everyone = Object.entries(applied).map(([member, appliedSeq]) => ({ member, appliedSeq, role: 'standby' as const }));
    const rule = (self: string) => () =>
      decideCandidacy({
        self,
        selfAppliedSeq: applied[self]!,
        headSeq: 100,
        maxLagOnFailover: 50,
        members: everyone,
        stepMs: 250,
        switchoverTarget: 'pod-2',
        switchoverHoldOffMs: 3000,
      });
    const old = addMember(keys, 'old');
    await old.election.start();
    await waitForLeader([old]);
    const standbys = Object.keys(applied).map((n) => addMember(keys, n, { candidacy: rule(n) }));
    await Promise.all(standbys.map((m) => m.election.start()));
    await sleep(300);
    const resignedAt = Date.now();
    await old.election.resign({ holdOffMs: 60_000 });
    const winner = await waitForLeader([...standbys, old], 5000);
    expect(winner.name).toBe('pod-2');
    expect(Date.now() - resignedAt).toBeLessThan(2000); // the target did not wait for the hold-off
  });

  it('a leader whose key is deleted or whose lease is revoked by someone else is deposed, then campaigns again', async () => {
    const keys = newCluster();
    const a = addMember(keys, 'a');
    await a.election.start();
    await waitForLeader([a]);
    const firstEpoch = a.election.epoch;

    await a.etcd.delete({ key: keys.leader });
    await waitFor(() => deposedEvents(a).length === 1, { timeoutMs: 3000, intervalMs: 10, what: 'deposition after the key was deleted' });
    // Not leading from the moment it is told (it may win again right after).
    expect(deposedEvents(a)[0]).toMatchObject({ reason: 'key-changed', epoch: firstEpoch, holding: false });
    await waitForLeader([a], 5000);
    const secondEpoch = a.election.epoch;
    expect(secondEpoch).toBeGreaterThan(firstEpoch);

    const kv = (await a.etcd.range({ key: keys.leader })).kvs[0]!;
    await a.etcd.leaseRevoke(kv.lease);
    await waitFor(() => deposedEvents(a).length === 2, { timeoutMs: 3000, intervalMs: 10, what: 'deposition after the lease was revoked' });
    expect(['key-changed', 'lease-lost']).toContain(deposedEvents(a)[1]!.reason);
    expect(deposedEvents(a)[1]).toMatchObject({ epoch: secondEpoch, holding: false });
    await waitForLeader([a], 5000);
    expect(a.election.epoch).toBeGreaterThan(secondEpoch);
    // Every deposition was followed by a fresh candidacy check before the next win.
    expect(a.candidacyCalls).toBeGreaterThanOrEqual(3);
  });

  it('a restarted member revokes the key its previous incarnation left, instead of waiting for the TTL', async () => {
    const keys = newCluster();
    const ttl = 3;
    const first = addMember(keys, 'a', { ttl });
    await first.election.start();
    await waitForLeader([first]);
    const oldEpoch = first.election.epoch;
    first.etcd.close(); // crash: nothing revoked
    const restartedAt = Date.now();
    const second = addMember(keys, 'a', { ttl });
    await second.election.start();
    await waitForLeader([second], 5000);
    expect(Date.now() - restartedAt).toBeLessThan(ttl * 1000 - 500);
    expect(second.election.epoch).toBeGreaterThan(oldEpoch);
  });

  it('while its watch is connected a mirror skips the periodic re-read when its owner allows, and still sees every change', async () => {
    const prefix = `/election-test/quiet-${Date.now()}/`;
    const etcd = new EtcdHttpClient({ endpoints: [stores().etcd.endpoint] });
    const direct = new Etcd3({ hosts: stores().etcd.endpoint });
    const log = createLogger({ component: 'mirror-test', level: process.env.TEST_LOG_LEVEL ?? 'silent' });
    let quiet = true;
    const mirror = new EtcdMirror({ etcd, range: { prefix }, resyncMs: 100, quietWhileWatched: () => quiet, callTimeoutMs: 2000, log, onChange: () => undefined });
    try {
      await mirror.start();
      await sleep(300); // the watch connects
      const readsBefore = await rangeCallsStarted();
      for (let i = 0; i < 5; i++) {
        await direct.put(`${prefix}k${i}`).value(String(i));
        await sleep(200);
      }
      const quietReads = (await rangeCallsStarted()) - readsBefore;
      await waitFor(() => mirror.current.size === 5, { timeoutMs: 3000, what: 'the watched puts' });
      expect(quietReads, 'range reads in 1 s with a connected watch').toBeLessThanOrEqual(1);
      quiet = false; // the owner wants its re-reads (the election, while the leader key is absent)
      const readsAgain = await rangeCallsStarted();
      await sleep(1000);
      expect((await rangeCallsStarted()) - readsAgain, 'range reads in 1 s at resyncMs 100').toBeGreaterThanOrEqual(5);
    } finally {
      await mirror.stop();
      etcd.close();
      direct.close();
    }
  });

  it('the watched view survives a reconnect after compaction and keeps watching (not only re-reading)', async () => {
    const prefix = `/election-test/mirror-${Date.now()}/`;
    const proxy = await startProxy(new URL(stores().etcd.endpoint).port);
    const viaProxy = new EtcdHttpClient({ endpoints: [proxy.endpoint] });
    const direct = new Etcd3({ hosts: stores().etcd.endpoint });
    const mirror = new EtcdMirror({
      etcd: viaProxy,
      range: { prefix },
      resyncMs: 600_000, // the periodic re-read must not be what saves us here
      callTimeoutMs: 2000,
      log: createLogger({ component: 'mirror-test', level: process.env.TEST_LOG_LEVEL ?? 'silent' }),
      onChange: () => undefined,
    });
    const valueOf = (key: string): string | undefined => mirror.current.get(prefix + key)?.value.toString();
    try {
      await direct.put(prefix + 'a').value('1');
      await mirror.start();
      expect(valueOf('a')).toBe('1');
      await direct.put(prefix + 'b').value('1');
      await waitFor(() => valueOf('b') === '1', { timeoutMs: 3000, what: 'a watched put' });

      proxy.cut();
      await direct.put(prefix + 'a').value('2');
      await direct.delete().key(prefix + 'b').exec();
      const put = await direct.put(prefix + 'c').value('1').exec();
      // Compact past everything the watch has seen: it cannot resume, the server cancels it.
      await direct.kv.compact({ revision: put.header.revision, physical: true });
      proxy.restore();

      await waitFor(() => valueOf('a') === '2' && valueOf('b') === undefined && valueOf('c') === '1', {
        timeoutMs: 15_000,
        what: 'the view to catch up after reconnecting',
      });
      // And it watches again: a later change arrives without waiting for a periodic re-read.
      await sleep(500);
      await direct.put(prefix + 'd').value('1');
      await waitFor(() => valueOf('d') === '1', { timeoutMs: 3000, what: 'a change after the compaction' });
    } finally {
      await mirror.stop();
      viaProxy.close();
      direct.close();
      await proxy.close();
    }
  });

  it('a campaign waiting out its delay stands down when a leader appears; the next absence asks candidacy afresh', async () => {
    const keys = newCluster();
    const a = addMember(keys, 'a');
    await a.election.start();
    await waitForLeader([a]);
    // b's first answer is a long delay (a switchover hold-off, say); every later one is "at once".
    let bAnswers = 0;
    const b = addMember(keys, 'b', { candidacy: () => ({ eligible: true, delayMs: bAnswers++ === 0 ? 60_000 : 0, reason: 'test' }) });
    const c = addMember(keys, 'c');
    await b.election.start();
    await a.election.stop();
    await waitFor(() => bAnswers === 1, { timeoutMs: 5000, what: 'b to be asked and start its long delay' });
    await c.election.start();
    await waitForLeader([a, b, c]).then((l) => expect(l).toBe(c));
    await c.election.resign({ holdOffMs: 60_000 });
    // Without standing down, b would sleep out the first answer's 60 s.
    const next = await waitForLeader([a, b, c], 15_000);
    expect(next).toBe(b);
    expect(bAnswers).toBeGreaterThanOrEqual(2);
  });

  it('a resign hold-off ends once another member leads: the resigner may take over at the next failover', async () => {
    const keys = newCluster();
    const a = addMember(keys, 'a');
    await a.election.start();
    await waitForLeader([a]);
    const b = addMember(keys, 'b');
    await b.election.start();
    await a.election.resign({ holdOffMs: 60_000 });
    expect(await waitForLeader([a, b])).toBe(b);
    await b.election.resign({ holdOffMs: 60_000 });
    // a's hold-off did its job when b won; only a can lead now.
    expect(await waitForLeader([a, b], 15_000)).toBe(a);
  });

  it('stop() does not wait for a candidacy check that hangs', async () => {
    const keys = newCluster();
    let asked = false;
    const hung = addMember(keys, 'h', {
      candidacy: () => {
        asked = true;
        return new Promise<CandidacyAnswer>(() => undefined); // never answers
      },
    });
    await hung.election.start();
    await waitFor(() => asked, { timeoutMs: 3000, what: 'the candidacy check to be asked' });
    const started = Date.now();
    await hung.election.stop();
    expect(Date.now() - started).toBeLessThan(1500);
    expect(electedEvents(hung)).toHaveLength(0);
  });

  it('stop() resigns, and leaves nothing running: a process using the election exits by itself', async () => {
    const electionModule = path.resolve('src/agent/election.ts');
    const clientModule = path.resolve('src/lib/etcd-http/client.ts');
    const keysModule = path.resolve('src/lib/keys.ts');
    const logModule = path.resolve('src/lib/log.ts');
    const script = `
      import { Etcd3 } from 'etcd3';
      import { EtcdHttpClient } from ${JSON.stringify(clientModule)};
      import { LeaderElection } from ${JSON.stringify(electionModule)};
      import { etcdKeys } from ${JSON.stringify(keysModule)};
      import { silentLogger } from ${JSON.stringify(logModule)};
      const etcd = new EtcdHttpClient({ endpoints: [${JSON.stringify(stores().etcd.endpoint)}] });
      const e = new LeaderElection({ etcd, keys: etcdKeys({ namespace: 'election-test', name: 'exit' }), member: 'x', address: 'x:1',
        leaseTtlSeconds: 2, demoteMarginMs: 400, log: silentLogger(), candidacy: async () => ({ eligible: true, delayMs: 0, reason: '' }) });
      const elected = new Promise((r) => e.onEvent((ev) => ev.type === 'elected' && r(ev)));
      await e.start();
      await elected;
      await e.stop();
      etcd.close();
      console.log('stopped', e.holdsLeadership(), JSON.stringify(await new Etcd3({ hosts: ${JSON.stringify(stores().etcd.endpoint)} }).get('/hotstandby/election-test/exit/leader').string()));
      process.exit(0);
    `;
    // The probe client above must not keep the process alive either; the
    // explicit exit is only after the checks, so measure the election alone below.
    const out = await runNode(script, 20_000);
    expect(out).toContain('stopped false null');

    const lingerScript = script.replace(/console\.log[\s\S]*process\.exit\(0\);/, "console.log('done');");
    const started = Date.now();
    const lingerOut = await runNode(lingerScript, 20_000);
    expect(lingerOut).toContain('done');
    // Exits on its own once stop() and close() ran: no timer, watch or lease loop left.
    expect(Date.now() - started).toBeLessThan(15_000);
  });
});

/** A TCP proxy to etcd that a test can cut (a partition) and restore. */
async function startProxy(upstreamPort: string): Promise<{ endpoint: string; cut(): void; restore(): void; close(): Promise<void>; connections(): number }> {
  let open = true;
  let accepted = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((downstream) => {
    if (!open) {
      downstream.destroy();
      return;
    }
    accepted++;
    const upstream = net.connect(Number(upstreamPort), '127.0.0.1');
    for (const s of [downstream, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => undefined);
    }
    downstream.pipe(upstream).pipe(downstream);
    downstream.on('close', () => upstream.destroy());
    upstream.on('close', () => downstream.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  const cut = (): void => {
    open = false;
    for (const s of sockets) s.destroy();
  };
  return {
    endpoint: `http://127.0.0.1:${port}`,
    cut,
    connections: () => accepted,
    restore: () => {
      open = true;
    },
    close: () => {
      cut();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** LeaseKeepAlive calls the test etcd has started so far (its gRPC server metrics; the gateway passes each keepalive request on as one). */
async function keepAliveStreamsStarted(): Promise<number> {
  const text = await (await fetch(`${stores().etcd.endpoint}/metrics`, { signal: AbortSignal.timeout(3000) })).text();
  const m = /^grpc_server_started_total\{grpc_method="LeaseKeepAlive"[^}]*\} (\d+)/m.exec(text);
  if (!m) throw new Error('etcd /metrics has no grpc_server_started_total for LeaseKeepAlive');
  return Number(m[1]);
}

/** Range calls the test etcd has started so far. */
async function rangeCallsStarted(): Promise<number> {
  const text = await (await fetch(`${stores().etcd.endpoint}/metrics`, { signal: AbortSignal.timeout(3000) })).text();
  const m = /^grpc_server_started_total\{grpc_method="Range"[^}]*\} (\d+)/m.exec(text);
  if (!m) throw new Error('etcd /metrics has no grpc_server_started_total for Range');
  return Number(m[1]);
}

function runNode(script: string, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { cwd: process.cwd(), stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`node did not exit within ${timeoutMs} ms (something kept it alive); output:\n${out}`));
    }, timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`node exited with ${code}; output:\n${out}`));
    });
  });
}

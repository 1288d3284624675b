// Real network faults (issue 9 part 3): every member's agent and master run in
// a network namespace of their own on a bridge this test makes; etcd and
// redis-server listen on the bridge's host address; links are cut with
// iptables inside a member's namespace, delayed through a delaying proxy (this
// kernel has no tc netem), and stores are killed. Clients in the host
// namespace write to every member's master and record a history.
//
// After every fault, each test asserts:
//   1. at most one member had writes acknowledged at any time (epochs, see
//      singleWriterViolations);
//   2. no acknowledged write is lost (every acked key read back from the
//      final leader);
//   3. every standby converges (same applied sequence, same key count, every
//      acked key on it);
//   4. writes are acknowledged again within TTL + 2 s of the heal.
// Measured times go to stderr. Needs root and network namespaces: skipped
// otherwise, a failure under HOTSTANDBY_E2E=1.
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { MemberClients } from '../../src/chaos/clients.ts';
import { ETCD_ELECTION_TIMEOUT_MS } from '../../src/chaos/faults.ts';
import { LocalEtcdCluster } from '../../src/chaos/etcdcluster.ts';
import { singleWriterViolations, nowMs, type HistoryOp } from '../../src/chaos/history.ts';
import { NetLab, netnsUnavailable } from '../../src/chaos/netns.ts';
import { LocalCluster, type Member } from '../../src/demo/localcluster.ts';
import { startEtcd, startStreamServer, type LocalEtcd, type LocalStreamServer } from '../../src/lib/localstores.ts';
import { sleep, waitFor } from '../../src/lib/time.ts';

const unavailable = await netnsUnavailable();
const strict = process.env.HOTSTANDBY_E2E === '1';
const NAMES = ['kv-0', 'kv-1', 'kv-2'];

interface Run {
  lab: NetLab;
  cluster: LocalCluster;
  clients: MemberClients;
  ttlMs: number;
  extra: Array<() => Promise<void>>;
}

let current: Run | undefined;
let labs: NetLab[] = [];

afterEach(async (ctx) => {
  const r = current;
  current = undefined;
  if (r) {
    await r.clients.stop();
    if (ctx.task.result?.state === 'fail' || process.env.HOTSTANDBY_KEEP_TEST_DIRS) {
      // The agents' and masters' logs and the history, kept for the post-mortem.
      const keep = fs.mkdtempSync('/tmp/hs-netfault-');
      fs.cpSync(r.cluster.workDir, keep, { recursive: true });
      r.clients.history.write(path.join(keep, 'history.jsonl'));
      process.stderr.write(`[netfault] logs and history kept in ${keep}\n`);
    }
    await r.cluster.stop();
    for (const stop of r.extra) await stop().catch(() => undefined);
  }
  for (const lab of labs) {
    await lab.destroy();
    expect(await lab.leftovers(), 'namespaces or links left behind').toEqual([]);
  }
  labs = [];
});

async function newLab(): Promise<NetLab> {
  const lab = await NetLab.create(NAMES);
  labs.push(lab);
  return lab;
}

/**
 * A lab, a cluster in it and clients writing to every member. `etcd`: the
 * endpoints to give the agents instead of the cluster's own etcd (named
 * 'etcd' as a target either way), registered by the caller.
 */
async function startRun(opts: { ttlSeconds: number; lab?: NetLab; etcdEndpoints?: string; extra?: Run['extra'] }): Promise<Run> {
  const lab = opts.lab ?? (await newLab());
  const cluster = await LocalCluster.start({
    memberNames: NAMES,
    leaseTtlSeconds: opts.ttlSeconds,
    placement: (m) => lab.placement(m),
    stores: { etcd: { host: lab.hostAddress }, redis: { host: lab.hostAddress } },
    ...(opts.etcdEndpoints ? { etcdEndpoints: opts.etcdEndpoints } : {}),
  });
  if (!opts.etcdEndpoints) await lab.addTarget('etcd', cluster.etcd.clientPort);
  await lab.addTarget('redis', cluster.redis.port);
  const clients = new MemberClients({ targets: cluster.members.map((m) => ({ name: m.name, kvAddress: m.kvAddress })), clientsPerMember: 2 });
  current = { lab, cluster, clients, ttlMs: opts.ttlSeconds * 1000, extra: opts.extra ?? [] };
  await cluster.waitForLeader({ timeoutMs: 30_000 });
  clients.start();
  await waitForAcks(current, 20, { what: 'the first acknowledged writes' });
  return current;
}

function acked(r: Run): HistoryOp[] {
  return r.clients.history.ackedPuts();
}

/** Waits until `n` more puts are acknowledged (by `by` when given) after `after`. */
async function waitForAcks(r: Run, n: number, opts: { after?: number; by?: (member: string) => boolean; timeoutMs?: number; what: string }): Promise<HistoryOp> {
  return waitFor(
    () => {
      const ops = acked(r).filter((o) => o.invokeMs >= (opts.after ?? 0) && (!opts.by || opts.by(o.member)));
      return ops.length >= n ? ops[n - 1] : undefined;
    },
    { timeoutMs: opts.timeoutMs ?? 30_000, intervalMs: 10, what: opts.what },
  );
}

/** The member acknowledging writes now (from the history: the newest ack). */
function ackingMember(r: Run): Member {
  const last = acked(r).at(-1)!;
  return r.cluster.members.find((m) => m.name === last.member)!;
}

async function getValue(m: Member, key: string, stale: boolean): Promise<{ status: number; value?: string }> {
  const res = await fetch(`http://${m.kvAddress}/kv/${encodeURIComponent(key)}${stale ? '?stale=1' : ''}`, { signal: AbortSignal.timeout(5000) });
  const body = (await res.json()) as { value?: string };
  return res.status === 200 ? { status: 200, value: body.value! } : { status: res.status };
}

/** A linearizable read: from the leader; when it refuses (leadership moved), from whoever leads now. Bounded. */
async function readFromLeader(r: Run, first: Member, key: string): Promise<string | undefined> {
  let leader = first;
  for (let attempt = 0; attempt < 20; attempt++) {
    const got = await getValue(leader, key, false).catch(() => ({ status: 0, value: undefined }));
    if (got.status === 200 || got.status === 404) return got.value;
    leader = await r.cluster.waitForLeader({ timeoutMs: 30_000 });
  }
  throw new Error(`no leader answered a read of ${key} in 20 attempts`);
}

/**
 * Heal has happened at `healAt`: measures recovery, stops the clients, and
 * asserts the four properties. Returns the measured recovery in ms.
 */
async function verify(r: Run, scenario: string, healAt: number, extra: Record<string, number | string> = {}): Promise<number> {
  const first = await waitForAcks(r, 1, { after: healAt, timeoutMs: r.ttlMs + 30_000, what: `a write acknowledged after the heal (${scenario})` });
  const recoveryMs = first.completeMs - healAt;
  await sleep(1000); // some writes after the recovery too
  await r.clients.stop();
  const ops = r.clients.history.ops;
  const ackedPuts = acked(r);
  const unknown = ops.filter((o) => o.op === 'put' && o.ok === null).length;
  const epochs = new Set(ackedPuts.map((o) => `${o.member}@${o.epoch}`));
  if (process.env.HOTSTANDBY_HISTORY_DIR) r.clients.history.write(path.join(process.env.HOTSTANDBY_HISTORY_DIR, `${scenario.replace(/\W+/g, '-')}.jsonl`));
  process.stderr.write(
    `[netfault] ${scenario}: TTL ${r.ttlMs / 1000} s, recovery after heal ${recoveryMs.toFixed(0)} ms; ` +
      `${Object.entries(extra).map(([k, v]) => `${k} ${typeof v === 'number' ? v.toFixed(0) : v}`).join(', ')}${Object.keys(extra).length ? '; ' : ''}` +
      `acked ${ackedPuts.length}, unknown ${unknown}, terms ${[...epochs].join(' ')}\n`,
  );

  // 1. one writer at a time
  expect(singleWriterViolations(ops)).toEqual([]);

  // 3. every standby converges: all members report the leader's applied
  // sequence and key count (re-read each time: a slow etcd on this shared
  // machine may move leadership once more while this waits).
  const leader = await waitFor(
    async () => {
      const statuses = await Promise.all(r.cluster.members.map((m) => r.cluster.masterStatus(m)));
      if (statuses.some((st) => !st)) return undefined;
      const lead = statuses.map((st, i) => ({ st: st!, m: r.cluster.members[i]! })).filter((x) => x.st.writable).sort((a, b) => b.st.epoch - a.st.epoch)[0];
      const same = statuses.every((st) => st!.appliedSeq === lead?.st.appliedSeq && st!.keys === lead?.st.keys);
      return lead && same ? lead.m : undefined;
    },
    { timeoutMs: 30_000, intervalMs: 50, what: 'every member to converge to one leader (same applied sequence and key count)' },
  );

  // 2. nothing acknowledged lost: every acknowledged key read back from the
  // leader (a refusal means leadership moved: ask the new leader), and from
  // every standby (stale reads: they hold the same state).
  const lost: string[] = [];
  for (const o of ackedPuts) {
    if ((await readFromLeader(r, leader, o.key)) !== o.value) lost.push(o.key);
  }
  expect(lost, 'acknowledged writes missing on the leader').toEqual([]);
  for (const m of r.cluster.members) {
    if (m === leader) continue;
    const missing: string[] = [];
    for (const o of ackedPuts) if ((await getValue(m, o.key, true)).value !== o.value) missing.push(o.key);
    expect(missing, `acknowledged writes missing on standby ${m.name}`).toEqual([]);
  }

  // 4. recovery within TTL + 2 s of the heal
  expect(recoveryMs, 'writes acknowledged again after the heal (ms)').toBeLessThanOrEqual(r.ttlMs + 2000);
  return recoveryMs;
}

describe('network namespaces', () => {
  it.runIf(strict)('are available (HOTSTANDBY_E2E=1 needs them)', () => {
    expect(unavailable).toBeUndefined();
  });
});

describe.skipIf(unavailable !== undefined)(`real network faults between namespaces${unavailable ? ` (skipped: ${unavailable})` : ''}`, () => {
  it('the leader cut from etcd only: it demotes at its local deadline, another member leads, the old one rejoins', async () => {
    const r = await startRun({ ttlSeconds: 2 });
    const old = ackingMember(r);
    const cutAt = nowMs();
    await r.lab.cut(old.name, ['etcd']);
    const next = await waitForAcks(r, 1, { after: cutAt, by: (m) => m !== old.name, what: 'another member to take the writes' });
    await sleep(1000);
    const healAt = nowMs();
    await r.lab.heal(old.name);
    await verify(r, 'leader cut from etcd', healAt, { failoverMs: next.completeMs - cutAt });
  }, 120_000);

  it('the leader cut from the stream server only: it cannot append, so it must give up leadership and another member leads', async () => {
    const r = await startRun({ ttlSeconds: 2 });
    const old = ackingMember(r);
    const cutAt = nowMs();
    await r.lab.cut(old.name, ['redis']);
    const next = await waitForAcks(r, 1, { after: cutAt, by: (m) => m !== old.name, what: 'another member to take the writes while the leader cannot reach the stream server' });
    await sleep(1000);
    const healAt = nowMs();
    await r.lab.heal(old.name);
    await verify(r, 'leader cut from stream server', healAt, { failoverMs: next.completeMs - cutAt });
  }, 120_000);

  it('the leader cut from everything: another member leads; the old one comes back as a standby', async () => {
    const r = await startRun({ ttlSeconds: 2 });
    const old = ackingMember(r);
    const cutAt = nowMs();
    await r.lab.cut(old.name, 'all');
    const next = await waitForAcks(r, 1, { after: cutAt, by: (m) => m !== old.name, what: 'another member to take the writes' });
    await sleep(1000);
    const healAt = nowMs();
    await r.lab.heal(old.name);
    await verify(r, 'leader cut from everything', healAt, { failoverMs: next.completeMs - cutAt });
  }, 120_000);

  it("the leader's agent paused past the TTL while its master keeps taking requests: nothing is acknowledged under the old epoch after the new leader's", async () => {
    const r = await startRun({ ttlSeconds: 2 });
    const old = ackingMember(r);
    const pausedAt = nowMs();
    r.cluster.pauseAgent(old);
    const next = await waitForAcks(r, 1, { after: pausedAt, by: (m) => m !== old.name, what: 'another member to take the writes' });
    await sleep(r.ttlMs); // the old master keeps being asked meanwhile
    const healAt = nowMs();
    r.cluster.resumeAgent(old);
    await verify(r, 'leader agent paused', healAt, { failoverMs: next.completeMs - pausedAt });
  }, 120_000);

  it('a standby cut off from everything: the leader goes on alone; the standby catches up after the heal', async () => {
    const r = await startRun({ ttlSeconds: 2 });
    const leader = ackingMember(r);
    const standby = r.cluster.members.find((m) => m !== leader)!;
    const cutAt = nowMs();
    await r.lab.cut(standby.name, 'all');
    await sleep(2 * r.ttlMs + 1000);
    const healAt = nowMs();
    await r.lab.heal(standby.name);
    const during = acked(r).filter((o) => o.invokeMs >= cutAt && o.invokeMs < healAt);
    expect(during.length, 'writes acknowledged while the standby was cut off').toBeGreaterThan(20);
    expect([...new Set(during.map((o) => o.member))]).toEqual([leader.name]);
    await verify(r, 'standby cut off', healAt, { ackedDuringCut: during.length });
  }, 120_000);

  it('the stream server killed -9 and restarted empty under load: acknowledged writes survive, standbys converge', async () => {
    const restarted: { redis?: LocalStreamServer } = {};
    const r = await startRun({ ttlSeconds: 2, extra: [async () => restarted.redis?.stop()] });
    await waitForAcks(r, 200, { what: 'load before the kill' });
    const port = r.cluster.redis.port;
    const killAt = nowMs();
    r.cluster.redis.process.killNow('SIGKILL');
    await sleep(1000);
    const healAt = nowMs();
    restarted.redis = await startStreamServer({ kind: r.cluster.redis.kind, host: r.lab.hostAddress, port, workDir: r.cluster.workDir, name: 'redis-restarted' });
    const ackedBefore = acked(r).filter((o) => o.completeMs < killAt).length;
    await verify(r, 'stream server restarted empty', healAt, { ackedBeforeKill: ackedBefore });
  }, 120_000);

  it('etcd as 3 members: one killed changes nothing; two killed stop writes within the TTL + 2 etcd election timeouts; writes resume after the repair', async () => {
    const lab = await newLab();
    const workDir = fs.mkdtempSync('/tmp/hs-etcd3-');
    const etcd = await LocalEtcdCluster.start({ host: lab.hostAddress, workDir });
    const ttlSeconds = 5; // the claim "within the TTL" is about the default TTL
    const r = await startRun({ ttlSeconds, lab, etcdEndpoints: etcd.endpoints, extra: [() => etcd.stop(), async () => fs.rmSync(workDir, { recursive: true, force: true })] });
    const leader = ackingMember(r);

    const killOneAt = nowMs();
    etcd.kill(0);
    await sleep(r.ttlMs + 2000);
    const afterOne = acked(r).filter((o) => o.invokeMs >= killOneAt);
    const gaps = afterOne.slice(1).map((o, i) => o.completeMs - afterOne[i]!.completeMs);
    expect(new Set(afterOne.map((o) => o.member)), 'the leader with one etcd member gone').toEqual(new Set([leader.name]));
    expect(afterOne.length).toBeGreaterThan(20);

    const killTwoAt = nowMs();
    etcd.kill(1);
    await sleep(r.ttlMs + 2000);
    const lastAck = acked(r).at(-1)!;
    const stoppedAfterMs = lastAck.completeMs - killTwoAt;
    // The bound docs/faults.md and the chaos kind kill-etcd-quorum give: an
    // etcd leader without a quorum renews leases until it steps down, up to two
    // election timeouts later. Within the TTL alone held in most runs, but not
    // all (5.7 s at TTL 5 s once, in a full CI run).
    expect(stoppedAfterMs, 'the last write acknowledged after quorum loss (ms)').toBeLessThanOrEqual(r.ttlMs + 2 * ETCD_ELECTION_TIMEOUT_MS);

    const healAt = nowMs();
    await etcd.restart(0);
    await etcd.restart(1);
    await etcd.waitHealthy([0, 1, 2], 30_000);
    await verify(r, 'etcd 3 members, quorum lost', healAt, { maxGapOneDownMs: Math.max(0, ...gaps), writesStoppedAfterMs: stoppedAfterMs });
  }, 180_000);

  it('a flapping link (leader to every store, 500 ms down / 500 ms up for 8 s)', async () => {
    const r = await startRun({ ttlSeconds: 2 });
    const old = ackingMember(r);
    const stop = r.lab.flap(old.name, 'all', 500);
    await sleep(8000);
    await stop();
    const healAt = nowMs();
    await verify(r, 'flapping leader link', healAt);
  }, 120_000);

  it('200 ms delay from every member to etcd for 2 TTLs (default TTL 5 s): a slow link is not a failure: the leader keeps leading', async () => {
    const lab = await newLab();
    const etcd: LocalEtcd = await startEtcd({ host: lab.hostAddress });
    await lab.addTarget('etcd', etcd.clientPort, { delayable: true });
    // The default TTL (5 s): with a 2 s TTL, 200 ms more per round trip on
    // this loaded 2-core machine did make renewals (a new keepalive stream
    // each, timeout max(500 ms, TTL/3)) miss the local deadline now and then:
    // leadership churned. See docs/faults.md.
    const r = await startRun({ ttlSeconds: 5, lab, etcdEndpoints: etcd.endpoint, extra: [() => etcd.stop()] });
    const leader = ackingMember(r);
    const from = nowMs();
    for (const name of NAMES) lab.delay(name, 'etcd', 200);
    await sleep(2 * r.ttlMs);
    const healAt = nowMs();
    await lab.heal();
    const during = acked(r).filter((o) => o.invokeMs >= from && o.invokeMs < healAt);
    expect([...new Set(during.map((o) => o.member))]).toEqual([leader.name]);
    // Not even re-elected: one term throughout.
    expect(new Set(during.map((o) => o.epoch)).size, 'terms during the delay').toBe(1);
    expect(during.length).toBeGreaterThan(20);
    await verify(r, 'etcd delayed 200 ms', healAt, { ackedDuringDelay: during.length });
  }, 120_000);

  it('teardown leaves nothing behind, also when the process exits without it', async () => {
    const script = `
      import { NetLab } from ${JSON.stringify(path.resolve(import.meta.dirname, '../../src/chaos/netns.ts'))};
      const lab = await NetLab.create(['a', 'b']);
      await lab.cut('a', 'all');
      console.log(lab.tag);
      process.exit(3);`;
    const res = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000 });
    expect(res.status, res.stderr).toBe(3);
    const tag = res.stdout.trim();
    expect(tag).toMatch(/^[0-9a-f]{6}$/);
    const netns = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout;
    const links = spawnSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' }).stdout;
    expect(netns.includes(`hs${tag}-`) || links.includes(tag), `${netns}\n${links}`).toBe(false);
  }, 60_000);
});

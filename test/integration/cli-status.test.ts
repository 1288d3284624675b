import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Etcd3 } from 'etcd3';
import { Redis } from 'ioredis';
import { useStores } from '../harness/stores.ts';
import { readClusterView, parseEtcdEndpoints } from '../../src/lib/clusterview.ts';
import { formatAge, formatBytes, formatTable, renderClusterView, runStatus, type CommandIo } from '../../src/cli/commands/status.ts';
import { parseDuration, runSwitchover } from '../../src/cli/commands/switchover.ts';
import { UsageError } from '../../src/cli/command.ts';
import { etcdKeys, streamKeys, type ClusterRef } from '../../src/lib/keys.ts';
import { freePort } from '../../src/lib/ports.ts';
import type { LeaderRecord, MemberStatus, SnapshotDescriptor } from '../../src/agent/types.ts';
import { waitFor, withTimeout } from '../../src/lib/time.ts';

/** Collects what a command prints. */
function capture(signal: AbortSignal = new AbortController().signal): CommandIo & { stdout: string[]; stderr: string[] } {
  const stdout: string[] = [];
  const stderr: string[] = [];
  return { stdout, stderr, out: (t) => stdout.push(t), err: (t) => stderr.push(t), signal };
}

function member(name: string, over: Partial<MemberStatus> = {}): MemberStatus {
  return {
    member: name,
    role: 'standby',
    address: `10.0.0.${name.slice(-1)}:50051`,
    receivedSeq: 100,
    appliedSeq: 100,
    state: 'ok',
    lastHeartbeat: new Date().toISOString(),
    version: '0.1.0',
    ...over,
  };
}

describe('cluster view, status and switchover against a real etcd and redis-server', () => {
  const stores = useStores();
  let etcd: Etcd3;
  let redis: Redis;
  let n = 0;

  beforeAll(async () => {
    etcd = new Etcd3({ hosts: stores().etcd.endpoint });
    redis = new Redis(stores().redis.url, { lazyConnect: true });
    await redis.connect();
  });
  afterAll(() => {
    etcd.close();
    redis.disconnect();
  });

  /** Writes leader and member keys the way the agents do (JSON per types.ts); returns the leader record. */
  async function seed(ref: ClusterRef, opts: { leader?: string; members: MemberStatus[] }): Promise<LeaderRecord | undefined> {
    const keys = etcdKeys(ref);
    for (const m of opts.members) await etcd.put(keys.member(m.member)).value(JSON.stringify(m));
    if (!opts.leader) return undefined;
    return writeLeader(ref, opts.leader);
  }

  /** Replaces the leader key; the epoch is the new key's create revision, as the election does it. */
  async function writeLeader(ref: ClusterRef, name: string): Promise<LeaderRecord> {
    const keys = etcdKeys(ref);
    await etcd.delete().key(keys.leader);
    const provisional = { member: name, epoch: 0, address: `10.0.0.${name.slice(-1)}:50051`, since: new Date(Date.now() - 65_000).toISOString() };
    const res = await etcd.put(keys.leader).value(JSON.stringify(provisional));
    const record: LeaderRecord = { ...provisional, epoch: Number(res.header.revision) };
    await etcd.put(keys.leader).value(JSON.stringify(record));
    return record;
  }

  function fresh(): ClusterRef {
    return { namespace: 'ns', name: `cli-${++n}` };
  }

  it('reads leader, members with lag, the stream head, the newest snapshot and a pending switchover', async () => {
    const ref = fresh();
    const keys = etcdKeys(ref);
    const leader = await seed(ref, {
      leader: 'm-0',
      members: [
        member('m-2', { appliedSeq: 90, receivedSeq: 95, lastHeartbeat: new Date(Date.now() - 2500).toISOString() }),
        member('m-0', { role: 'leader', appliedSeq: 120, receivedSeq: 120 }),
        member('m-1', { appliedSeq: 118, receivedSeq: 120, state: 'resyncing' }),
      ],
    });
    await redis.set(streamKeys(ref).head, '120');
    await redis.set(streamKeys(ref).epoch, String(leader!.epoch));
    const snaps: SnapshotDescriptor[] = [
      { id: 'old', seq: 50, epoch: 3, chunks: 1, sizeBytes: 1000, crc: 1, createdAt: new Date(Date.now() - 600_000).toISOString() },
      { id: 'new', seq: 100, epoch: leader!.epoch, chunks: 2, sizeBytes: 3 * 1024 * 1024, crc: 2, createdAt: new Date(Date.now() - 30_000).toISOString() },
    ];
    await etcd.put(keys.snapshot).value(JSON.stringify(snaps));
    await etcd.put(keys.switchover).value(JSON.stringify({ target: 'm-1', requestedAt: new Date(Date.now() - 4000).toISOString() }));

    const view = await readClusterView({ etcd, cluster: ref, redis });
    expect(view.cluster).toBe(`ns/${ref.name}`);
    expect(view.leader).toMatchObject({ member: 'm-0', epoch: leader!.epoch, address: '10.0.0.0:50051' });
    expect(view.leader!.ageMs).toBeGreaterThanOrEqual(65_000);
    expect(view.members.map((m) => [m.member, m.isLeader, m.lag])).toEqual([
      ['m-0', true, 0],
      ['m-1', false, 2],
      ['m-2', false, 30],
    ]);
    expect(view.members[2]!.heartbeatAgeMs).toBeGreaterThanOrEqual(2500);
    expect(view.log).toEqual({ headSeq: 120, source: 'stream', fencingEpoch: leader!.epoch, length: 0 }); // the head key was set by hand: no entries in the stream
    expect(view.snapshot).toMatchObject({ id: 'new', seq: 100, sizeBytes: 3 * 1024 * 1024, kept: 2 });
    expect(view.switchover).toMatchObject({ target: 'm-1' });
    expect(view.switchover!.ageMs).toBeGreaterThanOrEqual(4000);
    expect(view.problems).toEqual([]);
    expect(view.etcdRevision).toBeGreaterThan(0);

    const text = renderClusterView(view);
    const lines = text.split('\n');
    expect(lines.find((l) => l.startsWith('LEADER'))).toMatch(new RegExp(`m-0  epoch ${leader!.epoch}  address 10\\.0\\.0\\.0:50051  since .* \\(1m0[5-9]s ago\\)`));
    expect(lines.find((l) => l.startsWith('LOG'))).toMatch(/head 120 {2}fencing epoch \d+/);
    expect(lines.find((l) => l.startsWith('SNAPSHOT'))).toMatch(/seq 100 {2}3\.0 MiB {2}age 3\ds {2}id new {2}\(2 kept\)/);
    expect(lines.find((l) => l.startsWith('SWITCHOVER'))).toMatch(/pending: to m-1, requested 4\.\ds ago/);
    const header = lines.findIndex((l) => l.includes('MEMBER'));
    expect(lines[header]).toMatch(/^\s+MEMBER\s+ROLE\s+APPLIED\s+LAG\s+STATE\s+HEARTBEAT AGE$/);
    expect(lines[header + 1]).toMatch(/^\*\s+m-0\s+leader\s+120\s+0\s+ok\s+\d+ms$/);
    expect(lines[header + 2]).toMatch(/^\s+m-1\s+standby\s+118\s+2\s+resyncing\s+\d+ms$/);
    expect(lines[header + 3]).toMatch(/^\s+m-2\s+standby\s+90\s+30\s+ok\s+2\.\ds$/);
    // Columns line up: every row has APPLIED starting where its header does.
    const col = lines[header]!.indexOf('APPLIED');
    for (const row of lines.slice(header + 1, header + 4)) expect(row.slice(col)).toMatch(/^\d/);
  });

  it('without the stream server estimates the head from the members, and reports what is odd', async () => {
    const ref = fresh();
    const keys = etcdKeys(ref);
    await seed(ref, { members: [member('m-1', { appliedSeq: 7, receivedSeq: 9 }), member('m-2', { appliedSeq: 5, receivedSeq: 5 })] });
    // A provisional record (epoch 0): the epoch is the key's create revision, as the election defines it.
    const created = await etcd.put(keys.leader).value(JSON.stringify({ member: 'm-9', epoch: 0, address: 'x:1', since: 'yesterday' }));
    await etcd.put(keys.member('broken')).value('not json');
    const view = await readClusterView({ etcd, cluster: ref });
    expect(view.leader?.epoch).toBe(Number(created.header.revision));
    expect(view.log).toEqual({ headSeq: 9, source: 'members', fencingEpoch: null });
    expect(view.members.map((m) => m.lag)).toEqual([2, 4]);
    expect(view.problems).toEqual([
      expect.stringMatching(/members\/broken key does not hold a JSON object/),
      expect.stringMatching(/leader m-9 has no member key/),
    ]);
    const text = renderClusterView(view);
    expect(text).toMatch(/head >= 9 \(the highest a member reports/);
    expect(text).toMatch(/since yesterday \(\? ago\)/);
    expect(text).toMatch(/^! the leader m-9 has no member key/m);

    const empty = await readClusterView({ etcd, cluster: fresh(), redis });
    expect(empty).toMatchObject({ leader: null, members: [], snapshot: null, switchover: null, log: { headSeq: 0, source: 'stream' } });
    expect(renderClusterView(empty)).toMatch(/LEADER\s+none[\s\S]*No members are registered/);
  });

  it('`status` prints the table, or one JSON object with --json', async () => {
    const ref = fresh();
    await seed(ref, { leader: 'm-0', members: [member('m-0', { role: 'leader' }), member('m-1')] });
    const base = ['--cluster', `ns/${ref.name}`, '--etcd', stores().etcd.endpoint, '--redis', stores().redis.url];
    const table = capture();
    expect(await runStatus(base, table)).toBe(0);
    expect(table.stdout.join('\n')).toMatch(/^\*\s+m-0\s+leader/m);
    const json = capture();
    expect(await runStatus([...base, '--json'], json)).toBe(0);
    const parsed = JSON.parse(json.stdout.join('\n')) as { leader: { member: string }; members: Array<{ member: string }> };
    expect(parsed.leader.member).toBe('m-0');
    expect(parsed.members.map((m) => m.member)).toEqual(['m-0', 'm-1']);
  });

  it('`status` with an unreachable stream server still shows etcd\'s part and says what is missing', async () => {
    const ref = fresh();
    await seed(ref, { leader: 'm-0', members: [member('m-0', { role: 'leader', appliedSeq: 5, receivedSeq: 5 })] });
    const io = capture();
    const started = Date.now();
    const code = await runStatus(['--cluster', `ns/${ref.name}`, '--etcd', stores().etcd.endpoint, '--redis', `redis://127.0.0.1:${await freePort()}`], io);
    expect(code).toBe(0);
    expect(Date.now() - started).toBeLessThan(15_000);
    const out = io.stdout.join('\n');
    expect(out).toMatch(/^\*\s+m-0\s+leader\s+5/m);
    expect(out).toMatch(/head >= 5 \(the highest a member reports/);
    expect(out).toMatch(/^! cannot read the log head from the stream server at 127\.0\.0\.1:\d+: /m);
  });

  it('`status --watch` redraws every second until the signal', async () => {
    const ref = fresh();
    await seed(ref, { leader: 'm-0', members: [member('m-0', { role: 'leader' })] });
    const controller = new AbortController();
    const io = capture(controller.signal);
    const run = runStatus(['--cluster', `ns/${ref.name}`, '--etcd', stores().etcd.endpoint, '--watch'], io);
    await waitFor(() => io.stdout.length >= 2, { timeoutMs: 15_000, what: 'two frames' });
    controller.abort();
    expect(await withTimeout(run, 5000, 'status --watch to stop')).toBe(0);
    expect(io.stdout.every((frame) => /CLUSTER\s+ns\/cli-/.test(frame))).toBe(true);
  });

  it('`status --watch --json` prints one JSON object a line, an error object while etcd is unreachable', async () => {
    const dead = `http://127.0.0.1:${await freePort()}`;
    const controller = new AbortController();
    const io = capture(controller.signal);
    const run = runStatus(['--cluster', 'ns/x', '--etcd', dead, '--watch', '--json'], io);
    await waitFor(() => io.stdout.length >= 2, { timeoutMs: 20_000, what: 'two frames' });
    controller.abort();
    expect(await withTimeout(run, 10_000, 'status --watch to stop')).toBe(0);
    for (const line of io.stdout) expect((JSON.parse(line) as { error: string }).error).toContain(`${dead} (--etcd)`);
  });

  it('`status` names the endpoint and the flag when etcd cannot be reached, within a bound', async () => {
    const dead = `http://127.0.0.1:${await freePort()}`;
    const io = capture();
    const started = Date.now();
    expect(await runStatus(['--cluster', 'ns/x', '--etcd', dead], io)).toBe(1);
    expect(Date.now() - started).toBeLessThan(15_000);
    expect(io.stderr.join('\n')).toContain(`cannot read from etcd at ${dead} (--etcd)`);
  });

  it('bad flags are usage errors naming the flag', async () => {
    const io = capture();
    await expect(runStatus(['--etcd', stores().etcd.endpoint], io)).rejects.toThrow(/--cluster is required/);
    await expect(runStatus(['--cluster', 'justname', '--etcd', stores().etcd.endpoint], io)).rejects.toThrow(/--cluster: cluster must be "namespace\/name"/);
    await expect(runStatus(['--cluster', 'a/b', '--etcd', 'localhost'], io)).rejects.toThrow(/--etcd: each endpoint must look like http:\/\/host:port/);
    await expect(runStatus(['--cluster', 'a/b', '--etcd', stores().etcd.endpoint, '--redis', 'localhost:6379'], io)).rejects.toThrow(/--redis must look like/);
    await expect(runStatus(['--cluster', 'a/b', '--bogus'], io)).rejects.toBeInstanceOf(UsageError);
    expect(() => parseEtcdEndpoints('http://a:1, https://b:2')).not.toThrow();
    expect(parseEtcdEndpoints('http://a:1, https://b:2')).toEqual(['http://a:1', 'https://b:2']);
  });

  it('`switchover` to an unknown member lists the members and writes nothing', async () => {
    const ref = fresh();
    const keys = etcdKeys(ref);
    await seed(ref, { leader: 'm-0', members: [member('m-0', { role: 'leader' }), member('m-1'), member('m-2', { role: 'candidate' })] });
    const before = (await etcd.getAll().prefix(keys.prefix).exec()).header.revision;
    const io = capture();
    const base = ['--cluster', `ns/${ref.name}`, '--etcd', stores().etcd.endpoint];
    expect(await runSwitchover([...base, '--to', 'm-7'], io)).toBe(2);
    expect(io.stderr.join('\n')).toMatch(/member "m-7" is not in cluster ns\/cli-\d+; members: m-0 \(leader\), m-1 \(standby\), m-2 \(candidate\)/);
    // A member that is not a standby is refused too.
    const notStandby = capture();
    expect(await runSwitchover([...base, '--to', 'm-2'], notStandby)).toBe(2);
    expect(notStandby.stderr.join('\n')).toMatch(/m-2 is candidate, not a standby/);
    // Nothing was written: no switchover key, and etcd's revision did not move.
    expect(await etcd.get(keys.switchover).string()).toBeNull();
    expect((await etcd.getAll().prefix(keys.prefix).exec()).header.revision).toBe(before);
    // The target already leads: nothing to do.
    const already = capture();
    expect(await runSwitchover([...base, '--to', 'm-0'], already)).toBe(0);
    expect(already.stdout.join('\n')).toMatch(/m-0 already leads/);
    await expect(runSwitchover(base, capture())).rejects.toThrow(/--to is required/);
    await expect(runSwitchover([...base, '--to', 'm-1', '--timeout', '5 parsecs'], capture())).rejects.toThrow(/--timeout must be a duration/);
  });

  it('`switchover` refuses while another request is pending, unless --force', async () => {
    const ref = fresh();
    const keys = etcdKeys(ref);
    await seed(ref, { leader: 'm-0', members: [member('m-0', { role: 'leader' }), member('m-1'), member('m-2')] });
    const pending = JSON.stringify({ target: 'm-2', requestedAt: new Date().toISOString() });
    await etcd.put(keys.switchover).value(pending);
    const io = capture();
    expect(await runSwitchover(['--cluster', `ns/${ref.name}`, '--etcd', stores().etcd.endpoint, '--to', 'm-1'], io)).toBe(1);
    expect(io.stderr.join('\n')).toMatch(/a switchover to m-2 requested .* ago is still pending; .* --force/);
    expect(await etcd.get(keys.switchover).string()).toBe(pending);
    // --force replaces it (seen here while the command waits; nobody acts on it, so it times out and withdraws).
    const forced = capture();
    const run = runSwitchover(['--cluster', `ns/${ref.name}`, '--etcd', stores().etcd.endpoint, '--to', 'm-1', '--force', '--timeout', '2s'], forced);
    const replaced = await waitFor(
      async () => {
        const v = await etcd.get(keys.switchover).string();
        return v && v !== pending ? v : undefined;
      },
      { timeoutMs: 5000, what: 'the forced request' },
    );
    expect(JSON.parse(replaced)).toMatchObject({ target: 'm-1' });
    expect(await run).toBe(1);
    expect(forced.stdout.join('\n')).toMatch(/requested switchover .* -> m-1/);
    expect(await etcd.get(keys.switchover).string()).toBeNull();
  });

  it('`switchover` writes the request, waits for the target to lead, and reports how long it took', async () => {
    const ref = fresh();
    const keys = etcdKeys(ref);
    const old = await seed(ref, { leader: 'm-0', members: [member('m-0', { role: 'leader' }), member('m-1'), member('m-2')] });
    // Stand-in for the leader's agent: on a request, resign; the target then takes over and clears the request.
    const seen: string[] = [];
    const watcher = await etcd.watch().key(keys.switchover).create();
    watcher.on('put', (kv) => {
      const request = JSON.parse(kv.value.toString()) as { target: string; requestedAt: string };
      seen.push(request.target);
      void (async () => {
        await new Promise((r) => setTimeout(r, 300));
        await etcd.delete().key(keys.leader);
        await new Promise((r) => setTimeout(r, 300));
        await writeLeader(ref, request.target);
        await etcd.delete().key(keys.switchover);
      })();
    });
    try {
      const io = capture();
      const code = await runSwitchover(['--cluster', `ns/${ref.name}`, '--etcd', stores().etcd.endpoint, '--to', 'm-2', '--timeout', '20s'], io);
      const out = io.stdout.join('\n');
      expect(code, io.stderr.join('\n')).toBe(0);
      expect(seen).toEqual(['m-2']);
      expect(out).toMatch(new RegExp(`requested switchover of ns/${ref.name}: m-0 \\(epoch ${old!.epoch}\\) -> m-2`));
      expect(out).toMatch(/m-0 resigned; waiting for m-2 to take over/);
      expect(out).toMatch(/switchover complete: m-2 leads ns\/cli-\d+ \(epoch \d+\) after \d+ms|switchover complete: m-2 leads ns\/cli-\d+ \(epoch \d+\) after \d\.\ds/);
      const leader = JSON.parse((await etcd.get(keys.leader).string())!) as LeaderRecord;
      expect(leader.member).toBe('m-2');
    } finally {
      await watcher.cancel();
    }
  });

  it('`switchover` times out with exit 1, withdraws its request and prints the current state', async () => {
    const ref = fresh();
    const keys = etcdKeys(ref);
    await seed(ref, { leader: 'm-0', members: [member('m-0', { role: 'leader' }), member('m-1')] });
    const io = capture();
    const started = Date.now();
    const code = await runSwitchover(['--cluster', `ns/${ref.name}`, '--etcd', stores().etcd.endpoint, '--to', 'm-1', '--timeout', '1500ms'], io);
    expect(code).toBe(1);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1500);
    expect(Date.now() - started).toBeLessThan(10_000);
    const err = io.stderr.join('\n');
    expect(err).toMatch(/timed out after 1\.5s waiting for m-1 to lead; the request was withdrawn/);
    expect(err).toMatch(/^\*\s+m-0\s+leader/m);
    expect(await etcd.get(keys.switchover).string()).toBeNull();
  });

  it('`switchover` reports a leader that declined the request', async () => {
    const ref = fresh();
    const keys = etcdKeys(ref);
    await seed(ref, { leader: 'm-0', members: [member('m-0', { role: 'leader' }), member('m-1')] });
    const watcher = await etcd.watch().key(keys.switchover).create();
    watcher.on('put', () => {
      setTimeout(() => void etcd.delete().key(keys.switchover).exec(), 300);
    });
    try {
      const io = capture();
      expect(await runSwitchover(['--cluster', `ns/${ref.name}`, '--etcd', stores().etcd.endpoint, '--to', 'm-1', '--timeout', '20s'], io)).toBe(1);
      expect(io.stderr.join('\n')).toMatch(/the leader m-0 declined or abandoned the switchover/);
    } finally {
      await watcher.cancel();
    }
  });
});

describe('formatting helpers', () => {
  it('formats ages, sizes, durations and tables', () => {
    expect([formatAge(null), formatAge(850), formatAge(4200), formatAge(12_000), formatAge(185_000), formatAge(7_620_000), formatAge(3 * 86_400_000 + 4 * 3_600_000)]).toEqual([
      '?', '850ms', '4.2s', '12s', '3m05s', '2h07m', '3d04h',
    ]);
    expect([formatBytes(500), formatBytes(1536), formatBytes(3 * 1024 * 1024), formatBytes(200 * 1024 * 1024 * 1024)]).toEqual(['500 B', '1.5 KiB', '3.0 MiB', '200 GiB']);
    expect([parseDuration('30s', '--t'), parseDuration('1500ms', '--t'), parseDuration('2m', '--t'), parseDuration('45', '--t')]).toEqual([30_000, 1500, 120_000, 45_000]);
    expect(() => parseDuration('10ms', '--timeout')).toThrow(/--timeout must be a duration from 1s to 1h/);
    expect(formatTable(['A', 'LONG'], [['xx', '1'], ['y', '22']])).toBe('A   LONG\nxx  1\ny   22');
  });
});

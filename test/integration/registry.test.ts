// The member registry against a real etcd: keys appear under the member's own
// lease, heartbeat, coalesce bursts, vanish on stop(), and come back after the
// lease is lost.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Etcd3 } from 'etcd3';
import { EtcdHttpClient } from '../../src/lib/etcd-http/client.ts';
import type { KeyValue } from '../../src/lib/etcd-http/types.ts';
import { useStores } from '../harness/stores.ts';
import { MemberRegistry, type MemberFields } from '../../src/agent/registry.ts';
import { etcdKeys, type EtcdKeys } from '../../src/lib/keys.ts';
import { createLogger } from '../../src/lib/log.ts';
import { sleep, waitFor } from '../../src/lib/time.ts';
import type { MemberStatus } from '../../src/agent/types.ts';

const stores = useStores();

let clients: Array<EtcdHttpClient | Etcd3> = [];
let registries: MemberRegistry[] = [];
let clusterSeq = 0;

afterEach(async () => {
  await Promise.all(registries.map((r) => r.stop()));
  for (const c of clients) c.close();
  registries = [];
  clients = [];
});

function client(): EtcdHttpClient {
  const etcd = new EtcdHttpClient({ endpoints: [stores().etcd.endpoint] });
  clients.push(etcd);
  return etcd;
}

/** An etcd3 client, for what the agent's client does not do (lease time-to-live). */
function grpcClient(): Etcd3 {
  const etcd = new Etcd3({ hosts: stores().etcd.endpoint });
  clients.push(etcd);
  return etcd;
}

function newCluster(): EtcdKeys {
  clusterSeq++;
  return etcdKeys({ namespace: 'registry-test', name: `c${clusterSeq}` });
}

function registry(keys: EtcdKeys, member: string, opts: { ttl?: number } = {}): MemberRegistry {
  const r = new MemberRegistry({
    etcd: client(),
    keys,
    member,
    version: '9.9.9',
    leaseTtlSeconds: opts.ttl ?? 2,
    log: createLogger({ component: 'registry-test', member, level: process.env.TEST_LOG_LEVEL ?? 'silent' }),
  });
  registries.push(r);
  return r;
}

const initial: MemberFields = { role: 'standby', address: 'x:1', receivedSeq: 0, appliedSeq: 0, state: 'ok' };

async function readKey(etcd: EtcdHttpClient, key: string): Promise<KeyValue | undefined> {
  return (await etcd.range({ key })).kvs[0];
}

function statusOf(kv: KeyValue | undefined): MemberStatus | undefined {
  return kv ? (JSON.parse(kv.value.toString()) as MemberStatus) : undefined;
}

describe('member registry', () => {
  it('publishes the status under its own lease, heartbeats, and vanishes at once on stop()', async () => {
    const keys = newCluster();
    const probe = client();
    const a = registry(keys, 'pod-a');
    await a.start({ ...initial, address: 'pod-a:7000' });
    const first = await readKey(probe, keys.member('pod-a'));
    expect(first).toBeDefined();
    expect(first!.lease).not.toBe('0');
    expect(statusOf(first)).toMatchObject({ member: 'pod-a', role: 'standby', address: 'pod-a:7000', version: '9.9.9', appliedSeq: 0 });

    // Heartbeat: rewritten at least once a second with an advancing lastHeartbeat, same lease.
    await sleep(2300);
    const later = await readKey(probe, keys.member('pod-a'));
    expect(Number(later!.mod_revision)).toBeGreaterThan(Number(first!.mod_revision));
    expect(Number(later!.version) - Number(first!.version)).toBeGreaterThanOrEqual(2);
    expect(Date.parse(statusOf(later)!.lastHeartbeat)).toBeGreaterThan(Date.parse(statusOf(first)!.lastHeartbeat));
    expect(later!.lease).toBe(first!.lease);

    await a.stop();
    expect(await readKey(probe, keys.member('pod-a'))).toBeUndefined();
    // The lease itself is gone, not just the key.
    const ttl = await grpcClient().leaseClient.leaseTimeToLive({ ID: first!.lease });
    expect(Number(ttl.TTL)).toBeLessThanOrEqual(0);
  });

  it('writes a change promptly and coalesces a burst into a few writes', async () => {
    const keys = newCluster();
    const probe = client();
    const a = registry(keys, 'pod-a');
    await a.start(initial);
    const before = await readKey(probe, keys.member('pod-a'));
    const changedAt = Date.now();
    a.update({ appliedSeq: 1 });
    await waitFor(async () => statusOf(await readKey(probe, keys.member('pod-a')))?.appliedSeq === 1, {
      timeoutMs: 600,
      intervalMs: 10,
      what: 'the change in etcd',
    });
    expect(Date.now() - changedAt).toBeLessThan(600); // not waiting for the heartbeat

    const burstStart = await readKey(probe, keys.member('pod-a'));
    for (let seq = 2; seq <= 200; seq++) {
      a.update({ appliedSeq: seq, receivedSeq: seq });
      await sleep(1);
    }
    await waitFor(async () => statusOf(await readKey(probe, keys.member('pod-a')))?.appliedSeq === 200, {
      timeoutMs: 2000,
      intervalMs: 10,
      what: 'the last value of the burst',
    });
    const burstEnd = await readKey(probe, keys.member('pod-a'));
    const writes = Number(burstEnd!.version) - Number(burstStart!.version);
    // ~200+ ms of updates at <= one write per 100 ms, plus maybe a heartbeat.
    const elapsed = Date.now() - changedAt;
    expect(writes).toBeGreaterThanOrEqual(1);
    expect(writes).toBeLessThanOrEqual(Math.ceil(elapsed / 100) + 2);
    expect(writes).toBeLessThan(50);
    expect(before).toBeDefined();
  });

  it('members() is a live view that includes self; onChange fires when others come and go', async () => {
    const keys = newCluster();
    const a = registry(keys, 'pod-a');
    const b = registry(keys, 'pod-b');
    await a.start({ ...initial, appliedSeq: 5 });
    expect(a.members().map((m) => m.member)).toEqual(['pod-a']);
    const seen: string[][] = [];
    a.onChange((members) => seen.push(members.map((m) => m.member)));
    await b.start({ ...initial, appliedSeq: 7 });
    await waitFor(() => a.members().some((m) => m.member === 'pod-b'), { timeoutMs: 2000, what: 'a to see b' });
    expect(a.members().map((m) => [m.member, m.appliedSeq])).toEqual([
      ['pod-a', 5],
      ['pod-b', 7],
    ]);
    expect(b.members().map((m) => m.member)).toEqual(['pod-a', 'pod-b']);
    expect(seen.some((names) => names.includes('pod-b'))).toBe(true);

    b.update({ appliedSeq: 42, role: 'candidate' });
    await waitFor(() => a.members().find((m) => m.member === 'pod-b')?.appliedSeq === 42, { timeoutMs: 2000, what: 'a to see b applied 42' });
    expect(a.members().find((m) => m.member === 'pod-b')?.role).toBe('candidate');

    // Self is always the local, freshest status.
    a.update({ appliedSeq: 6 });
    expect(a.members().find((m) => m.member === 'pod-a')?.appliedSeq).toBe(6);

    const leftAt = Date.now();
    await b.stop();
    await waitFor(() => !a.members().some((m) => m.member === 'pod-b'), { timeoutMs: 2000, what: 'a to see b leave' });
    expect(Date.now() - leftAt).toBeLessThan(2000); // the revoked lease removes the key at once
    expect(seen.at(-1)).toEqual(['pod-a']);
  });

  it('a member that dies without stop() drops out after its lease TTL', async () => {
    const keys = newCluster();
    const a = registry(keys, 'pod-a');
    const doomedClient = new EtcdHttpClient({ endpoints: [stores().etcd.endpoint] });
    const b = new MemberRegistry({ etcd: doomedClient, keys, member: 'pod-b', version: '1', leaseTtlSeconds: 2, log: createLogger({ component: 't', level: 'silent' }) });
    await a.start(initial);
    await b.start(initial);
    await waitFor(() => a.members().some((m) => m.member === 'pod-b'), { timeoutMs: 2000, what: 'a to see b' });
    const diedAt = Date.now();
    doomedClient.close(); // no revoke, no more heartbeats
    await waitFor(() => !a.members().some((m) => m.member === 'pod-b'), { timeoutMs: 8000, what: 'b to expire' });
    const gone = Date.now() - diedAt;
    expect(gone).toBeGreaterThan(1000); // it stayed while its lease was alive
    expect(gone).toBeLessThan(2000 + 4000);
    await b.stop(); // releases its timers; its calls fail fast on the closed client
  });

  it('re-registers with a new lease when its lease is revoked behind its back', async () => {
    const keys = newCluster();
    const probe = client();
    const a = registry(keys, 'pod-a');
    await a.start(initial);
    const before = await readKey(probe, keys.member('pod-a'));
    await probe.leaseRevoke(before!.lease);
    expect(await readKey(probe, keys.member('pod-a'))).toBeUndefined();
    const after = await waitFor(async () => readKey(probe, keys.member('pod-a')), { timeoutMs: 5000, intervalMs: 50, what: 'the key to come back' });
    expect(after.lease).not.toBe(before!.lease);
    expect(statusOf(after)).toMatchObject({ member: 'pod-a', role: 'standby' });
  });

  it('comes back after etcd was unreachable for longer than the lease TTL', async () => {
    const keys = newCluster();
    const probe = client();
    const a = registry(keys, 'pod-a', { ttl: 2 });
    await a.start(initial);
    const before = await readKey(probe, keys.member('pod-a'));
    const etcdProcess = stores().etcd.process;
    etcdProcess.killNow('SIGSTOP');
    try {
      a.update({ appliedSeq: 77 }); // made while etcd is away
      await sleep(3500);
    } finally {
      etcdProcess.killNow('SIGCONT');
    }
    const after = await waitFor(
      async () => {
        const kv = await readKey(probe, keys.member('pod-a'));
        return statusOf(kv)?.appliedSeq === 77 ? kv : undefined;
      },
      { timeoutMs: 20_000, intervalMs: 100, what: 'the key with the update made during the outage' },
    );
    // Still there a TTL later: it is kept alive, not a leftover about to expire.
    await sleep(2500);
    const still = await readKey(probe, keys.member('pod-a'));
    expect(still).toBeDefined();
    expect(Number(still!.mod_revision)).toBeGreaterThan(Number(after.mod_revision));
    expect(before).toBeDefined();
  });

  it('start() rides out an etcd that stalls during the first registration (it retries instead of giving up)', async () => {
    const keys = newCluster();
    const probe = client();
    const a = registry(keys, 'pod-slow', { ttl: 2 });
    const etcdProcess = stores().etcd.process;
    etcdProcess.killNow('SIGSTOP');
    let started: Promise<void>;
    try {
      started = a.start(initial);
      // Longer than one attempt (lease grant and write, 2 s each): the first attempt fails.
      await sleep(6000);
    } finally {
      etcdProcess.killNow('SIGCONT');
    }
    await started;
    expect(statusOf(await readKey(probe, keys.member('pod-slow')))?.role).toBe('standby');
  });

  it('start() fails with a clear error when etcd cannot be reached, and leaves nothing running', async () => {
    const keys = newCluster();
    const dead = new EtcdHttpClient({ endpoints: ['http://127.0.0.1:1'], callTimeoutMs: 500 });
    const r = new MemberRegistry({
      etcd: dead,
      keys,
      member: 'pod-z',
      version: '1',
      leaseTtlSeconds: 2,
      callTimeoutMs: 500,
      registerTimeoutMs: 1500,
      log: createLogger({ component: 't', level: 'silent' }),
    });
    try {
      await expect(r.start(initial)).rejects.toThrow(/could not register pod-z/);
      expect(r.members()).toEqual([]);
    } finally {
      await r.stop();
      dead.close();
    }
  });

  it('stop() leaves nothing running: a process using the registry exits by itself', async () => {
    const script = `
      import { EtcdHttpClient } from ${JSON.stringify(path.resolve('src/lib/etcd-http/client.ts'))};
      import { MemberRegistry } from ${JSON.stringify(path.resolve('src/agent/registry.ts'))};
      import { etcdKeys } from ${JSON.stringify(path.resolve('src/lib/keys.ts'))};
      import { silentLogger } from ${JSON.stringify(path.resolve('src/lib/log.ts'))};
      const etcd = new EtcdHttpClient({ endpoints: [${JSON.stringify(stores().etcd.endpoint)}] });
      const r = new MemberRegistry({ etcd, keys: etcdKeys({ namespace: 'registry-test', name: 'exit' }), member: 'x', version: '1',
        leaseTtlSeconds: 2, log: silentLogger() });
      await r.start({ role: 'standby', address: 'x:1', receivedSeq: 0, appliedSeq: 0, state: 'ok' });
      r.update({ appliedSeq: 3 });
      await new Promise((res) => setTimeout(res, 1200));
      await r.stop();
      etcd.close();
      console.log('done', r.members().length);
    `;
    const out = await new Promise<string>((resolve, reject) => {
      const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
      let text = '';
      child.stdout.on('data', (d: Buffer) => (text += d.toString()));
      child.stderr.on('data', (d: Buffer) => (text += d.toString()));
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`the process did not exit within 15 s (a timer, watch or lease loop kept it alive):\n${text}`));
      }, 15_000);
      child.on('exit', (code) => {
        clearTimeout(timer);
        if (code === 0) resolve(text);
        else reject(new Error(`exit ${code}: ${text}`));
      });
    });
    expect(out).toContain('done 0');
    expect(await readKey(client(), etcdKeys({ namespace: 'registry-test', name: 'exit' }).member('x'))).toBeUndefined();
  });
});

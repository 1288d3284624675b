// The stream server comes back from an older copy: kill -9, then a restart
// that loads its last save (a restarted Dragonfly pod loads its last cron
// snapshot). The epoch key in the copy is the current one, so the leader's
// appends used to be accepted at sequence numbers it had already handed out;
// its master refused them out of order and left write mode while its agent
// kept leading, and no write was acknowledged again. Now the append script
// refuses a head below what the writer already wrote, the leader steps down,
// and the next one raises the head above everything it applied.
import { Redis } from 'ioredis';
import { afterEach, expect, it } from 'vitest';
import { LocalCluster, type Member } from '../../src/demo/localcluster.ts';
import { sleep, waitFor } from '../../src/lib/time.ts';
import { describeEachStreamServer } from '../harness/stores.ts';

let cluster: LocalCluster | undefined;
afterEach(async () => {
  await cluster?.stop();
  cluster = undefined;
});

async function put(m: Member, key: string, value: string): Promise<number> {
  try {
    const res = await fetch(`http://${m.kvAddress}/kv/${encodeURIComponent(key)}`, { method: 'PUT', body: value, signal: AbortSignal.timeout(3000) });
    await res.text();
    return res.status;
  } catch {
    return 0;
  }
}

async function get(m: Member, key: string): Promise<{ status: number; value?: string }> {
  const res = await fetch(`http://${m.kvAddress}/kv/${encodeURIComponent(key)}`, { signal: AbortSignal.timeout(3000) });
  const body = await res.text();
  return res.status === 200 ? { status: 200, value: (JSON.parse(body) as { value: string }).value } : { status: res.status };
}

describeEachStreamServer('a stream server back from an older copy', (streamServer) => {
  it('the leader steps down instead of reusing sequence numbers; writes resume, nothing acknowledged is lost, standbys converge', async () => {
    const c = await LocalCluster.start({ members: 3, leaseTtlSeconds: 2, streamServer, logLevel: 'warn' });
    cluster = c;
    const acked = new Map<string, string>();
    const leader = await c.waitForLeader();
    for (let i = 0; i < 40; i++) {
      expect(await put(leader, `before-${i}`, `v${i}`)).toBe(200);
      acked.set(`before-${i}`, `v${i}`);
    }
    const admin = new Redis(c.redis.url, { maxRetriesPerRequest: 1 });
    try {
      await admin.save();
    } finally {
      admin.disconnect();
    }
    for (let i = 0; i < 40; i++) {
      expect(await put(leader, `after-${i}`, `w${i}`)).toBe(200);
      acked.set(`after-${i}`, `w${i}`);
    }

    await c.restartRedisFromLastSave();

    // Writes resume: some member acknowledges a new write.
    let writer: Member | undefined;
    await waitFor(
      async () => {
        const l = await c.leader();
        if (l && (await put(l, 'resumed', 'yes')) === 200) writer = l;
        else await sleep(200);
        return writer !== undefined;
      },
      { timeoutMs: 30_000, intervalMs: 0, what: 'a write acknowledged after the stream server came back from an older copy' },
    );
    acked.set('resumed', 'yes');
    for (let i = 0; i < 20; i++) {
      expect(await put(writer!, `later-${i}`, `x${i}`)).toBe(200);
      acked.set(`later-${i}`, `x${i}`);
    }

    // Nothing acknowledged is lost, on the leader.
    const missing: string[] = [];
    for (const [key, value] of acked) {
      const r = await get(writer!, key);
      if (r.value !== value) missing.push(`${key}: ${r.status} ${r.value}`);
    }
    expect(missing).toEqual([]);

    // Every standby converges to the leader's applied sequence.
    const target = (await c.masterStatus(writer!))!.appliedSeq;
    await waitFor(
      async () => {
        for (const m of c.members) if (((await c.masterStatus(m))?.appliedSeq ?? -1) < target) return false;
        return true;
      },
      { timeoutMs: 30_000, what: `every member's master to apply up to ${target}` },
    );
  });
});

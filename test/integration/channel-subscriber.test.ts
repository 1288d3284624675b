// The leader's subscription to its standbys' acknowledgements (sync mode) on a
// real redis-server that goes away and comes back. The subscriber renews the
// subscription itself after a reconnect; closing it in the moment it
// resubscribes (a leader fenced by a restarted stream server does exactly
// that) must not leave a rejection nobody handles: with ioredis's own
// resubscription that ended the whole agent with "Connection is closed."
import { RespClient } from '../../src/lib/resp/client.ts';
import { afterEach, expect, it } from 'vitest';
import { subscribeToChannel } from '../../src/agent/channel-subscriber.ts';
import { removeWorkDir, startStreamServer, type LocalStreamServer } from '../../src/lib/localstores.ts';
import { silentLogger } from '../../src/lib/log.ts';
import { replyGate } from '../harness/reply-gate.ts';
import { sleep, waitFor, withTimeout } from '../../src/lib/time.ts';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function server(port?: number): Promise<LocalStreamServer> {
  const s = await startStreamServer({ kind: 'redis', ...(port ? { port } : {}) });
  cleanups.push(async () => {
    await s.stop();
    removeWorkDir(s);
  });
  return s;
}

function client(url: string): RespClient {
  const r = RespClient.fromUrl(url, { commandTimeoutMs: 5000, retryDelayMs: () => 50 });
  r.on('error', () => undefined);
  cleanups.push(() => r.disconnect());
  return r;
}

/** Unhandled rejections seen while `body` runs and for a moment after. */
async function unhandledDuring(body: () => Promise<void>): Promise<unknown[]> {
  const seen: unknown[] = [];
  const onUnhandled = (reason: unknown): void => {
    seen.push(reason);
  };
  // vitest's own listener would fail the run with a message that hides which test; count them here instead.
  const others = process.listeners('unhandledRejection');
  process.removeAllListeners('unhandledRejection');
  process.on('unhandledRejection', onUnhandled);
  try {
    await body();
    await sleep(300);
  } finally {
    process.off('unhandledRejection', onUnhandled);
    for (const l of others) process.on('unhandledRejection', l);
  }
  return seen;
}

it('closing the subscriber while its resubscription after a reconnect is unanswered rejects nothing unhandled', async () => {
  const store = await server();
  const gate = await replyGate(store.port, (c) => cleanups.push(c));
  const redis = client(gate.url);
  const sub = await subscribeToChannel({ redis, channel: 'acks', onMessage: () => undefined, timeoutMs: 5000, log: silentLogger() });
  cleanups.push(() => sub.close());
  const seen = await unhandledDuring(async () => {
    // 'ready' reaches this listener a tick after the reconnect sent its
    // SUBSCRIBE, before any reply can be read: muting the replies here
    // leaves the SUBSCRIBE in flight when we close, as when a leader is
    // fenced by a stream server that restarted under it.
    const reconnected = new Promise<void>((resolve) =>
      sub.connection.once('ready', () => {
        gate.mute();
        sub.close();
        resolve();
      }),
    );
    gate.dropAll();
    await withTimeout(reconnected, 10_000, 'the subscriber to reconnect');
    await waitFor(() => sub.connection.status === 'end', { timeoutMs: 5000, what: 'the subscriber connection to end' });
  });
  expect(seen).toEqual([]);
});

it('messages published after a server restart still arrive (the subscription is renewed)', async () => {
  const first = await server();
  const redis = client(first.url);
  const got: string[] = [];
  const sub = await subscribeToChannel({ redis, channel: 'acks', onMessage: (m) => got.push(m), timeoutMs: 5000, log: silentLogger() });
  cleanups.push(() => sub.close());
  const port = first.port;
  await first.stop();
  const second = await server(port);
  const publisher = client(second.url);
  await waitFor(async () => (await publisher.publish('acks', 'after-restart')) > 0 && got.includes('after-restart'), {
    timeoutMs: 10_000,
    what: 'a message published after the restart to arrive',
  });
  sub.close();
  expect(got).toContain('after-restart');
});

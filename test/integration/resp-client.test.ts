// The agent's stream-server client on a real redis-server and Dragonfly: the
// replies the agent reads come back in the shapes it expects, and a
// connection that dies, goes mute or is closed fails what it carried at once,
// never sends anything twice, and comes back on its own.
import net from 'node:net';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { ReplyError, RespClient } from '../../src/lib/resp/client.ts';
import { removeWorkDir, startStreamServer, type LocalStreamServer } from '../../src/lib/localstores.ts';
import { sleep, waitFor, withTimeout } from '../../src/lib/time.ts';
import { describeEachStreamServer } from '../harness/stores.ts';
import { replyGate } from '../harness/reply-gate.ts';

describeEachStreamServer('RespClient', (kind) => {
  let server: LocalStreamServer;
  const cleanups: Array<() => Promise<void> | void> = [];
  let n = 0;
  const key = (name: string): string => `resp-test:${++n}:${name}`;

  const client = (url = server.url, overrides: Parameters<typeof RespClient.fromUrl>[1] = {}): RespClient => {
    const c = RespClient.fromUrl(url, { commandTimeoutMs: 5000, connectTimeoutMs: 3000, retryDelayMs: () => 50, ...overrides });
    c.on('error', () => undefined);
    cleanups.push(() => c.disconnect());
    return c;
  };

  beforeAll(async () => {
    server = await startStreamServer({ kind });
  });
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });
  afterAll(async () => {
    await server?.stop();
    if (server) removeWorkDir(server);
  });

  it('answers in the shapes the agent reads: strings, integers, nulls, stream entries, Buffers', async () => {
    const c = client();
    const k = key('shapes');
    expect(await c.ping()).toBe('PONG');
    expect(await c.set(k, 'héllo')).toBe('OK');
    expect(await c.get(k)).toBe('héllo');
    expect(await c.get(key('missing'))).toBeNull();
    expect(await c.mget(k, key('missing'))).toEqual(['héllo', null]);
    const binary = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    await c.set(k, binary);
    expect(Buffer.compare((await c.getBuffer(k))!, binary)).toBe(0);
    const log = key('log');
    await c.call('XADD', log, '1-0', 'e', '1', 'o', 'put');
    await c.call('XADD', log, '2-0', 'e', '1', 'o', 'del');
    expect(await c.xlen(log)).toBe(2);
    expect(await c.xrange(log, '-', '+', 'COUNT', 1)).toEqual([['1-0', ['e', '1', 'o', 'put']]]);
    expect(await c.xread('COUNT', 10, 'STREAMS', log, '1-0')).toEqual([[log, [['2-0', ['e', '1', 'o', 'del']]]]]);
    expect(await c.xread('COUNT', 10, 'BLOCK', 50, 'STREAMS', log, '2-0')).toBeNull();
    expect(await c.xtrim(log, 'MINID', '2-0')).toBe(1);
    expect(await c.del(k, log)).toBe(2);
  });

  it('a server error rejects with a ReplyError whose message starts with its code', async () => {
    const c = client();
    const err = await c.evalsha('0'.repeat(40), 0).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ReplyError);
    expect((err as Error).name).toBe('ReplyError');
    expect((err as Error).message).toMatch(/^NOSCRIPT/);
    const sha = await c.scriptLoad("return {KEYS[1], ARGV[1], 7}");
    expect(await c.evalsha(sha, 1, 'k', 'v')).toEqual(['k', 'v', 7]);
    // The connection goes on after an error.
    expect(await c.ping()).toBe('PONG');
  });

  it('a pipeline keeps order over a thousand commands, and one failing command fails only its own slot', async () => {
    const c = client();
    const k = key('pipe');
    const p = c.pipeline();
    for (let i = 0; i < 1000; i++) p.add('RPUSH', k, String(i));
    p.add('INCR', k); // WRONGTYPE: k is a list
    p.add('LLEN', k);
    const results = await p.exec();
    expect(results.slice(0, 1000).map(([err, v]) => [err, v])).toEqual(Array.from({ length: 1000 }, (_, i) => [null, i + 1]));
    expect(results[1000]![0]).toBeInstanceOf(ReplyError);
    expect(results[1000]![0]!.message).toMatch(/^WRONGTYPE/);
    expect(results[1001]).toEqual([null, 1000]);
  });

  it('large replies arrive whole: a 4 MB value and 5 000 stream entries', async () => {
    const c = client();
    const big = Buffer.alloc(4 * 1024 * 1024);
    for (let i = 0; i < big.length; i += 4) big.writeUInt32LE(i, i);
    const k = key('big');
    await c.set(k, big);
    expect(Buffer.compare((await c.getBuffer(k))!, big)).toBe(0);
    const log = key('many');
    const p = c.pipeline();
    for (let i = 1; i <= 5000; i++) p.add('XADD', log, `${i}-0`, 'p', `payload-${i}`);
    expect((await p.exec()).every(([err]) => err === null)).toBe(true);
    const entries = await c.xrange(log, '-', '+');
    expect(entries).toHaveLength(5000);
    expect(entries[4999]).toEqual(['5000-0', ['p', 'payload-5000']]);
    await c.del(k, log);
  });

  it('connects on the first command when connect() was not called', async () => {
    const c = client();
    expect(c.status).toBe('wait');
    expect(await c.ping()).toBe('PONG');
    expect(c.status).toBe('ready');
  });

  it('delivers messages to a subscribed connection', async () => {
    const sub = client();
    const pub = client();
    const got: Array<[string, string]> = [];
    sub.on('message', (channel: string, message: string) => got.push([channel, message]));
    const channel = key('chan');
    await sub.subscribe(channel);
    for (let i = 0; i < 100; i++) await pub.publish(channel, `m${i}`);
    await waitFor(() => got.length === 100, { timeoutMs: 5000, what: '100 messages' });
    expect(got.map(([, m]) => m)).toEqual(Array.from({ length: 100 }, (_, i) => `m${i}`));
    expect(new Set(got.map(([c]) => c))).toEqual(new Set([channel]));
  });

  it('a connection that dies fails the command it carried with "Connection is closed.", does not resend it, and comes back', async () => {
    const gate = await replyGate(server.port, (c) => cleanups.push(c));
    const c = client(gate.url);
    const k = key('once');
    expect(await c.ping()).toBe('PONG');
    gate.mute();
    const inFlight = c.call('INCR', k);
    await sleep(100); // the INCR reached the server; its reply was swallowed
    const readies = new Promise<void>((resolve) => c.once('ready', () => resolve()));
    gate.dropAll();
    await expect(inFlight).rejects.toThrow(/^Connection is closed\./);
    gate.unmute();
    await withTimeout(readies, 5000, 'the client to reconnect');
    // The server ran the INCR once, and it was not sent again on the new connection.
    const check = client();
    await sleep(200);
    expect(await check.get(k)).toBe('1');
    expect(await c.ping()).toBe('PONG');
  });

  it('a mute server: the command times out, the connection is replaced, later commands work', async () => {
    const gate = await replyGate(server.port, (c) => cleanups.push(c));
    const c = client(gate.url, { commandTimeoutMs: 300 });
    expect(await c.ping()).toBe('PONG');
    gate.mute();
    const started = Date.now();
    await expect(c.ping()).rejects.toThrow(/Command timed out: PING/);
    expect(Date.now() - started).toBeLessThan(3000);
    // The mute connection was dropped; the gate mutes new ones too, so the next one times out as well,
    // on a fresh connection: the gate accepted a second one.
    await waitFor(() => gate.accepted() >= 2, { timeoutMs: 5000, what: 'a new connection after the timeout' });
  });

  it('commands issued while the server is away fail within their bound, and work again once it is back', async () => {
    const own = await startStreamServer({ kind, name: `${kind}-away` });
    cleanups.push(async () => {
      await own.stop();
      removeWorkDir(own);
    });
    const c = client(own.url, { commandTimeoutMs: 1000 });
    expect(await c.ping()).toBe('PONG');
    const port = own.port;
    await own.stop();
    const started = Date.now();
    await expect(c.ping()).rejects.toThrow(/Connection is closed|ECONNREFUSED|Command timed out/);
    expect(Date.now() - started).toBeLessThan(3000);
    const again = await startStreamServer({ kind, name: `${kind}-back`, port });
    cleanups.push(async () => {
      await again.stop();
      removeWorkDir(again);
    });
    await waitFor(async () => (await c.ping().catch(() => 'down')) === 'PONG', { timeoutMs: 10_000, what: 'the client to reach the restarted server' });
  });

  it('connect() during a reconnect delay connects now, and the delay does not open a second connection', async () => {
    const gate = await replyGate(server.port, (c) => cleanups.push(c));
    const c = client(gate.url, { retryDelayMs: () => 500 });
    expect(await c.ping()).toBe('PONG');
    gate.dropAll();
    await waitFor(() => c.status === 'reconnecting', { timeoutMs: 2000, what: 'the drop to be seen' });
    await c.connect();
    expect(gate.accepted()).toBe(2);
    await sleep(800); // past the reconnect delay
    expect(gate.accepted()).toBe(2);
    expect(await c.ping()).toBe('PONG');
  });

  it('disconnect() fails what is pending, refuses what comes after, and never reconnects', async () => {
    const gate = await replyGate(server.port, (c) => cleanups.push(c));
    const c = client(gate.url);
    expect(await c.ping()).toBe('PONG');
    gate.mute();
    const pending = c.ping();
    await sleep(50);
    c.disconnect();
    await expect(pending).rejects.toThrow(/^Connection is closed\./);
    await expect(c.ping()).rejects.toThrow(/^Connection is closed\./);
    expect(c.status).toBe('end');
    await sleep(300);
    expect(gate.accepted()).toBe(1);
    await expect(c.connect()).rejects.toThrow(/Connection is closed/);
  });

  it('connect() rejects at once on a refused port, and within connectTimeoutMs on a server that never answers', async () => {
    const refused = client('redis://127.0.0.1:1');
    await expect(refused.connect()).rejects.toThrow(/ECONNREFUSED/);
    const silent = net.createServer(() => undefined); // accepts, never answers
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const accepted: net.Socket[] = [];
    silent.on('connection', (s) => accepted.push(s));
    cleanups.push(
      () =>
        new Promise<void>((resolve) => {
          for (const s of accepted) s.destroy();
          silent.close(() => resolve());
        }),
    );
    const { port } = silent.address() as net.AddressInfo;
    const hung = client(`redis://:secret@127.0.0.1:${port}`, { connectTimeoutMs: 300 });
    const started = Date.now();
    await expect(hung.connect()).rejects.toThrow(/ETIMEDOUT.*300 ms/);
    expect(Date.now() - started).toBeLessThan(2000);
  });
});

it('a reply that is not RESP2 fails the command in flight as a closed connection (its outcome is unknown), then reconnects', async () => {
  // No real server sends such bytes; a TCP stand-in answers the first command with them, later ones properly.
  let connections = 0;
  const sockets: net.Socket[] = [];
  const fake = net.createServer((s) => {
    sockets.push(s);
    const first = ++connections === 1;
    s.on('data', () => s.write(first ? '%1\r\n' : '+PONG\r\n'));
  });
  await new Promise<void>((resolve) => fake.listen(0, '127.0.0.1', resolve));
  const { port } = fake.address() as net.AddressInfo;
  const c = RespClient.fromUrl(`redis://127.0.0.1:${port}`, { commandTimeoutMs: 2000, retryDelayMs: () => 50 });
  c.on('error', () => undefined);
  try {
    // The agent's append path treats "Connection is closed" as "may have run: look the batch up".
    await expect(c.call('INCR', 'k')).rejects.toThrow(/^Connection is closed\. \(unexpected reply type byte 0x25/);
    await waitFor(async () => (await c.ping().catch(() => 'down')) === 'PONG', { timeoutMs: 5000, what: 'the client to reconnect' });
    expect(connections).toBe(2);
  } finally {
    c.disconnect();
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => fake.close(() => resolve()));
  }
});

it('a stream server URL that is not redis:// or rediss:// is refused with the fix', () => {
  expect(() => RespClient.fromUrl('http://127.0.0.1:6379')).toThrow(/must start with redis:\/\/ or rediss:\/\//);
  expect(() => RespClient.fromUrl('not a url')).toThrow(/is not a URL; use redis:\/\/host:port/);
  expect(() => RespClient.fromUrl('redis://127.0.0.1:6379/x')).toThrow(/database number/);
});

// A TCP proxy in front of a stream server, for tests of what a client does
// when its connection dies or its replies stop coming.
import net from 'node:net';

export interface ReplyGate {
  url: string;
  /** Destroys every proxied connection: the server, as clients see it, died. */
  dropAll(): void;
  /** From now on the server's replies are swallowed; requests still reach it. */
  mute(): void;
  /** Replies pass again. */
  unmute(): void;
  /** Connections accepted so far. */
  accepted(): number;
}

/**
 * A TCP proxy to the server that can drop every connection (the server, as
 * the client sees it, died) and can go mute (the server's replies stop
 * arriving), so a command can be left in flight at a chosen moment.
 * `onCleanup` receives what closes it, for the test's afterEach.
 */
export async function replyGate(upstreamPort: number, onCleanup: (close: () => Promise<void>) => void): Promise<ReplyGate> {
  const sockets = new Set<net.Socket>();
  let muted = false;
  let accepted = 0;
  const proxy = net.createServer((client) => {
    accepted++;
    const upstream = net.connect(upstreamPort, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => {
        sockets.delete(s);
        client.destroy();
        upstream.destroy();
      });
    }
    client.on('data', (d) => upstream.write(d));
    upstream.on('data', (d) => {
      if (!muted) client.write(d);
    });
    client.on('end', () => client.destroy());
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  onCleanup(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        proxy.close(() => resolve());
      }),
  );
  const { port } = proxy.address() as net.AddressInfo;
  return {
    url: `redis://127.0.0.1:${port}`,
    dropAll: () => {
      for (const s of sockets) s.destroy();
    },
    mute: () => {
      muted = true;
    },
    unmute: () => {
      muted = false;
    },
    accepted: () => accepted,
  };
}

// A TCP proxy that holds every chunk for `delayMs` before passing it on, in
// both directions and in order: added latency on one link, where the kernel
// has no tc netem. The delay can change at any time without breaking
// connections (chunks already held keep their release time; order is kept).
import net from 'node:net';

export interface DelayProxyOptions {
  listenHost: string;
  target: { host: string; port: number };
  delayMs?: number;
}

export class DelayProxy {
  delayMs: number;
  readonly port: number;
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();

  private constructor(server: net.Server, port: number, delayMs: number) {
    this.server = server;
    this.port = port;
    this.delayMs = delayMs;
  }

  static async start(opts: DelayProxyOptions): Promise<DelayProxy> {
    const server = net.createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, opts.listenHost, () => resolve());
    });
    const proxy = new DelayProxy(server, (server.address() as net.AddressInfo).port, opts.delayMs ?? 0);
    server.on('connection', (client) => proxy.accept(client, opts.target));
    return proxy;
  }

  private accept(client: net.Socket, target: { host: string; port: number }): void {
    const upstream = net.connect(target);
    for (const s of [client, upstream]) {
      this.sockets.add(s);
      s.setNoDelay(true);
      s.on('close', () => {
        this.sockets.delete(s);
        client.destroy();
        upstream.destroy();
      });
      s.on('error', () => undefined); // 'close' follows and tears both down
    }
    this.pipe(client, upstream);
    this.pipe(upstream, client);
  }

  /** from → to, each chunk released at arrival + delay, never before an earlier one. */
  private pipe(from: net.Socket, to: net.Socket): void {
    const held: Array<{ at: number; data: Buffer | null }> = [];
    let timer: NodeJS.Timeout | undefined;
    const release = (): void => {
      timer = undefined;
      const now = performance.now();
      while (held.length > 0 && held[0]!.at <= now) {
        const { data } = held.shift()!;
        if (data === null) to.end();
        else if (!to.destroyed) to.write(data);
      }
      if (held.length > 0) timer = setTimeout(release, Math.max(0, held[0]!.at - performance.now()));
    };
    const hold = (data: Buffer | null): void => {
      const last = held.at(-1)?.at ?? 0;
      held.push({ at: Math.max(last, performance.now() + this.delayMs), data });
      if (this.delayMs === 0 && held.length === 1) return release();
      timer ??= setTimeout(release, Math.max(0, held[0]!.at - performance.now()));
    };
    from.on('data', (d: Buffer) => hold(d));
    from.on('end', () => hold(null));
    from.on('close', () => {
      if (timer) clearTimeout(timer);
    });
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

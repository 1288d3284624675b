// A Redis-protocol pub/sub subscription that survives the server going away.
//
// Why not ioredis's own autoResubscribe: on reconnect it sends SUBSCRIBE from
// its ready handler and never handles that command's promise. If the
// connection closes before the reply (the server restarts again, or we stop
// the subscriber in that moment, which is exactly when a leader is fenced by
// a restarted stream server), the promise rejects with "Connection is
// closed." and nothing catches it: an unhandled rejection that ends the agent
// process. A chaos run with restart-stream-server killed an agent this way.
// Here the resubscription is ours, and its failure is logged, not thrown:
// the next reconnect subscribes again.
import type { Redis } from 'ioredis';
import type { Logger } from '../lib/log.ts';
import { withTimeout } from '../lib/time.ts';

export interface ChannelSubscriber {
  /** The subscription's own connection, for its events (tests watch its reconnects). */
  readonly connection: Redis;
  /** Ends the subscription and its connection. Idempotent. */
  close(): void;
}

/**
 * Opens a connection of its own (a subscribed connection can send nothing else)
 * and subscribes to `channel`; resolves once the first SUBSCRIBE is answered,
 * rejects (and closes) if that takes longer than `timeoutMs`.
 */
export async function subscribeToChannel(opts: {
  redis: Redis;
  channel: string;
  onMessage: (message: string) => void;
  timeoutMs: number;
  log: Logger;
}): Promise<ChannelSubscriber> {
  const { channel, log } = opts;
  const conn = opts.redis.duplicate({ autoResubscribe: false });
  let closed = false;
  let connectedBefore = false;
  const close = (): void => {
    if (closed) return;
    closed = true;
    conn.disconnect();
  };
  conn.on('error', (err: Error) => log.debug({ err: err.message, channel }, 'subscription connection error'));
  conn.on('message', (_channel: string, message: string) => opts.onMessage(message));
  conn.on('ready', () => {
    // The first 'ready' is the initial subscribe's; later ones are reconnects.
    if (!connectedBefore) {
      connectedBefore = true;
      return;
    }
    if (closed) return;
    conn.subscribe(channel).then(
      () => log.debug({ channel }, 'subscribed again after a reconnect'),
      (err: Error) => log.debug({ err: err.message, channel }, 'subscribing again failed; the next reconnect retries'),
    );
  });
  try {
    await withTimeout(conn.subscribe(channel), opts.timeoutMs, `subscribing to ${channel}`);
  } catch (err) {
    close();
    throw err;
  }
  return { connection: conn, close };
}

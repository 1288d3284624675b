// A Redis-protocol pub/sub subscription that survives the server going away.
//
// The client does not resubscribe on its own after a reconnect; this does,
// on every 'ready' after the first. A resubscription can fail (the
// connection closes again before the reply: the server restarts again, or we
// stop the subscriber in that moment, which is exactly when a leader is fenced
// by a restarted stream server); the failure is logged, never thrown, and
// the next reconnect subscribes again. (ioredis's autoResubscribe left that
// promise unhandled, and the unhandled rejection ended an agent in a chaos run.)
import type { RespClient } from '../lib/resp/client.ts';
import type { Logger } from '../lib/log.ts';
import { withTimeout } from '../lib/time.ts';

export interface ChannelSubscriber {
  /** The subscription's own connection, for its events (tests watch its reconnects). */
  readonly connection: RespClient;
  /** Ends the subscription and its connection. Idempotent. */
  close(): void;
}

/**
 * Opens a connection of its own (a subscribed connection can send nothing else)
 * and subscribes to `channel`; resolves once the first SUBSCRIBE is answered,
 * rejects (and closes) if that takes longer than `timeoutMs`.
 */
export async function subscribeToChannel(opts: {
  redis: RespClient;
  channel: string;
  onMessage: (message: string) => void;
  timeoutMs: number;
  log: Logger;
}): Promise<ChannelSubscriber> {
  const { channel, log } = opts;
  const conn = opts.redis.duplicate();
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

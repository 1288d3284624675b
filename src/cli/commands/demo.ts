// `hotstandby demo`: the live demo (see src/demo/run.ts).
import type { Command } from '../command.ts';
import { UsageError, intFlag, parseFlags } from '../command.ts';

const help = `Usage: hotstandby demo [--members 3] [--lease-ttl 5] [--interval 8] [--rate 200]
                       [--failovers N] [--switchovers M] [--stream-server dragonfly|redis]
                       [--replication async|sync] [--json]

Starts etcd (found on PATH) and a stream server as child processes: Dragonfly
when scripts/build-dragonfly.sh has built it, else redis-server (on PATH). Then three
kvmaster+agent pairs and a steady write load; kills the leader (kill -9) every
--interval seconds, restarts it as a standby, and shows live who leads, each
member's lag, each failover's duration and the count of acknowledged writes
lost (checked against the new leader after every failover; it must stay 0).
Ctrl-C stops everything and prints a summary; no child process is left behind.

Options:
  --members N        member pairs, 2-7 (default 3)
  --lease-ttl S      leader lease TTL in seconds, 2-60 (default 5, as in production)
  --interval S       seconds of steady load between a recovery and the next kill (default 8)
  --rate N           writes per second (default 200)
  --failovers N      stop after N failovers (default: run until Ctrl-C)
  --switchovers M    then do M planned switchovers (default 0)
  --stream-server K  dragonfly or redis (default: Dragonfly when built, else redis;
                     [HOTSTANDBY_STREAM_SERVER])
  --replication async|sync
                     sync: a write is acknowledged only once a standby holds it (docs/replication.md)
  --json             no live view: progress on stderr, one JSON summary on stdout
                     {failovers, switchovers, ackedWrites, failedWrites, lostWrites,
                      failoverMs {p50,p99,max}, switchoverMs, leaseTtlSeconds, members,
                      streamServer};
                     exit code 1 when any acknowledged write was lost

Examples:
  hotstandby demo
  hotstandby demo --failovers 20 --lease-ttl 2 --interval 1 --json`;

function replicationFlag(raw: string | undefined): 'async' | 'sync' {
  if (raw === undefined || raw === 'async' || raw === 'sync') return raw ?? 'async';
  throw new UsageError(`--replication must be async or sync, got ${JSON.stringify(raw)}`);
}

export const demoCommand: Command = {
  name: 'demo',
  help,
  async run(argv) {
    const values: Record<string, string | boolean | undefined> = parseFlags(argv, {
      members: { type: 'string' },
      'lease-ttl': { type: 'string' },
      interval: { type: 'string' },
      rate: { type: 'string' },
      failovers: { type: 'string' },
      switchovers: { type: 'string' },
      'stream-server': { type: 'string' },
      replication: { type: 'string' },
      json: { type: 'boolean' },
    });
    const str = (k: string): string | undefined => values[k] as string | undefined;
    const json = values.json === true;
    const opts = {
      members: intFlag(str('members'), 'members', 2, 7, 3),
      leaseTtlSeconds: intFlag(str('lease-ttl'), 'lease-ttl', 2, 60, 5),
      intervalSeconds: intFlag(str('interval'), 'interval', 0, 3600, 8),
      rate: intFlag(str('rate'), 'rate', 1, 20_000, 200),
      switchovers: intFlag(str('switchovers'), 'switchovers', 0, 1000, 0),
      replication: replicationFlag(str('replication')),
      ...(str('failovers') !== undefined ? { failovers: intFlag(str('failovers'), 'failovers', 0, 10_000, 0) } : {}),
    };
    const { runDemo } = await import('../../demo/run.ts');
    const { MissingBinaryError, DragonflyNotBuiltError, InvalidStreamServerError, parseStreamServerKind } = await import('../../lib/localstores.ts');
    const kind = str('stream-server');
    let streamServer;
    try {
      streamServer = kind === undefined ? undefined : parseStreamServerKind(kind, '--stream-server');
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    const stop = new AbortController();
    const onSignal = (): void => stop.abort();
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    const live = !json && process.stdout.isTTY;
    try {
      const summary = await runDemo({
        ...opts,
        ...(streamServer ? { streamServer } : {}),
        ...(live ? { screen: process.stdout } : {}),
        progress: (line) => process.stderr.write(`${line}\n`),
        signal: stop.signal,
      });
      if (json) process.stdout.write(`${JSON.stringify(summary)}\n`);
      else {
        process.stdout.write(
          `\nsummary: ${summary.failovers} failovers (p50 ${summary.failoverMs?.p50 ?? '-'} ms, max ${summary.failoverMs?.max ?? '-'} ms), ` +
            `${summary.ackedWrites} writes acknowledged, ${summary.lostWrites} lost\n`,
        );
      }
      return summary.lostWrites === 0 ? 0 : 1;
    } catch (err) {
      if (err instanceof MissingBinaryError || err instanceof DragonflyNotBuiltError || err instanceof InvalidStreamServerError) {
        throw new UsageError(err.message);
      }
      throw err;
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  },
};

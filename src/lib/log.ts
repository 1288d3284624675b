// One way to make loggers, so every line carries the same identifying fields.
// Lines that concern a cluster carry `cluster` (namespace/name), lines that
// concern a member carry `member`, and lines written while an epoch is known
// carry `epoch` (bind it with logger.child({ epoch })).
import { pino, type Logger, type LoggerOptions, type DestinationStream } from 'pino';

export type { Logger } from 'pino';

export interface LoggerContext {
  component: string;
  cluster?: string;
  member?: string;
  level?: string;
  /** Where lines go; defaults to stdout. Tests pass a stream to capture lines. */
  destination?: DestinationStream;
}

export function createLogger(ctx: LoggerContext): Logger {
  const options: LoggerOptions = {
    level: ctx.level ?? process.env.HOTSTANDBY_LOG_LEVEL ?? 'info',
    base: {
      component: ctx.component,
      ...(ctx.cluster ? { cluster: ctx.cluster } : {}),
      ...(ctx.member ? { member: ctx.member } : {}),
    },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  return ctx.destination ? pino(options, ctx.destination) : pino(options);
}

/** A logger that drops everything: for library code called without one. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

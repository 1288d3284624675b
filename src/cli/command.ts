// The shape every `hotstandby <command>` implements. Each command lives in its
// own file under commands/ and is listed once, with its one-line summary, in
// commands/index.ts, which imports the file only when the command is used.
import type { ParseArgsOptionsConfig } from 'node:util';

const { parseArgs } = process.getBuiltinModule('node:util');

export interface Command {
  name: string;
  /** Full text for `hotstandby <name> --help`: usage line, options, examples. */
  help: string;
  /** Runs the command; resolves to the process exit code. */
  run(argv: string[]): Promise<number>;
}

/** A user-facing error: printed without a stack trace, exit code 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export function wantsHelp(argv: readonly string[]): boolean {
  return argv.includes('--help') || argv.includes('-h');
}

/** Parses `--flag value` options strictly (no positionals); a bad flag is a UsageError naming it. */
export function parseFlags<const O extends ParseArgsOptionsConfig>(argv: string[], options: O) {
  try {
    return parseArgs({ args: argv, options, strict: true, allowPositionals: false }).values;
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

/** An integer flag within [min, max], or `fallback` when absent; otherwise a UsageError naming the flag and the range. */
export function intFlag(value: string | undefined, name: string, min: number, max: number, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) throw new UsageError(`--${name} must be an integer from ${min} to ${max}, got ${JSON.stringify(value)}`);
  return n;
}

// The shape every `hotstandby <command>` implements. Each command lives in its
// own file under commands/ and is listed once in commands/index.ts.

export interface Command {
  name: string;
  /** One line for `hotstandby --help`. */
  summary: string;
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

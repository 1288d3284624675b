// Child processes that are always cleaned up: output goes to a log file, stop()
// sends SIGTERM and then SIGKILL after a grace period, and every child still
// running when this process exits is killed (so Ctrl-C or a failing test never
// leaves etcd, redis or an agent behind).
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { withTimeout } from './time.ts';

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface StartOptions {
  /** Short name used in errors and log file names. */
  name: string;
  command: string;
  args: readonly string[];
  /** File that receives stdout and stderr (appended). */
  logFile: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

const live = new Set<ManagedProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // 'exit' handlers must be synchronous: SIGKILL is the only thing we can still do.
  process.on('exit', () => {
    for (const child of live) child.killNow('SIGKILL');
  });
}

export class ManagedProcess {
  readonly name: string;
  readonly logFile: string;
  readonly child: ChildProcess;
  readonly exited: Promise<ExitStatus>;
  private exitStatus: ExitStatus | undefined;

  constructor(opts: StartOptions) {
    installExitHook();
    this.name = opts.name;
    this.logFile = opts.logFile;
    fs.mkdirSync(path.dirname(opts.logFile), { recursive: true });
    const fd = fs.openSync(opts.logFile, 'a');
    try {
      this.child = spawn(opts.command, [...opts.args], {
        stdio: ['ignore', fd, fd],
        env: opts.env ?? process.env,
        cwd: opts.cwd,
      });
    } finally {
      fs.closeSync(fd);
    }
    live.add(this);
    this.exited = new Promise((resolve) => {
      this.child.once('error', (err) => {
        fs.appendFileSync(opts.logFile, `\n[spawn error] ${err.message}\n`);
        this.exitStatus = { code: -1, signal: null };
        live.delete(this);
        resolve(this.exitStatus);
      });
      this.child.once('exit', (code, signal) => {
        this.exitStatus = { code, signal };
        live.delete(this);
        resolve(this.exitStatus);
      });
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get running(): boolean {
    return this.exitStatus === undefined;
  }

  /** Sends a signal if the process still runs; returns whether it was sent. */
  killNow(signal: NodeJS.Signals): boolean {
    if (!this.running) return false;
    try {
      return this.child.kill(signal);
    } catch {
      return false;
    }
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
  async stop(graceMs = 5000): Promise<ExitStatus> {
    if (!this.running) return this.exitStatus!;
    this.killNow('SIGCONT'); // a SIGSTOPped child cannot act on SIGTERM
    this.killNow('SIGTERM');
    try {
      return await withTimeout(this.exited, graceMs, `${this.name} to exit after SIGTERM`);
    } catch {
      this.killNow('SIGKILL');
      return await withTimeout(this.exited, 5000, `${this.name} to exit after SIGKILL`);
    }
  }

  /** The last `lines` lines of the log file, for error messages. */
  tail(lines = 20): string {
    try {
      const text = fs.readFileSync(this.logFile, 'utf8');
      return text.split('\n').slice(-lines - 1).join('\n');
    } catch {
      return '(no log)';
    }
  }
}

/** Resolves an executable on PATH, or undefined. */
export function findOnPath(command: string): string | undefined {
  if (command.includes('/')) return fs.existsSync(command) ? command : undefined;
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, command);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** Stops every child this process started; for shutdown paths. */
export async function stopAllChildren(graceMs = 5000): Promise<void> {
  await Promise.all([...live].map((child) => child.stop(graceMs).catch(() => undefined)));
}

/** Whether a process with this pid exists (signal 0 checks without sending). */
export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

// Runs the linearizability checker (tools/linearizability, Porcupine) on a
// history file written by ./history.ts. The binary is built and cached by
// scripts/build-linearizability.sh in
//   ${HOTSTANDBY_CACHE:-~/.cache/hotstandby}/linearizability-<porcupine version>/linearizability
// ($HOTSTANDBY_LINEARIZABILITY names another binary). When it is missing and
// the repository's build script is at hand, the script builds it (Go needed).
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const BUILD_SCRIPT = path.join(ROOT, 'scripts', 'build-linearizability.sh');

export interface LinearizabilityResult {
  /** "unknown" when the check ran out of time. */
  linearizable: boolean | 'unknown';
  ops: number;
  keys: number;
  failingKeys: string[];
  /** Porcupine's HTML page of the failing keys, written next to the history; null when linearizable. */
  visualization: string | null;
  /** Ops left out as definitely refused, and ops whose outcome is unknown. */
  refused: number;
  unknown: number;
}

/** Where scripts/build-linearizability.sh puts the binary. */
export function checkerPath(): string {
  if (process.env.HOTSTANDBY_LINEARIZABILITY) return process.env.HOTSTANDBY_LINEARIZABILITY;
  const gomod = fs.readFileSync(path.join(ROOT, 'tools', 'linearizability', 'go.mod'), 'utf8');
  const version = /^require github\.com\/anishathalye\/porcupine (v[0-9.]+)$/m.exec(gomod)?.[1];
  if (!version) throw new Error('tools/linearizability/go.mod does not pin github.com/anishathalye/porcupine');
  const cache = process.env.HOTSTANDBY_CACHE ?? path.join(process.env.HOME ?? '/root', '.cache', 'hotstandby');
  return path.join(cache, `linearizability-${version}`, 'linearizability');
}

function run(file: string, args: string[], timeoutMs: number): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') return reject(new Error(`${path.basename(file)}: ${err.message}\n${stderr}`));
      resolve({ code: typeof err?.code === 'number' ? err.code : 0, stdout, stderr });
    });
  });
}

/** The checker binary, built first when it is missing and the build script is at hand. */
export async function ensureChecker(): Promise<string> {
  const bin = checkerPath();
  if (fs.existsSync(bin)) return bin;
  if (process.env.HOTSTANDBY_LINEARIZABILITY || !fs.existsSync(BUILD_SCRIPT)) {
    throw new Error(`the linearizability checker ${bin} is missing; build it with: bash scripts/build-linearizability.sh`);
  }
  const built = await run('bash', [BUILD_SCRIPT], 600_000);
  if (built.code !== 0 || !fs.existsSync(bin)) throw new Error(`building the linearizability checker failed:\n${built.stderr}`);
  return bin;
}

/**
 * Checks a history file. On failure the checker writes its visualization next
 * to the history (history.jsonl -> history.html). `timeoutMs` bounds the
 * search (the result is then "unknown"); the process gets a little longer.
 */
export async function checkHistory(historyFile: string, opts: { timeoutMs?: number } = {}): Promise<LinearizabilityResult> {
  const bin = await ensureChecker();
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const { code, stdout, stderr } = await run(bin, ['--timeout', `${timeoutMs}ms`, historyFile], timeoutMs + 30_000);
  if (code !== 0 && code !== 1 && code !== 3) throw new Error(`the linearizability checker refused ${historyFile}: ${stderr.trim()}`);
  const line = stdout.trim().split('\n').at(-1) ?? '';
  try {
    return JSON.parse(line) as LinearizabilityResult;
  } catch {
    throw new Error(`the linearizability checker printed no result for ${historyFile} (exit ${code}): ${stderr.trim()}`);
  }
}

// The `hotstandby` command as a user runs it: the real bin script in a child
// process, on the pinned Node.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { commands } from '../../src/cli/commands/index.ts';

const run = promisify(execFile);
const bin = path.resolve(import.meta.dirname, '../../bin/hotstandby.js');

async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [bin, ...args], { env: { ...process.env, HOTSTANDBY_FROM_SOURCE: '1' } });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe('hotstandby CLI', () => {
  it('lists every command in --help', async () => {
    const { code, stdout } = await cli(['--help']);
    expect(code).toBe(0);
    expect(stdout).toMatch(/^Usage: hotstandby <command>/);
    for (const command of commands) expect(stdout).toContain(command.name);
  });

  it('gives --help for every command, with a usage line', async () => {
    for (const command of commands) {
      const { code, stdout } = await cli([command.name, '--help']);
      expect(code, command.name).toBe(0);
      expect(stdout, command.name).toMatch(new RegExp(`Usage: hotstandby ${command.name}`));
    }
  });

  it('each listed command loads the module of the same name', async () => {
    for (const entry of commands) expect((await entry.load()).name).toBe(entry.name);
  });

  it('loads no npm package for --help, and only the asked command\'s module', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hs-cli-trace-'));
    try {
      const trace = path.join(dir, 'modules');
      const tracer = path.resolve(import.meta.dirname, '../harness/module-trace.mjs');
      await run(process.execPath, ['--import', tracer, bin, 'agent', '--help'], { env: { ...process.env, HOTSTANDBY_FROM_SOURCE: '1', HOTSTANDBY_MODULE_TRACE: trace } });
      const loaded = fs.readFileSync(trace, 'utf8').split('\n').filter(Boolean);
      expect(loaded.some((u) => u.endsWith('/src/cli/commands/agent.ts'))).toBe(true);
      expect(loaded.filter((u) => u.includes('/node_modules/'))).toEqual([]);
      expect(loaded.filter((u) => /\/src\/cli\/commands\/(?!agent\.ts|index\.ts)/.test(u))).toEqual([]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses an unknown command with exit code 2 and the list of commands', async () => {
    const { code, stderr } = await cli(['frobnicate']);
    expect(code).toBe(2);
    expect(stderr).toMatch(/unknown command "frobnicate"/);
  });
});
